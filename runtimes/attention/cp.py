"""Context parallelism for attention over torch.distributed: ring, Ulysses, USP and all-gather-KV,
forward and backward, with grouped-query heads (`H_kv` key/value heads, `H % H_kv == 0`).

Ring, Ulysses and USP are one algorithm: USP with a `Layout` of `ulysses × ring` ranks
(ring = `1 × W`, Ulysses = `W × 1`). Rank `r` is ring position `r // U`, Ulysses position
`r % U`; Ulysses groups are consecutive ranks (keep them inside a node).

1. Sharding: the sequence is cut into `R` ring shards (zigzag for masks with causal parts: shard
   `i` holds chunks `i` and `2R-1-i` of `2R`, so every rank gets the same causal work), and each
   ring shard into `U` equal pieces, one per rank of its Ulysses group.
2. Ulysses: `all_to_all_single` trades heads for sequence: each rank then holds its whole ring
   shard for `H / U` query heads and `H_kv / U` key/value heads (`H` must divide by `U`; K/V heads
   that do not are first replicated to lcm(H_kv, U) heads, `kv_replication`). Its backward is the
   inverse all-to-all (the exchange is a permutation).
3. Ring (`RingAttention`, an autograd Function): `R` steps; at each, K/V move one rank along
   the ring by P2P (`batch_isend_irecv`, overlapped with compute), and the local queries attend
   to the visiting K/V tile by tile (`cp_blocks`), merged by online softmax. The backward is a
   second ring pass from the saved (out, lse): K/V travel as in the forward and their dK/dV
   accumulators travel with them, one more hop at the end to come home; dQ stays local.
4. Ulysses back: `all_to_all_single` returns heads to their owners.

All-gather-KV (`allgather`, Llama 3's context parallelism): `W` ranks; every rank all-gathers the
K/V shards (backward: dK/dV are reduce-scattered to their owners) and computes its query shard
against all keys, no ring steps. Since every rank sees all keys, its shard may be any equal-size
set of chunks: unless the mask is one full rectangle (contiguous), the planner takes whichever
of zigzag and a mask-aware `balanced` sharding (`8W` chunks dealt by area, `balanced_shards`)
gives the busiest rank less work (zigzag on ties).

Every mask works (block masks come from the rectangles); full, causal and document are the
tested ones. Block compute is plain fp32 math (`cp_blocks`); the differentiable communication
(ring pass, all-to-alls, all-gather) is in `cp_comm`; this module plans layouts, reports per-rank
work (`work_report`) and puts the pieces together (`ContextParallel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.cp_blocks import TILE, Shard, merge, partial_attention
from edgekit.runtimes.attention.cp_comm import (
    GatherSequence,
    HeadsToSeq,
    RingAttention,
    RingPlan,
    SeqToHeads,
    single_process_attention,
)
from edgekit.runtimes.attention.masks import Kind, Mask

__all__ = ["TILE", "ContextParallel", "Layout", "Shard", "merge", "partial_attention", "plan_layout",
           "single_process_attention", "work_report"]


@dataclass(frozen=True)
class Layout:
    """`ulysses × ring` ranks and the sharding (`zigzag` or `contiguous`, or the explicit
    `shards` of a `balanced` layout); `allgather`: the ring positions gather all K/V instead of
    passing it around (then `ulysses` is 1)."""

    ulysses: int
    ring: int
    zigzag: bool
    allgather: bool = False
    shards: tuple[Shard, ...] | None = None  # explicit ring shards (balanced sharding), for seqlen only
    kv_repeat: int = 1  # Ulysses with fewer K/V heads than its degree: each K/V head sent this many times

    @property
    def world(self) -> int:
        return self.ulysses * self.ring

    @property
    def sharding(self) -> str:
        return "balanced" if self.shards is not None else "zigzag" if self.zigzag else "contiguous"

    def ring_shards(self, seqlen: int) -> list[Shard]:
        r = self.ring
        if self.shards is not None:
            if sum(x.size for x in self.shards) != seqlen:
                raise ValueError(f"this layout's shards cover {sum(x.size for x in self.shards)} tokens, not {seqlen}")
            return list(self.shards)
        if not self.zigzag:
            n = seqlen // r
            return [Shard(((i * n, (i + 1) * n),)) for i in range(r)]
        c = seqlen // (2 * r)
        return [Shard(((i * c, (i + 1) * c), ((2 * r - 1 - i) * c, (2 * r - i) * c))) for i in range(r)]

    def rank_shard(self, seqlen: int, rank: int) -> Shard:
        return self.ring_shards(seqlen)[rank // self.ulysses].split(self.ulysses)[rank % self.ulysses]


def _usp_degree(world: int, heads: int, kv_heads: int, asked: int) -> int:
    """The smallest divisor `1 < d < world` dividing both head counts, else the smallest
    dividing the query heads (K/V heads then replicated), else the world (Ulysses)."""
    both = [d for d in range(2, world) if world % d == 0 and heads % d == 0 and kv_heads % d == 0]
    query = [d for d in range(2, world) if world % d == 0 and heads % d == 0]
    return asked or (both or query or [world])[0]


def kv_replication(kv_heads: int, ulysses: int) -> int:
    """How many times each K/V head is sent so the Ulysses all-to-all can split them: the least
    `r` with `kv_heads · r` divisible by `ulysses` (1 when they already divide). The query heads
    divide by both, so they divide by `kv_heads · r` = lcm(kv_heads, ulysses): grouped-query
    lookup stays within a rank's slice."""
    return ulysses // math.gcd(kv_heads, ulysses)


