"""Context parallelism for attention over torch.distributed: ring, Ulysses and USP.

One algorithm covers all three: USP with a `Layout` of `ulysses × ring` ranks
(ring = `1 × W`, Ulysses = `W × 1`). Rank `r` is ring position `r // U`, Ulysses position
`r % U`; Ulysses groups are consecutive ranks (keep them inside a node).

1. Sharding: the sequence is cut into `R` ring shards (zigzag for masks with causal parts: shard
   `i` holds chunks `i` and `2R-1-i` of `2R`, so every rank gets the same causal work), and each
   ring shard into `U` equal pieces, one per rank of its Ulysses group.
2. Ulysses: `all_to_all_single` trades heads for sequence: each rank then holds its whole ring
   shard for `H / U` heads (heads must divide by `U`).
3. Ring: `R` steps; at each, K/V move one rank along the ring by P2P (`batch_isend_irecv`,
   overlapped with compute), and the local queries attend to the visiting K/V in tiles of
   `TILE` tokens: tiles the mask empties are skipped, fully allowed tiles run without a mask,
   partial tiles take the exact mask block built from the rectangles. Partial results merge by
   online softmax on their log-sum-exp.
4. Ulysses back: `all_to_all_single` returns heads to their owners.

Forward only. Every mask works (the block mask comes from the rectangles); full, causal and
document are the tested ones. Block compute is plain fp32 math (`partial_attention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.masks import Kind, Mask


@dataclass(frozen=True)
class Shard:
    """Token ranges `[a, b)` (global indices) one rank holds, in the order of its local tensor."""

    chunks: tuple[tuple[int, int], ...]

    @property
    def size(self) -> int:
        return sum(b - a for a, b in self.chunks)

    def index(self) -> torch.Tensor:
        return torch.cat([torch.arange(a, b) for a, b in self.chunks])

    def split(self, parts: int) -> list[Shard]:
        """`parts` equal pieces of this shard's token list, in order (pieces may cross chunks)."""
        step, pieces = self.size // parts, []
        flat = [(a, b) for a, b in self.chunks]
        for i in range(parts):
            lo, hi, at, chunks = i * step, (i + 1) * step, 0, []
            for a, b in flat:
                s, e = max(a, a + lo - at), min(b, a + hi - at)
                if s < e:
                    chunks.append((s, e))
                at += b - a
            pieces.append(Shard(tuple(chunks)))
        return pieces


