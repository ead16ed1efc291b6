"""Differentiable communication of context-parallel attention (torch.distributed autograd
Functions): the ring pass (`RingAttention`, forward and a second ring pass as backward), the
Ulysses all-to-alls (`SeqToHeads`, `HeadsToSeq`, each the other's backward) and the all-gather of
K/V (`GatherSequence`, backward reduce-scatter). Block math lives in `cp_blocks`; layouts and
planning in `cp`. See `cp`'s module docstring for the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from edgekit.runtimes.attention.cp_blocks import TILE, Shard, _attend_shard, _attend_shard_backward
from edgekit.runtimes.attention.masks import Mask


@dataclass(frozen=True)
class RingPlan:
    """What one rank's ring pass needs: its queries' shard, the key shard at every ring
    position, its position and the global ranks of the ring (a ring of one does no P2P)."""

    mask: Mask
    q_shard: Shard
    k_shards: tuple[Shard, ...]
    position: int
    ring_ranks: tuple[int, ...]
    tile: int = TILE


def _exchange(send: torch.Tensor, plan: RingPlan, tag: int = 0) -> tuple[torch.Tensor, list[dist.Work]]:
    """Start sending `send` to the next ring rank and receiving its like from the previous one
    (`tag` keeps K/V and gradient messages apart on backends that match by tag)."""
    r, p = len(plan.ring_ranks), plan.position
    incoming = torch.empty_like(send)
    ops = [dist.P2POp(dist.isend, send, plan.ring_ranks[(p + 1) % r], tag=tag),
           dist.P2POp(dist.irecv, incoming, plan.ring_ranks[(p - 1) % r], tag=tag)]
    return incoming, dist.batch_isend_irecv(ops)


def _ring_forward(q: torch.Tensor, kv: torch.Tensor, plan: RingPlan) -> tuple[torch.Tensor, torch.Tensor]:
    r = len(plan.ring_ranks)
    out = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    lse = torch.full(q.shape[:-1], float("-inf"), dtype=torch.float32, device=q.device)
    for step in range(r):
        incoming, requests = _exchange(kv, plan) if step < r - 1 else (kv, [])
        _attend_shard(q, kv, plan.q_shard, plan.k_shards[(plan.position - step) % r], plan.mask, out, lse, plan.tile)
        for req in requests:
            req.wait()
        kv = incoming
    return out, lse


def _ring_backward(q: torch.Tensor, kv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
                   plan: RingPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """(dq, dkv) of this rank's shards. At step `t` the rank holds the K/V of position
    `p − t` and that shard's dK/dV accumulator; both then move one hop, the accumulator also
    after the last step, which brings every accumulator back to its owner."""
    r = len(plan.ring_ranks)
    delta = (dout.float() * out).sum(-1)
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    dkv = torch.zeros(kv.shape, dtype=torch.float32, device=q.device)
    for step in range(r):
        incoming, requests = _exchange(kv, plan) if step < r - 1 else (kv, [])
        src = (plan.position - step) % r
        _attend_shard_backward(q, kv, plan.q_shard, plan.k_shards[src], plan.mask, lse, dout, delta, dq, dkv,
                               plan.tile)
        if r > 1:
            dkv, grad_requests = _exchange(dkv, plan, tag=1)
            requests += grad_requests
        for req in requests:
            req.wait()
        kv = incoming
    return dq, dkv


class RingAttention(torch.autograd.Function):
    """Ring attention of local q `[B,H,s,D]` over k, v `[B,H_kv,s,D]` (this rank's shards) with a
    distributed backward (module docstring, step 3). Returns the output for the local queries."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,  # type: ignore[override]
                plan: RingPlan) -> torch.Tensor:
        kv = torch.stack([k, v]).contiguous()
        out, lse = _ring_forward(q, kv, plan)
        ctx.save_for_backward(q, kv, out, lse)
        ctx.plan = plan
        return out.to(q.dtype)

    @staticmethod
    def backward(ctx, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        q, kv, out, lse = ctx.saved_tensors
        dq, dkv = _ring_backward(q, kv, out, lse, dout.contiguous(), ctx.plan)
        return dq.to(q.dtype), dkv[0].to(kv.dtype), dkv[1].to(kv.dtype), None


def single_process_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask,
                             tile: int = TILE) -> torch.Tensor:
    """The same tiled attention over the whole sequence in one process, no communication
    (differentiable, with the same tiled backward): the baseline the context-parallel methods are
    timed against (`attention-cp`'s report)."""
    whole = Shard(((0, q.shape[2]),))
    return RingAttention.apply(q, k, v, RingPlan(mask, whole, (whole,), 0, (0,), tile))  # type: ignore[no-any-return]


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


class SeqToHeads(torch.autograd.Function):
    """`_seq_to_heads` with its inverse as backward (an all-to-all is a permutation: its
    adjoint is its inverse)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup, u: int) -> torch.Tensor:  # type: ignore[override]
        ctx.group, ctx.u = group, u
        return _seq_to_heads(x, group, u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        return _heads_to_seq(grad.contiguous(), ctx.group, ctx.u), None, None


class HeadsToSeq(torch.autograd.Function):
    """`_heads_to_seq`, backward `_seq_to_heads`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup, u: int) -> torch.Tensor:  # type: ignore[override]
        ctx.group, ctx.u = group, u
        return _heads_to_seq(x, group, u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        return _seq_to_heads(grad.contiguous(), ctx.group, ctx.u), None, None


class GatherSequence(torch.autograd.Function):
    """All-gather along `dim` (every rank's piece, in rank order); backward: reduce-scatter of the
    gradient (`reduce_scatter` on NCCL; gloo has none, so all-reduce and keep this rank's piece)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:  # type: ignore[override]
        ctx.dim = dim
        pieces = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, x.contiguous())
        return torch.cat(pieces, dim=dim)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        chunks = [c.contiguous() for c in grad.chunk(world, dim=ctx.dim)]
        if dist.get_backend() == "nccl":
            mine = torch.empty_like(chunks[rank])
            dist.reduce_scatter(mine, chunks)
            return mine, None
        total = grad.contiguous()
        dist.all_reduce(total)
        return total.chunk(world, dim=ctx.dim)[rank].contiguous(), None
