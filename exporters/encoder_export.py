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

from edgekit.atomic import check_destination, staged_directory
from edgekit.errors import InvalidArgumentError, SourceModelError
from edgekit.exporters.coreml.fp16_masks import encoder_layer_for_core_ml
from edgekit.exporters.coreml.options import CoreMLOptions
from edgekit.exporters.coreml.twins import TorchStage, add_core_ml_graphs, record_chained
from edgekit.exporters.encoder import BiEncoderHead, EncoderStages, reference_scores, split_encoder
from edgekit.exporters.fusion import FusionPlan, describe, plan_for
from edgekit.exporters.package_parts import (
    check_parity,
    export_checked,
    max_diff,
    save_embedding_table,
    save_tokenizer,
    versions,
)
from edgekit.exporters.quant_gate import GateOptions, quantize_package, resolve_gate
from edgekit.exporters.shared_layers import share_checked, share_layers
from edgekit.exporters.source import (
    LAYER_HEADS_FILE,
    TASK_RERANK,
    SourceInfo,
    checkpoint_errors,
    inspect_source,
    load_failure,
    resolve_source,
)
from edgekit.manifest import GraphSpec, Manifest
from edgekit.models.encoders import EncoderFamily, family_for_model_type
from edgekit.ranking_manifest import RankingSection, Scoring, TokenizerSpec
from edgekit.runtimes.backends import backend_for

Progress = Callable[[str, int, int], None]

EXAMPLE_QUERY = "how do I read a file line by line"
EXAMPLE_CANDIDATES = (
    "Open the file and iterate over it: each iteration yields one line.",
    "Sorting a list in place.",
    "The quick brown fox jumps over the lazy dog " * 40,  # long: exercises truncation
)
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
    except checkpoint_errors() as error:
        raise load_failure("transformers", info.path, error) from None
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


def load_depth_heads(stages: EncoderStages, source: Path) -> dict[int, torch.nn.Module]:
    """Per-depth heads from `source/LAYER_HEADS_FILE`, each a copy of the model's head module with
    that depth's tensors loaded ({} when the file is absent). Checked: depths 1..L-1, every
    head parameter present with its shape, nothing else."""
    path = source / LAYER_HEADS_FILE
    if not path.is_file():
        return {}
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise SourceModelError(f"{path} is not readable safetensors ({error}); rebuild the checkpoint") from None
    # the model's own parameter names of the head, e.g. "bert.pooler.dense.weight" -> head's own name
    head_params = {id(param): name for name, param in stages.head.named_parameters()}
    names = {name: head_params[id(param)] for name, param in stages.reference.named_parameters()
             if id(param) in head_params}
    heads: dict[int, torch.nn.Module] = {}
    by_depth: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        prefix, _, model_name = key.partition(".")
        depth = int(prefix.removeprefix("depth_")) if prefix.removeprefix("depth_").isdigit() else -1
        if not prefix.startswith("depth_") or not 1 <= depth < len(stages.layers) or model_name not in names:
            raise SourceModelError(f"{path.name}: unexpected tensor {key!r}; expected depth_<1..{len(stages.layers) - 1}>."
                                   f"<one of {sorted(names)}>")
        by_depth.setdefault(depth, {})[names[model_name]] = tensor
    for depth, state in sorted(by_depth.items()):
        head = copy.deepcopy(stages.head)
        try:
            head.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise SourceModelError(f"{path.name}: depth {depth} head does not fit the model "
                                   f"({str(error).splitlines()[0]}); rebuild the checkpoint") from None
        heads[depth] = head.eval()
    return heads


