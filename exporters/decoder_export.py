"""`edgekit export` for decoder rerankers (Qwen3-Reranker style, `--task rerank`).

Pipeline, as for encoders: load with transformers (fp32, eager attention) -> split into
embeddings / one graph per decoder layer / yes-no head -> export each stage and check it
against torch -> save the embedding table, tokenizer and a manifest with the prompt, the rotary
parameters and left padding -> run the staged package with the real runtime against the whole
transformers model on prompts built the model card's way -> move the package into place.

Example::

    manifest = export_decoder("path/to/qwen3-reranker", Path("pkg"), instruction="Find code that ...")
    manifest.ranking.prompt.instruction, manifest.ranking.scoring.label_tokens
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch

from edgekit.atomic import check_destination, staged_directory
from edgekit.errors import InvalidArgumentError, SourceModelError
from edgekit.exporters.coreml.fp16_masks import FiniteBias
from edgekit.exporters.coreml.options import CoreMLOptions
from edgekit.exporters.coreml.twins import TorchStage, add_core_ml_graphs, record_chained
from edgekit.exporters.decoder import DecoderStages, reference_scores, split_decoder
from edgekit.exporters.encoder_export import EXAMPLE_CANDIDATES, EXAMPLE_QUERY, Progress
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
from edgekit.exporters.source import SourceInfo, checkpoint_errors, load_failure
from edgekit.manifest import GraphSpec, Manifest
from edgekit.models.decoders import CAUSAL_LM, DEFAULT_INSTRUCTION, PREFIX, SEQ_CLS, SUFFIX, TEMPLATE
from edgekit.ranking_manifest import PromptSpec, RankingSection, RotarySpec, Scoring, TokenizerSpec

EXAMPLE_DOCUMENTS = EXAMPLE_CANDIDATES  # the same texts the encoder exporter checks with
TOLERANCE = 1e-4  # fp32 graphs vs torch, relative to max(1, |output|)
FP16_TOLERANCE = 2e-2
DEFAULT_MAX_LENGTH = 8192  # the Qwen3-Reranker model card's


def load_decoder(info: SourceInfo) -> tuple[torch.nn.Module, Any]:
    """The transformers model (fp32, eval, eager attention) and its fast tokenizer."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if CAUSAL_LM in info.architectures:
        loader: Any = AutoModelForCausalLM
    elif SEQ_CLS in info.architectures:
        loader = AutoModelForSequenceClassification
    else:
        raise SourceModelError(f"{info.path}: architectures {list(info.architectures)}; a decoder reranker is "
                               f"{CAUSAL_LM} (yes/no logits) or {SEQ_CLS} (a seq-cls conversion)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = loader.from_pretrained(info.path, attn_implementation="eager", dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(info.path)
    except checkpoint_errors() as error:
        raise load_failure("transformers", info.path, error) from None
    if not tokenizer.is_fast:
        raise SourceModelError(f"{info.path}: no fast tokenizer (tokenizer.json); edgekit needs one")
    if tokenizer.pad_token_id is None:
        raise SourceModelError(f"{info.path}: the tokenizer has no pad token; set one in tokenizer_config.json")
    return model.float().eval(), tokenizer


def rotary_spec(config: Any) -> RotarySpec:
    """The rotary parameters the runtime needs; only plain RoPE and full attention are supported."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    if rope.get("rope_type", "default") != "default":
        raise SourceModelError(f"rope type {rope.get('rope_type')!r} is not supported yet (edgekit computes plain RoPE)")
    if any(kind != "full_attention" for kind in (getattr(config, "layer_types", None) or [])):
        raise SourceModelError("sliding-window layers are not supported yet; edgekit builds full causal masks")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return RotarySpec(theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10_000.0))), dim=int(head_dim))


def prompt_ids(tokenizer: Any, prompt: PromptSpec, query: str, documents: list[str], max_length: int
               ) -> list[list[int]]:
    """Token ids the model card's way: prefix + middle (truncated to fit) + suffix."""
    prefix = tokenizer.encode(prompt.prefix, add_special_tokens=False)
    suffix = tokenizer.encode(prompt.suffix, add_special_tokens=False)
    budget = max_length - len(prefix) - len(suffix)
    middles = [prompt.template.format(instruction=prompt.instruction, query=query, document=d) for d in documents]
    encoded = tokenizer(middles, add_special_tokens=False, truncation=True, max_length=budget)["input_ids"]
    return [prefix + ids + suffix for ids in encoded]


def left_padded(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, row in enumerate(ids):
        input_ids[i, length - len(row):] = torch.tensor(row)
        mask[i, length - len(row):] = 1
    return input_ids, mask


def _bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    length = mask.shape[1]
    allowed = torch.tril(torch.ones(length, length, dtype=torch.bool))[None] & mask[:, None, :].bool()
    return torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype)[:, None]


def _export_stages(stages: DecoderStages, input_ids: torch.Tensor, mask: torch.Tensor, root: Path,
                   tolerance: float, progress: Progress, half: bool, fusion: FusionPlan | None = None,
                   fired: dict[str, dict[str, int]] | None = None,
                   collect: list[TorchStage] | None = None) -> tuple[list[GraphSpec], dict[str, float]]:
    """Export and check every stage; collect: receives each graph's fp32 module (layers with
    their bias kept fp16-finite) and example, for Core ML twins."""
    fired = {} if fired is None else fired
    graphs: list[GraphSpec] = []
    parity: dict[str, float] = {}
    total = len(stages.layers) + 2
    base = stages.reference.model
    with torch.no_grad():
        embeds = stages.table[input_ids]
        positions = torch.arange(input_ids.shape[1])[None]
        cos, sin = base.rotary_emb(embeds, positions)  # transformers' own tables, [1,S,D]
        cos, sin = cos.expand(len(input_ids), -1, -1).contiguous(), sin.expand(len(input_ids), -1, -1).contiguous()
        bias = _bias(mask, embeds.dtype)
        hidden = stages.embeddings(embeds)
        plan: list[tuple[str, str, int | None, torch.nn.Module, tuple[torch.Tensor, ...], list[str]]] = [
            ("embeddings", "embeddings", None, stages.embeddings, (embeds,), ["inputs_embeds"])]
        for i, layer in enumerate(stages.layers):
            plan.append((f"layer_{i:03d}", "layer", i, layer, (hidden, bias, cos, sin),
                         ["hidden_states", "attention_bias", "cos", "sin"]))
            hidden = layer(hidden, bias, cos, sin)
        plan.append(("head", "head", None, stages.head, (hidden,), ["hidden_states"]))
        for step, (name, role, index, module, args, names) in enumerate(plan):
            progress(f"exporting {name}", step, total)
            output = "score" if role == "head" else "hidden_states_out"
            axes = {n: {0: "batch", 1: "sequence"} for n in names}
            axes["attention_bias"] = {0: "batch", 2: "sequence", 3: "sequence"}
            axes[output] = {0: "batch"} if role == "head" else {0: "batch", 1: "sequence"}
            axes = {key: value for key, value in axes.items() if key in names or key == output}
            exported = copy.deepcopy(module).half() if half else module
            half_args = tuple(a.half() if half and a.is_floating_point() else a for a in args)
            if half and "attention_bias" in names:  # fp32 min overflows fp16: rebuild the bias
                half_args = (half_args[0], _bias(mask, torch.float16), *half_args[2:])
            spec, parity[name] = export_checked(module, args, exported, half_args, root, name, role, index, names,
                                                output, axes, tolerance, fusion, fired)
            if name in fired:
                progress(f"fused {name}: {describe(fired[name])}", step + 1, total)
            graphs.append(spec)
            if collect is not None:
                collect.append(TorchStage(spec, FiniteBias(module) if role == "layer" else module, args, tuple(names)))
    progress("graphs exported", total, total)
    return graphs, parity


def _chained_parity(manifest: Manifest, stages: DecoderStages, tokenizer: Any, tolerance: float,
                    backend: Any = None, what: str = "ONNX") -> float:
    """The staged package through the real runtime (its ONNX graphs, or the graphs `backend`
    loads from `manifest`) vs the whole transformers model."""
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.selector import Selector

    documents = list(EXAMPLE_DOCUMENTS)
    runtime = Selector(manifest, backend or backend_for("onnx", "cpu"), window=2, chunk=2).rank(
        EXAMPLE_QUERY, documents, top_k=len(documents)).scores_by_candidate()
    assert manifest.ranking.prompt is not None
    ids = prompt_ids(tokenizer, manifest.ranking.prompt, EXAMPLE_QUERY, documents, manifest.ranking.max_length)
    expected = reference_scores(stages, *left_padded(ids, int(tokenizer.pad_token_id))).numpy()
    diff, scale = max_diff(runtime, expected)
    check_parity("chained package", diff, scale, tolerance, what)
    return diff


def export_decoder(info: SourceInfo, out: Path, max_length: int | None = None, dtype: str = "fp32",
                   overwrite: bool = False, progress: Progress | None = None,
                   instruction: str | None = None, fuse: bool = False, shared_layers: bool = False,
                   gate: GateOptions | None = None, coreml: CoreMLOptions | None = None) -> Manifest:
    """Export a Qwen3-style decoder reranker (inspected `info`) to a package at `out`; `fuse`:
    apply onnxruntime's Qwen3 fusions (RMSNorm) to each graph (exporters/fusion.py); dtype int8
    or mixed: quantized behind the agreement `gate` after the fp32 package is staged
    (exporters/quant_gate.py); `shared_layers`: one graph for every layer, weights fed as
    inputs (exporters/shared_layers.py; after quantizing when both); `coreml`: the graph formats
    to write (Core ML twins: exporters/coreml/twins.py)."""
    formats = coreml or CoreMLOptions()
    formats.check_combination(dtype, shared_layers, fuse)
    quantize = resolve_gate(dtype, gate)
    half = dtype == "fp16"
    report: Progress = progress or (lambda message, done, total: None)
    if instruction is not None and not instruction.strip():
        raise InvalidArgumentError("--instruction is empty; pass the task description or leave it out")
    check_destination(Path(out), info.path, overwrite)
    report("loading model", 0, 1)
    model, tokenizer = load_decoder(info)
    stages = split_decoder(model, tokenizer)
    rotary = rotary_spec(model.config)
    prompt = PromptSpec(prefix=PREFIX, template=TEMPLATE, suffix=SUFFIX, instruction=instruction or DEFAULT_INSTRUCTION)
    fixed = len(tokenizer.encode(PREFIX + SUFFIX, add_special_tokens=False))
    limit = int(model.config.max_position_embeddings)
    length = max_length if max_length is not None else min(limit, DEFAULT_MAX_LENGTH)
    if length > limit or length < fixed + 8:
        raise InvalidArgumentError(f"--max-length {length} is out of range; this model takes {fixed + 8}..{limit} "
                                   f"(the prompt alone is {fixed} tokens)")
    ids = prompt_ids(tokenizer, prompt, EXAMPLE_QUERY, list(EXAMPLE_DOCUMENTS), min(length, fixed + 64))
    input_ids, mask = left_padded(ids, int(tokenizer.pad_token_id))
    config = model.config
    fusion = plan_for(config, "qwen3") if fuse else None
    fired: dict[str, dict[str, int]] = {}
    with staged_directory(Path(out), overwrite=overwrite) as root:
        tolerance = FP16_TOLERANCE if half else TOLERANCE
        collected: list[TorchStage] | None = [] if formats.wants_coreml else None
        graphs, parity = _export_stages(stages, input_ids, mask, root, tolerance, report, half, fusion, fired,
                                        collected)
        manifest = Manifest(
            task="rerank",
            family=str(config.model_type),
            dtype="fp32" if quantize else dtype,
            graphs=tuple(graphs),
            ranking=RankingSection(
                max_length=length,
                hidden_size=int(config.hidden_size),
                num_layers=len(stages.layers),
                tokenizer=TokenizerSpec(files=save_tokenizer(tokenizer, root, info.path),
                                        pad_token_id=int(tokenizer.pad_token_id), pair=False, type_ids=False),
                scoring=Scoring(kind="probability", label_tokens=stages.label_tokens,
                                num_labels=1 if SEQ_CLS in info.architectures else None),
                embedding_table=save_embedding_table(stages.table, root, half),
                padding_side="left",
                prompt=prompt,
                rotary=rotary,
                dims={"num_attention_heads": int(config.num_attention_heads),
                      "num_key_value_heads": int(config.num_key_value_heads), "head_dim": rotary.dim,
                      "intermediate_size": int(config.intermediate_size), "vocab_size": int(config.vocab_size)},
            ),
            source={"path": str(info.path), "model_type": info.model_type, "architectures": list(info.architectures)},
            exporter={**versions(), **({"fusions": fusion.record(fired)} if fusion else {})},
            parity={"tolerance": tolerance, "graphs_max_abs_diff": parity, "reference": "torch fp32"},
            root=root,
        )
        manifest.save(root)
        if shared_layers and quantize is None:  # before the chained parity, which then runs the shared package
            manifest = share_layers(root, manifest)
        chained = _chained_parity(manifest, stages, tokenizer, tolerance)
        manifest = dataclasses.replace(manifest, parity={**manifest.parity, "chained_max_abs_diff": chained})
        if quantize is not None:
            manifest = quantize_package(manifest, dtype, quantize, report)
            if shared_layers:  # the gate measured the per-layer int8 graphs: sharing must not change a score
                manifest = share_checked(root, manifest, EXAMPLE_QUERY, list(EXAMPLE_CANDIDATES))
        manifest.save(root)
        if collected is not None:
            manifest = add_core_ml_graphs(root, manifest, collected, formats, {"sequence": length}, TOLERANCE, report)
            manifest = record_chained(root, manifest, formats, lambda view, backend, allowed: _chained_parity(
                view, stages, tokenizer, allowed, backend, "Core ML"))
    return Manifest.load(out)
