"""Export a whole encoder as ONE ONNX graph: the baseline "what apps do today".

FlashRank and sentence-transformers' ONNX backend run one monolithic graph per model. This
module writes that graph with torch.onnx (the legacy TorchScript exporter, opset 17, dynamic
batch and sequence axes) instead of optimum, because optimum-onnx pins transformers<4.58 and
edgekit uses transformers 5 (FIELD-NOTES.md). It is a benchmark baseline, not a package.

Graph contract:
  inputs   input_ids [batch, sequence] int64, token_type_ids [batch, sequence] int64 (only for
           families that use them, e.g. BERT/ELECTRA), attention_mask [batch, sequence] int64
  output   bi-encoder (sentence-transformers layout): `embedding` [batch, H] float32, pooled as
           the checkpoint says (mean or CLS) and L2-normalised when it has a Normalize module
           cross-encoder (*ForSequenceClassification): `score` [batch] float32, the logit for 1
           label, logit(1) - logit(0) for 2 labels (edgekit's `logits_to_score`)

Example::

    export_monolithic(Path("all-MiniLM-L6-v2"), Path("out/minilm.onnx"), max_length=256)
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekit.errors import ParityError
from edgekit.exporters.encoder import BiEncoderHead, logits_to_score
from edgekit.exporters.encoder_export import load_source_model
from edgekit.exporters.onnx_writer import OPSET
from edgekit.exporters.source import TASK_RERANK, inspect_source
from edgekit.models.encoders import family_for_model_type
from edgekit.runtimes.backends import backend_for

TOLERANCE = 1e-4  # max abs diff allowed, relative to max(1, max |expected|)

# Traced with padding present (different lengths), so the graph keeps the masking path.
_TRACE_TEXTS = ("how do I read a file line by line", "Sorting a list in place.")
# Checked at another batch size and sequence length (one text reaches max_length).
_CHECK_TEXTS = (
    "how do I read a file line by line",
    "Open the file and iterate over it: each iteration yields one line.",
    "Sorting a list in place.",
    "The quick brown fox jumps over the lazy dog " * 60,
)


class _BiEncoderGraph(nn.Module):
    """transformers base model + sentence-transformers pooling -> embedding [B,H]."""

    def __init__(self, model: nn.Module, head: BiEncoderHead, uses_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.head = head
        self.uses_type_ids = uses_type_ids

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if self.uses_type_ids else {}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        return self.head(hidden, attention_mask)


class _CrossEncoderGraph(nn.Module):
    """transformers *ForSequenceClassification -> score [B]."""

    def __init__(self, model: nn.Module, uses_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.uses_type_ids = uses_type_ids

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None,
                attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": token_type_ids} if self.uses_type_ids else {}
        return logits_to_score(self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits)


def _batch(tokenizer: Any, task: str, texts: tuple[str, ...], max_length: int) -> dict[str, torch.Tensor]:
    if task == TASK_RERANK:  # (query, candidate) pairs, the first text is the query
        return tokenizer([texts[0]] * (len(texts) - 1), list(texts[1:]), padding=True, truncation=True,
                         max_length=max_length, return_tensors="pt")
    return tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def _args(batch: dict[str, torch.Tensor], names: list[str]) -> tuple[torch.Tensor | None, ...]:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    types = batch.get("token_type_ids", torch.zeros_like(ids)) if "token_type_ids" in names else None
    return ids, types, mask


def export_monolithic(source_dir: Path, out_file: Path, max_length: int) -> None:
    """Write the whole model at `source_dir` as one ONNX graph at `out_file` (atomically).

    The task comes from the checkpoint as in `edgekit export` (sentence-transformers layout:
    bi-encoder; *ForSequenceClassification: cross-encoder). `max_length` is the truncation
    length the graph is checked at (its sequence axis stays dynamic). After export the graph
    runs in onnxruntime (edgekit's CPU session options) against the transformers model on a
    batch of another shape; a max abs diff over TOLERANCE raises ParityError and leaves no file.
    """
    info = inspect_source(Path(source_dir))
    family = family_for_model_type(info.model_type)
    model, tokenizer = load_source_model(info)
    names = ["input_ids", "token_type_ids", "attention_mask"] if family.has_token_type_ids else \
        ["input_ids", "attention_mask"]
    if info.task == TASK_RERANK:
        wrapper: nn.Module = _CrossEncoderGraph(model, family.has_token_type_ids)
        output = "score"
    else:
        head = BiEncoderHead(info.pooling or "mean", info.normalize)
        wrapper = _BiEncoderGraph(model, head, family.has_token_type_ids)
        output = "embedding"
    wrapper.eval()

    trace_args = _args(_batch(tokenizer, info.task, _TRACE_TEXTS, max_length), names)
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch"}
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_file.parent / f".{out_file.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                trace_args,
                str(temporary),
                input_names=names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        check = _batch(tokenizer, info.task, _CHECK_TEXTS, max_length)
        check_args = _args(check, names)
        with torch.no_grad():
            expected = wrapper(*check_args).numpy()
        session = backend_for("onnx", "cpu").load(temporary)
        actual = session.run({n: a.numpy() for n, a in zip(["input_ids", "token_type_ids", "attention_mask"],
                                                            check_args) if a is not None})[0]
        session.release()
        diff = float(np.max(np.abs(actual - expected))) if actual.shape == expected.shape else float("inf")
        allowed = TOLERANCE * float(max(1.0, np.max(np.abs(expected))))
        if not diff <= allowed:  # also catches NaN
            raise ParityError(
                f"monolithic graph of {source_dir}: ONNX output differs from transformers by {diff:.3g} "
                f"(allowed {allowed:.3g}, shapes {actual.shape} vs {expected.shape})"
            )
        os.replace(temporary, out_file)
    finally:
        temporary.unlink(missing_ok=True)
