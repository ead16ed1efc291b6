"""Pruning policies: decide, between layers, which candidates are already in or out of the top-K.

PRISM-style progressive cluster pruning (GRATING, arXiv 2510.15620): before a layer, score the
undecided candidates with the model's own head. When the scores spread enough (dispersion
|std/mean| above a threshold), split them into clusters with exact 1-D k-means. Clusters wholly
above the cluster holding the boundary candidate (the one that would take the last open slot)
are accepted; clusters wholly below it are dropped; the boundary cluster continues. When the
undecided candidates exactly fill the open slots, they are all accepted.

Scores are first mapped to [0, 1] so the dispersion is meaningful whatever the head emits:
logits through a sigmoid, cosines as (1 + cos) / 2, probabilities (decoder rerankers) as they
are (all monotonic: the ranking is unchanged).

Why exact 1-D k-means (dynamic programming over sorted values, as in Ckmeans.1d.dp) rather
than Lloyd's algorithm from a library: with at most a few hundred candidates it costs well
under a millisecond in numpy, it is deterministic (no random init), and its optimum cannot
depend on iteration luck — a pruning decision must be reproducible to be calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from edgekit.errors import InvalidArgumentError

DEFAULT_CLUSTERS = 3


def kmeans_1d(values: np.ndarray, clusters: int) -> np.ndarray:
    """Optimal 1-D k-means labels (0 = lowest cluster). Ties in value share a cluster.

    Dynamic programming over the sorted values: cost[k][i] = least within-cluster sum of
    squares of the first i values in k clusters; O(k·n²) vector work.
    """
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(values, kind="stable")
    ordered = np.asarray(values, dtype=np.float64)[order]
    k = max(1, min(clusters, len(np.unique(ordered))))
    prefix = np.concatenate([[0.0], np.cumsum(ordered)])
    prefix_sq = np.concatenate([[0.0], np.cumsum(ordered**2)])

    def sse(start: np.ndarray, stop: int) -> np.ndarray:  # cost of ordered[start:stop], vector over start
        count = stop - start
        total = prefix[stop] - prefix[start]
        return (prefix_sq[stop] - prefix_sq[start]) - total**2 / np.maximum(count, 1)

    cost = np.full((k + 1, n + 1), np.inf)
    split = np.zeros((k + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for c in range(1, k + 1):
        for stop in range(c, n + 1):
            starts = np.arange(c - 1, stop)
            candidates = cost[c - 1, starts] + sse(starts, stop)
            best = int(np.argmin(candidates))
            cost[c, stop], split[c, stop] = candidates[best], starts[best]
    labels_sorted = np.empty(n, dtype=np.int64)
    stop = n
    for c in range(k, 0, -1):
        start = int(split[c, stop])
        labels_sorted[start:stop] = c - 1
        stop = start
    # values equal to each other must share a label: give each value its highest label's cluster
    labels = np.empty(n, dtype=np.int64)
    labels[order] = labels_sorted
    for value in np.unique(ordered):
        same = values == value
        labels[same] = labels[same].max()
    return labels


def normalise_scores(scores: np.ndarray, kind: str) -> np.ndarray:
    """Map head scores to [0, 1] monotonically: sigmoid for logits, (1 + cos) / 2 for cosines,
    probabilities as they are."""
    if kind == "cosine":
        return (1.0 + scores) / 2.0
    if kind == "probability":
        return np.clip(scores, 0.0, 1.0)
    return 1.0 / (1.0 + np.exp(-scores))


@dataclass(frozen=True)
class Decision:
    """Positions (into the scored array) to accept and to drop; the rest continue."""

    accept: np.ndarray
    drop: np.ndarray


NO_DECISION = Decision(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


class Policy(Protocol):
    """Decides at a depth (layers computed so far) given the undecided candidates' scores."""

    min_depth: int

    def decide(self, depth: int, scores: np.ndarray, open_slots: int) -> Decision: ...


