"""The backend contract: what the runtime asks of whatever executes a graph.

A `Backend` is one object per (format, provider, threads) that turns a graph file into a
`Session`; a `Session` runs that graph on named numpy arrays and is released as soon as the
caller is done with it. That is the whole seam, in the spirit of Apple's `ManagedMLModel`
(load / perform / unload) and executorch's `BackendDetails` (one class per way of executing):
the layer stream, the selector, the video pipeline and the exporters' parity checks only ever
call `backend.load(path)`, `session.run(feeds)` and `session.release()`, so a new way to execute
graphs (Core ML, a weights-as-inputs session) is one module plus an entry in
`edgekit.runtimes.backends`' registry, not edits across the tree.

`BackendTraits` is what the memory planner must know about a backend before anything runs:
its fixed overhead once it runs, and whether a loaded session memory-maps its weights (pages
become resident only while it computes) or copies them onto its heap (a loaded session holds
all of its weights).

Example (a backend that "executes" a graph stored as an .npy matrix: one MatMul)::

    import numpy as np
    from pathlib import Path
    from edgekit.runtimes.backends import backend_for, register_backend
    from edgekit.runtimes.backends.base import BackendTraits

    class MatMulSession:
        input_names, output_names = ("x",), ("y",)
        def __init__(self, path): self.weight = np.load(path)
        def run(self, feeds, shrink_arena=False): return [feeds["x"] @ self.weight]
        def release(self): self.weight = None

    class MatMulBackend:
        traits = BackendTraits(runtime_overhead_mb=0.0, weights="copy")
        def __init__(self, provider, threads): self.provider = provider
        def load(self, path): return MatMulSession(path)

    register_backend("npy-matmul", ("cpu",), lambda provider, threads, tuned: MatMulBackend(provider, threads))
    np.save("w.npy", np.eye(2, dtype=np.float32))
    session = backend_for("npy-matmul", "cpu").load(Path("w.npy"))
    session.run({"x": np.ones((1, 2), np.float32)})   # [array([[1., 1.]], dtype=float32)]
    session.release()
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

WeightMapping = Literal["mmap", "copy"]


@dataclass(frozen=True)
class BackendTraits:
    """What the planner (runtimes/planner.py) needs to know about a backend.

    runtime_overhead_mb: resident memory the backend adds once it has run a graph, whatever the
        graph (thread pools, kernels, an arena's first chunk); the planner's "runtime" part.
    weights: "mmap" when a session maps its weight files (onnxruntime external data: only the
        computing session's pages are resident, a loaded-but-idle session holds its graph
        structure), "copy" when a loaded session holds a heap copy of all its weights.
    """

    runtime_overhead_mb: float
    weights: WeightMapping

    def __post_init__(self) -> None:
        if self.weights not in ("mmap", "copy"):
            raise ValueError(f"weights must be 'mmap' or 'copy', got {self.weights!r}")
        if self.runtime_overhead_mb < 0:
            raise ValueError(f"runtime_overhead_mb must be >= 0, got {self.runtime_overhead_mb}")


class Session(Protocol):
    """One loaded graph. `run` takes arrays by input name (extra feeds are ignored) and returns
    the outputs in `output_names` order. shrink_arena: after this run, give the memory the run
    grew back to the OS (a hint; a backend without an arena ignores it). `release` frees the
    session now; running a released session is an error."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]: ...

    def release(self) -> None: ...


class Backend(Protocol):
    """Loads graphs of one format for one provider ("cpu", "cuda", "coreml"). `load` raises
    `edgekit.errors.IntegrityError` for a graph it cannot read and
    `ProviderUnavailableError` when the provider cannot run it; it is called from the layer
    stream's prefetch thread, so it must not touch state another load could be using."""

    @property
    def provider(self) -> str: ...

    @property
    def traits(self) -> BackendTraits: ...

    def load(self, path: Path) -> Session: ...