# method → its Ulysses degree from (world, heads, kv heads, asked degree); the ring degree is the rest.
ULYSSES_DEGREE: dict[str, Callable[[int, int, int, int], int]] = {
    "ring": lambda world, heads, kv_heads, asked: 1,
    "ulysses": lambda world, heads, kv_heads, asked: world,
    "usp": _usp_degree,
    "allgather": lambda world, heads, kv_heads, asked: 1,
}
METHODS = tuple(ULYSSES_DEGREE)


def plan_layout(method: str, world: int, heads: int, seqlen: int, mask: Mask, ulysses: int = 0,
                kv_heads: int | None = None) -> Layout:
    """The layout for `method` (`ring`, `ulysses`, `usp`, `allgather`), or `InvalidArgumentError`
    with the fix. `kv_heads` defaults to `heads`.

    USP's Ulysses degree is `ulysses` when given, else `_usp_degree` (on a prime world it
    degenerates to Ulysses). Ulysses and USP need the query heads divisible by their Ulysses
    degree; K/V heads that do not divide by it are replicated (`kv_replication`)."""
    if method not in ULYSSES_DEGREE:
        raise InvalidArgumentError(
            f"unknown context-parallel method {method!r}; choose {', '.join(ULYSSES_DEGREE)}")
    kv_heads = heads if kv_heads is None else kv_heads
    u = ULYSSES_DEGREE[method](world, heads, kv_heads, ulysses)
    if world % u:
        raise InvalidArgumentError(f"ulysses degree {u} must divide the world size {world}")
    if heads % u:
        raise InvalidArgumentError(
            f"{method}: heads ({heads}) must be divisible by the Ulysses degree ({u}); "
            f"choose --heads a multiple of {u} or fewer processes")
    if heads % kv_heads:
        raise InvalidArgumentError(f"heads ({heads}) must be a multiple of kv-heads ({kv_heads})")
    ring = world // u
    if method == "allgather":
        zigzag = ring > 1 and not (len(mask.rects) == 1 and mask.kinds() == {Kind.FULL})
    else:
        zigzag = ring > 1 and bool(mask.kinds() - {Kind.FULL})
    unit = 2 * ring * u if zigzag else world
    if seqlen % unit:
        raise InvalidArgumentError(
            f"{method}: sequence length {seqlen} must be a multiple of {unit} "
            f"({'2 × ring × ulysses for zigzag' if zigzag else 'the world size'})")
    layout = Layout(u, ring, zigzag, allgather=method == "allgather", kv_repeat=kv_replication(kv_heads, u))
    if layout.allgather and zigzag:
        balanced = balanced_shards(mask, ring)
        if balanced is not None:
            other = Layout(u, ring, False, allgather=True, shards=balanced)
            if max(work_report(other, mask, 1).rank_area) < max(work_report(layout, mask, 1).rank_area):
                return other
    return layout


def balanced_shards(mask: Mask, world: int, per_rank: int = 8) -> tuple[Shard, ...] | None:
    """`world` shards of `per_rank` equal chunks each (`None` unless the length divides into
    `world · per_rank` chunks), dealt by area: chunks in decreasing order of allowed pairs
    (queries × all keys), each to the least-loaded rank with room (lowest rank on ties); each
    shard's chunks in sequence order, touching ones joined. Greedy: balanced up to about one
    chunk's area."""
    n = world * per_rank
    if mask.seqlen_q % n:
        return None
    c = mask.seqlen_q // n
    chunks = [(i * c, (i + 1) * c) for i in range(n)]
    areas = [mask.block_area(a, b, 0, mask.seqlen_k) for a, b in chunks]
    load: list[int] = [0] * world
    members: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(range(n), key=lambda i: -areas[i]):
        r = min((r for r in range(world) if len(members[r]) < per_rank), key=lambda r: load[r])
        members[r].append(i)
        load[r] += areas[i]
    return tuple(Shard(_merge_adjacent([chunks[i] for i in sorted(m)])) for m in members)


