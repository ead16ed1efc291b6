"""LayerStream: walk a package's graphs in order with at most W sessions resident.

While the caller computes with graph i, graph i+1 (up to i+W-1) is loaded on a background
thread; graph i-1 is released before anything new is loaded. "Resident" counts sessions
loaded or loading, so `max_resident <= window` holds at every instant, not just on average.

Example::

    stream = LayerStream(paths, backend.load, window=2)
    for index, session in stream:
        outputs = session.run(feeds)
    assert stream.max_resident <= 2
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

from edgekit.errors import InvalidArgumentError


class Releasable(Protocol):
    def release(self) -> None: ...


S = TypeVar("S", bound=Releasable)
K = TypeVar("K")  # what `load` takes: a graph's path, or its manifest entry


class LayerStream(Generic[S, K]):
    """Iterates `(index, session)` over `paths`, prefetching ahead within `window`. `paths` may be
    anything `load` takes (the selector passes graph entries: the layers of a shared-layers package
    share one path, and "loading" one maps its weights)."""

    def __init__(self, paths: Sequence[K], load: Callable[[K], S], window: int = 2) -> None:
        if window < 1:
            raise InvalidArgumentError(f"window must be >= 1 (graphs resident at once), got {window}")
        self.paths = list(paths)
        self.load = load
        self.window = window
        self.max_resident = 0
        self.loads = 0
        self._resident = 0
        self._lock = threading.Lock()

    def _count(self, delta: int) -> None:
        with self._lock:
            self._resident += delta
            self.max_resident = max(self.max_resident, self._resident)

    def _load(self, path: K) -> S:
        session = self.load(path)
        with self._lock:
            self.loads += 1
        return session

    def __iter__(self) -> Iterator[tuple[int, S]]:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgekit-prefetch")
        scheduled: dict[int, Future[S]] = {}

        def schedule(index: int) -> None:
            self._count(+1)
            scheduled[index] = executor.submit(self._load, self.paths[index])

        def release(index: int) -> None:
            future = scheduled.pop(index)
            try:
                future.result().release()
            except Exception:  # a failed load holds nothing to release
                pass
            self._count(-1)

        try:
            for index in range(len(self.paths)):
                if index - 1 in scheduled:
                    release(index - 1)
                if index not in scheduled:
                    schedule(index)
                ahead = index + 1
                while ahead < len(self.paths) and ahead < index + self.window:
                    if ahead not in scheduled:
                        schedule(ahead)
                    ahead += 1
                yield index, scheduled[index].result()
        finally:
            for index in list(scheduled):
                release(index)
            executor.shutdown(wait=True)
