"""Pruning decisions on synthetic scores: accept / drop / defer, the stop rule, ties, edge K."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.errors import InvalidArgumentError, UnknownPolicyError
from edgekit.runtimes.calibration import agreement, replay, search
from edgekit.runtimes.policies import POLICIES, build_policy, parse_prune
from edgekit.runtimes.policy_rank_stability import RankStability
from edgekit.runtimes.pruning import ClusterPruning, fill_rule, kmeans_1d


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


@pytest.mark.parametrize("spec", ["sometimes", "threshold:abc", "-1", "threshold:nan", "stable:x", "stable:0",
                                  "stable:2@0", "fastest:1", "threshold:0.1@x"])
def test_bad_prune_specs(spec: str) -> None:
    with pytest.raises(InvalidArgumentError, match="prune|stable"):
        parse_prune(spec, "logit", None)


@pytest.mark.parametrize("spec, expected", [
    ("0.3", ClusterPruning(0.3, "logit")),
    ("threshold:0.3@2", ClusterPruning(0.3, "logit", min_depth=2)),
    ("stable:2", RankStability(2)),
    ("stable:1@3", RankStability(1, min_depth=3)),
])
def test_prune_specs_and_describe_round_trip(spec: str, expected: object) -> None:
    policy = parse_prune(spec, "logit", None)
    assert policy == expected
    assert parse_prune(policy.describe(), "logit", None) == policy  # the stats' string rebuilds it


SETTINGS = [ClusterPruning(0.25, "cosine", clusters=4, min_depth=3), RankStability(3, min_depth=2)]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_registry_rebuilds_a_stored_setting_exactly(setting) -> None:
    assert set(POLICIES) == {"cluster", "rank-stability"}
    stored = json.loads(json.dumps({"policy": setting.name, "params": setting.params(), "top_k": 5}))  # as on disk
    assert build_policy(stored["policy"], stored["params"], "cosine") == setting
    assert parse_prune("auto", "cosine", stored, top_k=5) == setting


def test_auto_without_calibration_says_how_to_calibrate() -> None:
    with pytest.raises(InvalidArgumentError, match="edgekit calibrate"):
        parse_prune("auto", "logit", None)
    assert parse_prune("auto", "logit", {"policy": "rank-stability", "params": None}) is None  # none certified


def test_the_first_calibration_shape_still_reads() -> None:
    assert parse_prune("auto", "logit", {"policy": "cluster", "threshold": None}) is None
    assert parse_prune("auto", "logit", {"threshold": 0.2, "min_depth": 2}) == ClusterPruning(0.2, "logit", min_depth=2)


def test_an_unknown_stored_policy_is_one_line_naming_the_fix() -> None:
    with pytest.raises(UnknownPolicyError, match="'beam-search'.*edgekit calibrate") as error:
        parse_prune("auto", "logit", {"policy": "beam-search", "params": {"width": 2}})
    assert "\n" not in str(error.value)
    with pytest.raises(InvalidArgumentError, match="malformed rank-stability"):
        parse_prune("auto", "logit", {"policy": "rank-stability", "params": {"m": 2}})


def test_search_certifies_only_what_the_data_supports() -> None:
    """Stable trajectories: the cheapest certified setting prunes, its bound clears the target,
    and too few queries certify nothing (even a perfect record)."""
    final = [4.0, 3.9, 0.0, 0.1, -4.0, -4.2, -3.9, 0.05]
    traces = [_trace(final, layers=6, noise=0.01, seed=seed) for seed in range(40)]
    for name in POLICIES:
        result = search(traces, 2, 0.9, "logit", layers=6, policy=name, delta=0.1)
        assert result.setting is not None and result.setting.name == name
        assert result.lower_bound >= 0.9 and result.candidate_layers_fraction < 1.0
        assert result.samples == 40 and result.delta_per_test == pytest.approx(0.1 / result.chains)
        few = search(traces[:10], 2, 0.9, "logit", layers=6, policy=name, delta=0.1)  # 0.9^10 > 0.1
        assert few.setting is None and few.lower_bound is None


def test_every_setting_calibration_may_store_describes_itself_exactly() -> None:
    """The stats' `prune` string of a calibrated run is a spec that rebuilds the same setting."""
    for cls in POLICIES.values():
        for chain in cls.calibration_chains(6, "logit"):
            for setting in chain:
                assert parse_prune(setting.describe(), "logit", None) == setting
