"""Pruning decisions on synthetic scores: accept / drop / defer, the stop rule, ties, edge K."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.calibration import agreement, replay
from edgekit.runtimes.pruning import ClusterPruning, fill_rule, kmeans_1d, parse_prune


def _sse(values: np.ndarray, labels: np.ndarray) -> float:
    return float(sum(((values[labels == c] - values[labels == c].mean()) ** 2).sum() for c in np.unique(labels)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=8), st.integers(1, 4))
def test_kmeans_1d_is_optimal(values: list[float], clusters: int) -> None:
    data = np.array(values)
    labels = kmeans_1d(data, clusters)
    # contiguous, ordered clusters: a higher value never sits in a lower cluster
    order = np.argsort(data, kind="stable")
    assert np.all(np.diff(labels[order]) >= 0)
    # brute force over all contiguous splits of the sorted values
    ordered = np.sort(data)
    k = min(clusters, len(np.unique(ordered)))
    best = min(
        _sse(ordered, np.searchsorted(np.array(cuts), np.arange(len(ordered)), side="right"))
        for cuts in itertools.combinations(range(1, len(ordered)), k - 1)
    ) if k > 1 else _sse(ordered, np.zeros(len(ordered), dtype=int))
    assert _sse(data, labels) <= best + 1e-9


def test_clear_gaps_accept_top_drop_bottom_defer_boundary() -> None:
    scores = np.array([5.0, 4.9, 0.1, 0.0, 0.05, -5.0, -5.1])  # logits
    decision = ClusterPruning(threshold=0.0).decide(depth=2, scores=scores, open_slots=3)
    assert sorted(decision.accept.tolist()) == [0, 1]  # above the boundary cluster
    assert sorted(decision.drop.tolist()) == [5, 6]  # below it
    # 2, 3, 4 (the boundary cluster, holding the 3rd best) continue


def test_low_dispersion_defers_everything() -> None:
    scores = np.array([0.50, 0.51, 0.49, 0.50])
    decision = ClusterPruning(threshold=0.5, score_kind="cosine").decide(2, scores, open_slots=2)
    assert decision.accept.size == 0 and decision.drop.size == 0


def test_before_min_depth_nothing_is_pruned() -> None:
    scores = np.array([5.0, 0.0, -5.0])
    decision = ClusterPruning(threshold=0.0, min_depth=3).decide(2, scores, open_slots=1)
    assert decision.accept.size == 0 and decision.drop.size == 0


def test_stop_rule_when_undecided_fill_the_slots() -> None:
    assert sorted(fill_rule(3, 3).accept.tolist()) == [0, 1, 2]
    assert sorted(fill_rule(2, 5).accept.tolist()) == [0, 1]  # N < K
    assert sorted(fill_rule(4, 0).drop.tolist()) == [0, 1, 2, 3]  # no slots left
    assert fill_rule(4, 2) is None


def test_ties_at_the_boundary_share_a_cluster() -> None:
    scores = np.array([3.0, 1.0, 1.0, 1.0, -3.0])
    decision = ClusterPruning(threshold=0.0).decide(1, scores, open_slots=2)
    assert decision.accept.tolist() == [0] and decision.drop.tolist() == [4]


def test_k_one() -> None:
    scores = np.array([6.0, 0.0, 0.1, -0.1])
    decision = ClusterPruning(threshold=0.0).decide(1, scores, open_slots=1)
    # the leader is its own (top) cluster, so it is the boundary: nothing above it to accept
    assert decision.accept.size == 0 and sorted(decision.drop.tolist()) == [1, 2, 3]
    assert sorted(fill_rule(1, 1).accept.tolist()) == [0]  # ... and next depth it fills the slot


def _trace(final: list[float], layers: int, noise: float, seed: int) -> list[dict[int, float]]:
    rng = np.random.default_rng(seed)
    return [{i: s + rng.normal(0, noise * (layers - d) / layers) for i, s in enumerate(final)}
            for d in range(1, layers)] + [dict(enumerate(final))]


def test_replay_exact_is_the_full_top_k_and_costs_everything() -> None:
    trace = _trace([0.1, 3.0, -1.0, 2.0, 0.5], layers=4, noise=0.0, seed=0)
    outcome = replay(trace, None, top_k=2)
    assert outcome.selected == [1, 3] and outcome.candidate_layers == 5 * 4


def test_replay_prunes_stable_trajectories_without_losing_the_top_k() -> None:
    final = [4.0, 3.9, 0.0, 0.1, -4.0, -4.2, -3.9, 0.05]
    trace = _trace(final, layers=6, noise=0.01, seed=1)
    outcome = replay(trace, ClusterPruning(threshold=0.0), top_k=2)
    assert agreement(outcome.selected, [0, 1]) == 1.0
    assert outcome.candidate_layers < 8 * 6


@pytest.mark.parametrize("spec", ["sometimes", "threshold:abc", "-1", "threshold:nan"])
def test_bad_prune_specs(spec: str) -> None:
    with pytest.raises(InvalidArgumentError, match="prune"):
        parse_prune(spec, "logit", None)


def test_auto_without_calibration_says_how_to_calibrate() -> None:
    with pytest.raises(InvalidArgumentError, match="edgekit calibrate"):
        parse_prune("auto", "logit", None)
    assert parse_prune("auto", "logit", {"threshold": None}) is None
    assert parse_prune("auto", "logit", {"threshold": 0.2, "min_depth": 2}).min_depth == 2
    assert parse_prune("0.3", "logit", None).threshold == 0.3
