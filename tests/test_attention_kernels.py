"""Every CPU kernel against the references: `ok` on each mask it supports, `unsupported` (with a
reason, decided before running) on the rest; `oom` and `wrong` are told apart from both."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from edgekit.runtimes.attention.generators import MASK_NAMES, make_mask
from edgekit.runtimes.attention.kernels import AttentionKernel, RunFn, registry
from edgekit.runtimes.attention.measure import References, run_cell
from edgekit.runtimes.attention.problem import Problem

torch.set_num_threads(1)
CPU = torch.device("cpu")
# (kernel, pass) cells that have no CPU implementation in torch 2.13 / onnxruntime 1.32.
UNSUPPORTED_ON_CPU = {("sdpa-efficient", "fwd"), ("sdpa-efficient", "bwd"), ("sdpa-cudnn", "fwd"),
                      ("sdpa-cudnn", "bwd"), ("flex", "bwd"), ("flex-compiled", "bwd"),
                      ("ort-matmul", "bwd"), ("ort-attention", "bwd")}
EAGER_KERNELS = [n for n in registry().names() if n != "flex-compiled"]


def problem(mask: str, s: int = 80, dtype: torch.dtype = torch.float32, kv_heads: int = 2) -> Problem:
    return Problem(make_mask(mask, s, seed=1), batch=1, heads=4, kv_heads=kv_heads, head_dim=16,
                   dtype=dtype, device=CPU)


def test_registry_holds_typed_kernels() -> None:
    reg = registry()
    assert {"sdpa-math", "sdpa-flash", "sdpa-efficient", "sdpa-cudnn", "flex", "ort-matmul",
            "ort-attention"} <= set(reg.names())
    assert all(isinstance(reg[n], AttentionKernel) for n in reg.names())


@pytest.mark.parametrize("mask", MASK_NAMES)
def test_every_cpu_kernel_matches_the_reference_or_says_unsupported(mask: str) -> None:
    p, refs, reg = problem(mask), References(seed=0), registry()
    for name in EAGER_KERNELS:
        for backward in (False, True):
            row = run_cell(reg[name], p, refs, backward=backward, reps=1, warmup=0)
            if (name, row.pass_) in UNSUPPORTED_ON_CPU:
                assert row.status == "unsupported" and row.note, (name, row)
            else:
                assert row.status == "ok", (name, row.pass_, row.max_err, row.tol, row.note)
                assert row.ms_median is not None and row.tflops and row.tflops > 0
                assert row.flops == p.flops(backward)


def test_half_precision_cells_on_cpu() -> None:
    """bf16: SDPA and Flex run and pass the FA3 criterion; ORT has no bf16 CPU path."""
    p, refs, reg = problem("causal", 64, torch.bfloat16), References(), registry()
    statuses = {n: run_cell(reg[n], p, refs, reps=1, warmup=0).status for n in EAGER_KERNELS}
    assert statuses["sdpa-math"] == statuses["sdpa-flash"] == statuses["flex"] == "ok"
    assert statuses["ort-matmul"] == statuses["ort-attention"] == "unsupported"
    p16 = problem("document", 64, torch.float16)
    assert run_cell(reg["ort-attention"], p16, References(), reps=1, warmup=0).status == "ok"


@dataclass(frozen=True)
class FakeKernel:
    """A kernel whose run is scripted: raise an error, or return wrong numbers."""

    name: str
    error: type[BaseException] | None = None

    def unsupported(self, p: Problem) -> str | None:
        return None

    def backward_unsupported(self, p: Problem) -> str | None:
        return None

    def prepare(self, p: Problem) -> RunFn:
        error = self.error

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if error is not None:
                raise error("scripted")
            return torch.zeros_like(q) + 0.01

        return run


def test_oom_wrong_and_real_failures_stay_apart() -> None:
    p = problem("causal", 32)
    assert run_cell(FakeKernel("oom", torch.OutOfMemoryError), p, References()).status == "oom"
    assert run_cell(FakeKernel("mem", MemoryError), p, References()).status == "oom"
    assert run_cell(FakeKernel("wrong"), p, References(), reps=1).status == "wrong"
    with pytest.raises(RuntimeError, match="scripted"):
        run_cell(FakeKernel("bug", RuntimeError), p, References())


@pytest.mark.skipif(not __import__("os").environ.get("EDGEKIT_SLOW_TESTS"),
                    reason="compiles FlexAttention on CPU (5-30 s); set EDGEKIT_SLOW_TESTS=1")
def test_compiled_flex_on_cpu_matches_the_reference() -> None:
    row = run_cell(registry()["flex-compiled"], problem("document-causal", 128), References(), reps=1)
    assert row.status == "ok", row
