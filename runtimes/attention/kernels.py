"""The attention kernels behind one small interface, in a typed registry.

Contract of `AttentionKernel`:
- `unsupported(p)` / `backward_unsupported(p)` say *before running* why the kernel cannot take
  problem `p` (a capability check: device, dtype, mask structure, torch's own
  `can_use_*` predicates), or return `None` when it can;
- `prepare(p)` builds everything that is not the attention itself (mask tensors, block masks,
  sessions, compilation) and returns the function that is timed: `[B,H,S,D]` q and
  `[B,H_kv,S,D]` k, v in, `[B,H,S,D]` out, differentiable when the backward is supported.

Example:
    >>> kernel = registry()["sdpa-math"]
    >>> kernel.unsupported(problem) is None  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from edgekit.runtimes.attention.convert import flex_block_mask, is_causal_form, varlen_form
from edgekit.runtimes.attention.problem import Problem

RunFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class AttentionKernel(Protocol):
    name: str

    def unsupported(self, p: Problem) -> str | None: ...

    def backward_unsupported(self, p: Problem) -> str | None: ...

    def prepare(self, p: Problem) -> RunFn: ...


# torch's CPU dispatcher (sdp_utils_cpp.cpp, select_sdp_backend_cpp) has only these two.
CPU_SDPA_BACKENDS = frozenset({SDPBackend.MATH, SDPBackend.FLASH_ATTENTION})
_CUDA_SDPA_CHECKS: dict[SDPBackend, Callable[..., bool]] = {
    SDPBackend.FLASH_ATTENTION: torch.backends.cuda.can_use_flash_attention,
    SDPBackend.EFFICIENT_ATTENTION: torch.backends.cuda.can_use_efficient_attention,
    SDPBackend.CUDNN_ATTENTION: torch.backends.cuda.can_use_cudnn_attention,
}


def _sdpa_mask(p: Problem) -> tuple[torch.Tensor | None, bool]:
    """No mask tensor for full and causal masks (what flash kernels need), else the dense one."""
    causal = is_causal_form(p.mask)
    if causal is not None:
        return None, causal
    return p.mask.dense(device=p.device), False


@dataclass(frozen=True)
class SdpaKernel:
    """`F.scaled_dot_product_attention` pinned to one backend with `sdpa_kernel([backend])`."""

    name: str
    backend: SDPBackend

    def _check(self, p: Problem, grad: bool) -> str | None:
        if p.device.type == "cpu":
            if self.backend not in CPU_SDPA_BACKENDS:
                return f"SDPA {self.backend.name} has no CPU kernel (CPU has MATH and FLASH_ATTENTION)"
            return None
        if p.device.type != "cuda":
            return f"SDPA backends are checked on cpu and cuda only, not {p.device.type}"
        check = _CUDA_SDPA_CHECKS.get(self.backend)
        if check is None:
            return None
        mask, causal = _sdpa_mask(p)
        q = torch.empty(p.batch, p.heads, p.seqlen, p.head_dim, dtype=p.dtype, device=p.device,
                        requires_grad=grad)
        kv = torch.empty(p.batch, p.kv_heads, p.seqlen, p.head_dim, dtype=p.dtype, device=p.device,
                         requires_grad=grad)
        params = torch.backends.cuda.SDPAParams(q, kv, kv, mask, 0.0, causal, p.gqa)
        ok = check(params, False)
        return None if ok else f"torch.backends.cuda.{check.__name__} rejects this shape/dtype/mask"

    def unsupported(self, p: Problem) -> str | None:
        return self._check(p, grad=False)

    def backward_unsupported(self, p: Problem) -> str | None:
        return self._check(p, grad=True)

    def prepare(self, p: Problem) -> RunFn:
        mask, causal = _sdpa_mask(p)
        backend, gqa = self.backend, p.gqa

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa)

        return run


_COMPILED_FLEX: dict[str, Callable[..., torch.Tensor]] = {}


@dataclass(frozen=True)
class FlexKernel:
    """FlexAttention with a block mask built from the rectangles. Eager on CPU materialises
    the scores; compiled it runs a generated kernel (5–30 s of compilation per shape on CPU)."""

    name: str
    compiled: bool

    def unsupported(self, p: Problem) -> str | None:
        if p.device.type not in ("cpu", "cuda"):
            return f"FlexAttention runs on cpu and cuda, not {p.device.type}"
        if self.compiled and p.device.type == "cuda" and p.head_dim < 16:
            return "compiled FlexAttention needs head_dim >= 16 on cuda"
        return None

    def backward_unsupported(self, p: Problem) -> str | None:
        if p.device.type == "cpu":
            return "FlexAttention has no CPU backward in torch 2.13"
        return self.unsupported(p)

    def prepare(self, p: Problem) -> RunFn:
        from torch.nn.attention.flex_attention import flex_attention

        fn: Callable[..., torch.Tensor] = flex_attention
        if self.compiled:
            import torch._dynamo.config as dynamo_config

            # one compilation per shape: a sweep passes dynamo's default limit of 8 and would
            # silently fall back to eager (materialised scores) for the remaining cells
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 256)
            fn = _COMPILED_FLEX.setdefault("flex", torch.compile(flex_attention, dynamic=False))
        block_mask, gqa = flex_block_mask(p.mask, p.device), p.gqa

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return fn(q, k, v, block_mask=block_mask, enable_gqa=gqa)

        if self.compiled:  # compile now, on zeros of the problem's shapes, not in a measured run
            q = torch.zeros(p.batch, p.heads, p.seqlen, p.head_dim, dtype=p.dtype, device=p.device)
            kv = torch.zeros(p.batch, p.kv_heads, p.seqlen, p.head_dim, dtype=p.dtype, device=p.device)
            run(q, kv, kv)
        return run


@dataclass(frozen=True)
class FlashAttnKernel:
    """The `flash_attn` package (FlashAttention-2; `flash_attn_interface` for FlashAttention-3)
    on full, causal and document masks via `flash_attn_varlen_func` and cu_seqlens.
    Registered only when the module imports; not exercised on CPU-only machines."""

    name: str
    module: str = "flash_attn"

    def unsupported(self, p: Problem) -> str | None:
        if p.device.type != "cuda":
            return f"{self.module} runs on cuda only"
        if p.dtype not in (torch.float16, torch.bfloat16):
            return f"{self.module} takes float16/bfloat16 only"
        if varlen_form(p.mask) is None:
            return "flash-attn takes only full, causal and document (cu_seqlens) masks"
        return None

    def backward_unsupported(self, p: Problem) -> str | None:
        return self.unsupported(p)

    def prepare(self, p: Problem) -> RunFn:
        varlen = varlen_form(p.mask)
        assert varlen is not None  # prepare is only called when unsupported() is None
        mod = importlib.import_module(self.module)
        s, b = p.seqlen, p.batch
        per_batch = varlen.cu_seqlens.to(p.device)
        cu = torch.cat([per_batch[:-1] + i * s for i in range(b)] + [per_batch[-1:] + (b - 1) * s])
        cu = cu.to(torch.int32)

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            pack = [t.transpose(1, 2).reshape(b * s, t.shape[1], t.shape[3]) for t in (q, k, v)]
            out = mod.flash_attn_varlen_func(*pack, cu, cu, varlen.max_seqlen, varlen.max_seqlen,
                                             causal=varlen.causal)
            out = out[0] if isinstance(out, tuple) else out
            return out.reshape(b, s, p.heads, p.head_dim).transpose(1, 2)

        return run


@dataclass(frozen=True)
class XformersKernel:
    """`xformers.ops.memory_efficient_attention` with its block-diagonal (causal) biases.
    Registered only when xformers imports; not exercised on CPU-only machines."""

    name: str = "xformers"

    def unsupported(self, p: Problem) -> str | None:
        if p.device.type != "cuda":
            return "xformers runs on cuda only"
        if varlen_form(p.mask) is None:
            return "xformers is wired here for full, causal and document masks only"
        return None

    def backward_unsupported(self, p: Problem) -> str | None:
        return self.unsupported(p)

    def prepare(self, p: Problem) -> RunFn:
        from xformers.ops import fmha

        varlen = varlen_form(p.mask)
        assert varlen is not None
        lengths = (varlen.cu_seqlens[1:] - varlen.cu_seqlens[:-1]).tolist() * p.batch
        bias_type = fmha.attn_bias.BlockDiagonalCausalMask if varlen.causal else fmha.attn_bias.BlockDiagonalMask
        bias = bias_type.from_seqlens(lengths)
        s, b, group = p.seqlen, p.batch, p.heads // p.kv_heads

        def run(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            pack = [t.transpose(1, 2).reshape(1, b * s, p.heads, p.head_dim) for t in (q, k, v)]
            out = fmha.memory_efficient_attention(*pack, attn_bias=bias)
            return out.reshape(b, s, p.heads, p.head_dim).transpose(1, 2)

        return run


@dataclass
class Registry:
    """Kernels by name; optional ones appear only when their package imports."""

    kernels: dict[str, AttentionKernel] = field(default_factory=dict)

    def add(self, kernel: AttentionKernel) -> None:
        self.kernels[kernel.name] = kernel

    def __getitem__(self, name: str) -> AttentionKernel:
        return self.kernels[name]

    def names(self) -> list[str]:
        return list(self.kernels)


def registry() -> Registry:
    """Every kernel this environment can name (flash-attn / xformers only when importable)."""
    from edgekit.runtimes.attention.kernels_ort import OrtKernel

    reg = Registry()
    for name, backend in (("sdpa-math", SDPBackend.MATH), ("sdpa-flash", SDPBackend.FLASH_ATTENTION),
                          ("sdpa-efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION)):
        reg.add(SdpaKernel(name, backend))
    reg.add(FlexKernel("flex", compiled=False))
    reg.add(FlexKernel("flex-compiled", compiled=True))
    reg.add(OrtKernel("ort-matmul", fused=False))
    reg.add(OrtKernel("ort-attention", fused=True))
    if importlib.util.find_spec("flash_attn") is not None:
        reg.add(FlashAttnKernel("flash-attn"))
    if importlib.util.find_spec("flash_attn_interface") is not None:
        reg.add(FlashAttnKernel("flash-attn-3", module="flash_attn_interface"))
    if importlib.util.find_spec("xformers") is not None:
        reg.add(XformersKernel())
    return reg


def default_kernels(device: torch.device) -> list[str]:
    """The sweep's default: everything registered, except compiled Flex on CPU (compilation
    takes 5–30 s per shape there; ask for `flex-compiled` explicitly) and eager Flex on GPU
    (it materialises the `S × S` scores: a reference path, not a kernel to time)."""
    skip = "flex-compiled" if device.type == "cpu" else "flex"
    return [n for n in registry().names() if n != skip]
