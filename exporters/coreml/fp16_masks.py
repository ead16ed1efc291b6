"""Masks that stay finite in an fp16 Core ML program.

Our stages build or take additive masks with the dtype's lowest finite value (float32:
-3.4e38). Core ML's fp16 compute rounds that constant to -inf, and then:

- an encoder layer's `(1 - keep) * lowest` gives kept tokens 0 * -inf = NaN;
- a decoder layer's `attention_bias` row that masks every key (left-padding query positions)
  softmaxes -inf everywhere: NaN, which later layers carry into real tokens through the
  masked value rows (0 * NaN).

The ONNX graphs keep the exporters' exact masks (their fp16 variant is rebuilt in fp16);
these wrappers are what the Core ML twins are converted from. Both are equal to the wrapped
stage in fp32 up to exp(-30000) = 0 per masked key.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

MASKED = -30000.0  # fp16-finite, and -30000 + any attention score stays finite in fp16


def encoder_layer_for_core_ml(stage: nn.Module) -> nn.Module:
    """A copy of an encoder `LayerStage` building its mask with masked_fill (`fusable`, equal
    values; exporters/encoder.py): no 0 * lowest product, so no NaN for kept tokens."""
    safe = copy.copy(stage)
    safe.fusable = True
    return safe


class FiniteBias(nn.Module):
    """A decoder layer stage with `attention_bias` clamped to MASKED: a fully masked row softmaxes
    to a finite (uniform) row, as the fp32 ONNX graph does."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        return self.layer(hidden_states, attention_bias.clamp(min=MASKED), cos, sin)
