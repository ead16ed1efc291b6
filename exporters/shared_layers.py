"""`edgekit export --shared-layers`: rewrite a staged ranking package so every layer runs ONE
shared graph whose per-layer tensors are graph inputs (docs/FORMAT.md, "Shared layers").

Why: a transformer stack is the same graph N times with other weights. With one onnxruntime
session for all layers, each layer's weights memory-mapped from its own file and fed as inputs,
a pass creates no layer session at all (runtimes/shared_weights.py); scripts/probe_shared_sessions.py
measured it bit-identical to per-layer sessions on MiniLM.

`share_layers(root, manifest)` runs inside the exporter's staged directory, after the graphs are
written and before the chained-parity check (so that check runs the shared package with the real
runtime). Contract:

- Every layer graph must equal layer 0 up to initializer values: the same nodes (names, inputs,
  outputs, attributes, constants), the same graph inputs and outputs and the same initializers by
  name, dtype and shape. Otherwise SourceModelError, one line naming the first difference.
- The shared graph (graphs/layer_shared.onnx) is layer 0's graph where every initializer that
  differs between layers, or is stored externally, or is INLINE_MAX_BYTES or larger, became a
  graph input of its dtype and fixed shape; only small tensors identical in every layer stay
  inside it. It stores nothing outside itself.
- Each layer keeps its graph entry (name, role, index, feeds, outputs) with `path` = the shared
  graph, `files` = [shared graph, graphs/layer_NNN.onnx.data] and `weights` saying where each
  input tensor sits in that file. The data file's existing bytes are reused in place (its
  external tensors keep their offsets); tensors that were inline, or in another file, are
  appended, ALIGNMENT-aligned. The per-layer .onnx files are deleted.
- Generic over dtypes (TENSOR_DTYPES: float, int8/uint8 scales and zero points, ...): nothing
  here knows what a tensor means.

Example::

    manifest = share_layers(root, manifest)   # root: the staged package; manifest: its Manifest
    manifest.graph("layer", 3).weights.tensors[0].name, manifest.exporter["shared_layers"]
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.errors import ParityError, SourceModelError
from edgekit.exporters.onnx_writer import EXTERNAL_DATA_MIN_BYTES
from edgekit.manifest import SHARED_LAYERS, FileEntry, GraphSpec, Manifest
from edgekit.package_files import ITEMSIZE, LayerWeights, WeightTensor

SHARED_GRAPH = "graphs/layer_shared.onnx"
INLINE_MAX_BYTES = EXTERNAL_DATA_MIN_BYTES  # tensors this large were external data; always inputs
ALIGNMENT = 64  # appended tensors start at a multiple of this (cache lines, SIMD loads)
FIX = "export without --shared-layers"
SHARED_TOLERANCE = 1e-6  # shared vs per-layer scores: the same arithmetic, measured bit-identical

_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16",
    onnx.TensorProto.DOUBLE: "float64", onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT16: "int16", onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


def share_layers(root: Path, manifest: Manifest) -> Manifest:
    """Rewrite the staged package at `root` (described by `manifest`) to shared layers; returns
    the new Manifest (saved to root). SourceModelError when the layers are not one graph."""
    layers = manifest.graphs_by_role("layer")
    models = [onnx.load(str(root / graph.path), load_external_data=False) for graph in layers]
    for index, model in enumerate(models[1:], start=1):
        difference = _difference(models[0], model)
        if difference:
            raise SourceModelError(f"--shared-layers: layer {index} differs from layer 0 ({difference}); {FIX}")
    shared_names = _weight_names(models)
    _write_shared_graph(models[0], shared_names, root / SHARED_GRAPH)
    shared_entry = FileEntry.of(root, SHARED_GRAPH)
    rewritten = {}
    for graph, model in zip(layers, models):
        rewritten[graph.name] = _layer_entry(root, graph, model, shared_names, shared_entry)
    for graph in layers:  # only after every layer is rewritten: the weights files are read above
        for entry in graph.files:
            if entry.file not in {e.file for e in rewritten[graph.name].files}:
                os.remove(root / entry.file)
    graphs = tuple(rewritten.get(graph.name, graph) for graph in manifest.graphs)
    record = {"graph": SHARED_GRAPH, "layers": len(layers), "tensors": len(shared_names),
              "inline": len(models[0].graph.initializer) - len(shared_names)}
    result = dataclasses.replace(manifest, graphs=graphs, requires=tuple(dict.fromkeys((*manifest.requires,
                                                                                           SHARED_LAYERS))),
                                 exporter={**manifest.exporter, "shared_layers": record})
    result.check_consistency()
    result.save(root)
    return result


def share_checked(root: Path, manifest: Manifest, query: str, candidates: list[str]) -> Manifest:
    """`share_layers` for a package already checked per layer (the int8 one: its gate ran on the
    per-layer graphs): the shared package must score `candidates` exactly as the per-layer one
    did (max abs diff <= SHARED_TOLERANCE, relative to max(1, |score|)), else ParityError."""
    before = _example_scores(manifest, query, candidates)
    shared = share_layers(root, manifest)
    after = _example_scores(shared, query, candidates)
    diff = float(np.max(np.abs(after - before)) / max(1.0, float(np.max(np.abs(before)))))
    if not diff <= SHARED_TOLERANCE:
        raise ParityError(f"--shared-layers: the shared package's scores differ from the per-layer package's by "
                          f"{diff:.3g} (> {SHARED_TOLERANCE:g}); export without --shared-layers and report this")
    return shared


def _example_scores(manifest: Manifest, query: str, candidates: list[str]) -> np.ndarray:
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.selector import Selector

    selector = Selector(manifest, backend_for("onnx", "cpu"), window=2, chunk=2)
    try:
        return selector.rank(query, candidates, top_k=len(candidates)).scores_by_candidate()
    finally:
        selector.close()


def _skeleton(tensor: onnx.TensorProto) -> tuple[str, int, tuple[int, ...]]:
    return tensor.name, tensor.data_type, tuple(tensor.dims)


def _difference(reference: onnx.ModelProto, model: onnx.ModelProto) -> str | None:
    """Where `model` differs from `reference` other than in initializer values, in a few words."""
    a, b = reference.graph, model.graph
    if len(a.node) != len(b.node):
        return f"{len(b.node)} nodes, not {len(a.node)}"
    for first, second in zip(a.node, b.node):
        if first.SerializeToString(deterministic=True) != second.SerializeToString(deterministic=True):
            return f"node {second.name or second.op_type!r} ({second.op_type}) differs"
    for kind in ("input", "output", "value_info"):
        if [v.SerializeToString(deterministic=True) for v in getattr(a, kind)] != \
                [v.SerializeToString(deterministic=True) for v in getattr(b, kind)]:
            return f"its graph {kind}s differ"
    if [_skeleton(t) for t in a.initializer] != [_skeleton(t) for t in b.initializer]:
        return "its initializers differ in name, dtype or shape"
    if a.sparse_initializer or b.sparse_initializer:
        return "it has sparse initializers"
    if [(o.domain, o.version) for o in reference.opset_import] != [(o.domain, o.version) for o in model.opset_import] \
            or len(reference.functions) != len(model.functions) \
            or any(f.SerializeToString() != g.SerializeToString() for f, g in zip(reference.functions, model.functions)):
        return "its opsets or functions differ"
    return None


def _inline_bytes(tensor: onnx.TensorProto) -> bytes | None:
    """The tensor's serialised content when it is stored inline, else None (external)."""
    return None if tensor.data_location == onnx.TensorProto.EXTERNAL else tensor.SerializeToString(deterministic=True)


