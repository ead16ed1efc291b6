"""Rank stability on hand-made score trajectories: the top-K set must hold for m comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.calibration import replay
from edgekit.runtimes.policy_rank_stability import RankStability


def _walk(policy: RankStability, trajectory: list[list[float]], open_slots: int) -> tuple[int | None, list, list]:
    """Feed depth 1, 2, ... to one pass; return the depth of the decision and its accept/drop."""
    decider = policy.start()
    for depth, scores in enumerate(trajectory, start=1):
        decision = decider.decide(depth, np.array(scores), open_slots)
        if decision.accept.size or decision.drop.size:
            return depth, decision.accept.tolist(), decision.drop.tolist()
    return None, [], []


def test_m1_decides_at_the_first_repeat_of_the_set() -> None:
    trajectory = [[3.0, 2.0, 1.0, 0.0],   # top-2 {0, 1}
                  [1.0, 2.0, 3.0, 0.0],   # {1, 2}: changed
                  [0.5, 2.5, 3.5, 0.0]]   # {1, 2} again: one unchanged comparison
    assert _walk(RankStability(1), trajectory, 2) == (3, [1, 2], [0, 3])


def test_swaps_inside_the_top_k_do_not_reset_the_count() -> None:
    trajectory = [[3.0, 2.0, 0.0], [2.0, 3.0, 0.0], [3.0, 2.0, 0.0]]  # order flips, set {0, 1} holds
    assert _walk(RankStability(2), trajectory, 2) == (3, [0, 1], [2])


def test_a_change_restarts_the_count() -> None:
    trajectory = [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 1.0, 2.0], [3.0, 1.0, 2.5], [3.0, 1.0, 2.2]]
    # {0,1} {0,1} | {0,2} {0,2} {0,2}: two unchanged comparisons only after depth 5
    assert _walk(RankStability(2), trajectory, 2) == (5, [0, 2], [1])
    assert _walk(RankStability(3), trajectory, 2) == (None, [], [])  # never held for three


def test_ties_go_to_the_lower_position_every_depth() -> None:
    trajectory = [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]  # all tied: the set is {0} both times
    assert _walk(RankStability(1), trajectory, 1) == (2, [0], [1, 2])


def test_n_at_most_k_accepts_everyone_at_once() -> None:
    assert _walk(RankStability(5), [[0.1, 0.2]], 2) == (1, [0, 1], [])
    assert _walk(RankStability(5), [[0.1, 0.2]], 3) == (1, [0, 1], [])


def test_nothing_before_min_depth_and_non_finite_scores_restart() -> None:
    steady = [[3.0, 2.0, 1.0]] * 4
    assert _walk(RankStability(1, min_depth=3), steady, 1) == (4, [0], [1, 2])
    broken = [[3.0, 2.0, 1.0], [np.nan, 2.0, 1.0], [3.0, 2.0, 1.0], [3.0, 2.0, 1.0]]
    assert _walk(RankStability(1), broken, 1) == (4, [0], [1, 2])


def test_each_pass_starts_with_no_memory() -> None:
    policy = RankStability(1)
    first = policy.start()
    first.decide(1, np.array([3.0, 2.0, 1.0]), 1)
    second = policy.start()  # a new query: depth 1 is a first look, not a repeat
    decision = second.decide(1, np.array([3.0, 2.0, 1.0]), 1)
    assert decision.accept.size == 0 and decision.drop.size == 0


def test_replay_on_a_trace_costs_only_the_layers_before_the_decision() -> None:
    # 4 layers, 5 candidates, top-2 settled from depth 1 on: m = 1 decides at depth 2
    trace = [{0: 0.9, 1: 0.8, 2: 0.1, 3: 0.2, 4: 0.0}] * 3 + [{0: 0.7, 1: 0.9, 2: 0.0, 3: 0.1, 4: 0.2}]
    outcome = replay(trace, RankStability(1), top_k=2)
    assert sorted(outcome.selected) == [0, 1]
    assert outcome.candidate_layers == 5 * 2  # layers 1 and 2 for everyone, then all decided
    assert replay(trace, RankStability(3), top_k=2).candidate_layers == 5 * 4  # never fires


@pytest.mark.parametrize("patience", [0, -1])
def test_patience_must_be_positive(patience: int) -> None:
    with pytest.raises(InvalidArgumentError, match="stable:"):
        RankStability(patience)
