"""Converters from a `Mask` to what each kernel takes: a dense boolean mask, SDPA's
`is_causal`, cu_seqlens for varlen kernels, and a FlexAttention `BlockMask`.

Each structured converter returns `None` when the mask does not have that structure; kernels
use this to decide support, so no kernel ever silently runs a different mask.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from edgekit.runtimes.attention.masks import Kind, Mask


def dense_mask(mask: Mask, device: torch.device | str = "cpu") -> torch.Tensor:
    """`[Sq, Sk]` boolean, `True` = attend."""
    return mask.dense(device=device)


def is_causal_form(mask: Mask) -> bool | None:
    """`False` for the plain full mask, `True` for the plain (square) causal mask, else `None`:
    the two masks SDPA and flash kernels take without a mask tensor."""
    if len(mask.rects) != 1 or mask.seqlen_q != mask.seqlen_k:
        return None
    r = mask.rects[0]
    if (r.q0, r.q1, r.k0, r.k1) != (0, mask.seqlen_q, 0, mask.seqlen_k):
        return None
    if r.kind is Kind.FULL:
        return False
    if r.kind is Kind.CAUSAL:
        return True
    return None


@dataclass(frozen=True)
class Varlen:
    """Packed documents: `cu_seqlens` = `[0, end_1, …, S]` (int32), all full or all causal."""

    cu_seqlens: torch.Tensor
    max_seqlen: int
    causal: bool


def varlen_form(mask: Mask) -> Varlen | None:
    """cu_seqlens when the mask is block-diagonal square documents tiling the sequence, all of
    one kind (full or causal); else `None`. Full and causal masks are one-document cases."""
    if mask.seqlen_q != mask.seqlen_k:
        return None
    kinds = {r.kind for r in mask.rects}
    if len(kinds) != 1 or not kinds <= {Kind.FULL, Kind.CAUSAL}:
        return None
    ends, at = [0], 0
    for r in sorted(mask.rects, key=lambda r: r.q0):
        if (r.q0, r.k0, r.k1) != (at, at, r.q1):
            return None
        at = r.q1
        ends.append(at)
    if at != mask.seqlen_q:
        return None
    lengths = [b - a for a, b in itertools.pairwise(ends)]
    return Varlen(torch.tensor(ends, dtype=torch.int32), max(lengths), Kind.CAUSAL in kinds)


def flex_block_mask(mask: Mask, device: torch.device | str = "cpu", block_size: int = 128) -> object:
    """A FlexAttention `BlockMask` whose `mask_mod` looks the answer up in the dense mask.

    The lookup is exact for every mask; `create_block_mask` marks fully allowed blocks so the
    kernel evaluates `mask_mod` only on partial blocks. Costs `Sq·Sk` bytes of device memory."""
    from torch.nn.attention.flex_attention import create_block_mask

    table = mask.dense(device=device)

    def mask_mod(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return table[q, k]

    return create_block_mask(mask_mod, None, None, mask.seqlen_q, mask.seqlen_k, device=str(device),
                             BLOCK_SIZE=block_size)
