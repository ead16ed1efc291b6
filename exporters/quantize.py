"""int8 versions of a staged fp32 ranking package's files (`edgekit export --dtype int8|mixed`).

Each layer graph is quantized with onnxruntime's own tool, `quantize_dynamic`: MatMul weights
become int8 initializers (`<W>_quantized`) with a float32 scale and a zero point; at run the
activations are quantized per call (`DynamicQuantizeLinear`) and multiplied with
`MatMulInteger`. Only MatMuls with a constant weight are touched (`MatMulConstBOnly`, the
tool's default for dynamic quantization): attention's activation-by-activation MatMuls stay fp32.
The quantized graph is saved the way fp32 graphs are (weights of 1 KiB or more in
`<name>.onnx.data` beside it), so the containment rules hold unchanged.

Per-channel scales (`PER_CHANNEL = True`, one scale per output column). Measured on the dev set
(120 queries x 50 candidates, top-10 agreement, every layer int8 and the int8 table, against the
model's own fp32 package; scripts/measure_int8.py):
- all-MiniLM-L6-v2 (bi-encoder, cosine): per-tensor 0.893 (max score diff 0.136), per-channel
  0.957 (0.058). The table costs nothing measurable (per-tensor with the fp32 table: 0.895).
  Keeping the FFN down-projection fp32 as well: 0.961 at twice the layer bytes, not worth it.
  For comparison only, onnxruntime's weight-only 8-bit `MatMulNBits` (block 32, fp32
  activations): 0.978 (0.033); not used here (dynamic int8 is what the issue asks for).
- tiny random BERT (3 layers, hidden 32): per-tensor 0.873, per-channel 0.859, i.e. noise: its
  candidates' scores span 5e-5 (tests/test_int8.py says how its gate is set).
MiniLM does not reach the default 0.99 with every layer int8: `--dtype int8` refuses it. Even
one int8 layer alone costs it 0.969-0.988 agreement for layers 0-4 (0.9925 for layer 5), so
`edgekit export all-MiniLM-L6-v2 --dtype mixed` keeps layers 0-4 fp32: agreement 0.9908, package
0.56x the fp32 one (the int8 table is most of the saving; every layer int8 would be 0.27x).
The MiniLM cross-encoder recipe (models/recipes, built with 80 of its 200 steps): every layer
int8 0.915 (refused); one layer int8 alone 0.942-0.978 for layers 0-4, 0.990 for layer 5;
`mixed` keeps all six layers fp32 (int8 table only): 0.9975, 0.62x. Dynamic int8 does not meet
the issue's "top-10 agreement >= 0.99 at <= 0.30x" on these models.

The embeddings graph (position and type embeddings plus a LayerNorm: no MatMul) and the heads
(<1% of a package's bytes) stay fp32. The token-embedding table, most of a small model's
bytes (MiniLM: 45 of 87 MiB), becomes int8 with a float32 scale per row
(runtimes/quantized_table.py); the runtime dequantizes only the rows a batch gathers.

Int8 candidates are written under `root/CANDIDATES` (same relative paths), so the fp32 and
int8 version of every file sit side by side while the gate (exporters/quant_gate.py) compares
them; `install` then moves the chosen ones over the fp32 files.

Example::

    int8 = quantize_graph(root, manifest.graph("layer", 0))   # spec of root/.int8/graphs/layer_000.onnx
    table = quantize_table(root, manifest.ranking.embedding_table)
    manifest = install(root, dataclasses.replace(manifest, graphs=(..., int8, ...)))
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from edgekit.errors import SourceModelError
from edgekit.exporters.onnx_writer import EXTERNAL_DATA_MIN_BYTES
from edgekit.manifest import FileEntry, GraphSpec, Manifest
from edgekit.ranking_manifest import EmbeddingTable
from edgekit.runtimes.quantized_table import quantize_rows

CANDIDATES = ".int8"  # staging folder of the int8 versions, inside the staged package
PER_CHANNEL = True  # measured above: per-channel halves MiniLM's score error (agreement 0.893 -> 0.957)
METHOD = "onnxruntime.quantization.quantize_dynamic"
OP_TYPES = ("MatMul",)
SCALES_FILE = "graphs/word_embeddings.scales.npy"


def graph_files(root: Path, relative: str) -> tuple[FileEntry, ...]:
    """The graph at `relative` and its external data file when it has one, hashed."""
    entries = [FileEntry.of(root, relative)]
    if (root / f"{relative}.data").is_file():
        entries.append(FileEntry.of(root, f"{relative}.data"))
    return tuple(entries)


def save_graph(model: object, path: Path) -> None:
    """Save an ONNX model as edgekit graphs are saved: tensors of EXTERNAL_DATA_MIN_BYTES or
    more in `<name>.onnx.data` beside it (an existing data file is replaced, not appended to)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=EXTERNAL_DATA_MIN_BYTES)


