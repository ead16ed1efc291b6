"""Write one torch module as one ONNX graph and describe it as a manifest GraphSpec.

Uses torch.onnx's TorchScript-based exporter (dynamo=False): on these machines it exports a
BERT layer in ~0.06 s against ~3 s for dynamo, with the same ORT parity (FIELD-NOTES.md).

Weights go to an external data file beside the graph (`<name>.onnx.data`, every tensor of 1 KiB
or more): onnxruntime memory-maps external data instead of copying it onto its heap, so a
streamed session's weights are file-backed pages that leave memory when the session is
released. Measured on the Qwen3-0.6B-shaped package (window 2, 8 x 128 tokens): peak RSS
383 -> 223 MiB together with `session.disable_prepacking`
(runtimes/backends/onnxruntime_backend.py). The GraphSpec lists the .onnx file first, then its
data file. onnx creates the data file with mode 0600 (as safetensors does its files);
`edgekit.atomic.settle` gives every file of the staged package plain permissions (0644 under
the usual umask) before it is moved into place.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch

from edgekit.manifest import FileEntry, GraphSpec, TensorSpec

OPSET = 17
DYNAMO_OPSET = 18  # the lowest opset torch.onnx's dynamo exporter writes without a version conversion
EXTERNAL_DATA_MIN_BYTES = 1024

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}


def tensor_specs(values: list[onnx.ValueInfoProto]) -> tuple[TensorSpec, ...]:
    """The manifest's [{name, dtype, shape}] of graph inputs or outputs."""
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dims: list[int | str] = [dim.dim_param or dim.dim_value for dim in tensor.shape.dim]
        specs.append(TensorSpec(name=value.name, dtype=_ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)),
                                shape=tuple(dims)))
    return tuple(specs)


def export_graph(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    root: Path,
    relative_file: str,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
    name: str,
    role: str,
    index: int | None = None,
    dynamo: bool = False,
) -> GraphSpec:
    """Export `module` to `root/relative_file` and return its GraphSpec (hashes included).

    dynamo: use torch.onnx's dynamo exporter (opset 18) instead of the TorchScript one. Slower,
    but it exports what the TorchScript exporter cannot (Wan's rms_norm and causal-conv
    upsampling, FIELD-NOTES.md); `dynamic_axes` names the same dynamic dimensions either way."""
    path = root / relative_file
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module.eval(), example_inputs, str(path), input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, opset_version=DYNAMO_OPSET,
                              dynamo=True, external_data=True, verbose=False)
        else:
            torch.onnx.export(
                module.eval(),
                example_inputs,
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
    model = onnx.load(str(path))
    stray = path.with_name(path.name + ".data")  # the dynamo exporter's own data file, rewritten below
    if stray.is_file():
        stray.unlink()
    data_file = f"{relative_file}.data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=Path(data_file).name, size_threshold=EXTERNAL_DATA_MIN_BYTES)
    files = [FileEntry.of(root, relative_file)]
    if (root / data_file).is_file():  # graphs without large tensors (e.g. an identity) have none
        files.append(FileEntry.of(root, data_file))
    return GraphSpec(
        name=name,
        role=role,
        index=index,
        format="onnx",
        path=relative_file,
        files=tuple(files),
        inputs=tensor_specs(list(model.graph.input)),
        outputs=tensor_specs(list(model.graph.output)),
    )