@dataclass(frozen=True)
class Layout:
    """`ulysses × ring` ranks and the ring sharding (`zigzag` or `contiguous`)."""

    ulysses: int
    ring: int
    zigzag: bool

    @property
    def world(self) -> int:
        return self.ulysses * self.ring

    def ring_shards(self, seqlen: int) -> list[Shard]:
        r = self.ring
        if not self.zigzag:
            n = seqlen // r
            return [Shard(((i * n, (i + 1) * n),)) for i in range(r)]
        c = seqlen // (2 * r)
        return [Shard(((i * c, (i + 1) * c), ((2 * r - 1 - i) * c, (2 * r - i) * c))) for i in range(r)]

    def rank_shard(self, seqlen: int, rank: int) -> Shard:
        return self.ring_shards(seqlen)[rank // self.ulysses].split(self.ulysses)[rank % self.ulysses]


def _usp_degree(world: int, heads: int, asked: int) -> int:
    divisors = [d for d in range(2, world) if world % d == 0 and heads % d == 0]
    return asked or (divisors[0] if divisors else world)


# method → its Ulysses degree from (world, heads, asked degree); the ring degree is the rest.
ULYSSES_DEGREE: dict[str, Callable[[int, int, int], int]] = {
    "ring": lambda world, heads, asked: 1,
    "ulysses": lambda world, heads, asked: world,
    "usp": _usp_degree,
}


def plan_layout(method: str, world: int, heads: int, seqlen: int, mask: Mask, ulysses: int = 0) -> Layout:
    """The layout for `method` (`ring`, `ulysses`, `usp`), or `InvalidArgumentError` with the fix.

    USP's Ulysses degree is `ulysses` when given, else the smallest divisor `d` of the world
    with `1 < d < world` and `heads % d == 0` (on a prime world it degenerates to Ulysses)."""
    if method not in ULYSSES_DEGREE:
        raise InvalidArgumentError(
            f"unknown context-parallel method {method!r}; choose {', '.join(ULYSSES_DEGREE)}")
    u = ULYSSES_DEGREE[method](world, heads, ulysses)
    if world % u:
        raise InvalidArgumentError(f"ulysses degree {u} must divide the world size {world}")
    if heads % u:
        raise InvalidArgumentError(
            f"{method}: heads ({heads}) must be divisible by the Ulysses degree ({u}); "
            f"choose --heads a multiple of {u} or fewer processes")
    ring = world // u
    zigzag = ring > 1 and bool(mask.kinds() - {Kind.FULL})
    unit = 2 * ring * u if zigzag else world
    if seqlen % unit:
        raise InvalidArgumentError(
            f"{method}: sequence length {seqlen} must be a multiple of {unit} "
            f"({'2 × ring × ulysses for zigzag' if zigzag else 'the world size'})")
    return Layout(u, ring, zigzag)


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      allowed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of `[B,H,sq,D]` q over `[B,H,sk,D]` k, v (fp32 math) → (out, lse `[B,H,sq]`).
    Rows with no allowed key give out 0 and lse −inf, the neutral element of `merge`."""
    scores = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - torch.where(torch.isfinite(lse), lse, 0)[..., None])
    return probs @ v.float(), lse


def merge(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
          lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Online-softmax merge of two partial results over disjoint key sets."""
    lse = torch.logaddexp(lse_a, lse_b)
    safe = torch.where(torch.isfinite(lse), lse, 0)
    wa, wb = torch.exp(lse_a - safe)[..., None], torch.exp(lse_b - safe)[..., None]
    return wa * out_a + wb * out_b, lse


TILE = 256  # tokens per side of the blocks the mask is classified on


def _tiles(shard: Shard, tile: int) -> list[tuple[int, int, int]]:
    """`(a, b, local_offset)` for the shard's chunks cut into pieces of at most `tile` tokens."""
    out, offset = [], 0
    for a, b in shard.chunks:
        for s in range(a, b, tile):
            e = min(s + tile, b)
            out.append((s, e, offset))
            offset += e - s
    return out


def _attend_shard(q: torch.Tensor, kv: torch.Tensor, q_shard: Shard, k_shard: Shard, mask: Mask,
                  out: torch.Tensor, lse: torch.Tensor, tile: int = TILE) -> None:
    """Merge the attention of local queries over one visiting K/V shard into (out, lse), tile
    by tile: empty tiles are skipped, full tiles run unmasked, partial tiles take their mask."""
    k_tiles = _tiles(k_shard, tile)
    for qa, qb, qo in _tiles(q_shard, tile):
        sl = slice(qo, qo + qb - qa)
        for ka, kb, ko in k_tiles:
            area = mask.block_area(qa, qb, ka, kb)
            if not area:
                continue
            allowed = None if area == (qb - qa) * (kb - ka) else mask.dense(qa, qb, ka, kb, q.device)
            o, l_ = partial_attention(q[:, :, sl], kv[0][:, :, ko:ko + kb - ka], kv[1][:, :, ko:ko + kb - ka],
                                      allowed)
            out[:, :, sl], lse[:, :, sl] = merge(out[:, :, sl], lse[:, :, sl], o, l_)


def ring_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, shards: list[Shard],
                   position: int, ring_ranks: list[int]) -> torch.Tensor:
    """Ring attention for this rank at `position` of `ring_ranks` (global ranks), holding
    `shards[position]` of q, k, v `[B,H,s,D]`. Returns the output for its queries."""
    r = len(ring_ranks)
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
    kv = torch.stack([k, v]).contiguous()
    for step in range(r):
        src = (position - step) % r
        requests = []
        if step < r - 1:
            incoming = torch.empty_like(kv)
            ops = [dist.P2POp(dist.isend, kv, ring_ranks[(position + 1) % r]),
                   dist.P2POp(dist.irecv, incoming, ring_ranks[(position - 1) % r])]
            requests = dist.batch_isend_irecv(ops)
        _attend_shard(q, kv, shards[position], shards[src], mask, out, lse)
        for req in requests:
            req.wait()
        if step < r - 1:
            kv = incoming
    return out.to(q.dtype)


