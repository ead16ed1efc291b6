"""Block math of context-parallel attention, forward and backward, without communication.

A rank holds queries `[B, H, sq, D]` for a `Shard` of token positions and sees key/value blocks
`[B, H_kv, sk, D]` for other shards (`H % H_kv == 0`; query head `h` uses key/value head
`h // (H / H_kv)`, as SDPA's `enable_gqa`). The forward merges per-tile partial results by online
softmax on their log-sum-exp; the backward recomputes each tile's probabilities from the saved
final `lse` (FlashAttention-2's backward): with `delta = rowsum(dO ∘ O)`,

    P = exp(S − lse),  dV = Pᵀ dO,  dS = P ∘ (dO Vᵀ − delta),  dQ = dS K / √D,  dK = dSᵀ Q / √D

and dK/dV of grouped heads summed over each group. All math is fp32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edgekit.runtimes.attention.masks import Mask


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

    def area(self, mask: Mask, keys: Shard | None = None) -> int:
        """Allowed (query, key) pairs of this shard's queries over `keys` (default: all keys)."""
        key_chunks = keys.chunks if keys is not None else ((0, mask.seqlen_k),)
        return sum(mask.block_area(a, b, c, d) for a, b in self.chunks for c, d in key_chunks)


def _expand(kv: torch.Tensor, heads: int) -> torch.Tensor:
    """`[B, H_kv, s, D]` → `[B, heads, s, D]` (each key/value head repeated for its query group)."""
    group = heads // kv.shape[1]
    return kv if group == 1 else kv.repeat_interleave(group, dim=1)


def _fold(grad: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Inverse of `_expand` for gradients: sum each query group back onto its key/value head."""
    b, h, s, d = grad.shape
    return grad if h == kv_heads else grad.reshape(b, kv_heads, h // kv_heads, s, d).sum(2)


def _safe(lse: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(lse), lse, 0)


def _scores(q: torch.Tensor, k: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    scores = (q.float() @ _expand(k, q.shape[1]).float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores if allowed is None else scores.masked_fill(~allowed, float("-inf"))


def partial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      allowed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of `[B,H,sq,D]` q over `[B,H_kv,sk,D]` k, v (fp32 math) → (out, lse `[B,H,sq]`).
    Rows with no allowed key give out 0 and lse −inf, the neutral element of `merge`."""
    scores = _scores(q, k, allowed)
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - _safe(lse)[..., None])
    return probs @ _expand(v, q.shape[1]).float(), lse


def partial_attention_backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor | None,
                               lse: torch.Tensor, dout: torch.Tensor,
                               delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv) of one block, given the rows' final `lse`, upstream `dout` and
    `delta = rowsum(dout ∘ out)` (the whole rows', not the block's): see the module docstring."""
    scale = 1 / math.sqrt(q.shape[-1])
    probs = torch.exp(_scores(q, k, allowed) - _safe(lse)[..., None])
    dout = dout.float()
    dv = probs.transpose(-1, -2) @ dout
    ds = probs * (dout @ _expand(v, q.shape[1]).float().transpose(-1, -2) - delta[..., None])
    dq = (ds @ _expand(k, q.shape[1]).float()) * scale
    dk = (ds.transpose(-1, -2) @ q.float()) * scale
    return dq, _fold(dk, k.shape[1]), _fold(dv, k.shape[1])


def merge(out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor,
          lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Online-softmax merge of two partial results over disjoint key sets."""
    lse = torch.logaddexp(lse_a, lse_b)
    safe = _safe(lse)
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


def _blocks(q_shard: Shard, k_shard: Shard, mask: Mask, device: torch.device,
            tile: int) -> list[tuple[slice, slice, torch.Tensor | None]]:
    """Non-empty tiles `(local q slice, local k slice, allowed or None when fully allowed)`."""
    out = []
    k_tiles = _tiles(k_shard, tile)
    for qa, qb, qo in _tiles(q_shard, tile):
        for ka, kb, ko in k_tiles:
            area = mask.block_area(qa, qb, ka, kb)
            if area:
                allowed = None if area == (qb - qa) * (kb - ka) else mask.dense(qa, qb, ka, kb, device)
                out.append((slice(qo, qo + qb - qa), slice(ko, ko + kb - ka), allowed))
    return out


def _attend_shard(q: torch.Tensor, kv: torch.Tensor, q_shard: Shard, k_shard: Shard, mask: Mask,
                  out: torch.Tensor, lse: torch.Tensor, tile: int = TILE) -> None:
    """Merge the attention of local queries over one visiting K/V shard (`kv` = stack(k, v)) into
    (out, lse), tile by tile: empty tiles are skipped, full tiles run unmasked, partial tiles
    take their mask."""
    for sq, sk, allowed in _blocks(q_shard, k_shard, mask, q.device, tile):
        o, l_ = partial_attention(q[:, :, sq], kv[0][:, :, sk], kv[1][:, :, sk], allowed)
        out[:, :, sq], lse[:, :, sq] = merge(out[:, :, sq], lse[:, :, sq], o, l_)


def _attend_shard_backward(q: torch.Tensor, kv: torch.Tensor, q_shard: Shard, k_shard: Shard, mask: Mask,
                           lse: torch.Tensor, dout: torch.Tensor, delta: torch.Tensor, dq: torch.Tensor,
                           dkv: torch.Tensor, tile: int = TILE) -> None:
    """Add the gradients of one visiting K/V shard's tiles: to `dq` (local queries) and to
    `dkv` = stack(dk, dv) (the visiting shard's). Same tiles as `_attend_shard`."""
    for sq, sk, allowed in _blocks(q_shard, k_shard, mask, q.device, tile):
        gq, gk, gv = partial_attention_backward(q[:, :, sq], kv[0][:, :, sk], kv[1][:, :, sk], allowed,
                                                lse[:, :, sq], dout[:, :, sq], delta[:, :, sq])
        dq[:, :, sq] += gq
        dkv[0][:, :, sk] += gk
        dkv[1][:, :, sk] += gv
