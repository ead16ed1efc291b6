"""`edgekit export` for encoder rerankers (cross-encoders) and bi-encoders.

Pipeline: inspect the source -> load with transformers -> split into stages -> write one ONNX
graph per stage into a staging directory, checking each against its torch module -> save the
tokenizer and manifest -> run the staged package with the real runtime against the whole torch
model -> move the package into place. Any failure leaves no package behind.

Example::

    manifest = export_encoder("path/to/all-MiniLM-L6-v2", Path("pkg"))
    manifest.task, [g.name for g in manifest.graphs]
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit import __version__
from edgekit.atomic import check_destination, staged_directory
from edgekit.errors import InvalidArgumentError, ParityError, SourceModelError
from edgekit.exporters.encoder import BiEncoderHead, EncoderStages, reference_scores, split_encoder
from edgekit.exporters.onnx_writer import OPSET, export_graph
from edgekit.exporters.source import TASK_RERANK, SourceInfo, inspect_source, resolve_source
from edgekit.manifest import EmbeddingTable, FileEntry, GraphSpec, Manifest, Scoring, TokenizerSpec
from edgekit.models.encoders import EncoderFamily, family_for_model_type
from edgekit.runtimes.backend import OrtBackend

Progress = Callable[[str, int, int], None]

EXAMPLE_QUERY = "how do I read a file line by line"
EXAMPLE_CANDIDATES = (
    "Open the file and iterate over it: each iteration yields one line.",
    "Sorting a list in place.",
    "The quick brown fox jumps over the lazy dog " * 40,  # long: exercises truncation
)
DTYPES = ("fp32", "fp16")
# fp16 graphs (weights, activations and IO in half precision) against the fp32 torch model:
# max abs diff relative to max(1, max |reference|). Measured on MiniLM: layers ~4e-3.
FP16_TOLERANCE = 2e-2


def load_source_model(info: SourceInfo) -> tuple[torch.nn.Module, Any]:
    """The transformers model (fp32, eval, eager attention) and fast tokenizer of a source."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    loader = AutoModelForSequenceClassification if info.task == TASK_RERANK else AutoModel
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = loader.from_pretrained(info.path, attn_implementation="eager")
            tokenizer = AutoTokenizer.from_pretrained(info.path)
    except (OSError, ValueError, KeyError) as error:
        raise SourceModelError(f"transformers could not load {info.path}: {str(error).splitlines()[0]}") from None
    if not tokenizer.is_fast:
        raise SourceModelError(f"{info.path}: no fast tokenizer (tokenizer.json) could be built; edgekit needs one")
    if info.task == TASK_RERANK and model.config.num_labels not in (1, 2):
        raise SourceModelError(
            f"cross-encoder has {model.config.num_labels} labels; edgekit scores 1-label (logit) or 2-label heads"
        )
    return model.float().eval(), tokenizer


def _position_limit(model: torch.nn.Module, family: EncoderFamily) -> int:
    positions = int(model.config.max_position_embeddings)
    if family.name == "roberta":  # RoBERTa positions start after the padding index
        positions -= int(model.config.pad_token_id) + 1
    return positions


def choose_max_length(info: SourceInfo, requested: int | None, tokenizer: Any, limit: int) -> int:
    """--max-length if given (<= the position limit), else the checkpoint's own default."""
    if requested is not None:
        if requested < 4 or requested > limit:
            raise InvalidArgumentError(f"--max-length {requested} is out of range; this model takes 4..{limit}")
        return requested
    default = info.default_max_length or getattr(tokenizer, "model_max_length", limit)
    return int(min(default, limit)) if default and default > 0 else limit


def _example_batch(tokenizer: Any, task: str, max_length: int, family: EncoderFamily) -> dict[str, torch.Tensor]:
    if task == TASK_RERANK:
        queries = [EXAMPLE_QUERY] * len(EXAMPLE_CANDIDATES)
        batch = tokenizer(queries, list(EXAMPLE_CANDIDATES), padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
    else:
        batch = tokenizer([EXAMPLE_QUERY, *EXAMPLE_CANDIDATES], padding=True, truncation=True,
                          max_length=max_length, return_tensors="pt")
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if family.has_token_type_ids else [])
    out = {key: batch[key] for key in keys if key in batch}
    if family.has_token_type_ids and "token_type_ids" not in out:
        out["token_type_ids"] = torch.zeros_like(out["input_ids"])
    return out