def _weight_names(models: list[onnx.ModelProto]) -> list[str]:
    """Initializers of layer 0 that become inputs: external, large, or different in any layer."""
    names = []
    for position, tensor in enumerate(models[0].graph.initializer):
        content = _inline_bytes(tensor)
        same = content is not None and all(_inline_bytes(m.graph.initializer[position]) == content for m in models[1:])
        small = _element_bytes(tensor) < INLINE_MAX_BYTES
        if not (same and small):
            names.append(tensor.name)
    return names


def _dtype(tensor: onnx.TensorProto) -> str:
    if tensor.data_type not in _DTYPES:
        name = onnx.TensorProto.DataType.Name(tensor.data_type)
        raise SourceModelError(f"--shared-layers: tensor {tensor.name[:80]!r} has type {name}, which a weights file "
                               f"cannot hold; {FIX}")
    return _DTYPES[tensor.data_type]


def _element_bytes(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) * ITEMSIZE[_dtype(tensor)]


def _write_shared_graph(model: onnx.ModelProto, names: list[str], path: Path) -> None:
    """Layer 0's graph with `names` turned from initializers into inputs; nothing stored outside."""
    shared = onnx.ModelProto()
    shared.CopyFrom(model)
    inputs = set(names)
    kept = [tensor for tensor in shared.graph.initializer if tensor.name not in inputs]
    moved = [tensor for tensor in shared.graph.initializer if tensor.name in inputs]
    del shared.graph.initializer[:]
    shared.graph.initializer.extend(kept)
    shared.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in kept):
        raise SourceModelError(f"--shared-layers: the shared graph would read external data; {FIX}")
    onnx.save_model(shared, str(path))