def _export_stages(stages: EncoderStages, batch: dict[str, torch.Tensor], root: Path, tolerance: float,
                   progress: Progress, half: bool = False,
                   depth_heads: dict[int, torch.nn.Module] | None = None, fusion: FusionPlan | None = None,
                   fired: dict[str, dict[str, int]] | None = None,
                   collect: list[TorchStage] | None = None) -> tuple[list[GraphSpec], dict[str, float]]:
    """Export every stage (as fp16 copies when `half`), fuse it with `fusion` when given (what
    fired per graph into `fired`) and check each against its fp32 module. collect: receives each
    graph's fp32 module and example (layers in their fp16-safe mask form) for Core ML twins.

    depth_heads: {depth: head module} scored on layer `depth`'s output, exported after the head
    as role "depth_head" with index = depth.
    """
    fired = {} if fired is None else fired
    graphs: list[GraphSpec] = []
    parity: dict[str, float] = {}
    depth_heads = depth_heads or {}
    total = len(stages.layers) + 2 + len(depth_heads)
    with torch.no_grad():
        embed_names = ["inputs_embeds", "token_type_ids", "attention_mask"]
        inputs_embeds = stages.embeddings.word_embeddings[batch["input_ids"]]
        embed_args = (inputs_embeds, batch.get("token_type_ids", torch.zeros_like(batch["input_ids"])),
                      batch["attention_mask"])
        plan: list[tuple[str, str, int | None, torch.nn.Module, tuple[torch.Tensor, ...], list[str]]] = [
            ("embeddings", "embeddings", None, stages.embeddings, embed_args, embed_names)
        ]
        hidden = stages.embeddings(*embed_args)
        by_depth: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(stages.layers):
            plan.append((f"layer_{i:03d}", "layer", i, layer, (hidden, batch["attention_mask"]),
                         ["hidden_states", "attention_mask"]))
            hidden = layer(hidden, batch["attention_mask"])
            by_depth[i + 1] = hidden
        head_args: tuple[torch.Tensor, ...] = (hidden,)
        head_inputs = ["hidden_states"]
        if isinstance(stages.head, BiEncoderHead):
            head_args, head_inputs = (hidden, batch["attention_mask"]), ["hidden_states", "attention_mask"]
        plan.append(("head", "head", None, stages.head, head_args, head_inputs))
        for depth, module in sorted(depth_heads.items()):
            plan.append((f"head_depth_{depth:03d}", "depth_head", depth, module, (by_depth[depth],), ["hidden_states"]))

        for step, (name, role, index, module, args, input_names) in enumerate(plan):
            progress(f"exporting {name}", step, total)
            output = "hidden_states_out"
            is_head = role in ("head", "depth_head")
            if is_head:
                output = "embedding" if "attention_mask" in input_names else "score"
            axes = {n: {0: "batch", 1: "sequence"} for n in input_names}
            axes[output] = {0: "batch"} if is_head else {0: "batch", 1: "sequence"}
            exported = copy.deepcopy(module).half() if half else module
            exported_args = tuple(a.half() if half and a.is_floating_point() else a for a in args)
            spec, parity[name] = export_checked(module, args, exported, exported_args, root, name, role, index,
                                                input_names, output, axes, tolerance, fusion, fired)
            if name in fired:
                progress(f"fused {name}: {describe(fired[name])}", step + 1, total)
            graphs.append(spec)
            if collect is not None:
                collect.append(TorchStage(spec, encoder_layer_for_core_ml(module) if role == "layer" else module,
                                          args, tuple(input_names)))
    progress("graphs exported", total, total)
    return graphs, parity


def _chained_parity(manifest: Manifest, stages: EncoderStages, tokenizer: Any, task: str,
                    max_length: int, tolerance: float, backend: Any = None, what: str = "ONNX") -> float:
    """Run the staged package with the real runtime (its ONNX graphs, or the graphs `backend`
    loads from `manifest`); compare scores with the whole model."""
    from edgekit.runtimes.selector import Selector

    runtime = Selector(manifest, backend or backend_for("onnx", "cpu"), window=2, chunk=2).rank(
        EXAMPLE_QUERY, list(EXAMPLE_CANDIDATES), top_k=len(EXAMPLE_CANDIDATES)).scores_by_candidate()
    batch = _example_batch(tokenizer, task, max_length, stages.family)
    expected = reference_scores(stages, task, batch).numpy()
    if task != TASK_RERANK:  # cosine of each candidate with the query (row 0)
        query, candidates = expected[0], expected[1:]
        expected = candidates @ query / (np.linalg.norm(candidates, axis=1) * np.linalg.norm(query))
    diff, scale = max_diff(runtime, expected)
    check_parity("chained package", diff, scale, tolerance, what)
    return diff


