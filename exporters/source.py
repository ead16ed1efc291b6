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


def one_line(error: BaseException) -> str:
    """An exception's message on one line (safetensors and transformers messages wrap)."""
    return " ".join(str(error).split()) or type(error).__name__


def checkpoint_errors() -> tuple[type[Exception], ...]:
    """What loading a damaged checkpoint raises in transformers / diffusers: OSError, ValueError,
    KeyError, and safetensors' own SafetensorError (a truncated or garbled .safetensors file)."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        return (OSError, ValueError, KeyError)
    return (OSError, ValueError, KeyError, SafetensorError)


def load_failure(loader: str, path: Path, error: Exception) -> SourceModelError:
    """The one-line error for a checkpoint `loader` (transformers, diffusers) could not load."""
    hint = ""
    if type(error).__name__ == "SafetensorError":
        hint = "; a .safetensors file is truncated or damaged: restore it from the original checkpoint"
    return SourceModelError(f"{loader} could not load {path}: {one_line(error)}{hint}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SourceModelError(f"cannot read {path}: {one_line(error)}") from None


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path`; SourceModelError naming the file when it is unreadable or holds
    anything else (`[1, 2]`, `null`, a string)."""
    value = _read_json(path)
    if not isinstance(value, dict):
        raise SourceModelError(f"{path} holds {_kind(value)}, not a JSON object; restore it from the original "
                               "checkpoint")
    return value


_JSON_KINDS = {"list": "array", "str": "string", "int": "number", "float": "number", "bool": "boolean",
               "dict": "object"}


def _kind(value: Any) -> str:
    """What a JSON value is, for a message: `null`, `a JSON array ([1, 2])`."""
    if value is None:
        return "null"
    return f"a JSON {_JSON_KINDS.get(type(value).__name__, type(value).__name__)} ({json.dumps(value)[:40]})"


def _module_path(modules_file: Path, module: dict[str, Any], required: bool = False) -> str:
    """A module's folder, relative and inside the checkpoint ("" is the root itself)."""
    where = module.get("path", "")
    if required and not where:
        raise SourceModelError(f"{modules_file}: the {module.get('type')} module has no folder (\"path\"); "
                               "restore modules.json from the original checkpoint")
    if not isinstance(where, str) or where.startswith(("/", "\\")) or ".." in Path(where).parts:
        raise SourceModelError(f"{modules_file}: module path {where!r} must be a folder inside the checkpoint")
    return where


def _sentence_transformers_layout(path: Path) -> tuple[str, bool, int | None] | None:
    """(pooling, normalize, max_seq_length) if `path` is a sentence-transformers directory."""
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(module, dict) for module in modules):
        raise SourceModelError(f"{modules_file} holds {_kind(modules)}; sentence-transformers writes a JSON list "
                               'of {"type", "path"} objects; restore it from the original checkpoint')
    types = [module.get("type") for module in modules]
    unsupported = [str(t) for t in types if t not in (_ST_TRANSFORMER, _ST_POOLING, _ST_NORMALIZE)]
    if unsupported:
        raise SourceModelError(
            f"{modules_file} has modules edgekit cannot export yet: {', '.join(unsupported)} "
            "(supported: Transformer, Pooling, Normalize)"
        )
    transformer = [m for m in modules if m.get("type") == _ST_TRANSFORMER]
    if not transformer or _module_path(modules_file, transformer[0]) not in ("", "."):
        raise SourceModelError(f"{modules_file}: expected the Transformer module at the directory root")
    pooling = "mean"
    for module in modules:
        if module.get("type") == _ST_POOLING:
            folder = path / _module_path(modules_file, module, required=True)
            pooling = _pooling_mode(read_json_object(folder / "config.json"), folder)
    max_length = None
    bert_config = path / "sentence_bert_config.json"
    if bert_config.is_file():
        max_length = read_json_object(bert_config).get("max_seq_length")
        if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool)
                                       or max_length < 1):
            raise SourceModelError(f"{bert_config}: max_seq_length {max_length!r} is not a positive integer")
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
    return read_json_object(config_file)


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
