"""Entry point run by torchrun on every rank: benchmarks context-parallel attention methods ×
masks × passes and writes one JSONL row per (method, mask, pass) from rank 0.

    torchrun --nproc-per-node 4 -m edgekit.runtimes.attention.cp_worker \\
        --methods ring,ulysses,usp,allgather --masks full,causal,document --seqlen 4096 \\
        --heads 8 --kv-heads 2 --head-dim 64 --passes fwd,bwd --out cp.jsonl

Backend: NCCL when CUDA is available (one GPU per local rank), gloo otherwise. Every rank
draws the same seeded inputs and keeps its shard. Time per repetition is the slowest rank's
(`all_reduce(MAX)`): the forward for `fwd` rows, the backward alone (after an untimed forward)
for `bwd` rows; the row holds the median and p20/p80 over repetitions, and the largest per-rank
peak memory of one extra untimed run (RSS on CPU, CUDA allocator on GPU). Correctness: the
output (and for `bwd` dQ, dK, dV from the fixed upstream gradient) gathered on rank 0 against
the single-process math reference with the FA3 criterion (`ok` / `wrong`). Each row also
carries the per-rank work of its layout (`cp.work_report`). A user error (e.g. heads not
divisible by the world size) prints one line and exits with status 2 before any collective call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from edgekit.errors import EdgekitError, InvalidArgumentError
from edgekit.runtimes.attention.cp import (
    TILE,
    ContextParallel,
    Layout,
    plan_layout,
    single_process_attention,
    work_report,
)
from edgekit.runtimes.attention.generators import make_mask
from edgekit.runtimes.attention.masks import Mask
from edgekit.runtimes.attention.measure import peak_memory, summarize
from edgekit.runtimes.attention.problem import (
    Inputs,
    Pass,
    Problem,
    Status,
    dtype_name,
    make_inputs,
    parse_dtype,
    parse_passes,
)
from edgekit.runtimes.attention.reference import Result, fa3_criterion, high_precision, math_attention


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="ring,ulysses,usp")
    ap.add_argument("--masks", default="full,causal,document")
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=0, help="key/value heads (0: --heads)")
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--passes", default="fwd", help="fwd, bwd or fwd,bwd")
    ap.add_argument("--ulysses-degree", type=int, default=0, help="USP only; 0 = automatic")
    ap.add_argument("--tile", type=int, default=TILE, help="tokens per side of the compute tiles")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", action="store_true",
                    help="first time single-process attention per mask on rank 0 (method 'single')")
    ap.add_argument("--out", type=Path, required=True, help="JSONL file, appended to by rank 0")
    args = ap.parse_args(argv)
    args.kv_heads = args.kv_heads or args.heads
    return args


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _problem(mask: Mask, args: argparse.Namespace, device: torch.device) -> Problem:
    return Problem(mask, args.batch, args.heads, args.kv_heads, args.head_dim, parse_dtype(args.dtype), device)


def _problem_fields(p: Problem, phase: Pass) -> dict[str, object]:
    return {"mask": p.mask.name, "seqlen": p.seqlen, "batch": p.batch, "heads": p.heads, "kv_heads": p.kv_heads,
            "head_dim": p.head_dim, "dtype": dtype_name(p.dtype), "pass": phase.value}


def _measured_fields(p: Problem, x: Inputs, got: Result, times: list[float], peak_mb: float,
                     phase: Pass) -> dict[str, object]:
    """Status (FA3 criterion against the high-precision and same-dtype math references; for
    `bwd` over the output and dQ, dK, dV), timing summary, FLOP rate and peak memory."""
    backward = phase is Pass.BWD
    refs = [math_attention(*(t.to(d) for t in (x.q, x.k, x.v)), p.mask,
                           grad_out=x.grad_out.to(d) if backward else None)
            for d in (high_precision(p.dtype), p.dtype)]
    verdict = fa3_criterion(got, refs[0], refs[1], p.dtype)
    t, flops = summarize(times), p.flops(backward)
    return {"status": (Status.OK if verdict.ok else Status.WRONG).value, "ms_median": t.median, "ms_p20": t.p20,
            "ms_p80": t.p80, "flops": flops, "tflops": flops / (t.median * 1e-3) / 1e12, "peak_mem_mb": peak_mb,
            "max_err": verdict.err, "tol": verdict.tol}


def _append(path: Path, row: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run(fn: object, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dout: torch.Tensor, phase: Pass,
         device: torch.device) -> tuple[float, Result]:
    """One pass of `fn(q, k, v)` → (ms of the timed part, result with local output and grads)."""
    if phase is Pass.FWD:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = fn(q, k, v)  # type: ignore[operator]
        _sync(device)
        return (time.perf_counter() - t0) * 1e3, Result(out)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]
    out = fn(*leaves)  # type: ignore[operator]
    _sync(device)
    t0 = time.perf_counter()
    out.backward(dout)
    _sync(device)
    ms = (time.perf_counter() - t0) * 1e3
    return ms, Result(out.detach(), tuple(t.grad for t in leaves))  # type: ignore[arg-type]


def _gather(local: torch.Tensor, full_shape: torch.Size, layout: Layout, seqlen: int) -> torch.Tensor:
    """Every rank's sequence piece of a `[B, H, s, D]` tensor, placed at its global positions
    (the result is meaningful on every rank; rank 0 uses it)."""
    pieces = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(pieces, local.contiguous())
    full = torch.empty(full_shape, dtype=local.dtype, device=local.device)
    for r, piece in enumerate(pieces):
        full[:, :, layout.rank_shard(seqlen, r).index().to(local.device)] = piece
    return full


def run_one(method: str, mask_name: str, phase: Pass, args: argparse.Namespace,
            device: torch.device) -> dict[str, object]:
    """Benchmark one (method, mask, pass) on every rank; returns the row (meaningful on rank 0)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    mask = make_mask(mask_name, args.seqlen, args.seed)
    layout = plan_layout(method, world, args.heads, args.seqlen, mask, args.ulysses_degree, args.kv_heads)
    p = _problem(mask, args, device)
    x = make_inputs(p, args.seed)
    cp = ContextParallel(layout, mask, args.tile)
    idx = cp.shard.index().to(device)
    q, k, v, dout = (t.index_select(2, idx).contiguous() for t in (x.q, x.k, x.v, x.grad_out))
    times = []
    for i in range(args.warmup + args.reps):
        dist.barrier()
        ms, got = _run(cp, q, k, v, dout, phase, device)
        elapsed = torch.tensor([ms], dtype=torch.float64, device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if i >= args.warmup:
            times.append(float(elapsed))
    with peak_memory(device) as peak:  # one more run, untimed: the busiest rank's peak
        _run(cp, q, k, v, dout, phase, device)
    peak_mb = torch.tensor([peak[0]], dtype=torch.float64, device=device)
    dist.all_reduce(peak_mb, op=dist.ReduceOp.MAX)
    out = _gather(got.out, x.q.shape, layout, args.seqlen)
    grads = None
    if got.grads is not None:
        grads = tuple(_gather(g, full.shape, layout, args.seqlen) for g, full in zip(got.grads, (x.q, x.k, x.v),
                                                                                      strict=True))
    work = work_report(layout, mask, args.heads)
    row: dict[str, object] = {
        "kernel": f"cp-{method}", "method": method, **_problem_fields(p, phase), "world": world,
        "ulysses_degree": layout.ulysses, "ring_degree": layout.ring,
        "sharding": layout.sharding, "kv_repeat": layout.kv_repeat, "backend": dist.get_backend(),
        "device": str(device),
        "rank_area": list(work.rank_area), "imbalance": work.imbalance, "critical_area": work.critical_area,
        "critical_imbalance": work.critical_imbalance,
    }
    if rank == 0:
        row.update(_measured_fields(p, x, Result(out, grads), times, float(peak_mb), phase))  # type: ignore[arg-type]
    return row


def run_single(mask_name: str, phase: Pass, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """The baseline on rank 0 alone (the other ranks wait at a barrier): the whole sequence in one
    process with the tiled attention the ring uses, timed and checked like the methods."""
    mask = make_mask(mask_name, args.seqlen, args.seed)
    p = _problem(mask, args, device)
    x = make_inputs(p, args.seed)
    times = []
    for i in range(args.warmup + args.reps):
        ms, got = _run(lambda q, k, v: single_process_attention(q, k, v, mask, args.tile), x.q, x.k, x.v, x.grad_out,
                       phase, device)
        if i >= args.warmup:
            times.append(ms)
    with peak_memory(device) as peak:
        _run(lambda q, k, v: single_process_attention(q, k, v, mask, args.tile), x.q, x.k, x.v, x.grad_out, phase, device)
    area = mask.area() * args.heads
    return {"kernel": "single-process", "method": "single", **_problem_fields(p, phase), "world": 1,
            "ulysses_degree": 1, "ring_degree": 1, "sharding": "none", "backend": "none", "device": str(device),
            "rank_area": [area], "imbalance": 1.0, "critical_area": area, "critical_imbalance": 1.0,
            **_measured_fields(p, x, got, times, float(peak[0]), phase)}


def validate(args: argparse.Namespace, world: int) -> None:
    """Every user error, before any process group exists (`EdgekitError`)."""
    parse_dtype(args.dtype)
    parse_passes(args.passes)
    if args.tile < 1:
        raise InvalidArgumentError(f"--tile must be at least 1, got {args.tile}")
    for method in _split(args.methods):
        for name in _split(args.masks):
            mask = make_mask(name, args.seqlen, args.seed)
            _problem(mask, args, torch.device("cpu"))
            plan_layout(method, world, args.heads, args.seqlen, mask, args.ulysses_degree, args.kv_heads)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    methods, masks = _split(args.methods), _split(args.masks)
    try:
        validate(args, world)
    except EdgekitError as error:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    passes = parse_passes(args.passes)
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        for name in masks if args.baseline else ():
            for phase in passes:
                if dist.get_rank() == 0:
                    _append(args.out, run_single(name, phase, args, device))
                dist.barrier()
        for method in methods:
            for name in masks:
                for phase in passes:
                    row = run_one(method, name, phase, args, device)
                    if dist.get_rank() == 0:
                        _append(args.out, row)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
