"""Recipe: the bundled all-MiniLM-L6-v2 fine-tuned into a cross-encoder with deep supervision.

Why: the only trained transformer on these machines is a bi-encoder, whose intermediate layers
rank poorly, so early pruning cannot be shown on it. This recipe turns its weights into a real
cross-encoder (`[CLS] query [SEP] passage [SEP]` -> one relevance logit) trained offline on
stdlib docstrings (`models.recipes.docstring_pairs`: no dev-set text, held-out modules kept out).

Contract of `build_minilm_cross_encoder`:
- starts from the bundled MiniLM weights in `BertForSequenceClassification(num_labels=1)`
  with a freshly initialised pooler + classifier (the "head");
- loss: listwise softmax cross-entropy over (1 positive + 7 negatives) groups; with
  `deep_supervision` a head is applied to the [CLS] state of every intermediate layer and
  `intermediate_weight * mean(intermediate CE)` is added to the final-layer CE. `heads="shared"`:
  the model's own head at every depth; `heads="per-layer"`: one more head (pooler + classifier,
  freshly initialised) per intermediate depth, saved beside the checkpoint in
  `edgekit_layer_heads.safetensors` (keys `depth_<d>.<parameter name in the model>`), which
  `edgekit export` turns into per-depth head graphs the runtime scores with between layers;
- deterministic for (seed, steps, groups_per_step) on one machine: seeded init and data order,
  `torch.use_deterministic_algorithms(True)`, 2 threads (global torch state is restored after);
- writes, atomically, a standard checkpoint directory: config.json (num_labels=1),
  model.safetensors, tokenizer files incl. tokenizer.json (model_max_length 256), and
  `edgekit_recipe.json` (config, data sizes, loss curve summary, wall time, versions).
  `AutoModelForSequenceClassification.from_pretrained` loads it and `export_encoder(...,
  task="rerank")` exports it like any other cross-encoder.

Example::

    path = build_minilm_cross_encoder(default_model_dir())  # full: 200 steps, ~2.5 s/step on 2 idle cores
    path = build_minilm_cross_encoder(tmp / "ce", steps=5, groups_per_step=2)  # fast, for tests
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import InvalidArgumentError, MissingDependencyError
from edgekit.exporters.source import LAYER_HEADS_FILE

Progress = Callable[[str, int, int], None]

MODEL_NAME = "minilm-cross-encoder"
RECIPE_FILE = "edgekit_recipe.json"
FULL_STEPS = 200
HEADS = ("shared", "per-layer")  # one pooler + classifier for every depth, or one per depth


@dataclass(frozen=True)
class RecipeConfig:
    """Every knob of one training run (recorded in `edgekit_recipe.json`)."""

    steps: int = FULL_STEPS
    seed: int = 0
    deep_supervision: bool = True
    groups_per_step: int = 4
    hard_negatives: int = 4
    random_negatives: int = 3
    learning_rate: float = 1e-4  # encoder body (peak)
    head_learning_rate: float = 1e-3  # the new pooler + classifier: a short run must move them far
    warmup_share: float = 0.1
    weight_decay: float = 0.01
    intermediate_weight: float = 1.0
    heads: str = "shared"
    max_length: int = 192  # training truncation; stdlib passages are <= 360 chars (~110 tokens)
    export_max_length: int = 256  # tokenizer.model_max_length saved: the exporter's default
    threads: int = 2


def default_model_dir() -> Path:
    """Where the full model is cached (never committed): <edgekit cache>/models/minilm-cross-encoder."""
    from edgekit.demo import cache_dir

    return cache_dir() / "models" / MODEL_NAME


class DepthHeads(nn.Module):
    """One head (a copy of the model's pooler + classifier) per intermediate depth 1..L-1."""

    def __init__(self, model: nn.Module, std: float) -> None:
        super().__init__()
        depths = model.config.num_hidden_layers - 1
        self.poolers = nn.ModuleList(copy.deepcopy(model.bert.pooler) for _ in range(depths))
        self.classifiers = nn.ModuleList(copy.deepcopy(model.classifier) for _ in range(depths))
        for linear in [*(p.dense for p in self.poolers), *self.classifiers]:
            nn.init.normal_(linear.weight, std=std)
            nn.init.zeros_(linear.bias)

    def state_for_export(self) -> dict[str, torch.Tensor]:
        """`depth_<d>.<model parameter name>` -> tensor, the layout `edgekit export` reads."""
        tensors: dict[str, torch.Tensor] = {}
        for d, (pooler, classifier) in enumerate(zip(self.poolers, self.classifiers), start=1):
            for name, value in pooler.state_dict().items():
                tensors[f"depth_{d}.bert.pooler.{name}"] = value.detach().clone().contiguous()
            for name, value in classifier.state_dict().items():
                tensors[f"depth_{d}.classifier.{name}"] = value.detach().clone().contiguous()
        return tensors


def layer_scores(model: nn.Module, batch: dict[str, torch.Tensor],
                 depth_heads: DepthHeads | None = None) -> torch.Tensor:
    """Head logits at every depth 1..L: [L, B]. Row L-1 equals the model's own logits.

    The head (pooler + dropout + classifier) sees only each layer's [CLS] state, exactly as the
    exported head graphs do between layers at run time (dropout is off in eval mode). Without
    `depth_heads` the model's own head scores every depth (shared); with them, depth d < L uses
    its own head.
    """
    out = model.bert(**batch, output_hidden_states=True)
    states = out.hidden_states[1:]  # L x [B, S, H]
    cls = torch.stack([h[:, 0] for h in states])  # [L, B, H]
    layers, rows, width = cls.shape
    if depth_heads is None:
        pooled = model.bert.pooler(cls.reshape(layers * rows, 1, width))  # pooler reads position 0
        return model.classifier(model.dropout(pooled)).reshape(layers, rows)
    scores = [classifier(model.dropout(pooler(cls[d][:, None])))[:, 0]
              for d, (pooler, classifier) in enumerate(zip(depth_heads.poolers, depth_heads.classifiers))]
    final = model.classifier(model.dropout(model.bert.pooler(cls[-1][:, None])))[:, 0]
    return torch.stack([*scores, final])


def _initial_model(seed: int) -> tuple[nn.Module, Any, Path]:
    from transformers import AutoTokenizer, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    from edgekit.demo import bundled_minilm_path

    source = bundled_minilm_path()
    torch.manual_seed(seed)
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # "newly initialised head" is the point, not a warning
    hf_logging.disable_progress_bar()  # progress belongs to the caller (`progress`)
    try:
        model = BertForSequenceClassification.from_pretrained(source, num_labels=1, attn_implementation="sdpa")
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    std = model.config.initializer_range
    for linear in (model.bert.pooler.dense, model.classifier):  # a new head, whatever the source held
        nn.init.normal_(linear.weight, std=std)
        nn.init.zeros_(linear.bias)
    return model.float(), AutoTokenizer.from_pretrained(source), source


def _data(config: RecipeConfig) -> tuple[list[Any], dict[str, Any]]:
    try:
        import rank_bm25  # noqa: F401 - checked here so the error is a typed one
    except ImportError:
        raise MissingDependencyError("the recipe needs rank-bm25; pip install 'edgekit[bench]'") from None
    from edgekit.models.docstrings import collect_passages, training_modules
    from edgekit.models.recipes.docstring_pairs import GroupSampler, split_pools, without_devset_text

    collected = collect_passages(training_modules())
    passages = without_devset_text(collected)
    pools = split_pools(passages)
    sampler = GroupSampler(pools.train, config.hard_negatives, config.random_negatives)
    groups = sampler.groups(config.steps * config.groups_per_step, config.seed)
    sizes = {
        "training_module_passages": len(collected),
        "dropped_as_devset_duplicates": len(collected) - len(passages),
        "train_passages": len(pools.train),
        "held_out_passages": len(pools.held_out),
        "held_out_modules": list(pools.held_out_modules),
        "groups": len(groups),
        "group_size": 1 + config.hard_negatives + config.random_negatives,
    }
    return groups, sizes


def _schedule(step: int, config: RecipeConfig) -> float:
    """Multiplier of the peak learning rates: linear warm-up, then linear decay to zero."""
    warmup = max(1, int(config.warmup_share * config.steps))
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (config.steps - step) / max(1, config.steps - warmup))


