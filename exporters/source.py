"""Find the export source on disk and read what its exporter needs (encoder task, pooling; decoder head).

A source is a local checkpoint directory or a hub id. Hub ids go through huggingface_hub,
which honours HF_HUB_OFFLINE: offline and not cached is a clear SourceModelError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import SourceModelError
from edgekit.models.decoders import CAUSAL_LM, SEQ_CLS

TASK_RERANK = "rerank"
TASK_SELECT = "select"
# Optional, beside a cross-encoder checkpoint: one head per intermediate depth d (1..L-1), as
# tensors named `depth_<d>.<name of the model's own head parameter>` (safetensors).
LAYER_HEADS_FILE = "edgekit_layer_heads.safetensors"

_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class SourceInfo:
    """What the exporter needs to know about a checkpoint before loading any weights."""

    path: Path
    task: str
    model_type: str
    architectures: tuple[str, ...]
    pooling: str | None = None  # "mean" | "cls" (select only)
    normalize: bool = False
    default_max_length: int | None = None


def architectures(config: dict[str, Any]) -> tuple[str, ...]:
    """config.json's `architectures` (empty when absent or not a list)."""
    names = config.get("architectures") or ()
    return tuple(str(name) for name in names) if isinstance(names, list) else ()


def is_classifier(config: dict[str, Any]) -> bool:
    """An `*ForSequenceClassification` checkpoint (a trained classification head)."""
    return any(name.endswith("ForSequenceClassification") for name in architectures(config))


def resolve_source(source: str) -> Path:
    """A local directory as is; otherwise treat `source` as a hub id and fetch (or find cached)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    looks_like_path = source.startswith((".", "/", "~")) or path.suffix != "" or source.count("/") > 1
    if looks_like_path:
        raise SourceModelError(f"source directory {source} does not exist; pass a checkpoint directory or a hub id")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - part of the export extra
        raise SourceModelError("hub ids need huggingface_hub; pip install 'edgekit[export]'") from None
    try:
        return Path(snapshot_download(source))
    except Exception as error:  # the hub client raises many types; all mean "not obtainable"
        raise SourceModelError(
            f"could not get {source!r} from the hub or its cache ({type(error).__name__}); "
            "pass a local checkpoint directory, or unset HF_HUB_OFFLINE to download"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceModelError(f"cannot read {path}: {error}") from None


def _sentence_transformers_layout(path: Path) -> tuple[str, bool, int | None] | None:
    """(pooling, normalize, max_seq_length) if `path` is a sentence-transformers directory."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    types = [module.get("type") for module in modules]
    unsupported = [t for t in types if t not in (_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE)]
    if unsupported:
        raise SourceModelError(
            f"{modules_file} has modules edgekit cannot export yet: {', '.join(unsupported)} "
            "(supported: Transformer, Pooling, Normalize)"
        )
    transformer = [m for m in modules if m.get("type") == _ST_TRANSFORMER]
    if not transformer or transformer[0].get("path", "") not in ("", "."):
        raise SourceModelError(f"{modules_file}: expected the Transformer module at the directory root")
    pooling = "mean"
    for module in modules:
        if module.get("type") == _ST_POOLING:
            pooling = _pooling_mode(_read_json(path / module["path"] / "config.json"), path / module["path"])
    max_length = None
    bert_config = path / "sentence_bert_config.json"
    if bert_config.is_file():
        max_length = _read_json(bert_config).get("max_seq_length")
    return pooling, _ST_NORMALIZE in types, max_length


def _pooling_mode(config: dict[str, Any], where: Path) -> str:
    if config.get("pooling_mode_mean_tokens"):
        modes = ["mean"]
    else:
        modes = []
    if config.get("pooling_mode_cls_token"):
        modes.append("cls")
    for unsupported in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens"):
        if config.get(unsupported):
            modes.append(unsupported)
    if modes not in (["mean"], ["cls"]):
        raise SourceModelError(f"{where}: pooling {modes} is not supported; edgekit exports mean or CLS pooling")
    return modes[0]


def _read_config(path: Path) -> dict[str, Any]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise SourceModelError(f"{path} has no config.json; pass a transformers checkpoint directory")
    return _read_json(config_file)


def inspect_decoder(path: Path) -> SourceInfo:
    """A decoder reranker checkpoint (exporters/families/qwen3_reranker.py recognised it): task
    rerank, refused in one line unless it is a causal LM (yes/no) or a seq-cls conversion."""
    config = _read_config(path)
    model_type = str(config.get("model_type", ""))
    names = architectures(config)
    if not {CAUSAL_LM, SEQ_CLS} & set(names):
        raise SourceModelError(f"{path}: architectures {list(names)}; a {model_type} reranker is "
                               f"{CAUSAL_LM} or {SEQ_CLS}")
    return SourceInfo(path=path, task=TASK_RERANK, model_type=model_type, architectures=names)


def inspect_source(path: Path, task: str | None = None) -> SourceInfo:
    """Read an encoder's config.json (and modules.json) and decide the task, checking it fits.

    Rules: a sentence-transformers layout is `select`; an `*ForSequenceClassification`
    checkpoint is `rerank`. `--task rerank` on a checkpoint without a classification head is
    refused (its head would be random). `--task select` on a plain encoder uses mean pooling.
    Which exporter a source goes to is the export families' call (exporters/families/); this
    reads what the encoder exporter needs.
    """
    config = _read_config(path)
    model_type = str(config.get("model_type", ""))
    names = architectures(config)
    classifier = is_classifier(config)
    st_layout = _sentence_transformers_layout(path)

    if task is None:
        if st_layout is not None:
            task = TASK_SELECT
        elif classifier:
            task = TASK_RERANK
        else:
            raise SourceModelError(
                f"cannot tell the task of {path}: model_type {model_type!r}, architectures {list(names)}, "
                "no modules.json; pass --task rerank (needs a *ForSequenceClassification checkpoint) or --task select"
            )
    if task == TASK_RERANK:
        if not classifier:
            raise SourceModelError(
                f"--task rerank needs a *ForSequenceClassification checkpoint, but {path} has architectures "
                f"{list(names)}; use --task select for a bi-encoder"
            )
        return SourceInfo(path=path, task=task, model_type=model_type, architectures=names)
    if task == TASK_SELECT:
        pooling, normalize, max_length = st_layout if st_layout is not None else ("mean", True, None)
        return SourceInfo(
            path=path, task=task, model_type=model_type, architectures=names,
            pooling=pooling, normalize=normalize, default_max_length=max_length,
        )
    raise SourceModelError(f"unknown task {task!r}; use rerank or select")