def fill_rule(count: int, open_slots: int) -> Decision | None:
    """The stop rule: nothing can compete when the undecided exactly fill (or underfill) the slots."""
    everyone = np.arange(count, dtype=np.int64)
    if open_slots <= 0:
        return Decision(np.zeros(0, dtype=np.int64), everyone)
    if count <= open_slots:
        return Decision(everyone, np.zeros(0, dtype=np.int64))
    return None


@dataclass(frozen=True)
class ClusterPruning:
    """Progressive cluster pruning with a dispersion threshold (see the module docstring).

    threshold: prune only when |std/mean| of the normalised scores exceeds it.
    min_depth: the first depth (layers computed) at which pruning may happen.
    """

    threshold: float
    score_kind: str = "logit"
    clusters: int = DEFAULT_CLUSTERS
    min_depth: int = 1

    def decide(self, depth: int, scores: np.ndarray, open_slots: int) -> Decision:
        forced = fill_rule(len(scores), open_slots)
        if forced is not None:
            return forced
        if depth < self.min_depth:
            return NO_DECISION
        values = normalise_scores(np.asarray(scores, dtype=np.float64), self.score_kind)
        if not np.all(np.isfinite(values)):
            return NO_DECISION  # a non-finite score (e.g. fp16 overflow) decides nothing
        mean = float(values.mean())
        if mean == 0.0 or abs(float(values.std()) / mean) <= self.threshold:
            return NO_DECISION
        labels = kmeans_1d(values, self.clusters)
        # the boundary candidate: the one that would take the last open slot
        boundary = int(np.lexsort((np.arange(len(values)), -values))[open_slots - 1])
        boundary_label = labels[boundary]
        accept = np.flatnonzero(labels > boundary_label)
        drop = np.flatnonzero(labels < boundary_label)
        return Decision(accept, drop)


def parse_prune(spec: str | float | None, score_kind: str, calibration: dict | None,
                top_k: int | None = None) -> ClusterPruning | None:
    """`exact`/None -> no pruning; `auto` -> the package's calibration (which must have been made
    for the same top-k); `threshold:X` or X -> X from the first layer on."""
    if spec is None or spec == "exact":
        return None
    if spec == "auto":
        return _calibrated(score_kind, calibration, top_k)
    text = str(spec)
    value = text.split(":", 1)[1] if text.startswith("threshold:") else text
    try:
        threshold = float(value)
    except ValueError:
        raise InvalidArgumentError(f"--prune {spec!r} is not understood; use exact, auto or threshold:X") from None
    if not np.isfinite(threshold) or threshold < 0:
        raise InvalidArgumentError(f"--prune threshold must be a finite number >= 0, got {value}")
    return ClusterPruning(threshold, score_kind)


def _calibrated(score_kind: str, calibration: dict | None, top_k: int | None) -> ClusterPruning | None:
    if not calibration:
        raise InvalidArgumentError(
            "--prune auto needs a calibrated package; run `edgekit calibrate PKG --data FILE.jsonl` "
            "or pass --prune threshold:X"
        )
    calibrated_k = calibration.get("top_k")
    if top_k is not None and calibrated_k is not None and calibrated_k != top_k:
        raise InvalidArgumentError(
            f"the package was calibrated for top-k {calibrated_k}, not {top_k}; re-run `edgekit calibrate` "
            f"with --top-k {top_k}, or pass --prune threshold:X"
        )
    threshold = calibration.get("threshold")
    if threshold is None:  # calibration found no setting that met its target
        return None
    try:
        return ClusterPruning(float(threshold), score_kind, int(calibration.get("clusters", DEFAULT_CLUSTERS)),
                              int(calibration.get("min_depth", 1)))
    except (TypeError, ValueError):
        raise InvalidArgumentError("the package's calibration is malformed; re-run `edgekit calibrate`") from None
