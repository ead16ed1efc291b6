"""Reference attention and the FlashAttention-3 correctness criterion.

The reference is PyTorch SDPA's math backend run in chunks of query rows (memory
`chunk × S` per head instead of `S × S`), forward and backward, in any dtype. A kernel is
correct when its max error against the high-precision reference (float64 for float32 runs,
float32 otherwise) is at most twice the error of the same-precision math reference plus a
small absolute tolerance: `err ≤ 2 · err_math + atol` (FlashAttention-3's test criterion).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from edgekit.runtimes.attention.masks import Mask

ATOL: dict[torch.dtype, float] = {torch.float64: 1e-12, torch.float32: 2e-6,
                                  torch.float16: 1e-3, torch.bfloat16: 1e-3}


def high_precision(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype in (torch.float32, torch.float64) else torch.float32


@dataclass(frozen=True)
class Result:
    """Output, and gradients `(dq, dk, dv)` when the backward pass was asked for."""

    out: torch.Tensor
    grads: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Mask, *,
                   grad_out: torch.Tensor | None = None, chunk: int = 256) -> Result:
    """SDPA math on `[B, H, S, D]` inputs, `chunk` query rows at a time; with `grad_out`, also
    the gradients (accumulated over chunks for k and v). Runs in the inputs' dtype."""
    outs, dq_parts = [], []
    # dk, dv sum over query chunks: accumulate in at least fp32, as fused kernels do, so that
    # chunking does not make the half-precision reference (and so the tolerance) worse.
    acc = torch.promote_types(k.dtype, torch.float32)
    dk = torch.zeros(k.shape, dtype=acc, device=k.device) if grad_out is not None else None
    dv = torch.zeros(v.shape, dtype=acc, device=v.device) if grad_out is not None else None
    gqa = q.shape[1] != k.shape[1]
    for a in range(0, q.shape[2], chunk):
        b = min(a + chunk, q.shape[2])
        m = mask.dense(a, b, device=q.device)
        with sdpa_kernel([SDPBackend.MATH]), torch.enable_grad():
            qc = q[:, :, a:b].detach().requires_grad_(grad_out is not None)
            kc, vc = k.detach().requires_grad_(grad_out is not None), v.detach().requires_grad_(grad_out is not None)
            o = F.scaled_dot_product_attention(qc, kc, vc, attn_mask=m, enable_gqa=gqa)
            if grad_out is not None:
                gq, gk, gv = torch.autograd.grad(o, (qc, kc, vc), grad_out[:, :, a:b])
                dq_parts.append(gq)
                dk += gk  # type: ignore[operator]
                dv += gv  # type: ignore[operator]
        outs.append(o.detach())
    grads = (torch.cat(dq_parts, dim=2), dk.to(k.dtype), dv.to(v.dtype)) if dk is not None and dv is not None else None
    return Result(torch.cat(outs, dim=2), grads)  # type: ignore[arg-type]


def max_error(a: Result, ref: Result) -> float:
    """Largest absolute difference over the output and (when both have them) the gradients."""
    pairs = [(a.out, ref.out)]
    if a.grads is not None and ref.grads is not None:
        pairs += list(zip(a.grads, ref.grads, strict=True))
    errs = torch.stack([(x.to(y.dtype) - y).abs().max().cpu() for x, y in pairs])
    return float(errs.max())  # a NaN anywhere propagates, so NaN outputs fail


@dataclass(frozen=True)
class Verdict:
    ok: bool
    err: float
    tol: float


def fa3_criterion(result: Result, ref_high: Result, ref_same: Result, dtype: torch.dtype) -> Verdict:
    """`err(result) ≤ 2 · err(same-precision math) + atol(dtype)`, both errors against the
    high-precision reference. NaNs fail."""
    err = max_error(result, ref_high)
    tol = 2 * max_error(ref_same, ref_high) + ATOL[dtype]
    return Verdict(ok=err <= tol, err=err, tol=tol)
