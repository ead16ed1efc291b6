"""GroupNorm in a form coremltools converts with a flexible batch dim.

coremltools 9's `group_norm` translation reshapes to [batch, groups, ...] with the batch as a
constant and fails when the batch is a `RangeDim` ("Cannot add const [is172, 32, 1]"): every SVD
stage with a ResNet block hit it. `FlexibleGroupNorm` computes the same normalisation from a
reshape whose batch is read from the input's shape at run time; `with_flexible_group_norms`
returns a copy of a module with every `nn.GroupNorm` replaced (the ONNX graphs keep the original).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class FlexibleGroupNorm(nn.Module):
    """nn.GroupNorm's forward (affine), equal up to float rounding, any rank >= 2."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        grouped = x.reshape(shape[0], self.groups, -1)  # [B, G, C/G * spatial]
        mean = grouped.mean(dim=-1, keepdim=True)
        variance = (grouped - mean).pow(2).mean(dim=-1, keepdim=True)
        normed = ((grouped - mean) * torch.rsqrt(variance + self.eps)).reshape(shape)
        if self.weight is None:
            return normed
        affine = (1, -1) + (1,) * (x.dim() - 2)
        return normed * self.weight.reshape(affine) + self.bias.reshape(affine)


def with_flexible_group_norms(module: nn.Module) -> nn.Module:
    """A deep copy of `module` with every nn.GroupNorm as a FlexibleGroupNorm (the module itself
    when it has none)."""
    if not any(isinstance(child, nn.GroupNorm) for child in module.modules()):
        return module
    converted = copy.deepcopy(module)
    for parent in list(converted.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, FlexibleGroupNorm(child))
    return converted
