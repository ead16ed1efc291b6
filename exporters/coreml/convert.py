"""One torch stage -> one Core ML mlprogram, with the ONNX graph's names and flexible dims.

The stage is traced with `torch.jit.trace` on the example the ONNX exporter used and converted
by coremltools' torch frontend (it has no ONNX frontend). Every symbolic dim of the ONNX graph's
inputs becomes a `RangeDim`: "batch" up to `MAX_BATCH`, "sequence" up to the package's
max_length, a `*_pixels` dim (an operator group's tokens: latent height x width) up to
`MAX_PIXEL_TOKENS`, any other (frames, latent or pixel sides) up to `MAX_OTHER_DIM` (an mlprogram
refuses unbounded ranges); fixed dims stay fixed. Inputs and outputs
stay float32 (int32 for integer inputs: Core ML has no int64 features) whatever the compute
precision, as Apple's converter keeps chunk boundaries in fp32 so chained graphs do not round
twice. Palettization (kmeans, per tensor, coremltools' `palettize_weights`) runs after conversion.

Example::

    model = convert_stage(layer, (hidden, mask), onnx_spec.inputs, ["hidden_states_out"],
                          {"sequence": 128}, precision="fp16", palettize=None)
    model.save("graphs/layer_000_coreml.mlpackage")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from edgekit.errors import SourceModelError
from edgekit.exporters.coreml.group_norm import with_flexible_group_norms
from edgekit.exporters.coreml.library import import_coremltools, quiet
from edgekit.exporters.coreml.options import DEPLOYMENT_TARGET
from edgekit.manifest import TensorSpec

COREMLTOOLS_VERSION = "9.0"  # the version mil_eval.py's private API was checked against (pyproject pins it)
MAX_BATCH = 256  # candidates (or frames) per predict call; the runtime's chunk must stay under it
MAX_OTHER_DIM = 4096  # frames x batch, latent or pixel sides of a video stage
MAX_PIXEL_TOKENS = 256 * 256  # latent positions of one frame: SVD at 1024x576 has 128 x 72 = 9216
PALETTE_MIN_ELEMENTS = 512  # smaller tensors (biases, norms) stay unpalettized: a LUT would not pay


def _dim(ct: Any, dim: int | str, example: int, bounds: Mapping[str, int]) -> Any:
    if isinstance(dim, int):
        return dim
    default = MAX_PIXEL_TOKENS if dim.endswith("_pixels") else MAX_OTHER_DIM
    upper = MAX_BATCH if dim == "batch" else bounds.get(dim, default)
    return ct.RangeDim(lower_bound=1, upper_bound=max(upper, example), default=example)


def core_ml_inputs(ct: Any, specs: Sequence[TensorSpec], example: Sequence[torch.Tensor],
                   bounds: Mapping[str, int]) -> list[Any]:
    """The converter's input types: names and dims from the ONNX graph's inputs, dtypes float32 or int32."""
    inputs = []
    for spec, value in zip(specs, example):
        shape = tuple(_dim(ct, dim, int(size), bounds) for dim, size in zip(spec.shape, value.shape))
        dtype = np.float32 if value.is_floating_point() else np.int32
        inputs.append(ct.TensorType(name=spec.name, shape=ct.Shape(shape), dtype=dtype))
    return inputs


class _Int32Inputs(torch.nn.Module):
    """Integer inputs reach the traced module as int64, as in the ONNX graph (Core ML feeds int32).
    An output that is the same tensor as an earlier one (a UNet down block returns its last
    residual as both `hidden_states_out` and `skip_03`) is returned as `x + 0 * x`: coremltools
    names one value once and would drop the first name, and it folds a clone or `x * 1` away (the
    extra multiply-add is the price of keeping the ONNX graph's outputs)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: torch.Tensor) -> Any:
        outputs = self.module(*(arg if arg.is_floating_point() else arg.long() for arg in args))
        if not isinstance(outputs, (tuple, list)):
            return outputs
        seen: set[int] = set()
        distinct = []
        for output in outputs:
            distinct.append(output + 0.0 * output if id(output) in seen else output)
            seen.add(id(output))
        return tuple(distinct)


def _broadcast_to(context: Any, node: Any) -> None:
    """torch.broadcast_to (diffusers' temporal blocks) is torch.expand without `implicit`."""
    from coremltools.converters.mil.frontend.torch import ops

    ops.expand(context, node)


def register_missing_ops() -> None:
    """Teach coremltools' torch frontend the aten ops our stages use that 9.0 lacks, through its
    public `register_torch_op` (once per process)."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        _TORCH_OPS_REGISTRY,
        register_torch_op,
    )

    if "broadcast_to" not in _TORCH_OPS_REGISTRY.name_to_func_mapping:
        _broadcast_to.__name__ = "broadcast_to"
        register_torch_op(_broadcast_to)


def convert_stage(module: torch.nn.Module, example: Sequence[torch.Tensor], inputs: Sequence[TensorSpec],
                  output_names: Sequence[str], bounds: Mapping[str, int], precision: str = "fp16",
                  palettize: int | None = None) -> Any:
    """Convert `module` (fp32, eval) to an mlprogram `ct.models.MLModel`.

    example: the stage's example inputs (fp32 / int64), in `inputs` order; inputs: the ONNX
    graph's input specs (names and symbolic dims); bounds: upper bounds of symbolic dims by name
    ({"sequence": max_length}). Raises SourceModelError (one line) when coremltools cannot convert
    an op of the stage."""
    ct = import_coremltools()
    register_missing_ops()
    module = with_flexible_group_norms(module)
    traced_example = tuple(value if value.is_floating_point() else value.to(torch.int32) for value in example)
    wrapped = _Int32Inputs(module).eval()
    with quiet(), torch.no_grad():
        try:
            traced = torch.jit.trace(wrapped, traced_example, check_trace=False)
            model = ct.convert(
                traced,
                inputs=core_ml_inputs(ct, inputs, example, bounds),
                outputs=[ct.TensorType(name=name, dtype=np.float32) for name in output_names],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
                skip_model_load=True,  # loading compiles the model: macOS only
            )
        except (RuntimeError, ValueError, NotImplementedError, TypeError, AssertionError, KeyError) as error:
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise SourceModelError(f"coremltools could not convert this stage ({first}); "
                                   "export it with --format onnx") from None
        if palettize is not None:
            model = palettize_model(ct, model, palettize)
    return model


def palettize_model(ct: Any, model: Any, bits: int) -> Any:
    """Every weight of at least PALETTE_MIN_ELEMENTS elements as a 2**bits-entry lookup table
    (k-means per tensor; needs scikit-learn, part of the coreml extra)."""
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig, palettize_weights

    config = OptimizationConfig(global_config=OpPalettizerConfig(mode="kmeans", nbits=bits,
                                                                 weight_threshold=PALETTE_MIN_ELEMENTS))
    return palettize_weights(model, config)
