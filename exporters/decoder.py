"""Torch side of decoder rerankers (Qwen3 style): split into stages, and the reference score.

Stages (each becomes one ONNX graph):
  embeddings  inputs_embeds [B,S,H] (rows the runtime gathered) -> hidden_states [B,S,H]
              (Qwen3 adds nothing to the token embeddings: an identity graph, kept so every
              package has the same shape)
  layer_i     hidden_states [B,S,H], attention_bias [B,1,S,S], cos [B,S,D], sin [B,S,D]
              -> hidden_states [B,S,H]
  head        hidden_states [B,S,H] -> score [B] = sigmoid(logit_yes - logit_no) of the final
              norm of the LAST position (left padding puts every sequence's last token there);
              for seq-cls checkpoints, sigmoid of the one score row.
The same head scores intermediate layers, so pruning needs nothing decoder-specific.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekit.errors import SourceModelError


class DecoderEmbeddings(nn.Module):
    """Identity on the gathered token embeddings (Qwen3 has no embedding scale or positions)."""

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        return inputs_embeds * 1.0  # an op, so the graph's output is not its input


class DecoderLayerStage(nn.Module):
    """One decoder layer with the mask and rotary tables passed in (FIELD-NOTES: the layer
    exports standalone only this way)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        out = self.layer(hidden_states, attention_mask=attention_bias, position_embeddings=(cos, sin))
        return out[0] if isinstance(out, tuple) else out


class YesNoHead(nn.Module):
    """Final norm at the last position, then the "yes" minus "no" logit through a sigmoid.

    `rows` is [2, H] (yes row, no row) of lm_head, or [1, H] for a seq-cls score head.
    """

    def __init__(self, norm: nn.Module, rows: torch.Tensor) -> None:
        super().__init__()
        self.norm = norm
        self.rows = nn.Parameter(rows.detach().clone(), requires_grad=False)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        logits = self.norm(hidden_states[:, -1]) @ self.rows.T  # [B, 2] or [B, 1]
        margin = logits[:, 0] - logits[:, 1] if logits.shape[-1] == 2 else logits[:, 0]
        return torch.sigmoid(margin)


@dataclass
class DecoderStages:
    embeddings: DecoderEmbeddings
    layers: list[DecoderLayerStage]
    head: YesNoHead
    reference: nn.Module  # the whole transformers model
    table: torch.Tensor  # token embeddings [vocab, H]
    label_tokens: dict[str, int]


def label_token_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of "yes" and "no" from the tokenizer itself (never hard-coded)."""
    ids = {}
    for word in ("yes", "no"):
        token_id = tokenizer.convert_tokens_to_ids(word)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise SourceModelError(f"the tokenizer has no single token {word!r}; a yes/no reranker needs both")
        ids[word] = int(token_id)
    return ids


def split_decoder(model: nn.Module, tokenizer: Any) -> DecoderStages:
    """Split a Qwen3ForCausalLM (yes/no rows of lm_head) or Qwen3ForSequenceClassification."""
    labels = label_token_ids(tokenizer)
    base = model.model
    if hasattr(model, "lm_head"):
        weight = model.lm_head.weight
        rows = torch.stack([weight[labels["yes"]], weight[labels["no"]]])
    elif hasattr(model, "score"):
        if model.score.weight.shape[0] != 1 or getattr(model.score, "bias", None) is not None:
            raise SourceModelError(f"seq-cls reranker has {model.score.weight.shape[0]} labels; edgekit scores "
                                   "1-label (yes - no) conversions")
        rows = model.score.weight
    else:
        raise SourceModelError("decoder checkpoint has neither lm_head nor a score head")
    return DecoderStages(
        embeddings=DecoderEmbeddings().eval(),
        layers=[DecoderLayerStage(layer).eval() for layer in base.layers],
        head=YesNoHead(base.norm, rows).eval(),
        reference=model.eval(),
        table=base.embed_tokens.weight,
        label_tokens=labels,
    )


@torch.no_grad()
def reference_scores(stages: DecoderStages, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """P(yes) per left-padded sequence from the whole transformers model (its own masks and
    positions), as the Qwen3-Reranker model card computes it."""
    model = stages.reference
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits
    if logits.dim() == 3:  # causal LM: the last position's yes/no logits
        last = logits[:, -1]
        return torch.sigmoid(last[:, stages.label_tokens["yes"]] - last[:, stages.label_tokens["no"]])
    return torch.sigmoid(logits[:, 0])
