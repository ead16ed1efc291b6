"""Wan's 3-D rotary position tables and its unpatchify, in numpy (the runtime side of the DiT).

diffusers' `WanRotaryPosEmbed` splits a head's channels into frame, height and width parts
(h = w = 2 * (head_dim // 6), t = the rest), builds for each part a 1-D table of positions
0..rope_max_seq_len-1 (angles in float64, cos/sin each repeated twice along channels, then
float32), and gives token (f, y, x) of the patched latent grid the concatenation of row f, row y
and row x. The DiT's block graphs take these tables as inputs (`rope_cos`, `rope_sin`
[1, S, 1, head_dim]), so the runtime computes them once per latent shape instead of every block
recomputing them.

`unpatchify` is the reshape/permute at the end of `WanTransformer3DModel.forward`: the head's
patches [B, S, C * pt * ph * pw] back to a latent video [B, C, F, h, w].

Example::

    cos, sin = rope_tables(128, (1, 2, 2), 1024, frames=21, height=60, width=104)
    cos.shape  # (1, 21 * 30 * 52, 1, 128)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekit.errors import InvalidArgumentError


def post_patch_sizes(patch_size: Sequence[int], frames: int, height: int, width: int) -> tuple[int, int, int]:
    """(F / pt, h / ph, w / pw): the token grid of latents of `frames` x `height` x `width`.
    InvalidArgumentError when a latent size is not a positive multiple of its patch size (diffusers
    would silently drop the remainder rows)."""
    sizes = []
    for name, size, patch in zip(("frames", "height", "width"), (frames, height, width), patch_size):
        if size < patch or size % patch:
            raise InvalidArgumentError(f"latent {name} {size} is not a positive multiple of the DiT's patch size "
                                       f"{patch}; choose a video size whose latent {name} is")
        sizes.append(size // patch)
    return sizes[0], sizes[1], sizes[2]


def token_grid(patch_size: Sequence[int], rope_max_seq_len: int, frames: int, height: int,
               width: int) -> tuple[int, int, int]:
    """`post_patch_sizes`, each also within the rotary tables' `rope_max_seq_len` positions
    (InvalidArgumentError, one line, otherwise): what a run checks before any compute."""
    grid = post_patch_sizes(patch_size, frames, height, width)
    for name, size in zip(("frames", "height", "width"), grid):
        if size > rope_max_seq_len:
            raise InvalidArgumentError(f"the latent {name} gives {size} positions after patching, more than the DiT's "
                                       f"rope_max_seq_len {rope_max_seq_len}; generate a smaller video")
    return grid


def _axis_table(dim: int, max_seq_len: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' get_1d_rotary_pos_embed(dim, max_seq_len, theta, use_real=True,
    repeat_interleave_real=True, float64): cos and sin [max_seq_len, dim] float32."""
    inverse = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))  # [dim / 2]
    angles = np.outer(np.arange(max_seq_len, dtype=np.float64), inverse)  # [positions, dim / 2]
    return (np.repeat(np.cos(angles), 2, axis=1).astype(np.float32),
            np.repeat(np.sin(angles), 2, axis=1).astype(np.float32))


def rope_tables(attention_head_dim: int, patch_size: Sequence[int], rope_max_seq_len: int, frames: int, height: int,
                width: int, theta: float = 10000.0) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each float32 [1, S, 1, attention_head_dim] with S = F/pt * h/ph * w/pw, equal to
    diffusers' `WanRotaryPosEmbed(attention_head_dim, patch_size, rope_max_seq_len, theta)(latents)`
    for latents of `frames` x `height` x `width` (latent sizes, before patching).
    InvalidArgumentError (one line) when a post-patch size exceeds rope_max_seq_len."""
    grid = token_grid(patch_size, rope_max_seq_len, frames, height, width)
    side = 2 * (attention_head_dim // 6)
    dims = (attention_head_dim - 2 * side, side, side)  # frame, height, width channels
    tables = [_axis_table(dim, rope_max_seq_len, theta) for dim in dims]
    ppf, pph, ppw = grid
    results = []
    for part in (0, 1):  # cos, then sin
        f_rows = tables[0][part][:ppf]
        h_rows = tables[1][part][:pph]
        w_rows = tables[2][part][:ppw]
        full = np.concatenate([
            np.broadcast_to(f_rows[:, None, None, :], (ppf, pph, ppw, dims[0])),
            np.broadcast_to(h_rows[None, :, None, :], (ppf, pph, ppw, dims[1])),
            np.broadcast_to(w_rows[None, None, :, :], (ppf, pph, ppw, dims[2])),
        ], axis=-1)
        results.append(np.ascontiguousarray(full.reshape(1, ppf * pph * ppw, 1, attention_head_dim)))
    return results[0], results[1]


def unpatchify(patches: np.ndarray, patch_size: Sequence[int], frames: int, height: int, width: int) -> np.ndarray:
    """patches [B, S, C * pt * ph * pw] (the DiT head's output, S in (f, y, x) order) -> latents
    [B, C, F, h, w] for latent sizes `frames` x `height` x `width`, as WanTransformer3DModel.forward
    does (reshape to [B, f, y, x, pt, ph, pw, C], permute to [B, C, f, pt, y, ph, x, pw], merge)."""
    pt, ph, pw = patch_size
    ppf, pph, ppw = post_patch_sizes(patch_size, frames, height, width)
    batch = patches.shape[0]
    grid = patches.reshape(batch, ppf, pph, ppw, pt, ph, pw, -1)
    channels = grid.shape[-1]
    video = grid.transpose(0, 7, 1, 4, 2, 5, 3, 6)
    return np.ascontiguousarray(video.reshape(batch, channels, ppf * pt, pph * ph, ppw * pw))
