"""The kernel sweep: every (mask, seqlen) problem × every kernel × pass, one `Row` each,
written as JSONL and CSV.

Problems are the outer loop so the references of one problem are computed once and shared
by all kernels. Validation of names and sizes happens up front (`InvalidArgumentError`), so a
typo fails before minutes of benchmarking.

Example:
    >>> cfg = SweepConfig(kernels=("sdpa-math",), masks=("causal",), seqlens=(128,))
    >>> rows = run_sweep(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.generators import MASK_NAMES, MaskParams, make_mask
from edgekit.runtimes.attention.kernels import registry
from edgekit.runtimes.attention.measure import COLUMNS, References, Row, run_cell
from edgekit.runtimes.attention.problem import Pass, Problem

DEFAULT_CPU_SEQLENS: tuple[int, ...] = (256, 512, 1024, 2048)


@dataclass(frozen=True)
class SweepConfig:
    """Everything a sweep varies or fixes; built once at the CLI boundary."""

    kernels: tuple[str, ...]
    masks: tuple[str, ...] = MASK_NAMES
    seqlens: tuple[int, ...] = DEFAULT_CPU_SEQLENS
    batch: int = 1
    heads: int = 8
    kv_heads: int = 8
    head_dim: int = 64
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backward: bool = False  # shorthand kept for callers: adds the bwd pass to `passes`
    passes: tuple[Pass, ...] = (Pass.FWD,)
    reps: int = 5
    warmup: int = 1
    seed: int = 0
    mask_params: MaskParams = field(default_factory=MaskParams)

    def validate(self) -> None:
        known = registry().names()
        unknown = [k for k in self.kernels if k not in known]
        if unknown:
            raise InvalidArgumentError(f"unknown kernel(s) {', '.join(unknown)}; available: {', '.join(known)}")
        bad = [m for m in self.masks if m not in MASK_NAMES]
        if bad:
            raise InvalidArgumentError(f"unknown mask(s) {', '.join(bad)}; choose from {', '.join(MASK_NAMES)}")
        if not self.kernels or not self.masks or not self.seqlens:
            raise InvalidArgumentError("kernels, masks and seqlens must each name at least one value")
        if not self.pass_list():
            raise InvalidArgumentError("--pass must name fwd, bwd or both")
        if self.kv_heads < 1:
            raise InvalidArgumentError(f"--kv-heads must be at least 1 (a divisor of --heads {self.heads}), "
                                       f"got {self.kv_heads}")
        if min(self.seqlens) < 1 or self.reps < 1 or self.warmup < 0:
            raise InvalidArgumentError("seqlens and reps must be at least 1, warmup at least 0")
        Problem(make_mask("full", 1), self.batch, self.heads, self.kv_heads, self.head_dim, self.dtype,
                self.device)  # checks the head arithmetic

    def pass_list(self) -> tuple[Pass, ...]:
        """The passes each cell runs, fwd before bwd (`backward=True` adds bwd)."""
        wanted = set(self.passes) | ({Pass.BWD} if self.backward else set())
        return tuple(p for p in Pass if p in wanted)

    def problems(self) -> Iterator[Problem]:
        for name in self.masks:
            for s in self.seqlens:
                mask = make_mask(name, s, self.seed, self.mask_params)
                yield Problem(mask, self.batch, self.heads, self.kv_heads, self.head_dim, self.dtype, self.device)

    def cell_count(self) -> int:
        return len(self.masks) * len(self.seqlens) * len(self.kernels) * len(self.pass_list())


def run_sweep(config: SweepConfig, on_row: Callable[[Row], None] | None = None) -> list[Row]:
    """Run every cell; `on_row` sees each row as it lands (progress bars, streaming writes)."""
    config.validate()
    reg, refs, rows = registry(), References(config.seed), []
    for problem in config.problems():
        for name in config.kernels:
            for phase in config.pass_list():
                row = run_cell(reg[name], problem, refs, backward=phase is Pass.BWD, reps=config.reps,
                               warmup=config.warmup)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    return rows


def write_jsonl(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r.as_dict()) + "\n" for r in rows))


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        for r in rows:
            writer.writerow(r.as_dict())
