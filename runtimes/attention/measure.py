"""Measuring one cell (kernel × problem × pass): correctness first, then time and memory.

Order per cell: capability check (→ `unsupported`), prepare, one checked run against the
references (→ `wrong` if it fails the FA3 criterion, still timed), `warmup` untimed runs,
`reps` timed runs (median, p20, p80). `torch.OutOfMemoryError` / `MemoryError` anywhere
→ `oom`; nothing else is caught, so a broken kernel shows its traceback instead of hiding
as `unsupported`.

Peak memory is taken over the checked run, the kernel's first (so measuring never slows the
timed runs, and allocators that keep their buffers, like ORT's arena, are seen while they
grow): on CUDA `max_memory_allocated` above the allocation before the run (ORT's own CUDA
arena is not seen by torch); on the CPU the resident set size (RSS), sampled every
millisecond by a thread, above the RSS just before the run, after `malloc_trim(0)` has handed
freed heap pages back to the OS so that reused memory shows up again. Inputs, prepared masks,
sessions and compilation (done in `prepare`) are not counted; the backward's peak includes
its forward.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from edgekit.measure import trim_heap
from edgekit.runtimes.attention.kernels import AttentionKernel
from edgekit.runtimes.attention.problem import Inputs, Pass, Problem, Status, dtype_name, make_inputs
from edgekit.runtimes.attention.reference import (
    Result,
    Verdict,
    fa3_criterion,
    high_precision,
    math_attention,
)

OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


@dataclass
class Row:
    """One JSONL/CSV row. Timings and memory are `None` unless the cell ran."""

    kernel: str
    mask: str
    seqlen: int
    batch: int
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    pass_: str
    status: str
    ms_median: float | None = None
    ms_p20: float | None = None
    ms_p80: float | None = None
    flops: int = 0
    tflops: float | None = None
    peak_mem_mb: float | None = None
    max_err: float | None = None
    tol: float | None = None
    device: str = "cpu"
    note: str = ""

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["pass"] = d.pop("pass_")
        return d


COLUMNS: tuple[str, ...] = tuple(Row("", "", 0, 0, 0, 0, 0, "", "", "").as_dict())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    median: float
    p20: float
    p80: float


def summarize(ms: list[float]) -> Timing:
    """Median and the 20th/80th percentiles (inclusive method, so one sample works)."""
    if len(ms) == 1:
        return Timing(ms[0], ms[0], ms[0])
    q = statistics.quantiles(ms, n=5, method="inclusive")
    return Timing(statistics.median(ms), q[0], q[3])


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float]]:
    """Yields a one-element list that holds the peak MB above the start once the block exits."""
    result = [0.0]
    if device.type == "cuda":
        _sync(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        _sync(device)
        result[0] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    import psutil

    trim_heap()
    proc = psutil.Process()
    start = peak = proc.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            stop.wait(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak = max(peak, proc.memory_info().rss)
        result[0] = max(0.0, (peak - start) / 2**20)


class References:
    """High- and same-precision math references for the current problem (kept for one problem:
    sweeps run every kernel of a problem before moving on)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._key: tuple[object, ...] | None = None
        self._refs: tuple[Result, Result] | None = None

    def get(self, p: Problem, backward: bool) -> tuple[Result, Result]:
        key = (p, backward)
        if key != self._key or self._refs is None:
            self._refs = None
            pair = []
            for dtype in (high_precision(p.dtype), p.dtype):
                x = make_inputs(p, self.seed, dtype)
                pair.append(math_attention(x.q, x.k, x.v, p.mask, grad_out=x.grad_out if backward else None))
            self._key, self._refs = key, (pair[0], pair[1])
        return self._refs


def _run_once(run: Callable[..., torch.Tensor], x: Inputs, backward: bool) -> Result:
    if not backward:
        with torch.no_grad():
            return Result(run(x.q, x.k, x.v))
    q, k, v = (t.detach().requires_grad_() for t in (x.q, x.k, x.v))
    out = run(q, k, v)
    out.backward(x.grad_out)
    # an input the kernel's graph does not reach gets no gradient: count it as zeros, so the
    # cell is `wrong` against the reference instead of crashing the sweep
    grads = tuple(t.grad if t.grad is not None else torch.zeros_like(t) for t in (q, k, v))
    return Result(out.detach(), grads)  # type: ignore[arg-type]


def _verdict(got: Result, refs: tuple[Result, Result], p: Problem, backward: bool) -> Verdict:
    if backward:
        return fa3_criterion(got, refs[0], refs[1], p.dtype)
    return fa3_criterion(got, Result(refs[0].out), Result(refs[1].out), p.dtype)


def _time(run: Callable[..., torch.Tensor], x: Inputs, p: Problem, backward: bool, reps: int,
          warmup: int) -> list[float]:
    ms: list[float] = []
    q, k, v = (t.detach().requires_grad_(backward) for t in (x.q, x.k, x.v))
    for i in range(warmup + reps):
        if backward:
            out = run(q, k, v)
            _sync(p.device)
            t0 = time.perf_counter()
            out.backward(x.grad_out)
            q.grad = k.grad = v.grad = None
        else:
            _sync(p.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = run(q, k, v)
        _sync(p.device)
        if i >= warmup:
            ms.append((time.perf_counter() - t0) * 1e3)
        del out
    return ms


def run_cell(kernel: AttentionKernel, p: Problem, refs: References, *, backward: bool = False,
             reps: int = 5, warmup: int = 1) -> Row:
    """Measure one pass of `kernel` on `p` and return its row (see the module docstring)."""
    phase = Pass.BWD if backward else Pass.FWD
    row = Row(kernel.name, p.mask.name, p.seqlen, p.batch, p.heads, p.kv_heads, p.head_dim,
              dtype_name(p.dtype), phase.value, Status.UNSUPPORTED.value, flops=p.flops(backward),
              device=str(p.device))
    reason = kernel.backward_unsupported(p) if backward else kernel.unsupported(p)
    if reason is not None:
        row.note = reason
        return row
    try:
        reference = refs.get(p, backward)
        x = make_inputs(p, refs.seed)
        run = kernel.prepare(p)
        with peak_memory(p.device) as peak:
            got = _run_once(run, x, backward)
        verdict = _verdict(got, reference, p, backward)
        del got
        ms = _time(run, x, p, backward, reps, warmup)
    except OOM_ERRORS as error:
        row.status, row.note = Status.OOM.value, f"{type(error).__name__}: {str(error)[:120]}"
        if p.device.type == "cuda":
            torch.cuda.empty_cache()
        return row
    t = summarize(ms)
    row.status = (Status.OK if verdict.ok else Status.WRONG).value
    row.ms_median, row.ms_p20, row.ms_p80 = t.median, t.p20, t.p80
    row.tflops = row.flops / (t.median * 1e-3) / 1e12 if t.median > 0 else None
    row.peak_mem_mb, row.max_err, row.tol = peak[0], verdict.err, verdict.tol
    return row
