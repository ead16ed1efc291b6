"""numpy versions of the MIL ops our stages use that coremltools gives no value inference:
`silu` (Qwen3's MLP, SVD's time embedding), `conv` (every SVD convolution: 2-D, 3-D, grouped,
strided, dilated, padded) and `upsample_nearest_neighbor` (SVD's up blocks and VAE decoder).

Each takes the MIL operation (its inputs already hold values) and returns the output value;
mil_eval.py stores it at the op's declared dtype, so an fp16 program still rounds per op. The
arithmetic runs in float32 and is rounded once at the end, as Core ML's fp16 kernels accumulate
in higher precision than they store. Defaults follow the MIL op definitions (coremltools 9.0,
`iOS15.conv`): strides and dilations 1, pad_type "valid", groups 1, no bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LETTERS = "xyz"  # spatial dims of a conv's output; kernel dims use "ijk"


def _value(op: Any, name: str, default: Any) -> Any:
    var = getattr(op, name, None)
    return default if var is None or var.val is None else var.val


def silu(op: Any) -> np.ndarray:
    x = op.x.val
    return x / (1 + np.exp(-x))  # overflow of exp in fp16 gives inf, and x / inf = -0: the right limit


def _same_padding(size: int, kernel: int, stride: int, dilation: int, lower: bool) -> tuple[int, int]:
    extent = (kernel - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + extent - size, 0)
    small, large = total // 2, total - total // 2
    return (large, small) if lower else (small, large)


def _paddings(op: Any, x: np.ndarray, kernel: tuple[int, ...], strides: list[int],
              dilations: list[int]) -> list[tuple[int, int]]:
    spatial = len(kernel)
    pad_type = str(_value(op, "pad_type", "valid"))
    if pad_type == "valid":
        return [(0, 0)] * spatial
    if pad_type == "custom":
        pad = [int(p) for p in np.asarray(_value(op, "pad", [0] * 2 * spatial)).reshape(-1)]
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(spatial)]
    if pad_type in ("same", "same_lower"):
        return [_same_padding(x.shape[2 + i], kernel[i], strides[i], dilations[i], pad_type == "same_lower")
                for i in range(spatial)]
    raise ValueError(f"conv pad_type {pad_type!r} is not one the evaluator knows")


def conv(op: Any) -> np.ndarray:
    """MIL `conv`: x [N, C_in, *spatial], weight [C_out, C_in / groups, *kernel], bias [C_out]."""
    x = np.asarray(op.x.val, dtype=np.float32)
    weight = np.asarray(op.weight.val, dtype=np.float32)
    spatial = x.ndim - 2
    kernel = tuple(int(k) for k in weight.shape[2:])
    strides = [int(s) for s in np.asarray(_value(op, "strides", [1] * spatial)).reshape(-1)]
    dilations = [int(d) for d in np.asarray(_value(op, "dilations", [1] * spatial)).reshape(-1)]
    groups = int(_value(op, "groups", 1))
    padded = np.pad(x, [(0, 0), (0, 0), *_paddings(op, x, kernel, strides, dilations)])
    extents = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations))
    windows = sliding_window_view(padded, extents, axis=tuple(range(2, 2 + spatial)))  # [N, C, *out, *extent]
    windows = windows[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
                       *(slice(None, None, d) for d in dilations))]
    out_dims, kernel_dims = LETTERS[:spatial], "ijk"[:spatial]
    equation = f"nc{out_dims}{kernel_dims},oc{kernel_dims}->no{out_dims}"
    per_in, per_out = x.shape[1] // groups, weight.shape[0] // groups
    result = np.concatenate([np.einsum(equation, windows[:, g * per_in:(g + 1) * per_in],
                                       weight[g * per_out:(g + 1) * per_out], optimize=True)
                             for g in range(groups)], axis=1)
    bias = _value(op, "bias", None)
    if bias is not None:
        result = result + np.asarray(bias, dtype=np.float32).reshape((1, -1) + (1,) * spatial)
    return result


def upsample_nearest_neighbor(op: Any) -> np.ndarray:
    """MIL `upsample_nearest_neighbor` on the last two dims: out index = floor(i / scale)."""
    x = op.x.val
    for axis, name in ((-2, "scale_factor_height"), (-1, "scale_factor_width")):
        scale = float(_value(op, name, 1.0))
        size = x.shape[axis]
        source = np.minimum(np.floor(np.arange(int(math.floor(size * scale))) / scale).astype(np.int64), size - 1)
        x = np.take(x, source, axis=axis)
    return x


OWN_OPS: dict[str, Callable[[Any], np.ndarray]] = {
    "silu": silu, "conv": conv, "upsample_nearest_neighbor": upsample_nearest_neighbor}
