"""Ranking metrics over exact-mode traces (`Ranking.trace`: depth 1..L -> {candidate: score}).

Pure functions, used by scripts/report_cross_encoder.py. Orders break ties by candidate
index, as the runtime does (`top_k_order`). Every function returns a mean over queries.
"""

from __future__ import annotations

from collections.abc import Sequence

Trace = list[dict[int, float]]


def order(scores: dict[int, float]) -> list[int]:
    """Candidates best first (ties by index)."""
    return sorted(scores, key=lambda row: (-scores[row], row))


def mrr_at(traces: Sequence[Trace], relevant: Sequence[Sequence[int]], k: int = 10) -> float:
    """Mean reciprocal rank of the first relevant candidate within the final top-k (else 0)."""
    total = 0.0
    for trace, wanted in zip(traces, relevant):
        ranked = order(trace[-1])[:k]
        hits = [rank for rank, row in enumerate(ranked, start=1) if row in set(wanted)]
        total += 1.0 / hits[0] if hits else 0.0
    return total / max(1, len(traces))


def precision_at_1(traces: Sequence[Trace], relevant: Sequence[Sequence[int]]) -> float:
    """Share of queries whose final top-1 is relevant."""
    hits = sum(order(trace[-1])[0] in set(wanted) for trace, wanted in zip(traces, relevant))
    return hits / max(1, len(traces))


def rank_stability(traces: Sequence[Trace], k: int = 10, widen: int = 2) -> list[tuple[float, float]]:
    """Per depth 1..L: (share of the final top-k inside the depth's top-k, ... inside its top-widen*k)."""
    layers = len(traces[0])
    out = []
    for depth in range(layers):
        inside_k = inside_wide = 0.0
        for trace in traces:
            final = set(order(trace[-1])[:k])
            ranked = order(trace[depth])
            inside_k += len(final & set(ranked[:k])) / len(final)
            inside_wide += len(final & set(ranked[: widen * k])) / len(final)
        out.append((inside_k / len(traces), inside_wide / len(traces)))
    return out
