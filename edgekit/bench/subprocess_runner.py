"""Run one benchmark variant in a fresh Python process and read back its JSON result.

Peak RSS (`resource.getrusage` maxrss) is a whole-process high-water mark, so comparing
variants needs one process each. Every variant gets the same interpreter (`sys.executable`)
and the same thread settings, so only the code under test differs.

Child contract (what a module passed to `run_variant` must do):
  - accept `--threads N` (appended by `run_variant` when `threads` is given) and use it as its
    onnxruntime intra-op thread count;
  - print exactly one JSON object as the LAST line of stdout (anything before it is ignored;
    progress belongs on stderr);
  - exit with status 0 on success.

Children should report peak memory with `edgekit.measure.peak_rss_mb()` (VmHWM on Linux), not
raw `getrusage`: on Linux a child started by `subprocess` (vfork + exec) inherits its parent's
maxrss, so `getrusage(RUSAGE_SELF).ru_maxrss` in the child reads at least the parent's peak (a
parent that exported a model with torch made every child here look ~825 MiB).

Example::

    result = run_variant("edgekit.bench.spine_variant", ["--variant", "edgekit", ...], threads=2)
    result["peak_rss_mb"]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STDERR_TAIL_CHARS = 4000


class VariantError(RuntimeError):
    """A benchmark child failed: non-zero exit, timeout, or no JSON object on its last stdout line."""

    def __init__(self, message: str, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def variant_env(env: Mapping[str, str] | None = None, threads: int | None = None) -> dict[str, str]:
    """The child's environment: this process's, then `env`, then the thread variables pinned."""
    merged = dict(os.environ)
    merged.update(env or {})
    if threads is not None:
        for name in THREAD_ENV_VARS:
            merged[name] = str(threads)
    merged.setdefault("PYTHONUNBUFFERED", "1")
    return merged


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_TAIL_CHARS else "…" + text[-STDERR_TAIL_CHARS:]


def run_variant(module: str, args: Sequence[str], env: Mapping[str, str] | None = None, *,
                threads: int | None = None, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run `python -m module *args` in a fresh process; return the JSON object it printed last.

    threads: if given, OMP/MKL/OpenBLAS thread variables are set to it and `--threads N` is
    appended to `args` (the child's onnxruntime intra-op count), identically for every variant.
    Raises VariantError (with the child's stderr tail) if the child fails, times out, or its
    last stdout line is not a JSON object.
    """
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    command = [sys.executable, "-m", module, *args]
    if threads is not None:
        command += ["--threads", str(threads)]
    shown = " ".join(command[1:])
    try:
        completed = subprocess.run(command, env=variant_env(env, threads), capture_output=True, text=True,
                                   timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if isinstance(error.stderr, bytes) else (error.stderr or "")
        raise VariantError(f"`{shown}` timed out after {timeout_s:.0f} s", None, _tail(stderr)) from None
    if completed.returncode != 0:
        tail = _tail(completed.stderr)
        raise VariantError(f"`{shown}` exited with status {completed.returncode}:\n{tail}",
                           completed.returncode, tail)
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        tail = _tail(completed.stderr)
        last = lines[-1][:200] if lines else "(no stdout)"
        raise VariantError(f"`{shown}` printed no JSON object on its last stdout line (got {last!r}):\n{tail}",
                           completed.returncode, tail)
    return result


def run_bench_variant(module: str, args: Sequence[str], threads: int, timeout_s: float = 900.0) -> dict[str, Any]:
    """`run_variant` for a bench command whose `args` start with `--variant NAME`: a failing child
    becomes a one-line BenchmarkError naming the variant and the child's last error line."""
    from edgekit.errors import BenchmarkError

    try:
        return run_variant(module, args, threads=threads, timeout_s=timeout_s)
    except VariantError as error:
        last = (error.stderr_tail.strip().splitlines() or [str(error)])[-1]
        raise BenchmarkError(f"benchmark variant {args[1]} failed: {last}") from None