def export_encoder(source: str, out: Path, task: str | None = None, max_length: int | None = None,
                   dtype: str = "fp32", overwrite: bool = False,
                   progress: Progress | None = None, fuse: bool = False, shared_layers: bool = False,
                   gate: GateOptions | None = None, coreml: CoreMLOptions | None = None) -> Manifest:
    """Export a cross-encoder (`rerank`) or bi-encoder (`select`) checkpoint to a package;
    `fuse`: apply onnxruntime's BERT fusions to each graph (exporters/fusion.py); dtype int8 or
    mixed: the fp32 package is staged, then quantized behind the agreement `gate`
    (exporters/quant_gate.py; default options when None); `shared_layers`: one graph for every layer,
    weights fed as inputs (exporters/shared_layers.py; after quantizing when both); `coreml`: the
    graph formats to write, Core ML twins converted after the ONNX package is checked
    (exporters/coreml/twins.py)."""
    formats = coreml or CoreMLOptions()
    formats.check_combination(dtype, shared_layers, fuse)
    quantize = resolve_gate(dtype, gate)
    half = dtype == "fp16"
    report: Progress = progress or (lambda message, done, total: None)
    info = inspect_source(resolve_source(source), task)
    check_destination(Path(out), info.path, overwrite)  # before loading: fail fast, never eat the source
    family = family_for_model_type(info.model_type)
    report("loading model", 0, 1)
    model, tokenizer = load_source_model(info)
    stages = split_encoder(model, family, info.task, info.pooling, info.normalize, fusable=fuse)
    fusion = plan_for(model.config, "bert") if fuse else None
    fired: dict[str, dict[str, int]] = {}
    depth_heads = load_depth_heads(stages, info.path) if info.task == TASK_RERANK else {}
    length = choose_max_length(info, max_length, tokenizer, _position_limit(model, family))
    batch = _example_batch(tokenizer, info.task, length, family)
    with staged_directory(Path(out), overwrite=overwrite) as root:
        tolerance = FP16_TOLERANCE if half else family.tolerance
        collected: list[TorchStage] | None = [] if formats.wants_coreml else None
        graphs, parity = _export_stages(stages, batch, root, tolerance, report, half, depth_heads, fusion, fired,
                                        collected)
        table = save_embedding_table(stages.embeddings.word_embeddings, root, half)
        token_files = save_tokenizer(tokenizer, root, info.path)
        scoring = (Scoring(kind="logit", num_labels=int(model.config.num_labels)) if info.task == TASK_RERANK
                   else Scoring(kind="cosine", pooling=info.pooling, normalize=info.normalize))
        manifest = Manifest(
            task=info.task,
            family=family.name,
            dtype="fp32" if quantize else dtype,
            graphs=tuple(graphs),
            ranking=RankingSection(
                max_length=length,
                hidden_size=int(model.config.hidden_size if hasattr(model.config, "hidden_size")
                                else model.config.dim),
                num_layers=len(stages.layers),
                tokenizer=TokenizerSpec(
                    files=token_files,
                    pad_token_id=int(tokenizer.pad_token_id),
                    pair=info.task == TASK_RERANK,
                    type_ids="token_type_ids" in tokenizer.model_input_names,
                ),
                scoring=scoring,
                embedding_table=table,
            ),
            source={"path": str(info.path), "model_type": info.model_type, "architectures": list(info.architectures)},
            exporter={**versions(), **({"fusions": fusion.record(fired)} if fusion else {})},
            parity={"tolerance": tolerance, "graphs_max_abs_diff": parity, "reference": "torch fp32"},
            root=root,
        )
        manifest.save(root)
        if shared_layers and quantize is None:  # before the chained parity, which then runs the shared package
            manifest = share_layers(root, manifest)
        chained = _chained_parity(manifest, stages, tokenizer, info.task, length, tolerance)
        manifest = dataclasses.replace(manifest, parity={**manifest.parity, "chained_max_abs_diff": chained})
        if quantize is not None:
            manifest = quantize_package(manifest, dtype, quantize, report)
            if shared_layers:  # the gate measured the per-layer int8 graphs: sharing must not change a score
                manifest = share_checked(root, manifest, EXAMPLE_QUERY, list(EXAMPLE_CANDIDATES))
        manifest.save(root)
        if collected is not None:
            manifest = add_core_ml_graphs(root, manifest, collected, formats, {"sequence": length},
                                          family.tolerance, report)
            manifest = record_chained(root, manifest, formats, lambda view, backend, allowed: _chained_parity(
                view, stages, tokenizer, info.task, length, allowed, backend, "Core ML"))
    return Manifest.load(out)
