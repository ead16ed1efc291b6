"""Attention masks as data: a mask is a tuple of disjoint rectangles `(q_range, k_range, kind)`.

Every row of every rectangle allows one contiguous interval of keys, so the exact unmasked area
has a closed form per rectangle and any block of the mask can be built without the dense
`S × S` matrix. Kinds, with `i = q - q0`, `j = k - k0`, `lq = q1 - q0`, `lk = k1 - k0`,
`d = lk - lq`:

- `full`: every `(i, j)`;
- `causal` (aligned to the bottom-right corner, as in FlashAttention): `j <= i + d`;
- `inverse-causal` (aligned to the top-left corner): `j >= i`;
- `bi-causal` (the band between both): `i <= j <= i + d`.

Contract: rectangles of one mask are disjoint (generators guarantee it, tests check it), so the
mask's area is the sum of the rectangles' areas.

Example:
    >>> m = Mask("causal", 4, 4, (Rect(0, 4, 0, 4, Kind.CAUSAL),))
    >>> m.area()
    10
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch


class Kind(str, enum.Enum):
    """How a rectangle restricts its keys per query row (see the module docstring)."""

    FULL = "full"
    CAUSAL = "causal"
    INVERSE_CAUSAL = "inverse-causal"
    BI_CAUSAL = "bi-causal"


@dataclass(frozen=True)
class Rect:
    """Queries `[q0, q1)` × keys `[k0, k1)` restricted by `kind`. Empty rectangles are allowed."""

    q0: int
    q1: int
    k0: int
    k1: int
    kind: Kind = Kind.FULL

    @property
    def lq(self) -> int:
        return max(0, self.q1 - self.q0)

    @property
    def lk(self) -> int:
        return max(0, self.k1 - self.k0)

    def area(self) -> int:
        """Exact number of allowed (query, key) pairs, in closed form."""
        lq, lk = self.lq, self.lk
        if lq == 0 or lk == 0:
            return 0
        if self.kind is Kind.FULL:
            return lq * lk
        if self.kind is Kind.BI_CAUSAL:
            return lq * (lk - lq + 1) if lk >= lq else 0
        # causal and inverse-causal: the rows with keys hold lk, lk-1, … (n of them).
        n = min(lq, lk)
        return n * lk - n * (n - 1) // 2

    def row_intervals(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For absolute query indices `rows` (int64), the allowed keys `[lo, hi]` (inclusive,
        absolute); `lo > hi` for rows outside the rectangle or without keys."""
        i = rows - self.q0
        d = self.lk - self.lq
        inside = (i >= 0) & (i < self.lq)
        lo = torch.full_like(rows, self.k0)
        hi = torch.full_like(rows, self.k1 - 1)
        if self.kind in (Kind.INVERSE_CAUSAL, Kind.BI_CAUSAL):
            lo = self.k0 + i
        if self.kind in (Kind.CAUSAL, Kind.BI_CAUSAL):
            hi = torch.clamp(self.k0 + i + d, max=self.k1 - 1)
        lo = torch.where(inside, lo, torch.full_like(rows, 1))
        hi = torch.where(inside, hi, torch.full_like(rows, 0))
        return lo, hi


@dataclass(frozen=True)
class Mask:
    """A named attention mask of `seqlen_q × seqlen_k` made of disjoint rectangles."""

    name: str
    seqlen_q: int
    seqlen_k: int
    rects: tuple[Rect, ...]

    def area(self) -> int:
        """Exact count of unmasked (query, key) pairs: the sum of the rectangles' areas."""
        return sum(r.area() for r in self.rects)

    def flops(self, heads: int, head_dim: int, *, backward: bool = False, batch: int = 1) -> int:
        """FLOPs of attention under this mask: 4·area·H_q·D forward (two matmuls of 2 FLOPs per
        multiply-add), 2.5× that backward (five matmuls), as in FlashAttention's benchmarks."""
        fwd = 4 * self.area() * heads * head_dim * batch
        return fwd * 5 // 2 if backward else fwd

    def block_area(self, q0: int, q1: int, k0: int, k1: int) -> int:
        """Exact allowed count inside `[q0, q1) × [k0, k1)`, from per-row intervals (O(rows))."""
        rows = torch.arange(q0, q1, dtype=torch.int64)
        total = torch.zeros((), dtype=torch.int64)
        for rect in self.rects:
            lo, hi = rect.row_intervals(rows)
            lo, hi = torch.clamp(lo, min=k0), torch.clamp(hi, max=k1 - 1)
            total += torch.clamp(hi - lo + 1, min=0).sum()
        return int(total)

    def dense(self, q0: int = 0, q1: int | None = None, k0: int = 0, k1: int | None = None,
              device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean `[q1 - q0, k1 - k0]` block of the mask (`True` = attend); whole mask by default."""
        q1 = self.seqlen_q if q1 is None else q1
        k1 = self.seqlen_k if k1 is None else k1
        rows = torch.arange(q0, q1, dtype=torch.int64, device=device)
        cols = torch.arange(k0, k1, dtype=torch.int64, device=device)
        out = torch.zeros(q1 - q0, k1 - k0, dtype=torch.bool, device=device)
        for rect in self.rects:
            if rect.q1 <= q0 or rect.q0 >= q1 or rect.k1 <= k0 or rect.k0 >= k1:
                continue
            lo, hi = rect.row_intervals(rows)
            out |= (cols[None, :] >= lo[:, None]) & (cols[None, :] <= hi[:, None])
        return out

    def index_block(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        """Boolean `[len(q_index), len(k_index)]` mask for arbitrary (e.g. zigzag) index sets."""
        out = torch.zeros(len(q_index), len(k_index), dtype=torch.bool, device=q_index.device)
        for rect in self.rects:
            lo, hi = rect.row_intervals(q_index)
            out |= (k_index[None, :] >= lo[:, None]) & (k_index[None, :] <= hi[:, None])
        return out

    def kinds(self) -> frozenset[Kind]:
        return frozenset(r.kind for r in self.rects if r.area() > 0)