def single_process_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask) -> torch.Tensor:
    """The same tiled attention over the whole sequence in one process, no communication: the
    baseline the context-parallel methods are timed against (`attention-cp`'s report)."""
    whole = Shard(((0, q.shape[2]),))
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
    _attend_shard(q, torch.stack([k, v]).contiguous(), whole, whole, mask, out, lse)
    return out.to(q.dtype)


def _seq_to_heads(x: torch.Tensor, group: dist.ProcessGroup, u: int) -> torch.Tensor:
    """`[B,H,s,D]` (sequence piece, all heads) → `[B,H/u,u·s,D]` (group's sequence, head slice)."""
    b, h, s, d = x.shape
    send = x.reshape(b, u, h // u, s, d).permute(1, 0, 2, 3, 4).contiguous()  # [u, B, H/u, s, D]
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[j] = piece j, my heads
    return recv.permute(1, 2, 0, 3, 4).reshape(b, h // u, u * s, d)


def _heads_to_seq(x: torch.Tensor, group: dist.ProcessGroup, u: int) -> torch.Tensor:
    """Inverse of `_seq_to_heads`: `[B,H/u,u·s,D]` → `[B,H,s,D]`."""
    b, hu, us, d = x.shape
    send = x.reshape(b, hu, u, us // u, d).permute(2, 0, 1, 3, 4).contiguous()  # [u, B, H/u, s, D]
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)  # recv[j] = my piece, head group j
    return recv.permute(1, 0, 2, 3, 4).reshape(b, hu * u, us // u, d)


_GROUPS: dict[tuple[int, int], dist.ProcessGroup] = {}


def _ulysses_group(u: int, r: int, rank: int) -> dist.ProcessGroup:
    """This rank's Ulysses group for a `u × r` layout, created once per layout (group creation
    is collective and, with NCCL, costly): every rank creates all `r` groups in the same order."""
    if (u, r) not in _GROUPS:
        groups = [dist.new_group(list(range(pos * u, (pos + 1) * u))) for pos in range(r)]
        _GROUPS[(u, r)] = groups[rank // u]
    return _GROUPS[(u, r)]


class ContextParallel:
    """Process groups and shards for one layout; call it with this rank's q, k, v pieces.

    Contract: every rank constructs it with the same arguments (it creates the Ulysses
    process groups collectively) and calls it the same number of times."""

    def __init__(self, layout: Layout, mask: Mask) -> None:
        self.layout, self.mask = layout, mask
        self.rank = dist.get_rank()
        u, r = layout.ulysses, layout.ring
        self.uly_group = _ulysses_group(u, r, self.rank) if u > 1 else None
        self.ring_ranks = [pos * u + self.rank % u for pos in range(r)]
        self.ring_shards = layout.ring_shards(mask.seqlen_q)
        self.shard = layout.rank_shard(mask.seqlen_q, self.rank)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        u = self.layout.ulysses
        if self.uly_group is not None:
            q, k, v = (_seq_to_heads(t, self.uly_group, u) for t in (q, k, v))
        out = ring_attention(q, k, v, self.mask, self.ring_shards, self.rank // u, self.ring_ranks)
        if self.uly_group is not None:
            out = _heads_to_seq(out, self.uly_group, u)
        return out
