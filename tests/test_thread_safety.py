"""Story: one Selector shared by 8 threads, each ranking 8 queries at once -> every ranking equals
the sequential run's (indices, scores to 1e-6), each call's stats are what that query does alone,
the summed loads are what the sequential run implies, and with every graph resident each graph
gets exactly one session however many threads ask for it first."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.manifest import Manifest
from edgekit.runtimes.backends import backend_for
from edgekit.runtimes.selector import Ranking, Selector
from tests.conftest import CANDIDATES, QUERY

THREADS = 8
QUERIES = [
    (QUERY, CANDIDATES),
    ("sort a list", CANDIDATES[::-1]),
    ("parse json", CANDIDATES[2:] + CANDIDATES[:2]),
    ("the cat", CANDIDATES[1:]),
    ("read a file", CANDIDATES[:6]),
    ("join paths", CANDIDATES[3:] * 2),
    ("a dog on a mat", CANDIDATES[::2] + CANDIDATES[1::2]),
    ("fast model", CANDIDATES[:4] + ["one more candidate", "and another one"]),
]
# per-call stats a query determines alone (latency, RSS and, when resident, who loads first do not)
OWN_STATS = ("candidates", "top_k_returned", "truncated", "chunks", "tokens", "padded_tokens", "candidate_layers",
             "alive_per_layer", "prune")


class CountingBackend:
    """The real backend, counting the sessions it creates per graph file."""

    def __init__(self) -> None:
        self.inner = backend_for("onnx", "cpu")
        self.loads: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, path: Path) -> Any:
        session = self.inner.load(path)
        with self._lock:
            self.loads[Path(path).name] += 1
        return session


def sequential(package: Path, window: int, prune: str) -> list[Ranking]:
    selector = Selector(Manifest.load(package), backend_for("onnx", "cpu"), window=window)
    return [selector.rank(query, candidates, top_k=3, prune=prune) for query, candidates in QUERIES]


def concurrent(selector: Selector, prune: str) -> dict[tuple[int, int], Ranking]:
    """THREADS threads, each ranking every query (in its own rotation), all started together."""
    results: dict[tuple[int, int], Ranking] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def work(thread: int) -> None:
        try:
            start.wait()
            for step in range(len(QUERIES)):
                number = (thread + step) % len(QUERIES)
                query, candidates = QUERIES[number]
                results[thread, number] = selector.rank(query, candidates, top_k=3, prune=prune)
        except BaseException as error:  # reported below: a thread's exception must fail the test
            errors.append(error)

    threads = [threading.Thread(target=work, args=(number,)) for number in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(results) == THREADS * len(QUERIES)
    return results


def assert_same_ranking(got: Ranking, expected: Ranking) -> None:
    assert [r.index for r in got] == [r.index for r in expected]
    assert [r.decided_at_layer for r in got] == [r.decided_at_layer for r in expected]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=0, atol=1e-6)


@pytest.mark.parametrize("prune", ["exact", "threshold:0"])
def test_streaming_threads_rank_and_count_like_the_sequential_run(tiny_cross_package: Path, prune: str) -> None:
    expected = sequential(tiny_cross_package, window=2, prune=prune)
    backend = CountingBackend()
    selector = Selector(Manifest.load(tiny_cross_package), backend, window=2)  # type: ignore[arg-type]

    results = concurrent(selector, prune)

    for (_, number), ranking in results.items():
        assert_same_ranking(ranking, expected[number])
        alone = expected[number].stats
        for name in (*OWN_STATS, "graphs_loaded", "max_resident_graphs"):  # streaming: each call loads its own
            assert getattr(ranking.stats, name) == getattr(alone, name), name
    sequential_loads = sum(ranking.stats.graphs_loaded for ranking in expected)
    assert sum(r.stats.graphs_loaded for r in results.values()) == THREADS * sequential_loads
    assert sum(backend.loads.values()) == THREADS * sequential_loads


def test_resident_threads_build_one_session_per_graph(tiny_cross_package: Path) -> None:
    manifest = Manifest.load(tiny_cross_package)
    graphs = len(manifest.stream_graphs)
    expected = sequential(tiny_cross_package, window=graphs, prune="exact")
    assert [r.stats.graphs_loaded for r in expected] == [graphs] + [0] * (len(QUERIES) - 1)
    backend = CountingBackend()
    selector = Selector(manifest, backend, window=graphs)  # type: ignore[arg-type]
    assert selector.keep_resident

    results = concurrent(selector, "exact")

    assert backend.loads == Counter({Path(graph.path).name: 1 for graph in manifest.stream_graphs})
    assert sum(r.stats.graphs_loaded for r in results.values()) == graphs  # as the sequential run's stats imply
    for (_, number), ranking in results.items():
        assert_same_ranking(ranking, expected[number])
        assert ranking.stats.max_resident_graphs == graphs
        for name in OWN_STATS:
            assert getattr(ranking.stats, name) == getattr(expected[number].stats, name), name
    selector.close()