def _train(model: nn.Module, tokenizer: Any, groups: list[Any], config: RecipeConfig, report: Progress,
           depth_heads: DepthHeads | None = None) -> list[list[float]]:
    """Run the optimisation; returns per-step cross-entropy at each depth 1..L."""
    def is_head(name: str) -> bool:
        return name.startswith(("classifier.", "bert.pooler.", "depth_heads."))

    def no_decay(name: str) -> bool:
        return name.endswith("bias") or "LayerNorm" in name

    params = list(model.named_parameters())
    if depth_heads is not None:
        params += [(f"depth_heads.{n}", p) for n, p in depth_heads.named_parameters()]
    optimiser = torch.optim.AdamW([
        {"params": [p for n, p in params if not is_head(n) and not no_decay(n)], "peak": config.learning_rate,
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in params if not is_head(n) and no_decay(n)], "peak": config.learning_rate,
         "weight_decay": 0.0},
        {"params": [p for n, p in params if is_head(n)], "peak": config.head_learning_rate,
         "weight_decay": 0.0},
    ], lr=config.learning_rate)
    per_group = 1 + config.hard_negatives + config.random_negatives
    history: list[list[float]] = []
    model.train()
    for step in range(config.steps):
        chunk = groups[step * config.groups_per_step:(step + 1) * config.groups_per_step]
        queries = [g.query for g in chunk for _ in g.texts]
        texts = [t for g in chunk for t in g.texts]
        batch = tokenizer(queries, texts, padding=True, truncation=True, max_length=config.max_length,
                          return_tensors="pt")
        scores = layer_scores(model, dict(batch), depth_heads)  # [L, G * n]
        logits = scores.reshape(scores.shape[0], len(chunk), per_group)  # positive at column 0
        target = torch.zeros(len(chunk), dtype=torch.long)
        per_layer = torch.stack([nn.functional.cross_entropy(layer, target) for layer in logits])  # [L]
        loss = per_layer[-1]
        if config.deep_supervision and len(per_layer) > 1:
            loss = loss + config.intermediate_weight * per_layer[:-1].mean()
        for group in optimiser.param_groups:
            group["lr"] = group["peak"] * _schedule(step, config)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
        optimiser.step()
        history.append([round(float(v), 5) for v in per_layer.detach()])
        report(f"training (final-layer CE {history[-1][-1]:.3f})", step + 1, config.steps)
    model.eval()
    if depth_heads is not None:
        depth_heads.eval()
    return history


