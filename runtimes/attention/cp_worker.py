"""Entry point run by torchrun on every rank: benchmarks context-parallel attention methods ×
masks and writes one JSONL row per (method, mask) from rank 0.

    torchrun --nproc-per-node 4 -m edgekit.runtimes.attention.cp_worker \\
        --methods ring,ulysses,usp --masks full,causal,document --seqlen 4096 \\
        --heads 8 --head-dim 64 --out cp.jsonl

Backend: NCCL when CUDA is available (one GPU per local rank), gloo otherwise. Every rank
draws the same seeded inputs and keeps its shard. Time per repetition is the slowest rank's
(`all_reduce(MAX)`); the row holds the median and p20/p80 over repetitions, and the largest
per-rank peak memory of one extra untimed run (RSS on CPU, CUDA allocator on GPU). Correctness: the
gathered output against the single-process math reference with the FA3 criterion (`ok` /
`wrong`). A user error (e.g. heads not divisible by the world size) prints one line and exits
with status 2 before any collective call.
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

from edgekit.errors import EdgekitError
from edgekit.runtimes.attention.cp import ContextParallel, plan_layout, single_process_attention
from edgekit.runtimes.attention.generators import make_mask
from edgekit.runtimes.attention.measure import peak_memory, summarize
from edgekit.runtimes.attention.problem import Problem, Status, dtype_name, make_inputs, parse_dtype
from edgekit.runtimes.attention.reference import Result, fa3_criterion, high_precision, math_attention


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="ring,ulysses,usp")
    ap.add_argument("--masks", default="full,causal,document")
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--ulysses-degree", type=int, default=0, help="USP only; 0 = automatic")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", action="store_true",
                    help="first time single-process attention per mask on rank 0 (method 'single')")
    ap.add_argument("--out", type=Path, required=True, help="JSONL file, appended to by rank 0")
    return ap.parse_args(argv)


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _problem_fields(mask_name: str, args: argparse.Namespace, dtype: torch.dtype) -> dict[str, object]:
    return {"mask": mask_name, "seqlen": args.seqlen, "batch": args.batch, "heads": args.heads, "kv_heads": args.heads,
            "head_dim": args.head_dim, "dtype": dtype_name(dtype), "pass": "fwd"}


def _measured_fields(p: Problem, x: object, mask: object, out: torch.Tensor, times: list[float], peak_mb: float,
                     dtype: torch.dtype) -> dict[str, object]:
    """Status (FA3 criterion against the high-precision and same-dtype math references), timing
    summary, FLOP rate and peak memory of one timed attention."""
    refs = [math_attention(*(t.to(d) for t in (x.q, x.k, x.v)), mask) for d in (high_precision(dtype), dtype)]
    verdict = fa3_criterion(Result(out), refs[0], refs[1], dtype)
    t, flops = summarize(times), p.flops()
    return {"status": (Status.OK if verdict.ok else Status.WRONG).value, "ms_median": t.median, "ms_p20": t.p20,
            "ms_p80": t.p80, "flops": flops, "tflops": flops / (t.median * 1e-3) / 1e12, "peak_mem_mb": peak_mb,
            "max_err": verdict.err, "tol": verdict.tol}


def _append(path: Path, row: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def run_one(method: str, mask_name: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """Benchmark one (method, mask) on every rank; returns the row (meaningful on rank 0)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    mask = make_mask(mask_name, args.seqlen, args.seed)
    layout = plan_layout(method, world, args.heads, args.seqlen, mask, args.ulysses_degree)
    dtype = parse_dtype(args.dtype)
    p = Problem(mask, args.batch, args.heads, args.heads, args.head_dim, dtype, device)
    x = make_inputs(p, args.seed)
    cp = ContextParallel(layout, mask)
    idx = cp.shard.index().to(device)
    q, k, v = (t.index_select(2, idx).contiguous() for t in (x.q, x.k, x.v))
    times = []
    for i in range(args.warmup + args.reps):
        dist.barrier()
        t0 = time.perf_counter()
        out = cp(q, k, v)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = torch.tensor([(time.perf_counter() - t0) * 1e3], dtype=torch.float64, device=device)
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        if i >= args.warmup:
            times.append(float(elapsed))
    with peak_memory(device) as peak:  # one more run, untimed: the busiest rank's peak
        cp(q, k, v)
    peak_mb = torch.tensor([peak[0]], dtype=torch.float64, device=device)
    dist.all_reduce(peak_mb, op=dist.ReduceOp.MAX)
    pieces = [torch.empty_like(out) for _ in range(world)]
    dist.all_gather(pieces, out.contiguous())
    row: dict[str, object] = {
        "kernel": f"cp-{method}", "method": method, **_problem_fields(mask_name, args, dtype), "world": world,
        "ulysses_degree": layout.ulysses, "ring_degree": layout.ring,
        "sharding": "zigzag" if layout.zigzag else "contiguous", "backend": dist.get_backend(), "device": str(device),
    }
    if rank == 0:
        full = torch.empty_like(x.q)
        for r, piece in enumerate(pieces):
            full[:, :, layout.rank_shard(args.seqlen, r).index().to(device)] = piece
        row.update(_measured_fields(p, x, mask, full, times, float(peak_mb), dtype))
    return row


def run_single(mask_name: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """The baseline on rank 0 alone (the other ranks wait at a barrier): the whole sequence in one
    process with the tiled attention the ring uses, timed and checked like the methods."""
    mask = make_mask(mask_name, args.seqlen, args.seed)
    dtype = parse_dtype(args.dtype)
    p = Problem(mask, args.batch, args.heads, args.heads, args.head_dim, dtype, device)
    x = make_inputs(p, args.seed)
    times = []
    for i in range(args.warmup + args.reps):
        t0 = time.perf_counter()
        out = single_process_attention(x.q, x.k, x.v, mask)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= args.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    with peak_memory(device) as peak:
        single_process_attention(x.q, x.k, x.v, mask)
    return {"kernel": "single-process", "method": "single", **_problem_fields(mask_name, args, dtype), "world": 1,
            "ulysses_degree": 1, "ring_degree": 1, "sharding": "none", "backend": "none", "device": str(device),
            **_measured_fields(p, x, mask, out, times, float(peak[0]), dtype)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    methods, masks = _split(args.methods), _split(args.masks)
    try:  # validate every combination before any process group exists
        for method in methods:
            for name in masks:
                plan_layout(method, world, args.heads, args.seqlen, make_mask(name, args.seqlen, args.seed),
                            args.ulysses_degree)
        parse_dtype(args.dtype)
    except EdgekitError as error:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {error}", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        for name in masks if args.baseline else ():
            if dist.get_rank() == 0:
                _append(args.out, run_single(name, args, device))
            dist.barrier()
        for method in methods:
            for name in masks:
                row = run_one(method, name, args, device)
                if dist.get_rank() == 0:
                    _append(args.out, row)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
