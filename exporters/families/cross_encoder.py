"""BERT-like cross-encoders: a `*ForSequenceClassification` checkpoint of an encoder model type
(models/encoders.py: bert, roberta, xlm-roberta, electra, distilbert) -> a `rerank` package.

Wraps exporters/encoder_export.py (`export_encoder(task="rerank")`), which also exports the
optional per-depth heads (`edgekit_layer_heads.safetensors`) as `depth_head` graphs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.exporters.families.base import (
    FORMAT_OPTIONS,
    ExportFamily,
    encoder_exporter,
    ranking_summary,
    read_config,
)
from edgekit.exporters.source import is_classifier
from edgekit.models.encoders import ENCODER_FAMILIES

ENCODER_MODEL_TYPES = tuple(sorted(t for family in ENCODER_FAMILIES for t in family.model_types))


def is_encoder(config: dict[str, Any]) -> bool:
    """config.json of a model type models/encoders.py describes."""
    return config.get("model_type") in ENCODER_MODEL_TYPES


def _recognise(path: Path, task: str | None) -> bool:
    """A classifier of an encoder type; with a modules.json only when --task rerank is named
    (unasked, a sentence-transformers layout is a bi-encoder)."""
    config = read_config(path)
    if not (is_encoder(config) and is_classifier(config)):
        return False
    return task == "rerank" or not (path / "modules.json").is_file()


def _build_tiny(directory: Path) -> Path:
    from edgekit.models.encoder_builds import build_cross_encoder

    return build_cross_encoder(directory)


CROSS_ENCODER = ExportFamily(
    name="cross-encoder",
    task="rerank",
    description=f"a *ForSequenceClassification checkpoint of {', '.join(ENCODER_MODEL_TYPES)}",
    stages=("embeddings", "layer", "head", "depth_head"),
    options=("max_length", "dtype", "fuse", "shared_layers", "gate_data", "gate_top_k", "min_agreement",
             *FORMAT_OPTIONS),
    recognise=_recognise,
    exporter=encoder_exporter("rerank"),
    build_tiny=_build_tiny,
    summary=ranking_summary,
)
