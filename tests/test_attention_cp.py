"""Context parallelism on 2 and 4 gloo processes: ring, Ulysses and USP match the
single-process reference on full, causal and document masks.

Tolerance: the FA3 criterion of the kernels (max error against the float64 reference ≤ 2 × the
float32 math reference's error + 2e-6); in practice the error is below 1e-6. One torchrun
launch per world size runs all nine (method, mask) cells.
"""

from __future__ import annotations

import pytest
import torch

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.cp import Layout, Shard, merge, partial_attention, plan_layout
from edgekit.runtimes.attention.cp_launch import CpConfig, launch_cp
from edgekit.runtimes.attention.generators import make_mask

torch.set_num_threads(1)
METHODS, MASKS = ("ring", "ulysses", "usp"), ("full", "causal", "document")


@pytest.mark.parametrize("nproc", [2, 4])
def test_context_parallel_matches_the_reference(nproc: int) -> None:
    config = CpConfig(nproc=nproc, methods=METHODS, masks=MASKS, seqlen=128, heads=4, head_dim=16,
                      reps=1, warmup=0)
    rows = launch_cp(config, timeout_s=240)
    assert {(r["method"], r["mask"]) for r in rows} == {(m, k) for m in METHODS for k in MASKS}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["max_err"] < 1e-6 and r["world"] == nproc and r["ms_median"] > 0
        assert r["ulysses_degree"] * r["ring_degree"] == nproc and r["peak_mem_mb"] >= 0
    assert any(r["sharding"] == "zigzag" for r in rows if r["method"] == "ring" and r["mask"] == "causal")
    if nproc == 4:
        usp = next(r for r in rows if r["method"] == "usp")
        assert (usp["ulysses_degree"], usp["ring_degree"]) == (2, 2)


def test_zigzag_gives_every_rank_the_same_causal_work() -> None:
    mask = make_mask("causal", 64)
    layout = plan_layout("ring", 4, 4, 64, mask)
    assert layout.zigzag
    work = [sum(mask.block_area(a, b, 0, 64) for a, b in s.chunks) for s in layout.ring_shards(64)]
    assert len(set(work)) == 1
    shards = [layout.rank_shard(64, r) for r in range(4)]
    assert sorted(torch.cat([s.index() for s in shards]).tolist()) == list(range(64))


def test_usp_pieces_tile_each_ring_shard() -> None:
    layout = Layout(ulysses=2, ring=2, zigzag=True)
    pieces = [layout.rank_shard(32, r) for r in range(4)]
    assert pieces[0].chunks == ((0, 8),) and pieces[1].chunks == ((24, 32),)
    assert Shard(((0, 4), (10, 14))).split(2)[1].chunks == ((10, 14),)


def test_online_softmax_merge_equals_one_pass() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 8, 4, generator=g) for _ in range(3))
    allowed = make_mask("causal", 8).dense()
    whole, lse = partial_attention(q, k, v, allowed)
    a = partial_attention(q, k[:, :, :3], v[:, :, :3], allowed[:, :3])
    b = partial_attention(q, k[:, :, 3:], v[:, :, 3:], allowed[:, 3:])
    merged, merged_lse = merge(*a, *b)
    assert torch.allclose(merged, whole, atol=1e-6) and torch.allclose(merged_lse, lse)


def test_ulysses_needs_heads_divisible_by_the_world() -> None:
    with pytest.raises(InvalidArgumentError, match=r"heads \(6\) must be divisible by the Ulysses degree \(4\)"):
        launch_cp(CpConfig(nproc=4, methods=("ulysses",), heads=6, seqlen=128))
    with pytest.raises(InvalidArgumentError, match="multiple of 8"):
        plan_layout("ring", 4, 4, 100, make_mask("causal", 100))


@pytest.mark.parametrize("mask_name", ["causal", "document", "block-sparse"])
def test_tiled_shard_attention_skips_tiles_but_not_keys(mask_name: str) -> None:
    """One rank's view with tiles of 8 tokens over a zigzag shard pair equals masked math."""
    from edgekit.runtimes.attention.cp_blocks import _attend_shard

    mask = make_mask(mask_name, 64, seed=3)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 64, 8, generator=g, dtype=torch.float64) for _ in range(3))
    shard = Layout(ulysses=1, ring=2, zigzag=True).ring_shards(64)[0]
    idx = shard.index()
    out = torch.zeros(1, 2, len(idx), 8, dtype=torch.float32)
    lse = torch.full((1, 2, len(idx)), float("-inf"))
    _attend_shard(q[:, :, idx], torch.stack([k, v]), shard, Shard(((0, 64),)), mask, out, lse, tile=8)
    want, _ = partial_attention(q[:, :, idx], k, v, mask.dense()[idx])
    assert torch.allclose(out, want, atol=1e-6)