def quantize_graph(root: Path, spec: GraphSpec, per_channel: bool = PER_CHANNEL) -> GraphSpec:
    """Write the int8 version of `root/spec.path` to `root/CANDIDATES/spec.path` (+ its data);
    returns the spec of the new files (same name, role, index and IO)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    relative = f"{CANDIDATES}/{spec.path}"
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "consider pre-processing" is logged on the root logger for every graph
    try:
        with tempfile.TemporaryDirectory(dir=root) as scratch, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            output = Path(scratch) / "quantized.onnx"
            try:
                # DefaultTensorType: shape inference gives no type for outputs of onnxruntime's fused
                # contrib ops (`--fuse`); every float tensor in these graphs is float32
                quantize_dynamic(root / spec.path, output, weight_type=QuantType.QInt8,
                                 op_types_to_quantize=list(OP_TYPES), per_channel=per_channel,
                                 use_external_data_format=True,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            except (RuntimeError, ValueError, KeyError) as error:
                raise SourceModelError(f"int8 quantization of {spec.name} failed ({str(error).splitlines()[0]}); "
                                       "export it as fp32 or fp16, or report it") from None
            model = onnx.load(str(output))  # weights read into memory before the scratch folder goes
    finally:
        quiet.setLevel(level)
    save_graph(model, root / relative)
    return dataclasses.replace(spec, path=relative, files=graph_files(root, relative))


def quantize_table(root: Path, table: EmbeddingTable) -> EmbeddingTable:
    """Write the int8 table and its per-row scales under `root/CANDIDATES`; returns their entry."""
    values, scales = quantize_rows(np.load(root / table.entry.file, mmap_mode="r", allow_pickle=False))
    relative = f"{CANDIDATES}/{table.entry.file}"
    (root / relative).parent.mkdir(parents=True, exist_ok=True)
    np.save(root / relative, values, allow_pickle=False)
    np.save(root / f"{CANDIDATES}/{SCALES_FILE}", scales.astype("<f4"), allow_pickle=False)
    return EmbeddingTable(FileEntry.of(root, relative), table.shape, "int8",
                          FileEntry.of(root, f"{CANDIDATES}/{SCALES_FILE}"))


def install(root: Path, manifest: Manifest) -> Manifest:
    """Move every file of `manifest` that lies under CANDIDATES to its final path (over the fp32
    file), remove the fp32 files the moved graphs no longer list and the CANDIDATES folder;
    returns the manifest with the final paths (hashes unchanged: the bytes are the same)."""

    def settle(entry: FileEntry) -> FileEntry:
        if not entry.file.startswith(f"{CANDIDATES}/"):
            return entry
        target = entry.file.removeprefix(f"{CANDIDATES}/")
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        (root / entry.file).replace(root / target)
        return dataclasses.replace(entry, file=target)

    graphs = []
    for graph in manifest.graphs:
        files = tuple(settle(entry) for entry in graph.files)
        if files != graph.files:
            stale = root / f"{files[0].file}.data"  # an fp32 data file the int8 graph no longer reads
            if f"{files[0].file}.data" not in {entry.file for entry in files} and stale.is_file():
                stale.unlink()
            graph = dataclasses.replace(graph, path=files[0].file, files=files)
        graphs.append(graph)
    ranking = manifest.ranking
    assert ranking is not None
    table = ranking.embedding_table
    table = dataclasses.replace(table, entry=settle(table.entry),
                                scales=settle(table.scales) if table.scales is not None else None)
    shutil.rmtree(root / CANDIDATES, ignore_errors=True)
    return dataclasses.replace(manifest, graphs=tuple(graphs),
                               ranking=dataclasses.replace(ranking, embedding_table=table))
