"""One benchmark problem (mask × shape × dtype × device) and its seeded inputs."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.masks import Mask

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16,
                                   "bfloat16": torch.bfloat16, "float64": torch.float64}


def parse_dtype(name: str) -> torch.dtype:
    """`float32|float16|bfloat16|float64` (also `fp32`, `fp16`, `bf16`) → torch dtype."""
    alias = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "fp64": "float64"}
    key = alias.get(name, name)
    if key not in DTYPES:
        raise InvalidArgumentError(f"unknown dtype {name!r}; choose from {', '.join(DTYPES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class Pass(str, enum.Enum):
    FWD = "fwd"
    BWD = "bwd"


def parse_passes(text: str) -> tuple[Pass, ...]:
    """`--pass` text → passes in the order fwd, bwd: `fwd`, `bwd` or `fwd,bwd` (either order,
    repeats folded). Anything else is an `InvalidArgumentError` naming the choices."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    choices = {p.value: p for p in Pass}
    bad = [n for n in names if n not in choices]
    if bad or not names:
        raise InvalidArgumentError(f"--pass takes fwd, bwd or fwd,bwd, got {text!r}")
    return tuple(p for p in Pass if p.value in names)


class Status(str, enum.Enum):
    """`ok`: ran and matched the reference; `unsupported`: the kernel cannot take this problem
    (decided before running); `oom`: out of memory; `wrong`: ran but failed the FA3 criterion."""

    OK = "ok"
    UNSUPPORTED = "unsupported"
    OOM = "oom"
    WRONG = "wrong"


@dataclass(frozen=True)
class Problem:
    """Attention of `batch × heads` queries over `kv_heads` key/value heads (GQA when fewer)
    under `mask`. Layout of every tensor: `[B, H, S, D]`."""

    mask: Mask
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device

    def __post_init__(self) -> None:
        if min(self.batch, self.heads, self.kv_heads, self.head_dim) < 1:
            raise InvalidArgumentError("batch, heads, kv-heads and head-dim must be at least 1")
        if self.heads % self.kv_heads:
            raise InvalidArgumentError(
                f"heads ({self.heads}) must be a multiple of kv-heads ({self.kv_heads}); "
                "pick --kv-heads among the divisors of --heads")

    @property
    def seqlen(self) -> int:
        return self.mask.seqlen_q

    @property
    def gqa(self) -> bool:
        return self.kv_heads != self.heads

    def flops(self, backward: bool = False) -> int:
        return self.mask.flops(self.heads, self.head_dim, backward=backward, batch=self.batch)


@dataclass(frozen=True)
class Inputs:
    q: torch.Tensor  # [B, H, S, D]
    k: torch.Tensor  # [B, H_kv, S, D]
    v: torch.Tensor  # [B, H_kv, S, D]
    grad_out: torch.Tensor  # [B, H, S, D], the upstream gradient for the backward pass


def make_inputs(p: Problem, seed: int = 0, dtype: torch.dtype | None = None) -> Inputs:
    """Standard-normal inputs drawn on the CPU from `seed` (identical on every device), then
    cast to `dtype` (default: the problem's) and moved to the problem's device."""
    g = torch.Generator().manual_seed(seed)
    sq, sk = p.mask.seqlen_q, p.mask.seqlen_k
    shapes = [(p.batch, p.heads, sq, p.head_dim), (p.batch, p.kv_heads, sk, p.head_dim),
              (p.batch, p.kv_heads, sk, p.head_dim), (p.batch, p.heads, sq, p.head_dim)]
    t = [torch.randn(s, generator=g).to(device=p.device, dtype=dtype or p.dtype) for s in shapes]
    return Inputs(*t)
