"""The backward pass and grouped-query heads of `edgekit bench attention`, as a story: a tiny GQA
problem (4 query heads over 2 key/value heads) → each CPU kernel's dQ, dK, dV from a fixed upstream
gradient → compared with the float64 reference gradients, which are themselves checked against
attention written out by hand with K/V repeated per query head. Then the CLI: `--pass` picks the
rows, bad `--pass` / `--kv-heads` values exit 2 with one line."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from edgekit.runtimes.attention.generators import make_mask
from edgekit.runtimes.attention.kernels import RunFn, registry
from edgekit.runtimes.attention.measure import References, run_cell
from edgekit.runtimes.attention.problem import Problem, make_inputs
from edgekit.runtimes.attention.reference import math_attention

torch.set_num_threads(1)
CPU = torch.device("cpu")
MASKS = ("full", "causal", "document-causal")
BACKWARD_ON_CPU = ("sdpa-math", "sdpa-flash")  # the CPU kernels with a backward in torch 2.13
NO_BACKWARD_ON_CPU = ("sdpa-efficient", "sdpa-cudnn", "flex", "ort-matmul", "ort-attention")


def gqa_problem(mask: str, s: int = 48) -> Problem:
    return Problem(make_mask(mask, s, seed=3), batch=1, heads=4, kv_heads=2, head_dim=8,
                   dtype=torch.float32, device=CPU)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def by_hand(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax attention spelled out in float64, each K/V head repeated for its query-head group."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


@pytest.mark.parametrize("mask", MASKS)
def test_reference_gradients_handle_grouped_query_heads(mask: str) -> None:
    p = gqa_problem(mask)
    x = make_inputs(p, seed=0, dtype=torch.float64)
    ref = math_attention(x.q, x.k, x.v, p.mask, grad_out=x.grad_out, chunk=16)  # several chunks: dk/dv add up
    q, k, v = (t.clone().requires_grad_() for t in (x.q, x.k, x.v))
    out = by_hand(q, k, v, p.mask.dense(device=CPU))
    out.backward(x.grad_out)
    assert ref.grads is not None and ref.grads[1].shape == (1, 2, 48, 8)  # dK has the KV heads, not 4
    assert rel_err(ref.out, out.detach()) < 1e-12
    for got, want in zip(ref.grads, (q.grad, k.grad, v.grad), strict=True):
        assert rel_err(got, want) < 1e-12


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("name", BACKWARD_ON_CPU)
def test_kernel_gradients_equal_the_reference_with_gqa(name: str, mask: str) -> None:
    p = gqa_problem(mask)
    x = make_inputs(p, seed=0)
    ref = math_attention(*(t.double() for t in (x.q, x.k, x.v)), p.mask, grad_out=x.grad_out.double())
    assert registry()[name].backward_unsupported(p) is None
    q, k, v = (t.detach().requires_grad_() for t in (x.q, x.k, x.v))
    registry()[name].prepare(p)(q, k, v).backward(x.grad_out)
    assert ref.grads is not None
    for label, got, want in zip("qkv", (q.grad, k.grad, v.grad), ref.grads, strict=True):
        assert got is not None and got.shape == want.shape
        assert rel_err(got, want) <= 1e-5, (name, mask, f"d{label}")

    row = run_cell(registry()[name], p, References(seed=0), backward=True, reps=1, warmup=0)
    assert (row.pass_, row.status, row.kv_heads) == ("bwd", "ok", 2)
    assert row.flops == 5 * p.flops() // 2 == p.mask.flops(4, 8, backward=True)  # query heads, 2.5× fwd


@pytest.mark.parametrize("name", NO_BACKWARD_ON_CPU)
def test_kernels_without_a_cpu_backward_say_unsupported(name: str) -> None:
    row = run_cell(registry()[name], gqa_problem("causal"), References(), backward=True, reps=1, warmup=0)
    assert row.status == "unsupported" and row.note and row.ms_median is None


@dataclass(frozen=True)
class WrongDkKernel:
    """Forward exact, backward wrong: K enters only through a detached copy, so dK is zero."""

    name: str = "wrong-dk"

    def unsupported(self, p: Problem) -> str | None:
        return None

    def backward_unsupported(self, p: Problem) -> str | None:
        return None

    def prepare(self, p: Problem) -> RunFn:
        kernel = registry()["sdpa-math"].prepare(p)

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return kernel(q, k.detach(), v)

        return run


def test_a_wrong_gradient_is_status_wrong_though_the_forward_is_right() -> None:
    p, refs = gqa_problem("document-causal"), References()
    assert run_cell(WrongDkKernel(), p, refs, reps=1, warmup=0).status == "ok"
    row = run_cell(WrongDkKernel(), p, refs, backward=True, reps=1, warmup=0)
    assert row.status == "wrong" and row.max_err is not None and row.tol is not None and row.max_err > row.tol


def _bench(*args: str) -> CliRunner:
    from edgekit.cli import app

    return CliRunner().invoke(app, ["bench", "attention", *args])  # type: ignore[return-value]


TINY = ("--kernels", "sdpa-math,ort-attention", "--masks", "causal,document-causal", "--seqlens", "32",
        "--heads", "4", "--kv-heads", "2", "--head-dim", "8", "--reps", "1", "--threads", "1")


def test_pass_fwd_bwd_adds_a_bwd_row_per_cell(tmp_path: Path) -> None:
    result = _bench(*TINY, "--pass", "fwd,bwd", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "attention.jsonl").read_text().splitlines()]
    cells = {(r["kernel"], r["mask"], r["pass"]): r for r in rows}
    assert len(rows) == len(cells) == 2 * 2 * 2
    for mask in ("causal", "document-causal"):
        fwd, bwd = cells["sdpa-math", mask, "fwd"], cells["sdpa-math", mask, "bwd"]
        assert fwd["status"] == bwd["status"] == "ok" and bwd["kv_heads"] == 2
        assert bwd["flops"] == 5 * fwd["flops"] // 2 and bwd["ms_median"] > 0
        assert cells["ort-attention", mask, "bwd"]["status"] == "unsupported"
    assert "| causal | 32 | sdpa-math | bwd | ok |" in (tmp_path / "attention.md").read_text()
    assert "sdpa-math bwd" in (tmp_path / "attention.report.md").read_text()

    only_fwd = tmp_path / "fwd"
    assert _bench(*TINY, "--out", str(only_fwd)).exit_code == 0  # the default stays forward only
    assert {json.loads(line)["pass"] for line in (only_fwd / "attention.jsonl").read_text().splitlines()} == {"fwd"}
    only_bwd = tmp_path / "bwd"
    assert _bench(*TINY, "--pass", "bwd", "--out", str(only_bwd)).exit_code == 0
    assert {json.loads(line)["pass"] for line in (only_bwd / "attention.jsonl").read_text().splitlines()} == {"bwd"}


@pytest.mark.parametrize("args, message", [
    (("--pass", "sideways"), "--pass takes fwd, bwd or fwd,bwd"),
    (("--pass", ","), "--pass takes fwd, bwd or fwd,bwd"),
    (("--heads", "4", "--kv-heads", "3"), "multiple of kv-heads (3)"),
    (("--heads", "4", "--kv-heads", "0"), "--kv-heads must be at least 1"),
    (("--heads", "4", "--kv-heads", "-2"), "--kv-heads must be at least 1"),
])
def test_bad_pass_and_kv_heads_exit_2_with_one_line(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    result = _bench("--kernels", "sdpa-math", "--masks", "causal", "--seqlens", "16", *args,
                    "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "attention.jsonl").exists()