def _layer_entry(root: Path, graph: GraphSpec, model: onnx.ModelProto, names: list[str],
                 shared: FileEntry) -> GraphSpec:
    """The layer's weights file (its data file, reused in place, plus appended tensors) and its
    new graph entry."""
    relative = f"{graph.path}.data"
    target = root / relative
    by_name = {tensor.name: tensor for tensor in model.graph.initializer}
    tensors = []
    with open(target, "ab") as out:  # creates the file when the layer had no external data
        for name in names:
            tensor = by_name[name]
            expected = _element_bytes(tensor)
            placed = _in_place(tensor, graph.path, relative)
            if placed is None:
                content = _content(root, graph.path, tensor)
                out.write(b"\0" * (-out.tell() % ALIGNMENT))
                placed = (out.tell(), len(content))
                out.write(content)
            if placed[1] != expected:
                raise SourceModelError(f"--shared-layers: layer {graph.index} tensor {name[:80]!r} holds {placed[1]} "
                                       f"bytes, its shape needs {expected}; {FIX}")
            tensors.append(WeightTensor(name=name, dtype=_dtype(tensor), shape=tuple(int(d) for d in tensor.dims),
                                        offset=placed[0], bytes=placed[1]))
    return dataclasses.replace(graph, path=SHARED_GRAPH, files=(shared, FileEntry.of(root, relative)),
                               weights=LayerWeights(file=relative, tensors=tuple(tensors)))


def _external(tensor: onnx.TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def _location(graph_path: str, tensor: onnx.TensorProto) -> str:
    return (PurePosixPath(graph_path).parent / _external(tensor)["location"]).as_posix()


def _in_place(tensor: onnx.TensorProto, graph_path: str, relative: str) -> tuple[int, int] | None:
    """(offset, bytes) of an external tensor already in the layer's data file, else None."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL or _location(graph_path, tensor) != relative:
        return None
    info = _external(tensor)
    return int(info.get("offset", "0")), int(info.get("length", str(_element_bytes(tensor))))


def _content(root: Path, graph_path: str, tensor: onnx.TensorProto) -> bytes:
    """The tensor's raw little-endian bytes: from another external file, or from the graph."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        info = _external(tensor)
        with open(root / _location(graph_path, tensor), "rb") as handle:
            handle.seek(int(info.get("offset", "0")))
            return handle.read(int(info.get("length", str(_element_bytes(tensor)))))
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    array: Any = numpy_helper.to_array(tensor)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
