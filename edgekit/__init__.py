"""edgekit: export rerankers and video diffusion models as streamed edge packages, and run them.

The runtime API imports no torch::

    import edgekit
    selector = edgekit.load("pkg", window=2, chunk=None, provider="cpu")
    for result in selector.rank("query", ["candidate a", "candidate b"], top_k=1):
        print(result.index, result.score, result.text)

    video = edgekit.load("svd-pkg")            # a video package gives a VideoPipeline
    frames = video.generate("in.png", num_frames=4, steps=2, seed=0)   # [F, H, W, 3] in [0, 1]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"


def _check_layout() -> None:
    """edgekit/exporters, edgekit/runtimes and edgekit/models are symlinks to the top-level folders
    in a checkout; a checkout made without symlink support turns them into small text files."""
    from pathlib import Path

    here = Path(__file__).parent
    broken = [name for name in ("exporters", "runtimes", "models") if not (here / name).is_dir()]
    if broken:
        raise ImportError(f"edgekit/{broken[0]} is not a directory: this checkout lost its symlinks (edgekit/"
                          f"{broken[0]} -> ../{broken[0]}); clone again with symlinks enabled (git config "
                          "core.symlinks true; on Windows, developer mode) or install the wheel")


_check_layout()

if TYPE_CHECKING:
    from pathlib import Path

    from edgekit.runtimes.selector import Selector
    from edgekit.runtimes.video import VideoPipeline


def load(directory: str, window: int | None = None, chunk: int | None = None, provider: str = "cpu",
         threads: int | None = None, memory_budget_mb: float | None = None,
         verify: bool = True, public_key: str | Path | None = None, graph_format: str | None = None,
         compute_units: str | None = None) -> Selector | VideoPipeline:
    """Open an edge package: a Selector for ranking packages, a VideoPipeline for video ones.

    window: graphs resident at once (>= 1; None: 2 = one computing, one loading).
    chunk: candidates per run inside a graph (None: the default, 16).
    provider: "cpu", "cuda" (onnxruntime-gpu) or "coreml" (macOS); unavailable is an error, never a
    fallback. With "coreml", a package holding Core ML graphs runs them (Core ML itself); an
    ONNX-only package runs through onnxruntime's CoreML execution provider.
    graph_format: which of the package's graph formats to run ("onnx", "mlpackage"); None picks
    one (runtimes/backends `choose_format`: Core ML graphs for provider "coreml" when present,
    else ONNX). A package holding several formats (`--format onnx,coreml`) runs one of them.
    compute_units: Core ML graphs only: "all" (default), "cpu_and_ne", "cpu_only" or
    "cpu_and_gpu"; None takes the package's `exporter.coreml.compute_units` when recorded.
    memory_budget_mb: let the planner choose window and chunk per call so the process's
    estimated peak stays within this many MiB (MemoryBudgetError when no plan fits); the
    chosen plan is in `ranking.stats.plan`. Not combinable with window/chunk.
    verify: check the sha256 of every file the run reads (the chosen format's graphs and the shared
    files) before the first session (hashes are remembered per file identity, so a repeated load of
    an unchanged package only stats its files; edgekit/hash_cache.py); False skips it. Containment,
    presence and sizes of every listed file and the manifest's digest are always checked;
    `edgekit verify` hashes every format's files.
    Video packages take window, provider and threads (chunk and memory_budget_mb are ranking
    options; the decode chunk is a `generate` argument).
    public_key: a PEM public key; the package must carry a signature by its private half covering
    every file unchanged (edgekit.signing), checked before the manifest is read (the `sign` extra).
    """
    if public_key is not None:
        from edgekit.signing import verify_signature

        verify_signature(directory, public_key)
    from edgekit.errors import InvalidArgumentError
    from edgekit.manifest import Manifest
    from edgekit.runtimes.backends import backend_for, choose_format

    package = Manifest.load(directory)
    chosen = choose_format(package.graph_formats, provider, graph_format)
    if chosen == "mlpackage" and compute_units is None:
        recorded = package.exporter.get("coreml")
        compute_units = recorded.get("compute_units") if isinstance(recorded, dict) else None
        compute_units = compute_units if isinstance(compute_units, str) else None  # informational record: as written
    # the format and the provider pick the backend; before hashing, so an unusable provider fails at once
    backend = backend_for(chosen, provider, threads, compute_units=compute_units)
    manifest = package.for_format(chosen)  # the graphs this backend runs, with the shared files
    if verify:
        from edgekit.hash_cache import verify_cached

        verify_cached(manifest.root, manifest.files())
    if manifest.task == "video":
        from edgekit.runtimes.video import VideoPipeline

        if chunk is not None or memory_budget_mb is not None:
            raise InvalidArgumentError("chunk and memory_budget_mb are ranking options; for a video package "
                                       "pass decode_chunk to generate()")
        return VideoPipeline(manifest, backend, window=window)
    from edgekit.runtimes.selector import Selector

    return Selector(manifest, backend, window=window, chunk=chunk,
                    memory_budget_mb=memory_budget_mb)


__all__ = ["__version__", "load"]
