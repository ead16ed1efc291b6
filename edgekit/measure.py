"""Measurement helpers shared by the runtime stats and the benchmarks (no heavy imports)."""

from __future__ import annotations

import contextlib
import ctypes
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


def _status_mib(field: str) -> float | None:
    """A `kB` line of /proc/self/status (e.g. "VmHWM"), in MiB; None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far, in MiB (None where the OS can't say).

    A high-water mark for the whole process: to compare variants, run each in its own process.
    On Linux it reads VmHWM from /proc/self/status: `getrusage` maxrss is inherited across
    vfork + exec, so a child started by `subprocess` would report at least its parent's peak.
    """
    peak = _status_mib("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MiB; 0.0 where the OS cannot say."""
    return _status_mib("VmRSS") or 0.0


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """`with stopwatch() as t: ...` then `t["ms"]` holds the elapsed wall time in ms."""
    timing: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield timing
    finally:
        timing["ms"] = (time.perf_counter() - start) * 1000.0


def trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim; a no-op elsewhere). glibc keeps
    large freed blocks on its heap once its mmap threshold has grown, so memory an earlier stage
    freed can stay resident into the next one without this."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
