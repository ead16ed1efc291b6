"""Torch side of encoder families: split a transformers encoder into stages and score whole.

Stages (each becomes one ONNX graph):
  embeddings  input_ids [B,S] (+ token_type_ids [B,S])  -> hidden_states [B,S,H]
  layer_i     hidden_states [B,S,H], attention_mask [B,S] -> hidden_states [B,S,H]
  head        cross-encoder: hidden_states -> score [B]
              bi-encoder:    hidden_states, attention_mask -> embedding [B,H]
The reference functions score with the unsplit model, for parity checks and tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekit.errors import SourceModelError
from edgekit.models.encoders import (
    HEAD_CLASSIFICATION_MODULE,
    HEAD_DISTILBERT,
    HEAD_POOLER_CLASSIFIER,
    EncoderFamily,
)


def _attribute(root: Any, dotted: str) -> Any:
    return functools.reduce(getattr, dotted.split("."), root)


def extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B,S] 0/1 mask -> additive [B,1,1,S] mask (0 keep, dtype-min drop), as HF's eager path."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


class EmbeddingsStage(nn.Module):
    """Everything of the embeddings except the token lookup: the runtime gathers the rows of the
    word-embedding table itself (a memory-mapped array), so only the rows a batch uses are read.

    inputs_embeds [B,S,E] (gathered rows), token_type_ids [B,S] (families that have them),
    attention_mask [B,S] -> hidden [B,S,H]. Adds type and position embeddings, LayerNorm, and
    ELECTRA's projection. RoBERTa positions count real tokens from padding_idx + 1, computed
    from the mask exactly as transformers computes them from the ids.
    """

    def __init__(self, base: nn.Module, family: EncoderFamily) -> None:
        super().__init__()
        self.embeddings = base.embeddings
        self.project = getattr(base, "embeddings_project", None)
        self.family = family

    @property
    def word_embeddings(self) -> torch.Tensor:
        return self.embeddings.word_embeddings.weight

    def forward(self, inputs_embeds: torch.Tensor, token_type_ids: torch.Tensor | None,
                attention_mask: torch.Tensor) -> torch.Tensor:
        if self.family.positions_from_mask:
            padding_idx = int(self.embeddings.padding_idx)
            position_ids = torch.cumsum(attention_mask, dim=1) * attention_mask + padding_idx
            hidden = self.embeddings(inputs_embeds=inputs_embeds, position_ids=position_ids,
                                     token_type_ids=torch.zeros_like(attention_mask))
        elif self.family.has_token_type_ids:
            hidden = self.embeddings(inputs_embeds=inputs_embeds, token_type_ids=token_type_ids)
        else:
            hidden = self.embeddings(None, inputs_embeds=inputs_embeds)
        return self.project(hidden) if self.project is not None else hidden


def fusable_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The same additive mask as `extended_mask`, expanded to [B,1,S,S] and built with
    masked_fill (as transformers' SDPA path did): the shape onnxruntime's attention fusion
    recognises (exporters/fusion.py), which then replaces it by the 2-D mask. Equal values."""
    batch, length = attention_mask.shape
    keep = attention_mask[:, None, None, :].expand(batch, 1, length, length).to(dtype)
    inverted = 1.0 - keep
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min)


class LayerStage(nn.Module):
    """One transformer layer; takes the plain [B,S] mask and builds the additive one inside
    (`fusable`: in the form the attention fusion recognises, for graphs that will be fused)."""

    def __init__(self, layer: nn.Module, fusable: bool = False) -> None:
        super().__init__()
        self.layer = layer
        self.fusable = fusable

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        build = fusable_mask if self.fusable else extended_mask
        out = self.layer(hidden_states, attention_mask=build(attention_mask, hidden_states.dtype))
        return out[0] if isinstance(out, tuple) else out


def logits_to_score(logits: torch.Tensor) -> torch.Tensor:
    """[B,1] -> the logit; [B,2] -> logit(1) - logit(0), the log-odds of "relevant"."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits[:, 1] - logits[:, 0]


class CrossEncoderHead(nn.Module):
    """The model's own classification head on hidden states [B,S,H] -> score [B]."""

    def __init__(self, model: nn.Module, family: EncoderFamily) -> None:
        super().__init__()
        self.kind = family.cross_head
        self.classifier = model.classifier
        if self.kind == HEAD_POOLER_CLASSIFIER:
            self.pooler = _attribute(model, family.base_attr).pooler
            if self.pooler is None:
                raise SourceModelError("BERT cross-encoder has no pooler; cannot build its head")
        elif self.kind == HEAD_DISTILBERT:
            self.pre_classifier = model.pre_classifier
        elif self.kind != HEAD_CLASSIFICATION_MODULE:
            raise SourceModelError(f"unknown cross-encoder head kind {self.kind!r}")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.kind == HEAD_POOLER_CLASSIFIER:
            logits = self.classifier(self.pooler(hidden_states))
        elif self.kind == HEAD_DISTILBERT:
            logits = self.classifier(torch.relu(self.pre_classifier(hidden_states[:, 0])))
        else:
            logits = self.classifier(hidden_states)
        return logits_to_score(logits)


class BiEncoderHead(nn.Module):
    """Pooling (+ L2 normalisation) of hidden states [B,S,H] -> embedding [B,H]."""

    def __init__(self, pooling: str, normalize: bool) -> None:
        super().__init__()
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            pooled = hidden_states[:, 0]
        else:
            weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)  # [B,S,1]
            pooled = (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


@dataclass
class EncoderStages:
    """The split model: ordered (name, role, module) stages and the unsplit reference."""

    embeddings: EmbeddingsStage
    layers: list[LayerStage]
    head: nn.Module
    reference: nn.Module  # the whole transformers model
    family: EncoderFamily


def split_encoder(model: nn.Module, family: EncoderFamily, task: str, pooling: str | None = None,
                  normalize: bool = False, fusable: bool = False) -> EncoderStages:
    """Split a loaded model (seq-cls model for rerank, base model for select) into stages
    (`fusable`: layers build their mask in the form the attention fusion recognises)."""
    base = _attribute(model, family.base_attr) if task == "rerank" else model
    layers = [LayerStage(layer, fusable).eval() for layer in _attribute(base, family.layers_path)]
    if task == "rerank":
        head: nn.Module = CrossEncoderHead(model, family)
    else:
        head = BiEncoderHead(pooling or "mean", normalize)
    return EncoderStages(
        embeddings=EmbeddingsStage(base, family).eval(),
        layers=layers,
        head=head.eval(),
        reference=model.eval(),
        family=family,
    )


@torch.no_grad()
def reference_scores(stages: EncoderStages, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Whole-model output: cross-encoder scores [B], or bi-encoder embeddings [B,H]."""
    model = stages.reference
    if task == "rerank":
        return logits_to_score(model(**batch).logits)
    hidden = model(**batch).last_hidden_state
    return stages.head(hidden, batch["attention_mask"])
