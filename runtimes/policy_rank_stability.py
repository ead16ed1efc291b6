"""Rank-stability pruning: stop once the head's top-K set has stopped changing.

Early-exit rerankers (patience-based early exit, PABEE, applied to a set rather than a label):
at every depth the head scores the undecided candidates; the top-K set by those scores is
compared with the one at the previous depth. When it has come out the same at `patience`
consecutive depth-to-depth comparisons (m + 1 depths in a row agree), the set is taken as
final: its members are accepted, everyone else is dropped, and the pass stops.

Why a set and not an order: the result is a set (order is restored by the final scores with
`order="exact"`), and swaps inside the top-K, which are common while layers still refine the
scores, say nothing about whether the set is settled. Ties rank the lower position first (as
`top_k_order` does), so equal scores give a deterministic, comparable set.

The comparison needs the previous depth's set, so the memory lives in a per-pass decider
(`RankStability.start()`), never in the policy, which stays an immutable setting.

Example::

    >>> import numpy as np
    >>> decider = RankStability(patience=1).start()
    >>> decider.decide(1, np.array([3.0, 1.0, 2.0]), open_slots=2).accept.size  # first look
    0
    >>> decision = decider.decide(2, np.array([2.5, 0.5, 2.9]), open_slots=2)  # same set {0, 2}
    >>> decision.accept.tolist(), decision.drop.tolist()
    ([0, 2], [1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.pruning import NO_DECISION, Decision, fill_rule
from edgekit.runtimes.ranking import top_k_order


@dataclass(frozen=True)
class RankStability:
    """patience (m): consecutive depth-to-depth comparisons the top-K set must survive unchanged.
    min_depth: the first depth whose top-K set is looked at."""

    patience: int
    min_depth: int = 1
    name: ClassVar[str] = "rank-stability"

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or self.patience < 1 or self.min_depth < 1:
            raise InvalidArgumentError(f"rank stability needs patience >= 1 and min_depth >= 1, got "
                                       f"{self.patience} and {self.min_depth}; e.g. --prune stable:2")

    @classmethod
    def from_params(cls, params: dict[str, Any], score_kind: str) -> RankStability:
        return cls(int(params["patience"]), int(params.get("min_depth", 1)))

    @classmethod
    def calibration_chains(cls, layers: int, score_kind: str) -> list[list[RankStability]]:
        """One chain, from the longest patience that can still fire (the head scores depths
        1..L-1, so m = L-2 decides at depth L-1 at the latest) down to m = 1."""
        return [[cls(patience) for patience in range(layers - 2, 0, -1)]]

    def start(self) -> StabilityTracker:
        return StabilityTracker(self.patience, self.min_depth)

    def describe(self) -> str:
        return f"stable:{self.patience}" + (f"@{self.min_depth}" if self.min_depth != 1 else "")

    def params(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_depth": self.min_depth}


class StabilityTracker:
    """One pass: remembers the last top-K set and for how many comparisons it has held.

    Positions are into the undecided candidates, whose order is fixed for the pass; when the
    candidate count or the open slots change (another rule decided someone), the memory resets.
    """

    def __init__(self, patience: int, min_depth: int) -> None:
        self.patience = patience
        self.min_depth = min_depth
        self._last: frozenset[int] | None = None
        self._shape: tuple[int, int] | None = None
        self._unchanged = 0

    def decide(self, depth: int, scores: np.ndarray, open_slots: int) -> Decision:
        forced = fill_rule(len(scores), open_slots)
        if forced is not None:
            return forced
        if depth < self.min_depth:
            return NO_DECISION
        values = np.asarray(scores, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            self._last = None  # a non-finite score ranks nothing: start counting again
            return NO_DECISION
        order = top_k_order(values, len(values))
        current = frozenset(order[:open_slots].tolist())
        same = self._last is not None and self._shape == (len(values), open_slots) and current == self._last
        self._unchanged = self._unchanged + 1 if same else 0
        self._last, self._shape = current, (len(values), open_slots)
        if self._unchanged < self.patience:
            return NO_DECISION
        return Decision(np.sort(order[:open_slots]).astype(np.int64), np.sort(order[open_slots:]).astype(np.int64))
