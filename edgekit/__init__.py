"""edgekit: export rerankers and video diffusion models as streamed edge packages, and run them.

The runtime API imports no torch::

    import edgekit
    selector = edgekit.load("pkg", window=2, chunk=None, provider="cpu")
    for result in selector.rank("query", ["candidate a", "candidate b"], top_k=1):
        print(result.index, result.score, result.text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from edgekit.runtimes.selector import Selector


def load(directory: str, window: int | None = None, chunk: int | None = None, provider: str = "cpu",
         threads: int | None = None, memory_budget_mb: float | None = None) -> Selector:
    """Open an edge package for ranking.

    window: graphs resident at once (>= 1; None: 2 = one computing, one loading).
    chunk: candidates per run inside a graph (None: the default, 16).
    provider: "cpu", "cuda" (onnxruntime-gpu) or "coreml" (macOS); unavailable is an error.
    memory_budget_mb: let the planner choose window and chunk per call so the process's
    estimated peak stays within this many MiB (MemoryBudgetError when no plan fits); the
    chosen plan is in `ranking.stats.plan`. Not combinable with window/chunk.
    """
    from edgekit.manifest import Manifest
    from edgekit.runtimes.backend import OrtBackend
    from edgekit.runtimes.selector import Selector

    return Selector(Manifest.load(directory), OrtBackend(provider, threads), window=window, chunk=chunk,
                    memory_budget_mb=memory_budget_mb)


__all__ = ["__version__", "load"]
