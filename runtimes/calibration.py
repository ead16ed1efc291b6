"""Calibration: choose a pruning setting that keeps the top-K on *new* queries, with a guarantee.

Candidates are computed independently of each other, so a pruned run's scores for the
candidates it still computes are exactly the exact run's scores. A pruned run is therefore a
pure function of the exact run's per-layer score trajectories: `replay` re-enacts a policy on
recorded trajectories without touching the model. Calibration records the trajectories once
(exact mode with `trace=True`) and replays the policy's candidate settings on them.

What is guaranteed (Learn then Test, Angelopoulos et al. 2021). The unit is the *query*: a
query succeeds when the pruned top-K set equals the full model's. Queries are the independent
draws (calibration data and future traffic come from the same distribution, one query at a
time); the K slots of one query are not independent — one pruning decision drops or keeps
several of them together — so a binomial over (query, slot) events would claim K times the
evidence there is. Success is binary, so the exact Clopper–Pearson bound applies with no slack,
and a query that keeps its whole set also has agreement 1: a rate of whole-set successes
>= target implies mean top-K agreement >= target.

For each candidate setting the null hypothesis is "its success rate on new queries is below the
target"; its exact binomial p-value is P(Binomial(n, target) >= successes). A policy lists its
settings as chains, each ordered from the most conservative setting to the most aggressive and
fixed before any data is seen (`calibration_chains`). Within a chain, fixed-sequence testing
rejects nulls in order at level δ / chains and stops at the first it cannot reject; across
chains δ is split evenly (Bonferroni). So, with probability >= 1 - δ over the calibration
draw, *every* certified setting meets the target, and choosing the cheapest of them (fewest
candidate-layers computed on the calibration data) keeps the guarantee. `lower_bound` stored
with it is its Clopper–Pearson lower bound at level 1 - δ / chains.

Needed data: even a setting that never prunes is certified only when target^n <= δ / chains,
i.e. n >= log(δ / chains) / log(target) queries (460 for target 0.995, δ 0.1, one chain).
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

from edgekit.dataset import Example
from edgekit.errors import InvalidArgumentError
from edgekit.manifest import MANIFEST_FILE, Manifest
from edgekit.package_digest import check_digest, write_manifest
from edgekit.runtimes.confidence import binomial_p_value, clopper_pearson_lower
from edgekit.runtimes.policies import policy_class
from edgekit.runtimes.pruning import ClusterPruning, Policy

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
    decider = policy.start() if policy is not None else None
    first = policy.min_depth + 1 if policy is not None else layers + 1  # as online: the head scores from min_depth on
    for layer in range(1, layers + 1):  # before computing layer `layer`, `layer - 1` are done
        if decider is not None and layer >= first and undecided:
            scores = np.array([trace[layer - 2][row] for row in undecided])
            decision = decider.decide(layer - 1, scores, k - len(accepted))
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


@dataclass(frozen=True)
class CalibrationResult:
    """The cheapest certified setting of one policy (`setting` None: none certified, run exact).

    agreement / exact_share / candidate_layers_fraction are measured on the calibration queries;
    lower_bound is the Clopper–Pearson bound on the whole-set success rate at level 1 - delta_per_test.
    """

    policy: str
    setting: Policy | None
    agreement: float
    exact_share: float
    lower_bound: float | None  # None: nothing certified
    candidate_layers_fraction: float
    samples: int
    delta: float
    delta_per_test: float
    tested: int
    chains: int


def check_search_args(target: float, delta: float) -> None:
    """InvalidArgumentError unless target is in (0, 1] and delta in (0, 1)."""
    if not 0.0 < target <= 1.0:
        raise InvalidArgumentError(f"--target-agreement must be in (0, 1], got {target}")
    if not 0.0 < delta < 1.0:
        raise InvalidArgumentError(f"--delta must be in (0, 1), got {delta}")


def search(traces: list[Trace], top_k: int, target: float, score_kind: str, layers: int,
           policy: str = ClusterPruning.name, delta: float = 0.1) -> CalibrationResult:
    """The cheapest setting of `policy` certified to keep the whole top-K set on a share >= target
    of new queries, with probability >= 1 - delta (see the module docstring)."""
    if not traces:
        raise InvalidArgumentError("calibration needs at least one query; pass a non-empty --data file")
    check_search_args(target, delta)
    chains = [chain for chain in policy_class(policy).calibration_chains(layers, score_kind) if chain]
    n = len(traces)
    references = [replay(trace, None, top_k) for trace in traces]
    exact_cost = sum(outcome.candidate_layers for outcome in references)
    delta_per_test = delta / max(1, len(chains))
    none = CalibrationResult(policy, None, 1.0, 1.0, None, 1.0, n, delta,
                             delta_per_test, 0, len(chains))
    certified: list[CalibrationResult] = []
    tested = 0
    for chain in chains:
        for setting in chain:  # fixed sequence: most conservative first, stop at the first failure
            outcomes = [replay(trace, setting, top_k) for trace in traces]
            tested += 1
            kept = [set(o.selected) == set(r.selected) for o, r in zip(outcomes, references)]
            if binomial_p_value(sum(kept), n, target) > delta_per_test:
                break
            certified.append(CalibrationResult(
                policy, setting,
                agreement=float(np.mean([agreement(o.selected, r.selected) for o, r in zip(outcomes, references)])),
                exact_share=sum(kept) / n,
                lower_bound=clopper_pearson_lower(sum(kept), n, delta_per_test),
                candidate_layers_fraction=sum(o.candidate_layers for o in outcomes) / max(1, exact_cost),
                samples=n, delta=delta, delta_per_test=delta_per_test, tested=0, chains=len(chains)))
    pruning = [result for result in certified if result.candidate_layers_fraction < 1.0]
    best = min(pruning, key=lambda result: result.candidate_layers_fraction) if pruning else none
    return dataclasses.replace(best, tested=tested)


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
                      data_file: Path) -> Manifest:
    """Store the calibration in the package manifest: only the `calibration` key of the JSON on
    disk changes (fields this edgekit does not know are kept), rewritten atomically.

    `policy` + `params` are what `--prune auto` rebuilds through the registry (`params` null: no
    setting was certified, run exact); `delta`, `lower_bound`, `samples` and `procedure` say what
    the guarantee is; the rest is what the calibration data measured."""
    calibration = {
        "policy": result.policy,
        "params": result.setting.params() if result.setting is not None else None,
        "top_k": top_k,
        "target_agreement": target,
        "delta": result.delta,
        "lower_bound": result.lower_bound,
        "samples": result.samples,
        "unit": "query: its pruned top-K set equals the full model's",
        "procedure": f"Learn then Test: exact binomial p-values, fixed-sequence testing in {result.chains} "
                     f"chain(s) at delta/{result.chains} each, {result.tested} settings tested",
        "agreement": result.agreement,
        "exact_share": result.exact_share,
        "candidate_layers_fraction": result.candidate_layers_fraction,
        "data": data_file.name,
        "data_sha256": hashlib.sha256(data_file.read_bytes()).hexdigest(),
    }
    before = (manifest.root / MANIFEST_FILE).read_bytes()
    check_digest(manifest.root, before)  # the new digest must not vouch for an edit made by someone else
    raw = json.loads(before)
    raw["ranking"]["calibration"] = calibration
    write_manifest(manifest.root, json.dumps(raw, indent=2, allow_nan=False) + "\n")  # and its digest, manifest.sha256
    return Manifest.load(manifest.root)
