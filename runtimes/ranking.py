"""What a ranking pass returns: results best first, the run's stats, and an optional trace."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, overload

import numpy as np


@dataclass(frozen=True)
class Result:
    """One selected candidate: its position in the input, its score, its text, and the depth
    (layers computed) at which its place was decided — the last layer unless pruning accepted it
    earlier, in which case `score` is the head's score at that depth."""

    index: int
    score: float
    text: str
    decided_at_layer: int = 0


@dataclass(frozen=True)
class RunStats:
    """What one `rank` call did. `peak_rss_mb` is the process high-water mark."""

    latency_ms: float
    peak_rss_mb: float | None
    candidates: int
    top_k_requested: int
    top_k_returned: int
    truncated: int  # candidates (cross-encoders: pairs) longer than the package's max length
    graphs_loaded: int
    max_resident_graphs: int
    window: int
    chunk: int
    chunks: int
    tokens: int
    padded_tokens: int
    provider: str
    prune: str = "exact"
    layers: int = 0
    candidate_layers: int = 0  # candidates x layers actually computed
    candidate_layers_exact: int = 0  # what exact mode computes
    alive_per_layer: list[int] = field(default_factory=list)
    query_truncated: bool = False  # bi-encoders: the query itself was cut to the max length
    memory_budget_mb: float | None = None  # the budget the planner chose window and chunk for
    plan: dict[str, Any] | None = None  # the planner's choice and its estimated peak, part by part
    layer_weights_mapped: int = 0  # shared-layers packages: layer weight maps opened (0: per-layer sessions)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def top_k_order(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first; ties go to the lower index (deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores)))
    return order[:k]


class Ranking:
    """The top-K results, best first (a read-only sequence of Result), with the run's stats.

    trace (when asked for): one dict per depth 1..L of {candidate index: head score}.
    """

    def __init__(self, results: list[Result], stats: RunStats, trace: list[dict[int, float]] | None = None) -> None:
        self._results = results
        self.stats = stats
        self.trace = trace

    @overload
    def __getitem__(self, item: int) -> Result: ...
    @overload
    def __getitem__(self, item: slice) -> list[Result]: ...
    def __getitem__(self, item: int | slice) -> Result | list[Result]:
        return self._results[item]

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[Result]:
        return iter(self._results)

    def __repr__(self) -> str:
        return f"Ranking({self._results!r})"

    def scores_by_candidate(self) -> np.ndarray:
        """Every candidate's score at its index (float64). Only a ranking that holds every
        candidate has them all: ValueError otherwise (rank with top_k >= the candidate count)."""
        if len(self._results) != self.stats.candidates:
            raise ValueError(f"this ranking holds {len(self._results)} of {self.stats.candidates} candidates; "
                             "rank with top_k >= the candidate count to score them all")
        scores = np.empty(self.stats.candidates)
        for result in self._results:
            scores[result.index] = result.score
        return scores
