"""Core ML backend (graph format "mlpackage", provider "coreml"): one `coremltools.models.MLModel`
per graph, in the spirit of Apple's `ManagedMLModel` (load / perform / unload). Implements the
contract in runtimes/backends/base.py; get one through
`edgekit.runtimes.backends.backend_for("mlpackage", "coreml", compute_units="cpu_and_ne")`.

Core ML runs only on macOS. Anywhere else, creating the backend is a ProviderUnavailableError in
one line that names the fix (the package's ONNX graphs with `--provider cpu`), never a fallback,
and it is raised before coremltools is imported: coremltools probes for torch when imported, and
the runtime side never imports torch (tests/test_runtime_without_torch.py). This module itself
imports no coremltools, so it can be imported (and tested) anywhere.

Each graph is compiled once per backend (`coremltools.utils.compile_model` into a temporary
.mlmodelc, removed when the backend is) and loaded as a `CompiledMLModel`: an `MLModel` built from
the .mlpackage would compile it again on every load, and the layer stream loads every graph once
per query. A session feeds each input cast to the type the model's spec declares (the runtime
makes int64 ids and masks and float32 hidden states; edgekit's converted programs take int32 and
float32) after checking its shape against the spec's flexible ranges (a chunk over the batch
bound is one line, not a Core ML exception), and returns every output as float32, in the spec's
output order, which is what the rest of the runtime consumes. Nothing here has run on a Mac yet: tests/test_coreml_runtime.py checks
the wiring against a stand-in coremltools.

Example (macOS, `pip install 'edgekit[coreml]'`)::

    backend = backend_for("mlpackage", "coreml", compute_units="cpu_and_ne")
    session = backend.load(Path("pkg/graphs/layer_000_coreml.mlpackage"))
    hidden, = session.run({"hidden_states": hidden, "attention_mask": mask})   # float32
    session.release()
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgekit.errors import (
    IntegrityError,
    InvalidArgumentError,
    MissingDependencyError,
    ProviderUnavailableError,
)
from edgekit.runtimes.backends.base import BackendTraits
from edgekit.runtimes.planner import RUNTIME_OVERHEAD_MB

COMPUTE_UNITS = ("all", "cpu_and_ne", "cpu_only", "cpu_and_gpu")  # coremltools.ComputeUnit, lower-cased

# Core ML's ArrayFeatureType.ArrayDataType numbers (FeatureTypes.proto) -> what a feed is cast to.
# Any other type (INT8, an image, a dictionary) is refused when the graph is loaded: the runtime
# feeds hidden states, masks and biases, none of which fits one.
ARRAY_DTYPES: dict[int, np.dtype] = {
    65568: np.dtype(np.float32),   # FLOAT32
    65552: np.dtype(np.float16),   # FLOAT16
    65600: np.dtype(np.float64),   # DOUBLE
    131104: np.dtype(np.int32),    # INT32
}

NOT_MACOS = ("Core ML graphs need macOS (this machine runs {system}); run the package's ONNX graphs with "
             "--provider cpu, or export with --format onnx or onnx,coreml")

# A loaded MLModel holds its weights on its own heap (a compiled copy), so the planner counts a
# loaded graph's whole bytes. The fixed overhead is onnxruntime's figure as a placeholder: Core ML's
# has not been measured (no Mac on these machines).
TRAITS = BackendTraits(runtime_overhead_mb=RUNTIME_OVERHEAD_MB, weights="copy")


def import_coremltools() -> ModuleType:
    """coremltools, on macOS only (the caller checked); MissingDependencyError when absent."""
    try:
        import coremltools
    except ImportError:
        raise MissingDependencyError("running Core ML graphs needs coremltools; pip install 'edgekit[coreml]'") from None
    return coremltools


def _array_dtypes(features: Any, path: Path, kind: str) -> dict[str, np.dtype]:
    """Name -> numpy dtype of each of the spec's `features` (spec.description.input or .output),
    in the spec's order; IntegrityError for a feature that is not a multi-array of a known type."""
    found: dict[str, np.dtype] = {}
    for feature in features:
        data_type = feature.type.multiArrayType.dataType if feature.type.WhichOneof("Type") == "multiArrayType" else None
        if data_type not in ARRAY_DTYPES:
            raise IntegrityError(f"Core ML graph {path.name} has {kind} {str(feature.name)[:60]!r} that is not a "
                                 "float or int32 multi-array; re-export the package", [path.name])
        found[feature.name] = ARRAY_DTYPES[data_type]
    return found


