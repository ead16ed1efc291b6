"""Backends by graph format: `backend_for(format, provider, threads)` is the one way the runtime,
the benchmarks and the exporters' parity checks get something that loads graphs.

Formats: "onnx" (onnxruntime, runtimes/backends/onnxruntime_backend.py). "mlpackage" (Core ML)
is reserved for the v2 manifest's graph entries and has no backend yet. A backend module is
imported only when its format is asked for, so importing this package imports no runtime
library. The contract every backend keeps is in runtimes/backends/base.py.

Example::

    backend = backend_for("onnx", "cpu", threads=2)
    session = backend.load(Path("pkg/graphs/layer_00.onnx"))
    outputs = session.run({"hidden_states": hidden, "attention_mask": mask})
    session.release()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edgekit.errors import FormatVersionError, InvalidArgumentError
from edgekit.runtimes.backends.base import Backend, BackendTraits, Session

# (provider, threads, tuned) -> Backend; tuned=False asks for the library's own defaults
Factory = Callable[[str, int | None, bool], Backend]


@dataclass(frozen=True)
class _Entry:
    providers: tuple[str, ...]
    factory: Factory


def _onnxruntime(provider: str, threads: int | None, tuned: bool) -> Backend:
    from edgekit.runtimes.backends.onnxruntime_backend import OrtBackend

    return OrtBackend(provider, threads, tuned)


_REGISTRY: dict[str, _Entry] = {"onnx": _Entry(("cpu", "cuda", "coreml"), _onnxruntime)}
_RESERVED = {"mlpackage": "Core ML graphs have no backend in this runtime yet; export ONNX graphs (`edgekit export`)"}


def register_backend(graph_format: str, providers: Sequence[str], factory: Factory) -> None:
    """Make `backend_for(graph_format, provider, ...)` call `factory` for each of `providers`
    (replaces an earlier registration of the same format)."""
    _REGISTRY[graph_format] = _Entry(tuple(providers), factory)


def unregister_backend(graph_format: str) -> None:
    _REGISTRY.pop(graph_format, None)


def backend_for(graph_format: str = "onnx", provider: str = "cpu", threads: int | None = None, *,
                tuned: bool = True) -> Backend:
    """The backend for graphs of `graph_format` on `provider` ("cpu", "cuda", "coreml").

    threads: intra-op threads (None: the library's default). tuned=False: the library's default
    session options instead of edgekit's (benchmark baselines: what an app gets).
    Raises FormatVersionError for a format no backend reads, InvalidArgumentError for a provider
    the format's backend does not have, ProviderUnavailableError when this machine lacks it.
    """
    entry = _REGISTRY.get(graph_format)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        fix = _RESERVED.get(graph_format, "re-export the package with a format this runtime reads")
        raise FormatVersionError(f"no backend runs {graph_format!r} graphs (this runtime has: {known}); {fix}")
    if provider not in entry.providers:
        raise InvalidArgumentError(f"unknown provider {provider!r} for {graph_format} graphs; "
                                   f"choose one of {', '.join(entry.providers)}")
    return entry.factory(provider, threads, tuned)


__all__ = ["Backend", "BackendTraits", "Session", "backend_for", "register_backend", "unregister_backend"]
