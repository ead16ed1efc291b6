"""Run a converted mlprogram on numpy off macOS: the numeric check of Core ML graphs on Linux.

Core ML's `predict` exists only on macOS, and coremltools' own test helpers skip their
prediction step elsewhere (they pass without checking anything). But most MIL op definitions
carry a numpy `value_inference` (coremltools uses it for constant folding). This module reloads
the saved program (spec + weights, coremltools' milproto loader), gives every function input a
concrete type and value, and re-runs each op's type and value inference in program order: the
ops themselves compute, so what is checked is the program Core ML would run, at any shape
inside the declared flexible ranges. Each op's result is stored in the dtype the program
declares, so an fp16 program rounds to fp16 after every op as the device would; how an op
accumulates inside (numpy's choice) may differ from a given Core ML compute unit.

What it cannot run: ops without value inference (pooling, resize, norms other than layer_norm,
control flow ...; `ops_without_value_inference` lists them) are refused by name with
`UnsupportedOpsError` before anything is computed. `silu`, `conv` and
`upsample_nearest_neighbor` (no value inference in coremltools) are computed in numpy
(mil_numpy_ops.py); palettized and other compressed weights (`constexpr_*`) are
decompressed once at load with the ops' own `materialized_val_inference`.

This is the only module using private coremltools API (`milproto.load`, `Var._sym_type` and
`_sym_val`, `Operation.type_value_inference`): it refuses any coremltools but the pinned
COREMLTOOLS_VERSION. A loaded `MilProgram` is mutated while it runs: one thread at a time.

Example::

    outputs = evaluate("graphs/layer_000.mlpackage", {"hidden_states": hidden, "attention_mask": mask})
    outputs["hidden_states_out"]           # float32, shape [B, S, H]
    ops_without_value_inference(model)   # [] for every stage edgekit exports; else e.g. ["max_pool"]
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, InvalidArgumentError, MissingDependencyError, PackageNotFoundError
from edgekit.exporters.coreml.convert import COREMLTOOLS_VERSION
from edgekit.exporters.coreml.library import import_coremltools
from edgekit.exporters.coreml.mil_numpy_ops import OWN_OPS


class UnsupportedOpsError(EdgekitError):
    """The program has ops the numpy evaluator cannot run; `ops` names their types (sorted)."""

    def __init__(self, ops: list[str]) -> None:
        super().__init__(f"the Core ML evaluator cannot run op(s) {', '.join(ops)} (no numpy value inference); "
                         "check this graph on a Mac (predict) or against its ONNX twin")
        self.ops = ops


def _mil() -> tuple[Any, Any, Any]:
    """(milproto loader, MIL types, Operation) of the pinned coremltools, or a one-line error."""
    ct = import_coremltools()
    if ct.__version__ != COREMLTOOLS_VERSION:
        raise MissingDependencyError(f"the Core ML evaluator uses private coremltools API checked against "
                                     f"{COREMLTOOLS_VERSION}; this is {ct.__version__}: "
                                     f"pip install 'coremltools=={COREMLTOOLS_VERSION}'")
    from coremltools.converters.mil.frontend.milproto import load as milproto
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.operation import Operation

    return milproto, types, Operation


def _runnable(op: Any, operation_class: Any) -> bool:
    if op.blocks:  # control flow: value inference cannot run a nested block
        return False
    if op.op_type == "const" or op.op_type in OWN_OPS:
        return True
    if op.op_type.startswith("constexpr_"):
        return callable(getattr(op, "materialized_val_inference", None))
    return type(op).value_inference is not operation_class.value_inference


def _set_value(types: Any, var: Any, value: Any) -> None:
    """Give `var` the concrete type of `value` (its own dtype kept) and `value` itself."""
    value = np.asarray(value)
    var._sym_type = types.tensor(var.dtype, value.shape) if value.ndim else var.dtype
    holder = var._sym_type()
    holder.val = value if value.ndim else value.astype(types.nptype_from_builtin(var.dtype))[()]
    var._sym_val = holder


class MilProgram:
    """The `main` function of a saved mlprogram, loaded for evaluation.

    `inputs`: name -> (declared dims, a symbolic dim as (lower, upper) with upper -1 for
    unbounded, integer dtype?); `outputs`: output names in program order; `unsupported`:
    sorted op types it cannot run."""

    def __init__(self, model_or_path: Any) -> None:
        milproto, self._types, operation_class = _mil()
        model = self._model(model_or_path)
        spec = model.get_spec()
        if spec.WhichOneof("Type") != "mlProgram":
            raise InvalidArgumentError("the Core ML evaluator runs mlprogram models; this one is "
                                       f"{spec.WhichOneof('Type')}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = milproto.load(spec, spec.specificationVersion, model.weights_dir or "")
        self._function = program.functions["main"]
        self.unsupported = sorted({op.op_type for op in self._function.operations
                                   if not _runnable(op, operation_class)})
        self.inputs = {feature.name: self._declared(feature, self._function.inputs[feature.name])
                       for feature in spec.description.input}
        self._input_types = {name: var._sym_type for name, var in self._function.inputs.items()}
        self.outputs = [var.name for var in self._function.outputs]
        self._ops = [op for op in self._function.operations if op.op_type != "const"]
        self._prepared = False

    @staticmethod
    def _model(model_or_path: Any) -> Any:
        if not isinstance(model_or_path, (str, Path)):
            return model_or_path
        path = Path(model_or_path)
        if not path.is_dir():
            raise PackageNotFoundError(f"{path}: no .mlpackage there; export the Core ML graph first")
        ct = import_coremltools()
        return ct.models.MLModel(str(path), skip_model_load=True)  # loading compiles: macOS only

    def _declared(self, feature: Any, var: Any) -> tuple[tuple[Any, ...], bool]:
        ranges = list(feature.type.multiArrayType.shapeRange.sizeRanges)
        dims: list[Any] = []
        for axis, dim in enumerate(var.shape):
            if isinstance(dim, (int, np.integer)):
                dims.append(int(dim))
            elif axis < len(ranges):
                dims.append((int(ranges[axis].lowerBound), int(ranges[axis].upperBound)))
            else:
                dims.append((1, -1))
        return tuple(dims), bool(self._types.is_int(var.dtype))

    def _prepare_constants(self) -> None:
        """Decompress `constexpr_*` weights once; 0-d bool constants become Python bools (numpy 2
        refuses numpy bools as `keepdims`, which coremltools' reductions pass through)."""
        if self._prepared:
            return
        self._prepared = True
        for op in self._function.operations:
            if op.op_type == "const":
                value = op.outputs[0].sym_val
                if isinstance(value, (np.bool_, np.ndarray)) and np.ndim(value) == 0 and value.dtype == np.bool_:
                    op.outputs[0]._sym_val.val = bool(value)
            elif op.op_type.startswith("constexpr_") and op.op_type not in self.unsupported:
                values = op.materialized_val_inference()
                for var, value in zip(op.outputs, values if isinstance(values, tuple) else (values,)):
                    _set_value(self._types, var, value)
        self._ops = [op for op in self._ops if not op.op_type.startswith("constexpr_")]

    def compressed_weights(self) -> dict[str, np.ndarray]:
        """The dense values the program computes with in place of its compressed weights (each
        `constexpr_*` op's output by name; {} when none): e.g. the palettized weights, to put
        into the torch module a palettized graph is compared with."""
        self._prepare_constants()
        return {var.name: np.asarray(var.val) for op in self._function.operations
                if op.op_type.startswith("constexpr_") and op.op_type not in self.unsupported for var in op.outputs}

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing, unknown = sorted(set(self.inputs) - set(feeds)), sorted(set(feeds) - set(self.inputs))
        if missing or unknown:
            raise InvalidArgumentError(f"feeds must be exactly {sorted(self.inputs)}; missing {missing}, "
                                       f"unknown {unknown}")
        for name, (dims, integer) in self.inputs.items():
            value = np.asarray(feeds[name])
            fits = value.ndim == len(dims) and all(
                size == dim if isinstance(dim, int) else dim[0] <= size and (dim[1] < 0 or size <= dim[1])
                for size, dim in zip(value.shape, dims))
            if not fits:
                raise InvalidArgumentError(f"input {name}: shape {value.shape} is outside the declared {dims} "
                                           "((lower, upper) for a flexible dim, -1 unbounded)")
            if integer and not np.issubdtype(value.dtype, np.integer):
                raise InvalidArgumentError(f"input {name} is an integer input; got {value.dtype}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name (float32) for `feeds` (every input by name, any shape inside the
        declared ranges). UnsupportedOpsError before computing anything when an op cannot run;
        InvalidArgumentError for wrong feed names or shapes."""
        if self.unsupported:
            raise UnsupportedOpsError(self.unsupported)
        self._check_feeds(feeds)
        self._prepare_constants()
        types = self._types
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # fp16 overflow to inf is the program's own behaviour
                previous = logging.root.manager.disable
                logging.disable(logging.WARNING)  # "might lose precision": storing at the declared dtype is the point
                try:
                    for name, var in self._function.inputs.items():
                        var._sym_type = self._input_types[name]
                        _set_value(types, var, np.asarray(feeds[name]).astype(types.nptype_from_builtin(var.dtype)))
                    for op in self._ops:
                        self._run_op(op)
                finally:
                    logging.disable(previous)
            return {var.name: np.asarray(var.val, dtype=np.float32) for var in self._function.outputs}
        finally:
            for op in self._ops:  # drop the activations; constants stay
                for var in op.outputs:
                    var._sym_val = None
            for name, var in self._function.inputs.items():
                var._sym_type, var._sym_val = self._input_types[name], None

    def _run_op(self, op: Any) -> None:
        if op.op_type in OWN_OPS:
            result = np.asarray(OWN_OPS[op.op_type](op))
            _set_value(self._types, op.outputs[0], result.astype(self._types.nptype_from_builtin(op.outputs[0].dtype)))
            return
        op.type_value_inference(overwrite_output=True)
        for var in op.outputs:
            if var.val is None:
                raise UnsupportedOpsError([f"{op.op_type} (value inference gave no value for {op.name})"])
            if np.shape(var.val) != tuple(var.shape):
                # type inference ran on the types the converter recorded (a `select` broadcasting a
                # flexible dim against 1 keeps 1); the value is what the op computes: retype to it
                _set_value(self._types, var, var.val)


def evaluate(model_or_path: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a saved mlprogram (an `MLModel` or an .mlpackage path) on numpy `feeds`; outputs by
    name as float32. See MilProgram.run for the errors."""
    return MilProgram(model_or_path).run(feeds)


def ops_without_value_inference(model_or_path: Any) -> list[str]:
    """Sorted op types of the program that the evaluator cannot run ([] when it runs them all)."""
    return MilProgram(model_or_path).unsupported
