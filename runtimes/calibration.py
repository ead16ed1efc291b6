"""Calibration: find the most aggressive pruning threshold that keeps top-K agreement.

Candidates are computed independently of each other, so a pruned run's scores for the
candidates it still computes are exactly the exact run's scores. A pruned run is therefore a
pure function of the exact run's per-layer score trajectories: `replay` re-enacts a policy on
recorded trajectories without touching the model. Calibration records the trajectories once
(exact mode with `trace=True`), then replays a grid of (threshold, first pruning depth) and
keeps the cheapest setting whose mean top-K set agreement with the full model meets the target.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.atomic import write_text_atomic
from edgekit.dataset import Example
from edgekit.manifest import MANIFEST_FILE, Manifest
from edgekit.runtimes.pruning import DEFAULT_CLUSTERS, ClusterPruning, Policy, normalise_scores

Trace = list[dict[int, float]]  # depth 1..L: {candidate: head score}


@dataclass(frozen=True)
class Replay:
    """The outcome of a policy on one recorded trace."""

    selected: list[int]  # the top-K set in the default result order
    candidate_layers: int


def replay(trace: Trace, policy: Policy | None, top_k: int) -> Replay:
    """Re-enact `policy` on an exact-mode trace (see the module docstring)."""
    layers = len(trace)
    undecided = sorted(trace[-1])
    k = min(top_k, len(undecided))
    if len(undecided) <= top_k:
        policy = None  # as online: with N <= K every candidate is ranked exactly
    accepted: list[int] = []
    cost = 0
    for layer in range(1, layers + 1):  # before computing layer `layer`, `layer - 1` are done
        if layer > 1 and policy is not None and undecided:
            scores = np.array([trace[layer - 2][row] for row in undecided])
            decision = policy.decide(layer - 1, scores, k - len(accepted))
            accepted += [undecided[i] for i in sorted(decision.accept.tolist(), key=lambda i: (-scores[i], undecided[i]))]
            gone = {undecided[i] for i in [*decision.accept.tolist(), *decision.drop.tolist()]}
            undecided = [row for row in undecided if row not in gone]
        if not undecided:
            break
        cost += len(undecided)
    finalists = sorted(undecided, key=lambda row: (-trace[-1][row], row))
    return Replay(selected=(accepted + finalists)[:k], candidate_layers=cost)


def agreement(selected: Sequence[int], reference: Sequence[int]) -> float:
    """Top-K set agreement: |selected ∩ reference| / |reference|."""
    return len(set(selected) & set(reference)) / max(1, len(reference))


def _dispersions(traces: list[Trace], score_kind: str) -> np.ndarray:
    values = []
    for trace in traces:
        for depth_scores in trace[:-1]:
            normalised = normalise_scores(np.array(list(depth_scores.values())), score_kind)
            if normalised.mean() != 0:
                values.append(abs(normalised.std() / normalised.mean()))
    return np.array(values)


@dataclass(frozen=True)
class CalibrationResult:
    threshold: float | None  # None: no pruning setting met the target (run exact)
    min_depth: int
    agreement: float
    candidate_layers_fraction: float
    grid_size: int


def search(traces: list[Trace], top_k: int, target: float, score_kind: str, layers: int,
           clusters: int = DEFAULT_CLUSTERS) -> CalibrationResult:
    """Cheapest (threshold, min_depth) whose mean agreement on `traces` is >= `target`."""
    exact = [replay(trace, None, top_k) for trace in traces]
    references = [outcome.selected for outcome in exact]
    exact_cost = sum(outcome.candidate_layers for outcome in exact)
    observed = _dispersions(traces, score_kind)
    grid = np.unique(np.concatenate([[0.0], np.quantile(observed, np.linspace(0, 1, 41))])) if len(observed) else []
    best = CalibrationResult(None, layers, 1.0, 1.0, 0)
    tried = 0
    for min_depth in range(1, layers):
        for threshold in sorted(grid, reverse=True):  # most conservative first
            policy = ClusterPruning(float(threshold), score_kind, clusters, min_depth)
            outcomes = [replay(trace, policy, top_k) for trace in traces]
            tried += 1
            score = float(np.mean([agreement(o.selected, r) for o, r in zip(outcomes, references)]))
            cost = sum(o.candidate_layers for o in outcomes) / max(1, exact_cost)
            if score >= target and cost < best.candidate_layers_fraction:
                best = CalibrationResult(float(threshold), min_depth, score, cost, 0)
    return dataclasses.replace(best, grid_size=tried)


def record_traces(rank: Callable[..., Any], examples: Sequence[Example], top_k: int,
                  progress: Callable[[int, int], None] | None = None) -> list[Trace]:
    """Exact-mode traces of every example (rank = Selector.rank)."""
    traces = []
    for done, example in enumerate(examples):
        traces.append(rank(example.query, example.candidates, top_k=top_k, trace=True).trace)
        if progress:
            progress(done + 1, len(examples))
    return traces


def write_calibration(manifest: Manifest, result: CalibrationResult, top_k: int, target: float,
                      data_file: Path, queries: int) -> Manifest:
    """Store the calibration in the package manifest: only the `calibration` key of the JSON on
    disk changes (fields this edgekit does not know are kept), rewritten atomically."""
    calibration = {
        "policy": "cluster",
        "threshold": result.threshold,
        "min_depth": result.min_depth,
        "clusters": DEFAULT_CLUSTERS,
        "top_k": top_k,
        "target_agreement": target,
        "agreement": result.agreement,
        "candidate_layers_fraction": result.candidate_layers_fraction,
        "queries": queries,
        "data": data_file.name,
        "data_sha256": hashlib.sha256(data_file.read_bytes()).hexdigest(),
    }
    path = manifest.root / MANIFEST_FILE
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["ranking"]["calibration"] = calibration
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    return Manifest.load(manifest.root)