def _max_diff(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs diff, scale) where scale = max(1, max |expected|) for a relative tolerance."""
    return float(np.max(np.abs(actual - expected))), float(max(1.0, np.max(np.abs(expected))))


def _check_parity(name: str, diff: float, scale: float, tolerance: float) -> None:
    if diff > tolerance * scale:
        raise ParityError(
            f"{name}: ONNX output differs from torch by {diff:.3g} (allowed {tolerance * scale:.3g}); "
            "the model uses an op edgekit cannot export faithfully; please report it"
        )


def _export_stages(stages: EncoderStages, batch: dict[str, torch.Tensor], root: Path, tolerance: float,
                   progress: Progress, half: bool = False) -> tuple[list[GraphSpec], dict[str, float]]:
    """Export every stage (as fp16 copies when `half`) and check each against its fp32 module."""
    backend = OrtBackend("cpu")
    graphs: list[GraphSpec] = []
    parity: dict[str, float] = {}
    total = len(stages.layers) + 2
    with torch.no_grad():
        embed_names = ["inputs_embeds", "token_type_ids", "attention_mask"]
        inputs_embeds = stages.embeddings.word_embeddings[batch["input_ids"]]
        embed_args = (inputs_embeds, batch.get("token_type_ids", torch.zeros_like(batch["input_ids"])),
                      batch["attention_mask"])
        plan: list[tuple[str, str, int | None, torch.nn.Module, tuple[torch.Tensor, ...], list[str]]] = [
            ("embeddings", "embeddings", None, stages.embeddings, embed_args, embed_names)
        ]
        hidden = stages.embeddings(*embed_args)
        for i, layer in enumerate(stages.layers):
            plan.append((f"layer_{i:03d}", "layer", i, layer, (hidden, batch["attention_mask"]),
                         ["hidden_states", "attention_mask"]))
            hidden = layer(hidden, batch["attention_mask"])
        head_args: tuple[torch.Tensor, ...] = (hidden,)
        head_inputs = ["hidden_states"]
        if isinstance(stages.head, BiEncoderHead):
            head_args, head_inputs = (hidden, batch["attention_mask"]), ["hidden_states", "attention_mask"]
        plan.append(("head", "head", None, stages.head, head_args, head_inputs))

        for step, (name, role, index, module, args, input_names) in enumerate(plan):
            progress(f"exporting {name}", step, total)
            output = "hidden_states_out"
            if name == "head":
                output = "embedding" if "attention_mask" in input_names else "score"
            axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
            axes[output] = {0: "batch"} if name == "head" else {0: "batch", 1: "sequence"}
            exported = copy.deepcopy(module).half() if half else module
            exported_args = tuple(a.half() if half and a.is_floating_point() else a for a in args)
            try:
                spec = export_graph(exported, exported_args, root, f"graphs/{name}.onnx", input_names, [output],
                                    axes, name=name, role=role, index=index)
            except (RuntimeError, TypeError, ValueError) as error:
                raise SourceModelError(f"exporting {name} failed: {str(error).splitlines()[0]}") from None
            session = backend.load(root / spec.file)
            actual = session.run({n: a.numpy() for n, a in zip(input_names, exported_args)})[0]
            session.release()
            diff, scale = _max_diff(actual.astype(np.float32), module(*args).numpy())
            _check_parity(name, diff, scale, tolerance)
            parity[name] = diff
            graphs.append(spec)
    progress("graphs exported", total, total)
    return graphs, parity


def _save_embedding_table(stages: EncoderStages, root: Path, half: bool) -> EmbeddingTable:
    table = stages.embeddings.word_embeddings.detach().numpy().astype("<f2" if half else "<f4")
    relative = "graphs/word_embeddings.npy"
    np.save(root / relative, table, allow_pickle=False)
    return EmbeddingTable(FileEntry.of(root, relative), (int(table.shape[0]), int(table.shape[1])),
                          "float16" if half else "float32")


def _chained_parity(manifest: Manifest, stages: EncoderStages, tokenizer: Any, task: str,
                    max_length: int, tolerance: float) -> float:
    """Run the staged package with the real runtime; compare scores with the whole model."""
    from edgekit.runtimes.selector import Selector

    ranking = Selector(manifest, OrtBackend("cpu"), window=2, chunk=2).rank(
        EXAMPLE_QUERY, list(EXAMPLE_CANDIDATES), top_k=len(EXAMPLE_CANDIDATES))
    runtime = np.zeros(len(EXAMPLE_CANDIDATES))
    for result in ranking:
        runtime[result.index] = result.score
    batch = _example_batch(tokenizer, task, max_length, stages.family)
    expected = reference_scores(stages, task, batch).numpy()
    if task != TASK_RERANK:  # cosine of each candidate with the query (row 0)
        query, candidates = expected[0], expected[1:]
        expected = candidates @ query / (np.linalg.norm(candidates, axis=1) * np.linalg.norm(query))
    diff, scale = _max_diff(runtime, expected)
    _check_parity("chained package", diff, scale, tolerance)
    return diff


def _versions() -> dict[str, Any]:
    import onnx
    import onnxruntime
    import transformers

    return {"edgekit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET}


def export_encoder(source: str, out: Path, task: str | None = None, max_length: int | None = None,
                   dtype: str = "fp32", overwrite: bool = False,
                   progress: Progress | None = None) -> Manifest:
    """Export a cross-encoder (`rerank`) or bi-encoder (`select`) checkpoint to a package."""
    if dtype not in DTYPES:
        raise InvalidArgumentError(f"--dtype {dtype!r} is not supported; use fp32 or fp16")
    half = dtype == "fp16"
    report: Progress = progress or (lambda message, done, total: None)
    info = inspect_source(resolve_source(source), task)
    check_destination(Path(out), info.path, overwrite)  # before loading: fail fast, never eat the source
    family = family_for_model_type(info.model_type)
    report("loading model", 0, 1)
    model, tokenizer = load_source_model(info)
    stages = split_encoder(model, family, info.task, info.pooling, info.normalize)
    length = choose_max_length(info, max_length, tokenizer, _position_limit(model, family))
    batch = _example_batch(tokenizer, info.task, length, family)
    with staged_directory(Path(out), overwrite=overwrite) as root:
        tolerance = FP16_TOLERANCE if half else family.tolerance
        graphs, parity = _export_stages(stages, batch, root, tolerance, report, half)
        table = _save_embedding_table(stages, root, half)
        tokenizer.save_pretrained(root / "tokenizer")
        token_files = sorted(p.relative_to(root).as_posix() for p in (root / "tokenizer").iterdir())
        token_files.sort(key=lambda name: not name.endswith("tokenizer.json"))  # tokenizer.json first
        if not token_files[0].endswith("tokenizer.json"):
            raise SourceModelError(f"{info.path}: the tokenizer did not save a tokenizer.json")
        scoring = (Scoring(kind="logit", num_labels=int(model.config.num_labels)) if info.task == TASK_RERANK
                   else Scoring(kind="cosine", pooling=info.pooling, normalize=info.normalize))
        manifest = Manifest(
            task=info.task,
            family=family.name,
            max_length=length,
            hidden_size=int(model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.dim),
            num_layers=len(stages.layers),
            dtype=dtype,
            graphs=tuple(graphs),
            tokenizer=TokenizerSpec(
                files=tuple(FileEntry.of(root, name) for name in token_files),
                pad_token_id=int(tokenizer.pad_token_id),
                pair=info.task == TASK_RERANK,
                type_ids="token_type_ids" in tokenizer.model_input_names,
            ),
            scoring=scoring,
            source={"path": str(info.path), "model_type": info.model_type, "architectures": list(info.architectures)},
            exporter=_versions(),
            parity={"tolerance": tolerance, "graphs_max_abs_diff": parity, "reference": "torch fp32"},
            embedding_table=table,
            root=root,
        )
        manifest.save(root)
        chained = _chained_parity(manifest, stages, tokenizer, info.task, length, tolerance)
        manifest = dataclasses.replace(manifest, parity={**manifest.parity, "chained_max_abs_diff": chained})
        manifest.save(root)
    return Manifest.load(out)
