"""Backends by graph format: `backend_for(format, provider, threads)` is the one way the runtime,
the benchmarks and the exporters' parity checks get something that loads graphs.

Formats: "onnx" (onnxruntime, runtimes/backends/onnxruntime_backend.py; providers cpu, cuda and
coreml, the last being onnxruntime's CoreML execution provider) and "mlpackage" (Core ML itself,
runtimes/backends/coreml_backend.py; provider coreml, macOS only). A backend module is imported
only when its format is asked for, so importing this package imports no runtime library. The
contract every backend keeps is in runtimes/backends/base.py. `choose_format` is how a package
holding several formats (docs/FORMAT.md, "Core ML graphs and mixed packages") is run in one.

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

# (provider, threads, tuned, **options) -> Backend; tuned=False asks for the library's own
# defaults; options are the keyword options the format's entry declares (Core ML: compute_units)
Factory = Callable[..., Backend]


@dataclass(frozen=True)
class _Entry:
    providers: tuple[str, ...]
    factory: Factory
    options: tuple[str, ...] = ()


def _onnxruntime(provider: str, threads: int | None, tuned: bool) -> Backend:
    from edgekit.runtimes.backends.onnxruntime_backend import OrtBackend

    return OrtBackend(provider, threads, tuned)


def _coreml(provider: str, threads: int | None, tuned: bool, compute_units: str | None = None) -> Backend:
    from edgekit.runtimes.backends.coreml_backend import CoreMLBackend

    return CoreMLBackend(provider, compute_units or "all")  # Core ML schedules its own threads


_REGISTRY: dict[str, _Entry] = {"onnx": _Entry(("cpu", "cuda", "coreml"), _onnxruntime),
                                "mlpackage": _Entry(("coreml",), _coreml, ("compute_units",))}


def register_backend(graph_format: str, providers: Sequence[str], factory: Factory,
                     options: Sequence[str] = ()) -> None:
    """Make `backend_for(graph_format, provider, ...)` call `factory` for each of `providers`
    (replaces an earlier registration of the same format). options: the keyword options the
    factory takes besides (provider, threads, tuned)."""
    _REGISTRY[graph_format] = _Entry(tuple(providers), factory, tuple(options))


def unregister_backend(graph_format: str) -> None:
    _REGISTRY.pop(graph_format, None)


def backend_for(graph_format: str = "onnx", provider: str = "cpu", threads: int | None = None, *,
                tuned: bool = True, **options: str | None) -> Backend:
    """The backend for graphs of `graph_format` on `provider` ("cpu", "cuda", "coreml").

    threads: intra-op threads (None: the library's default; Core ML ignores it). tuned=False: the
    library's default session options instead of edgekit's (benchmark baselines: what an app
    gets). options: backend options, None meaning not given (mlpackage: compute_units).
    Raises FormatVersionError for a format no backend reads, InvalidArgumentError for a provider
    the format's backend does not have or an option it does not take, ProviderUnavailableError
    when this machine lacks it (Core ML graphs off macOS), MissingDependencyError when its
    library is not installed.
    """
    entry = _REGISTRY.get(graph_format)
    if entry is None:
        known = ", ".join(sorted(_REGISTRY))
        raise FormatVersionError(f"no backend runs {graph_format!r} graphs (this runtime has: {known}); "
                                 "re-export the package with a format this runtime reads")
    if provider not in entry.providers:
        raise InvalidArgumentError(f"unknown provider {provider!r} for {graph_format} graphs; "
                                   f"choose one of {', '.join(entry.providers)}")
    given = {name: value for name, value in options.items() if value is not None}
    foreign = sorted(set(given) - set(entry.options))
    if foreign:
        takers = sorted(name for name, other in _REGISTRY.items() if foreign[0] in other.options)
        raise InvalidArgumentError(f"{foreign[0]} is an option of {' and '.join(takers) or 'no'} graphs, not of "
                                   f"{graph_format} graphs; leave it out for this package")
    return entry.factory(provider, threads, tuned, **given)


def choose_format(available: Sequence[str], provider: str, requested: str | None = None) -> str:
    """Which of a package's graph formats to run (docs/FORMAT.md, "How a runtime picks the
    format"): `requested` when given (InvalidArgumentError, naming what the package has, when it
    has none); else "mlpackage" for provider "coreml" when the package has Core ML graphs; else
    "onnx" when present; else the one format there is."""
    formats = sorted(set(available))
    if requested is not None:
        if requested not in formats:
            raise InvalidArgumentError(f"the package has no {requested!r} graphs (it has: {', '.join(formats)}); "
                                       f"choose one of those as graph_format, or leave it unset")
        return requested
    if provider == "coreml" and "mlpackage" in formats:
        return "mlpackage"
    if "onnx" in formats:
        return "onnx"
    if formats == ["mlpackage"]:
        raise InvalidArgumentError("the package holds Core ML graphs only; run it with --provider coreml on macOS, "
                                   "or re-export it with --format onnx,coreml to run it here")
    if len(formats) != 1:
        raise InvalidArgumentError(f"the package holds graphs in {', '.join(formats)}; choose one as graph_format")
    return formats[0]


__all__ = ["Backend", "BackendTraits", "Session", "backend_for", "choose_format", "register_backend",
           "unregister_backend"]
