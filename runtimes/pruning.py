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
from typing import Any, ClassVar, Protocol

import numpy as np

from edgekit.errors import InvalidArgumentError

DEFAULT_CLUSTERS = 3
# dispersion thresholds calibration tries: 0 (prune whenever clusters separate) and a log grid
# (6 per decade, 1e-7 .. 4: tiny random heads spread by ~5e-6, trained ones by 0.1 .. 2)
CALIBRATION_THRESHOLDS = (0.0, *np.geomspace(1e-7, 4.0, 47).round(10).tolist())


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


class Decider(Protocol):
    """One pass's decisions. `scores` are the undecided candidates' head scores at `depth`
    (layers computed so far), in the pass's fixed candidate order less those already decided."""

    def decide(self, depth: int, scores: np.ndarray, open_slots: int) -> Decision: ...


class Policy(Protocol):
    """A pruning policy: an immutable setting that starts one `Decider` per ranking pass.

    The selector and the calibration replay use only this contract:
    - `min_depth`: the first depth at which the policy wants scores (none are computed before);
    - `start()`: a fresh decider for one pass (stateless policies return themselves; a policy
      that remembers earlier depths keeps that memory in the decider, never in the policy);
    - `describe()`: the `--prune` spec that rebuilds this setting (the stats' `prune` string);
    - `name` and `params()`: how a calibration stores it; the registry in
      `runtimes/policies.py` rebuilds it with `from_params(params, score_kind)`.
    """

    name: ClassVar[str]
    min_depth: int

    def start(self) -> Decider: ...

    def describe(self) -> str: ...

    def params(self) -> dict[str, Any]: ...


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
    name: ClassVar[str] = "cluster"

    def __post_init__(self) -> None:
        if not np.isfinite(self.threshold) or self.threshold < 0:
            raise InvalidArgumentError(f"--prune threshold must be a finite number >= 0, got {self.threshold}")
        if self.clusters < 2 or self.min_depth < 1:
            raise InvalidArgumentError(f"cluster pruning needs clusters >= 2 and min_depth >= 1, got "
                                       f"{self.clusters} and {self.min_depth}")

    @classmethod
    def from_params(cls, params: dict[str, Any], score_kind: str) -> ClusterPruning:
        return cls(float(params["threshold"]), score_kind, int(params.get("clusters", DEFAULT_CLUSTERS)),
                   int(params.get("min_depth", 1)))

    @classmethod
    def calibration_chains(cls, layers: int, score_kind: str) -> list[list[ClusterPruning]]:
        """One chain per first depth, each from the highest threshold down (most conservative
        first). The grid is fixed before any data is seen, as fixed-sequence testing requires."""
        thresholds = sorted(CALIBRATION_THRESHOLDS, reverse=True)
        return [[cls(float(t), score_kind, DEFAULT_CLUSTERS, depth) for t in thresholds]
                for depth in range(layers - 1, 0, -1)]

    def start(self) -> ClusterPruning:
        return self  # stateless: every decision reads only the current depth's scores

    def describe(self) -> str:
        return f"threshold:{self.threshold:.12g}@{self.min_depth}"  # 12 digits: the calibration grid round-trips

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "clusters": self.clusters, "min_depth": self.min_depth}

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
