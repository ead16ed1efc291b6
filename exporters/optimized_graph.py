"""The one-graph baseline after onnxruntime's transformer optimizer: what a careful user ships.

`edgekit bench select` / `select-deep` compare edgekit against the whole model as one ONNX graph.
A user who cares about latency would not run the plain `torch.onnx` export; they would pass it
through `onnxruntime.transformers.optimizer.optimize_model` (shipped in the onnxruntime wheel),
which fuses attention, LayerNorm (+ residual), GELU and bias adds. This module does that once,
offline, and writes the result beside the plain graph, so the benchmark's children only load it.

Model types (from the source's config.json `model_type`):
  bert, roberta, xlm-roberta, electra, distilbert -> optimizer type "bert" (fused attention,
      embedding LayerNorm, SkipLayerNorm, BiasGelu)
  qwen3 -> optimizer type "qwen3"; on edgekit's legacy torch.onnx export it fuses the RMSNorms
      (SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization) but not attention or rotary
  anything else, or a graph where the optimizer fused nothing -> onnxruntime's own graph
      optimizations at ORT_ENABLE_ALL, saved offline (`fusions` is then empty and `fallback` names it)
Only the Python fusions run here (opt_level 0), so the written graph holds no provider-specific
nodes; the session that loads it applies onnxruntime's online optimizations as usual.

Contract: `optimize_graph(plain, out, source_dir)` writes `out` (external data beside it in
`out.name + ".data"` when the model exceeds protobuf's 2 GiB) and `out` + ".json" (the record
below), checks the optimized graph against the plain one on one all-real-token batch (max abs diff
<= TOLERANCE x max(1, max |plain|), else `ParityError`), and returns the record. A cached `out`
with its record is returned as is. Lives in exporters/ because it imports onnxruntime
(tests/test_backend_contract.py); it imports no torch.

Example::

    record = optimize_graph(Path("cache/monolithic.onnx"), Path("cache/monolithic-optimized.onnx"), Path("minilm"))
    record.fusions  # {"Attention": 6, "SkipLayerNormalization": 12, ...}
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import ParityError, SourceModelError

TOLERANCE = 1e-4  # fused attention / LayerNorm reorder float sums; relative to max(1, max |plain|)
OPTIMIZER_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert",
                   "distilbert": "bert", "qwen3": "qwen3"}
_PROTOBUF_LIMIT = 2**31 - 2**20  # leave headroom under protobuf's 2 GiB for the graph itself


@dataclass(frozen=True)
class OptimizedGraph:
    """What was written: the graph, the optimizer type used (None: not recognised), the fusions
    that fired (operator -> count, zeros dropped), the fallback used if any, and the parity diff."""

    path: str
    model_type: str | None
    fusions: dict[str, int] = field(default_factory=dict)
    fallback: str | None = None
    max_abs_diff: float = 0.0

    def describe(self) -> str:
        """One line for a report: which optimizer and which fusions fired."""
        if self.fallback:
            return f"{self.fallback} (the transformer optimizer has no pattern for this model)"
        fused = ", ".join(f"{name} ×{count}" for name, count in sorted(self.fusions.items()))
        return f"onnxruntime transformer optimizer, model type {self.model_type}: {fused}"


def _record_path(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def _source_shape(source_dir: Path) -> tuple[str, int, int]:
    """(model_type, attention heads, hidden size) from the source's config.json."""
    config_file = Path(source_dir) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        return str(config["model_type"]), int(config["num_attention_heads"]), int(config["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SourceModelError(f"{config_file}: cannot read model_type/num_attention_heads/hidden_size ({error}); "
                               "point the benchmark at a transformers checkpoint") from None


def _check_feeds(session: object, vocab_hint: int = 100) -> dict[str, np.ndarray]:
    """Feeds for a parity check: two sequences of 12 real tokens each. No padding, so the check
    compares real positions only (fused and plain attention may differ on fully padded rows,
    which no score reads); the tests check padded batches through the scorers."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in session.get_inputs():  # type: ignore[attr-defined]
        if spec.name == "input_ids":
            feeds[spec.name] = rng.integers(3, vocab_hint, size=(2, 12), dtype=np.int64)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((2, 12), dtype=np.int64)
        else:
            feeds[spec.name] = np.zeros((2, 12), dtype=np.int64)
    return feeds


def _max_abs_diff(plain: Path, optimized: Path) -> tuple[float, float]:
    """(max |optimized - plain|, max |plain|) on `_check_feeds`, onnxruntime defaults, one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    reference = ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])
    feeds = _check_feeds(reference)
    expected = reference.run(None, feeds)[0]
    del reference
    actual = ort.InferenceSession(str(optimized), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    if actual.shape != expected.shape:
        return float("inf"), float(np.max(np.abs(expected)))
    return float(np.max(np.abs(actual - expected))), float(np.max(np.abs(expected)))


def _ort_offline(plain: Path, temporary: Path) -> None:
    """onnxruntime's own optimizations at ORT_ENABLE_ALL, written to `temporary` (CPU provider)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(temporary)
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                     temporary.name + ".data")
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(str(plain), options, providers=["CPUExecutionProvider"])


def _optimize(plain: Path, temporary: Path, optimizer_type: str, heads: int, hidden: int) -> dict[str, int]:
    """The transformer optimizer's Python fusions; returns the fusions that fired."""
    from edgekit.exporters.fusion import FusionPlan, run_optimizer  # lazily: fusion.py's imports pull torch

    model: Any = run_optimizer(plain, FusionPlan(optimizer_type, num_heads=heads, hidden_size=hidden))
    fusions = {name: int(count) for name, count in model.get_fused_operator_statistics().items() if count}
    if fusions:
        large = plain.stat().st_size + sum(p.stat().st_size for p in plain.parent.iterdir()
                                            if p.suffix != ".onnx" and p.is_file()) > _PROTOBUF_LIMIT
        model.save_model_to_file(str(temporary), use_external_data_format=large)  # data: temporary.name + ".data"
    return fusions


def optimize_graph(plain: Path, out: Path, source_dir: Path) -> OptimizedGraph:
    """Write the optimized form of the one-graph model `plain` to `out` (see the module doc)."""
    plain, out = Path(plain), Path(out)
    record_file = _record_path(out)
    if out.is_file() and record_file.is_file():
        cached = json.loads(record_file.read_text(encoding="utf-8"))
        return OptimizedGraph(**{**cached, "path": str(out)})  # the cache folder may have moved
    model_type, heads, hidden = _source_shape(source_dir)
    optimizer_type = OPTIMIZER_TYPES.get(model_type)
    temporary = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    data_file = temporary.with_name(temporary.name + ".data")
    try:
        fusions = _optimize(plain, temporary, optimizer_type, heads, hidden) if optimizer_type else {}
        fallback = None
        if not fusions:
            _ort_offline(plain, temporary)
            fallback = "onnxruntime graph optimizations at ORT_ENABLE_ALL, saved offline"
        diff, scale = _max_abs_diff(plain, temporary)
        if not diff <= TOLERANCE * max(1.0, scale):
            raise ParityError(f"optimized graph of {plain}: differs from the plain graph by {diff:.3g}; "
                              "report it (the optimizer changed the model's outputs)")
        if data_file.is_file():
            _relink_external_data(temporary, data_file, out)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
        data_file.unlink(missing_ok=True)
    record = OptimizedGraph(str(out), optimizer_type, fusions, fallback, diff)
    record_file.write_text(json.dumps(asdict(record)), encoding="utf-8")
    return record


def _relink_external_data(temporary: Path, data_file: Path, out: Path) -> None:
    """Move the external data file to its final name and point the graph's tensors at it."""
    import onnx
    from onnx.external_data_helper import uses_external_data

    final_data = out.with_name(out.name + ".data")
    os.replace(data_file, final_data)
    model = onnx.load(str(temporary), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data if uses_external_data(tensor) else ():
            if entry.key == "location":
                entry.value = final_data.name
    onnx.save(model, str(temporary))
