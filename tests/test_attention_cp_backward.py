"""The backward pass, grouped-query heads, the all-gather method and the work report of context
parallelism, as a story: one block's hand-written gradients equal autograd's → every method
(ring, Ulysses, USP, all-gather) on 2 and 4 gloo ranks gives the reference output and dQ, dK, dV
with GQA → each rank's work on a small document mask equals areas counted by hand → bad values
exit 2 with one line.

Heads: 4 query over 2 key/value heads on 2 and on 4 ranks (on 4, Ulysses sends each K/V head
twice so the all-to-all can split them: `kv_repeat` 2). One torchrun launch per world size runs every
(method, mask, pass) cell; the 2-rank one goes through the CLI (and its scaling outputs).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekit.runtimes.attention.cp import Layout, balanced_shards, plan_layout, work_report
from edgekit.runtimes.attention.cp_blocks import partial_attention, partial_attention_backward
from edgekit.runtimes.attention.cp_launch import CpConfig, launch_cp
from edgekit.runtimes.attention.cp_scaling import scaling_configs
from edgekit.runtimes.attention.generators import make_mask
from edgekit.runtimes.attention.masks import Kind, Mask, Rect

torch.set_num_threads(1)
METHODS = ("ring", "ulysses", "usp", "allgather")
MASKS = ("full", "causal", "document", "document-causal")


def test_one_blocks_backward_equals_autograd_with_grouped_heads() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 8, 4, generator=g, requires_grad=True)
    k, v = (torch.randn(1, 2, 8, 4, generator=g, requires_grad=True) for _ in range(2))
    allowed = make_mask("document-causal", 8, seed=1).dense()
    out, lse = partial_attention(q, k, v, allowed)
    dout = torch.randn(out.shape, generator=g)
    out.backward(dout)
    got = partial_attention_backward(q.detach(), k.detach(), v.detach(), allowed, lse.detach(), dout,
                                     (dout * out.detach()).sum(-1))
    assert got[1].shape == (1, 2, 8, 4)  # dK folded onto the key/value heads
    for mine, want in zip(got, (q.grad, k.grad, v.grad), strict=True):
        assert want is not None and torch.allclose(mine, want, atol=1e-6)


def _check(rows: list[dict[str, object]], nproc: int, kv_heads: int) -> None:
    cells = {(r["method"], r["mask"], r["pass"]): r for r in rows if r["method"] != "single"}
    assert set(cells) == {(m, k, p) for m in METHODS for k in MASKS for p in ("fwd", "bwd")}
    for (method, mask, phase), r in cells.items():
        assert r["status"] == "ok" and float(r["max_err"]) <= 1e-5, r  # type: ignore[arg-type]
        assert (r["world"], r["kv_heads"]) == (nproc, kv_heads) and len(r["rank_area"]) == nproc  # type: ignore[arg-type]
        if phase == "bwd":
            assert r["flops"] == 5 * cells[method, mask, "fwd"]["flops"] // 2  # type: ignore[operator]
    # seed 4's documents make the planner deal all-gather's chunks by area on at least one mask
    assert "balanced" in {cells["allgather", m, "bwd"]["sharding"] for m in ("document", "document-causal")}
    assert cells["ring", "document", "bwd"]["sharding"] == "contiguous"  # no causal part: the ring keeps order


def test_every_method_forward_and_backward_on_2_ranks_through_the_cli(tmp_path: Path) -> None:
    result = _cp("--nproc", "2", "--methods", ",".join(METHODS), "--masks", ",".join(MASKS), "--seqlen", "64",
                 "--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--pass", "fwd,bwd", "--reps", "1",
                 "--warmup", "0", "--seed", "4", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "attention_cp.jsonl").read_text().splitlines()]
    _check(rows, 2, 2)
    baselines = {(r["mask"], r["pass"]) for r in rows if r["method"] == "single"}
    assert baselines == {(m, p) for m in MASKS for p in ("fwd", "bwd")}
    summary = (tmp_path / "attention_cp.md").read_text()
    assert "| allgather | 2 (1 × 2) | zigzag | causal | 64 | bwd |" in summary
    assert "allgather causal bwd" in (tmp_path / "attention_cp.report.md").read_text()
    assert "| allgather | 2 (1 × 2) | zigzag | causal | 64 | 1.00, 1.00 | 1.000 | 1.000 |" in (
        tmp_path / "attention_cp_imbalance.md").read_text()  # zigzag balances one causal sequence exactly
    assert (tmp_path / "attention_cp_scaling.png").stat().st_size > 10_000


def test_a_scaling_sweep_is_one_launch_per_rank_count_and_length_with_one_baseline_per_length() -> None:
    configs = scaling_configs(CpConfig(baseline=True), (4, 2), (512, 256))
    assert [(c.nproc, c.seqlen, c.baseline) for c in configs] == [
        (2, 256, True), (2, 512, True), (4, 256, False), (4, 512, False)]


def test_every_method_forward_and_backward_on_4_ranks() -> None:
    config = CpConfig(nproc=4, methods=METHODS, masks=MASKS, seqlen=128, heads=4, kv_heads=2, head_dim=8,
                      passes="fwd,bwd", reps=1, warmup=0, seed=4)
    rows = launch_cp(config, timeout_s=240)
    _check(rows, 4, 2)
    usp = next(r for r in rows if r["method"] == "usp")
    assert (usp["ulysses_degree"], usp["ring_degree"], usp["kv_repeat"]) == (2, 2, 1)
    ulysses = next(r for r in rows if r["method"] == "ulysses")  # 2 K/V heads over 4 ranks: each sent twice
    assert (ulysses["ulysses_degree"], ulysses["kv_repeat"]) == (4, 2)


def two_documents() -> Mask:
    """16 tokens: a causal document [0, 12) and a causal document [12, 16)."""
    return Mask("two-docs", 16, 16, (Rect(0, 12, 0, 12, Kind.CAUSAL), Rect(12, 16, 12, 16, Kind.CAUSAL)))


def test_work_per_rank_equals_areas_counted_by_hand() -> None:
    """2 ranks, 2 heads. Row i of document [0, 12) sees i + 1 keys, row 12 + j sees j + 1.
    Total 78 + 10 = 88 pairs per head.

    Zigzag (chunks of 4; rank 0 holds [0,4) and [12,16), rank 1 holds [4,12)), as the planner
    picks for ring and all-gather on a causal mask: rank 0 = (1+2+3+4) + (1+2+3+4) = 20,
    rank 1 = 5+6+…+12 = 68; × 2 heads = 40, 136; mean 88, max/mean 136/88. Ring steps: step 0
    (own keys) rank 0 20, rank 1 [4,12)×[4,12) = 1+…+8 = 36; step 1 rank 0 sees no key of [4,12)
    (0), rank 1 sees all of [0,4): 8 × 4 = 32. Critical = (36 + 32) × 2 = 136.
    Contiguous ring: rank 0 = 1+…+8 = 36, rank 1 = 9+10+11+12 + 10 = 52 → 72, 104; steps: 36 vs
    10+10 = 20, then 0 vs 4 × 8 = 32 → critical (36 + 32) × 2 = 136: the ring pays the same idle
    time either way here. Ulysses (one head per rank, all keys): 88, 88, balanced.

    All-gather may take any equal-size chunks; balanced sharding with 4 chunks of 2 tokens per
    rank: chunk areas 3, 7, 11, 15, 19, 23 (document 0), 3, 7 (document 1); dealt largest first
    to the least-loaded rank with room: 23→0, 19→1, 15→1 (34), 11→0 (34), 7→0 (41, tie → rank 0),
    7→1 (41), 3→0, 3→1: 44 and 44. Rank 0 holds [0,6) and [10,12), rank 1 [6,10) and [12,16).
    The planner's default (8 chunks of 1 token per rank) also reaches 44/44 and beats zigzag."""
    mask = two_documents()
    zigzag = plan_layout("ring", 2, 2, 16, mask)
    assert zigzag.zigzag
    work = work_report(zigzag, mask, heads=2)
    assert work.rank_area == (40, 136) and work.imbalance == 136 / 88 and work.critical_area == 136
    dealt = balanced_shards(mask, world=2, per_rank=4)
    assert dealt is not None and [s.chunks for s in dealt] == [((0, 6), (10, 12)), ((6, 10), (12, 16))]
    by_hand = work_report(Layout(ulysses=1, ring=2, zigzag=False, allgather=True, shards=dealt), mask, heads=2)
    assert by_hand.rank_area == (88, 88) and by_hand.critical_area == 88
    gather_layout = plan_layout("allgather", 2, 2, 16, mask)
    gather = work_report(gather_layout, mask, heads=2)
    assert gather_layout.sharding == "balanced" and gather.rank_area == (88, 88) and gather.imbalance == 1.0
    assert plan_layout("allgather", 2, 2, 16, make_mask("causal", 16)).sharding == "zigzag"  # exact there
    contiguous = work_report(Layout(ulysses=1, ring=2, zigzag=False), mask, heads=2)
    assert contiguous.rank_area == (72, 104) and contiguous.imbalance == 104 / 88
    assert contiguous.critical_area == 136 and contiguous.critical_imbalance == 136 / 88
    ulysses = work_report(plan_layout("ulysses", 2, 2, 16, mask), mask, heads=2)
    assert ulysses.rank_area == (88, 88) and ulysses.imbalance == 1.0 and ulysses.critical_area == 88


def _cp(*args: str) -> CliRunner:
    from edgekit.cli import app

    return CliRunner().invoke(app, ["bench", "attention-cp", *args])  # type: ignore[return-value]


@pytest.mark.parametrize("args, message", [
    (("--heads", "4", "--kv-heads", "3"), "multiple of kv-heads (3)"),
    (("--heads", "4", "--kv-heads", "0"), "--kv-heads must be at least 1"),
    (("--pass", "sideways"), "--pass takes fwd, bwd or fwd,bwd"),
    (("--nproc", "2,4", "--methods", "ulysses", "--heads", "6", "--kv-heads", "2"),  # refused before any launch
     "heads (6) must be divisible by the Ulysses degree (4)"),
])
def test_bad_values_exit_2_with_one_line(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    result = _cp("--seqlen", "64", *args, "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "attention_cp.jsonl").exists()
