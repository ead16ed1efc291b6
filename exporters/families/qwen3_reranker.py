"""Qwen3 decoder rerankers: `Qwen3ForCausalLM` (P(yes) against "no" after the Qwen3-Reranker
prompt) or a `Qwen3ForSequenceClassification` seq-cls conversion -> a `rerank` package with the
prompt, the rotary parameters and left padding.

Wraps exporters/decoder_export.py (`export_decoder`); models/decoders.py holds the prompt.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.exporters.families.base import (
    FORMAT_OPTIONS,
    ExportFamily,
    Progress,
    core_ml_options,
    import_exporter,
    ranking_summary,
    read_config,
)
from edgekit.exporters.source import architectures
from edgekit.manifest import Manifest
from edgekit.models.decoders import CAUSAL_LM, DECODER_MODEL_TYPES, SEQ_CLS, tiny_qwen3_config


def _recognise(path: Path, task: str | None) -> bool:
    config = read_config(path)
    return config.get("model_type") in DECODER_MODEL_TYPES and bool({CAUSAL_LM, SEQ_CLS} & set(architectures(config)))


def _export(source: Path, out: Path, progress: Progress | None, overwrite: bool, max_length: int | None = None,
            dtype: str = "fp32", instruction: str | None = None, fuse: bool = False, shared_layers: bool = False,
            gate_data: Path | None = None, gate_top_k: int | None = None, min_agreement: float | None = None,
            format: str | None = None, compute_units: str | None = None, precision: str | None = None,
            palettize: int | None = None) -> Manifest:
    formats = core_ml_options(format, compute_units, precision, palettize, dtype, shared_layers, fuse)
    decoder_export = import_exporter("edgekit.exporters.decoder_export", "export")
    from edgekit.exporters.quant_gate import gate_options
    from edgekit.exporters.source import inspect_decoder

    gate = gate_options(dtype, gate_data, gate_top_k, min_agreement)  # before loading the model
    return decoder_export.export_decoder(inspect_decoder(source), out, max_length, dtype, overwrite, progress,
                                         instruction, fuse=fuse, shared_layers=shared_layers, gate=gate,
                                         coreml=formats)


def _build_tiny(directory: Path) -> Path:
    from edgekit.models.decoder_builds import build_qwen3_reranker

    return build_qwen3_reranker(directory, tiny_qwen3_config(512))


QWEN3_RERANKER = ExportFamily(
    name="qwen3-reranker",
    task="rerank",
    description=(f"a Qwen3 decoder checkpoint ({CAUSAL_LM} or {SEQ_CLS}; edgekit exports decoders as "
                 "rerankers)"),
    stages=("embeddings", "layer", "head"),
    options=("max_length", "dtype", "instruction", "fuse", "shared_layers", "gate_data", "gate_top_k", "min_agreement",
             *FORMAT_OPTIONS),
    recognise=_recognise,
    exporter=_export,
    build_tiny=_build_tiny,
    summary=ranking_summary,
)