def _curve_summary(history: list[list[float]], points: int = 10) -> dict[str, Any]:
    """Mean CE per depth over `points` equal slices of the run (first slice .. last slice)."""
    size = max(1, len(history) // points)
    slices = [history[i:i + size] for i in range(0, len(history), size)][:points]
    mean = [[round(sum(row[d] for row in part) / len(part), 4) for d in range(len(history[0]))] for part in slices]
    return {"slice_steps": size, "final_layer_ce": [m[-1] for m in mean], "per_layer_ce_first": mean[0],
            "per_layer_ce_last": mean[-1]}


def build_minilm_cross_encoder(out: Path, steps: int = FULL_STEPS, seed: int = 0, deep_supervision: bool = True,
                               progress: Progress | None = None, groups_per_step: int = 4,
                               heads: str = "shared") -> Path:
    """Train the recipe and write the checkpoint directory `out` (replaced if it exists).

    `steps` optimiser steps of `groups_per_step` groups (8 texts each); steps=5,
    groups_per_step=2 is the fast mode for tests (seconds). heads: "shared" or "per-layer"
    (needs deep supervision: untrained per-depth heads would score at random). Returns `out`.
    """
    if steps < 1 or groups_per_step < 1:
        raise InvalidArgumentError(f"--steps and groups per step must be >= 1, got {steps} and {groups_per_step}")
    if heads not in HEADS:
        raise InvalidArgumentError(f"--heads {heads!r} is not one of {', '.join(HEADS)}")
    if heads == "per-layer" and not deep_supervision:
        raise InvalidArgumentError("per-layer heads are trained by deep supervision; keep it on or use shared heads")
    from safetensors.torch import save_file
    from transformers import __version__ as transformers_version

    from edgekit.atomic import staged_directory

    config = RecipeConfig(steps=steps, seed=seed, deep_supervision=deep_supervision, groups_per_step=groups_per_step,
                          heads=heads)
    report: Progress = progress or (lambda message, done, total: None)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    try:
        started = time.perf_counter()
        report("building training data", 0, steps)
        groups, sizes = _data(config)
        model, tokenizer, source = _initial_model(seed)
        depth_heads = DepthHeads(model, model.config.initializer_range) if heads == "per-layer" else None
        history = _train(model, tokenizer, groups, config, report, depth_heads)
        seconds = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    metadata = {
        "recipe": MODEL_NAME,
        "source": str(source),
        "config": dataclasses.asdict(config),
        "head": heads,
        "loss": "listwise softmax CE over (1 positive + negatives); deep supervision adds "
                f"intermediate_weight * mean CE of the {heads} head(s) on layers 1..L-1",
        "data": sizes,
        "loss_curve": _curve_summary(history),
        "train_seconds": round(seconds, 1),
        "torch_threads": config.threads,
        "versions": {"torch": torch.__version__, "transformers": transformers_version},
    }
    tokenizer.model_max_length = config.export_max_length
    # replaces only an earlier build (it holds RECIPE_FILE) or an empty folder, never other files
    with staged_directory(Path(out), overwrite=True, replaceable=lambda path: (path / RECIPE_FILE).is_file()) as root:
        model.save_pretrained(root)
        tokenizer.save_pretrained(root)
        if not (root / "tokenizer.json").is_file():
            raise MissingDependencyError("the tokenizer did not save a tokenizer.json; install `tokenizers`")
        if depth_heads is not None:
            save_file(depth_heads.state_for_export(), str(root / LAYER_HEADS_FILE))
        (root / RECIPE_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return Path(out)