def _shape_ranges(features: Any) -> dict[str, list[tuple[int, int]]]:
    """Name -> per-dim (lower, upper) of each flexible input (upper -1: unbounded); inputs without
    declared ranges are left out (Core ML checks those itself)."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for feature in features:
        declared = getattr(getattr(feature.type.multiArrayType, "shapeRange", None), "sizeRanges", None)
        if declared:
            ranges[feature.name] = [(int(size.lowerBound), int(size.upperBound)) for size in declared]
    return ranges


class CoreMLSession:
    """A loaded Core ML graph. `run` checks and casts feeds to the spec's input shapes and types,
    predicts, and returns the outputs as float32 arrays in `output_names` order; `release` drops
    the model now. spec: the model's spec (a CompiledMLModel has none to read)."""

    def __init__(self, model: Any, path: Path, spec: Any = None) -> None:
        self._model: Any | None = model
        self.path = path
        description = (spec or model.get_spec()).description
        self._ranges = _shape_ranges(description.input)
        self._input_dtypes = _array_dtypes(description.input, path, "input")
        self.input_names = tuple(self._input_dtypes)
        self.output_names = tuple(_array_dtypes(description.output, path, "output"))

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
        """Predict on `feeds` (extra feeds ignored; shrink_arena ignored: Core ML has no arena we
        control). An int64 feed for an int32 input must fit int32 (ids and masks do)."""
        if self._model is None:
            raise RuntimeError(f"session for {self.path} was already released")
        inputs = {}
        for name, dtype in self._input_dtypes.items():
            value = np.asarray(feeds[name])
            self._check_shape(name, value.shape)
            if value.dtype.kind in "iu" and dtype.kind == "i" and value.size and \
                    (value.min() < np.iinfo(dtype).min or value.max() > np.iinfo(dtype).max):
                raise ValueError(f"feed {name!r} holds values outside {dtype} (the Core ML graph's input type)")
            inputs[name] = np.ascontiguousarray(value, dtype=dtype)
        outputs = self._model.predict(inputs)
        return [np.asarray(outputs[name], dtype=np.float32) for name in self.output_names]

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        ranges = self._ranges.get(name)
        if ranges is None:
            return
        if len(shape) != len(ranges) or any(size < low or (high >= 0 and size > high)
                                            for size, (low, high) in zip(shape, ranges)):
            declared = ", ".join(f"{low}..{high}" if high != low else str(low) for low, high in ranges)
            raise InvalidArgumentError(f"Core ML graph {self.path.name} takes {name} of shape ({declared}), got "
                                       f"{tuple(shape)}; run with a smaller --chunk (the first dim) or shorter "
                                       "input, or re-export")

    def release(self) -> None:
        self._model = None


class CompiledGraphs:
    """.mlpackage -> its compiled .mlmodelc, once per graph, in a temporary folder that lives as
    long as this object (thread-safe: the layer stream loads from its prefetch thread)."""

    def __init__(self, coremltools: ModuleType) -> None:
        self._coremltools = coremltools
        self._folder = Path(tempfile.mkdtemp(prefix="edgekit-coreml-"))
        self._compiled: dict[Path, Path] = {}
        self._lock = threading.Lock()
        self.compilations = 0
        weakref.finalize(self, shutil.rmtree, self._folder, True)

    def compiled(self, package: Path) -> Path:
        key = package.resolve()
        with self._lock:
            found = self._compiled.get(key)
            if found is None:
                destination = self._folder / f"{len(self._compiled):04d}_{package.stem}.mlmodelc"
                found = Path(self._coremltools.utils.compile_model(str(package), str(destination)))
                self._compiled[key] = found
                self.compilations += 1
            return found


@dataclass(frozen=True)
class CoreMLBackend:
    """Loads .mlpackage graphs with Core ML on `compute_units` (one of COMPUTE_UNITS; "all" lets
    Core ML choose among CPU, GPU and Neural Engine). Raises, when created, ProviderUnavailableError
    off macOS and MissingDependencyError without coremltools."""

    provider: str = "coreml"
    compute_units: str = "all"
    _coremltools: ModuleType | None = field(default=None, repr=False, compare=False)
    _graphs: CompiledGraphs | None = field(default=None, repr=False, compare=False)

    @property
    def traits(self) -> BackendTraits:
        return TRAITS

    def __post_init__(self) -> None:
        system = platform.system()
        if system != "Darwin":  # first, and before coremltools is imported: it probes for torch on import
            raise ProviderUnavailableError(NOT_MACOS.format(system=system or "an unknown OS"))
        if self.provider != "coreml":
            raise InvalidArgumentError(f"Core ML graphs run on provider 'coreml', not {self.provider!r}")
        if self.compute_units not in COMPUTE_UNITS:
            raise InvalidArgumentError(f"compute units {str(self.compute_units)[:40]!r} is not one of "
                                       f"{', '.join(COMPUTE_UNITS)}")
        coremltools = import_coremltools()
        object.__setattr__(self, "_coremltools", coremltools)
        object.__setattr__(self, "_graphs", CompiledGraphs(coremltools))

    def load(self, path: Path) -> CoreMLSession:
        coremltools, graphs = self._coremltools, self._graphs
        assert coremltools is not None and graphs is not None  # set in __post_init__
        units = getattr(coremltools.ComputeUnit, self.compute_units.upper())
        try:
            spec = coremltools.utils.load_spec(str(path))
            model = coremltools.models.CompiledMLModel(str(graphs.compiled(Path(path))), compute_units=units)
        except Exception as error:  # coremltools and Core ML raise their own types for unreadable models
            raise IntegrityError(
                f"Core ML cannot load {path.name} ({(str(error).splitlines() or [type(error).__name__])[0][:160]}); "
                "Core ML graphs need macOS 14 or later (they target iOS17); on one, run `edgekit verify` and "
                "re-export the package", [path.name]
            ) from None
        return CoreMLSession(model, path, spec)
