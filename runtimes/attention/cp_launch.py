"""Launch the context-parallel benchmark under torchrun from Python and collect its rows.

Runs `python -m torch.distributed.run --standalone --nproc-per-node N -m
edgekit.runtimes.attention.cp_worker …` (standalone rendezvous on `localhost:0`, so a free
port is picked), with `OMP_NUM_THREADS=1` unless the caller set it: N processes that each
spawn a thread per core oversubscribe the CPU badly (40× slower on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.cp import plan_layout
from edgekit.runtimes.attention.generators import make_mask
from edgekit.runtimes.attention.problem import Problem, parse_dtype, parse_passes


@dataclass(frozen=True)
class CpConfig:
    nproc: int = 2
    methods: tuple[str, ...] = ("ring", "ulysses", "usp", "allgather")
    masks: tuple[str, ...] = ("full", "causal", "document")
    seqlen: int = 4096
    batch: int = 1
    heads: int = 8
    kv_heads: int | None = None  # None: heads
    head_dim: int = 64
    dtype: str = "float32"
    passes: str = "fwd"  # fwd, bwd or fwd,bwd (parse_passes)
    ulysses_degree: int = 0
    tile: int = 256  # tokens per side of the compute tiles (cp.TILE)
    reps: int = 5
    warmup: int = 1
    seed: int = 0
    baseline: bool = False  # also time single-process attention per mask (rows with method "single")

    def validate(self) -> None:
        """Same checks as the worker, in this process: a user error never starts torchrun."""
        if self.nproc < 1:
            raise InvalidArgumentError(f"--nproc must be at least 1, got {self.nproc}")
        if not self.methods or not self.masks:
            raise InvalidArgumentError("name at least one method and one mask")
        parse_dtype(self.dtype)
        parse_passes(self.passes)
        if self.kv_heads is not None and self.kv_heads < 1:
            raise InvalidArgumentError(f"--kv-heads must be at least 1 (a divisor of --heads {self.heads}), "
                                       f"got {self.kv_heads}")
        if self.tile < 1:
            raise InvalidArgumentError(f"--tile must be at least 1, got {self.tile}")
        if self.reps < 1 or self.warmup < 0:
            raise InvalidArgumentError("--reps must be at least 1, --warmup at least 0")
        for name in self.masks:
            mask = make_mask(name, self.seqlen, self.seed)
            Problem(mask, self.batch, self.heads, self.heads if self.kv_heads is None else self.kv_heads,
                    self.head_dim, parse_dtype(self.dtype), torch.device("cpu"))  # the head arithmetic
            for method in self.methods:
                plan_layout(method, self.nproc, self.heads, self.seqlen, mask, self.ulysses_degree, self.kv_heads)

    def worker_args(self, out: Path) -> list[str]:
        return ["--methods", ",".join(self.methods), "--masks", ",".join(self.masks),
                "--seqlen", str(self.seqlen), "--batch", str(self.batch), "--heads", str(self.heads),
                "--kv-heads", str(self.kv_heads or self.heads), "--passes", self.passes,
                "--head-dim", str(self.head_dim), "--dtype", self.dtype,
                "--ulysses-degree", str(self.ulysses_degree), "--tile", str(self.tile), "--reps", str(self.reps),
                "--warmup", str(self.warmup), "--seed", str(self.seed), "--out", str(out),
                *(["--baseline"] if self.baseline else [])]


def torchrun_command(config: CpConfig, out: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={config.nproc}", "-m", "edgekit.runtimes.attention.cp_worker",
            *config.worker_args(out)]


def launch_cp(config: CpConfig, timeout_s: float = 600.0) -> list[dict[str, object]]:
    """Run the worker under torchrun and return its rows (one per method × mask).

    Raises `InvalidArgumentError` for user errors (checked before launching, or reported by
    the worker with exit status 2) and `RuntimeError` with the tail of stderr otherwise."""
    config.validate()
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="edgekit-cp-") as tmp:
        out = Path(tmp) / "rows.jsonl"
        proc = subprocess.run(torchrun_command(config, out), env=env, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
            if errors:
                raise InvalidArgumentError(errors[0].removeprefix("error: "))
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"torchrun exited with status {proc.returncode}:\n{tail}")
        return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
