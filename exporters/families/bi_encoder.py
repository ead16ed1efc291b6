"""Sentence-transformers bi-encoders (modules.json: Transformer, Pooling, Normalize over an
encoder model type) -> a `select` package scoring by cosine.

Wraps exporters/encoder_export.py (`export_encoder(task="select")`); exporters/source.py reads
the pooling and normalisation from the sentence-transformers files. With `--task select` a plain
encoder checkpoint (no modules.json) is taken too, pooled by mean and normalised, as
sentence-transformers itself wraps a plain transformers model.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.exporters.families.base import (
    FORMAT_OPTIONS,
    ExportFamily,
    encoder_exporter,
    ranking_summary,
    read_config,
)
from edgekit.exporters.families.cross_encoder import ENCODER_MODEL_TYPES, is_encoder


def _recognise(path: Path, task: str | None) -> bool:
    """An encoder type with a modules.json; any encoder type when --task select is named."""
    return is_encoder(read_config(path)) and ((path / "modules.json").is_file() or task == "select")


def _build_tiny(directory: Path) -> Path:
    from edgekit.models.encoder_builds import build_bi_encoder

    return build_bi_encoder(directory)


BI_ENCODER = ExportFamily(
    name="bi-encoder",
    task="select",
    description=(f"a sentence-transformers directory (modules.json) over {', '.join(ENCODER_MODEL_TYPES)}, "
                 "or a plain encoder with --task select"),
    stages=("embeddings", "layer", "head"),
    options=("max_length", "dtype", "fuse", "shared_layers", "gate_data", "gate_top_k", "min_agreement",
             *FORMAT_OPTIONS),
    recognise=_recognise,
    exporter=encoder_exporter("select"),
    build_tiny=_build_tiny,
    summary=ranking_summary,
)