def _merge_adjacent(chunks: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted `[a, b)` ranges with touching neighbours joined (fewer, larger tiles)."""
    out: list[tuple[int, int]] = []
    for a, b in chunks:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


_GROUPS: dict[tuple[int, int], dist.ProcessGroup] = {}


def _ulysses_group(u: int, r: int, rank: int) -> dist.ProcessGroup:
    """This rank's Ulysses group for a `u × r` layout, created once per layout (group creation
    is collective and, with NCCL, costly): every rank creates all `r` groups in the same order."""
    if (u, r) not in _GROUPS:
        groups = [dist.new_group(list(range(pos * u, (pos + 1) * u))) for pos in range(r)]
        _GROUPS[(u, r)] = groups[rank // u]
    return _GROUPS[(u, r)]


class ContextParallel:
    """Process groups and shards for one layout; call it with this rank's q, k, v pieces
    (`[B,H,s,D]`, `[B,H_kv,s,D]`, `[B,H_kv,s,D]`); differentiable in all three.

    Contract: every rank constructs it with the same arguments (it creates the Ulysses
    process groups collectively) and calls it (and its backward) the same number of times."""

    def __init__(self, layout: Layout, mask: Mask, tile: int = TILE) -> None:
        self.layout, self.mask, self.tile = layout, mask, tile
        self.rank = dist.get_rank()
        u, r = layout.ulysses, layout.ring
        self.uly_group = _ulysses_group(u, r, self.rank) if u > 1 else None
        self.ring_ranks = tuple(pos * u + self.rank % u for pos in range(r))
        self.ring_shards = layout.ring_shards(mask.seqlen_q)
        self.shard = layout.rank_shard(mask.seqlen_q, self.rank)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.layout.allgather:
            kv = GatherSequence.apply(torch.stack([k, v]), 3)  # [2, B, H_kv, W·s, D], rank order
            keys = Shard(tuple(c for s in self.ring_shards for c in s.chunks))
            plan = RingPlan(self.mask, self.shard, (keys,), 0, (self.rank,), self.tile)
            return RingAttention.apply(q, kv[0], kv[1], plan)  # type: ignore[no-any-return]
        u = self.layout.ulysses
        if self.layout.kv_repeat > 1:  # fewer K/V heads than the degree: send each several times
            k, v = (t.repeat_interleave(self.layout.kv_repeat, dim=1) for t in (k, v))  # grads sum back
        if self.uly_group is not None:
            q, k, v = (SeqToHeads.apply(t, self.uly_group, u) for t in (q, k, v))
        position = self.rank // u
        plan = RingPlan(self.mask, self.ring_shards[position], tuple(self.ring_shards), position, self.ring_ranks,
                        self.tile)
        out = RingAttention.apply(q, k, v, plan)
        if self.uly_group is not None:
            out = HeadsToSeq.apply(out, self.uly_group, u)
        return out  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Work:
    """Attention work per rank, in allowed (query, key) pairs × query heads (what the tiles
    compute when no tile is partly masked; skipped tiles cost nothing).

    `rank_area[r]`: rank `r`'s total; `imbalance`: max / mean of it (1 = balanced).
    `critical_area`: the work on the critical path if every rank waits for the slowest at each
    synchronisation: for ring layouts the sum over ring steps of the busiest rank's step work
    (a rank idles at a step whose visiting shard its queries barely see, even when its total is
    the mean); for all-gather the busiest rank's total. `critical_imbalance` = critical / mean."""

    rank_area: tuple[int, ...]
    imbalance: float
    critical_area: int
    critical_imbalance: float


def work_report(layout: Layout, mask: Mask, heads: int) -> Work:
    """Per-rank work of `layout` on `mask` from the mask's rectangles (no tensors, no ranks)."""
    shards = layout.ring_shards(mask.seqlen_q)
    per_rank_heads = heads // layout.ulysses
    r = layout.ring
    if layout.allgather:
        areas = [s.area(mask) * heads for s in shards]
        critical = max(areas)
    else:
        step = [[shards[p].area(mask, shards[(p - t) % r]) * per_rank_heads for p in range(r)] for t in range(r)]
        areas = [sum(step[t][p] for t in range(r)) for p in range(r) for _ in range(layout.ulysses)]
        critical = sum(max(row) for row in step)
    mean = sum(areas) / len(areas)
    return Work(tuple(areas), max(areas) / mean if mean else 1.0, critical, critical / mean if mean else 1.0)
