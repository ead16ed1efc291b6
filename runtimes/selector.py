"""Selector: top-K selection by streaming a package's graphs over all candidates.

Monolithic forwarding: every candidate passes graph g before any passes graph g+1, so each
graph is loaded once per query (LayerStream keeps at most W resident). Inside a graph the
candidates run in chunks of C, grouped by length. Resident activations: the hidden states of
all candidates between graphs, plus one chunk's intermediates inside a graph.

Example::

    selector = Selector(Manifest.load("pkg"), OrtBackend("cpu"), window=2, chunk=16)
    ranking = selector.rank("how do I sort a list", ["sorted(iterable)", "open(file)"], top_k=1)
    ranking[0].index, ranking[0].score, ranking.stats.max_resident_graphs
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, overload

import numpy as np

from edgekit.errors import CandidatesError, InvalidArgumentError
from edgekit.manifest import Manifest
from edgekit.measure import peak_rss_mb, stopwatch
from edgekit.runtimes.backend import OrtBackend
from edgekit.runtimes.layer_stream import LayerStream
from edgekit.runtimes.text import Batch, TextEncoder

DEFAULT_CHUNK = 16


@dataclass(frozen=True)
class Result:
    """One selected candidate: its position in the input, its score, its text."""

    index: int
    score: float
    text: str


@dataclass(frozen=True)
class RunStats:
    """What one `rank` call did. `peak_rss_mb` is the process high-water mark."""

    latency_ms: float
    peak_rss_mb: float | None
    candidates: int
    top_k_requested: int
    top_k_returned: int
    truncated: int
    graphs_loaded: int
    max_resident_graphs: int
    window: int
    chunk: int
    chunks: int
    tokens: int
    padded_tokens: int
    provider: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Ranking(Sequence[Result]):
    """The top-K results, best first, with the run's stats."""

    def __init__(self, results: list[Result], stats: RunStats) -> None:
        self._results = results
        self.stats = stats

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


def top_k_order(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first; ties go to the lower index (deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    return order[:k]


class Selector:
    """Ranks candidates against a query with an exported encoder package (exact mode)."""

    def __init__(self, manifest: Manifest, backend: OrtBackend, window: int = 2, chunk: int | None = None) -> None:
        if window < 1:
            raise InvalidArgumentError(f"window must be >= 1, got {window}")
        if chunk is not None and chunk < 1:
            raise InvalidArgumentError(f"chunk must be >= 1 candidates, got {chunk}")
        self.manifest = manifest
        self.backend = backend
        self.window = window
        self.chunk = chunk or DEFAULT_CHUNK
        self.encoder = TextEncoder(manifest)

    def rank(self, query: str, candidates: Sequence[str], top_k: int = 10) -> Ranking:
        """Score every candidate against `query`; return the best `min(top_k, N)`, best first."""
        texts = self._check(query, candidates, top_k)
        with stopwatch() as timing:
            if self.manifest.scoring.kind == "logit":
                encoded = self.encoder.encode_pairs(query, texts)
                scores, stream, batches = self._forward(encoded)
            else:
                encoded = self.encoder.encode_texts([*texts, query])  # the query rides along, last
                embeddings, stream, batches = self._forward(encoded)
                scores = self._cosine(embeddings[:-1], embeddings[-1])
            order = top_k_order(scores, top_k)
        results = [Result(int(i), float(scores[i]), texts[i]) for i in order]
        stats = RunStats(
            latency_ms=timing["ms"],
            peak_rss_mb=peak_rss_mb(),
            candidates=len(texts),
            top_k_requested=top_k,
            top_k_returned=len(results),
            truncated=sum(item.truncated for item in encoded),
            graphs_loaded=stream.loads,
            max_resident_graphs=stream.max_resident,
            window=self.window,
            chunk=self.chunk,
            chunks=len(batches),
            tokens=sum(len(item.ids) for item in encoded),
            padded_tokens=sum(int(b.input_ids.size) for b in batches),
            provider=self.backend.provider,
        )
        return Ranking(results, stats)

    @staticmethod
    def _check(query: str, candidates: Sequence[str], top_k: int) -> list[str]:
        if isinstance(candidates, str):
            raise CandidatesError("candidates must be a list of strings, not one string")
        texts = list(candidates)
        if not texts:
            raise CandidatesError("no candidates to rank; pass at least one candidate text")
        bad = [i for i, text in enumerate(texts) if not isinstance(text, str)]
        if bad:
            raise CandidatesError(f"candidate {bad[0]} is {type(texts[bad[0]]).__name__}, not str")
        if not isinstance(query, str) or not query.strip():
            raise InvalidArgumentError("query is empty; pass the text to rank candidates against")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
        return texts

    def _forward(self, encoded: list) -> tuple[np.ndarray, LayerStream, list[Batch]]:
        """Run every sequence through every graph; returns head outputs in input order."""
        batches = self.encoder.batches(encoded, self.chunk)
        states: list[dict[str, np.ndarray]] = [batch.feeds() for batch in batches]
        paths = [self.manifest.root / graph.file for graph in self.manifest.graphs]
        stream = LayerStream(paths, self.backend.load, window=self.window)
        for _, session in stream:
            for state in states:
                # each graph's single output feeds the next graph as its hidden states
                state["hidden_states"] = session.run(state)[0]
        first = states[0]["hidden_states"]
        outputs = np.empty((len(encoded), *first.shape[1:]), dtype=first.dtype)
        for batch, state in zip(batches, states):
            outputs[batch.rows] = state["hidden_states"]
        return outputs, stream, batches

    @staticmethod
    def _cosine(candidates: np.ndarray, query: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(candidates, axis=1) * np.linalg.norm(query)
        return (candidates @ query) / np.maximum(norms, 1e-12)
