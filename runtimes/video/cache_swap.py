"""Where the step cache's deep feature waits between the step that makes it and the steps that
reuse it: `off` (in the compute path), `host` (a separate pre-allocated buffer) or `disk` (a
memory-mapped file in the run's work folder), moved by one background thread.

Contract (`CacheSwap`): `put(feature)` right after the full step produced it (host/disk: the
thread copies it out while compute goes on; the compute path drops its own array once the step's
shallow up blocks consumed it); `prefetch()` one block before the block that reads it (the thread
brings it back while that block computes); `take()` returns it, waiting for the prefetch if it
is not done yet; `discard()` when a full step will replace it; `close()` at the end of the
denoising (joins the thread, deletes the file). The thread runs jobs in order, so a prefetch
always reads the last write.

Timings (`timings()`): `write_ms` / `read_ms` spent by the thread copying out / back, `wait_ms`
the compute path spent blocked on the thread (in `take`, and in `close` for a write still
running); `hidden_share` = 1 - wait / (write + read): the share of the swap overlapped with
compute.

On a CPU backend `host` is the same RAM as the compute path's arrays: its buffer is allocated
once (at the first feature) and handed to the shallow up block as is (onnxruntime's CPU provider
reads host memory), so it keeps the cache out of the step's own allocations but not out of the
resident set. `disk` does: between steps the feature lives in the file (page cache, not this
process's resident set) and the mapping exists only while the thread copies.
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, InvalidArgumentError, OutputPathError

SWAP_MODES = ("off", "host", "disk")


def check_swap(mode: Any, work_dir: Any) -> tuple[str, Path | None]:
    """(mode, the folder `disk` spills into) after checking both, before any compute:
    InvalidArgumentError for an unknown mode, OutputPathError for a work folder that cannot take a
    file (disk only; default: the system's temporary folder)."""
    mode = "off" if mode is None else mode
    if mode not in SWAP_MODES:
        raise InvalidArgumentError(f"cache swap must be one of {', '.join(SWAP_MODES)}, got {mode!r}")
    if mode != "disk":
        return mode, None
    folder = Path(tempfile.gettempdir() if work_dir is None else work_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputPathError(f"--cache-swap disk cannot write its cache file in the work folder {folder} "
                                   f"({error.strerror or error}); pass a writable --work DIR, or --cache-swap host"
                                   ) from None
    return mode, folder


class CacheSwap:
    """One cached feature and where it waits (see the module docstring)."""

    def __init__(self, mode: str = "off", folder: Path | None = None) -> None:
        self.mode, self.folder = mode, folder
        self._worker = None if mode == "off" else ThreadPoolExecutor(1, thread_name_prefix="edgekit-cache-swap")
        self._held: np.ndarray | None = None  # off: the array; host: the pre-allocated buffer
        self._file: Path | None = None
        self.used_file: str | None = None  # the spill file's path once one was made (kept after close)
        self._layout: tuple[tuple[int, ...], np.dtype[Any]] | None = None
        self._pending: Future[None] | None = None
        self._fetched: Future[np.ndarray] | None = None
        self.write_ms = self.read_ms = self.wait_ms = 0.0
        self.writes = self.reads = 0
        self.feature_mb = 0.0

    @property
    def has_feature(self) -> bool:
        return self._layout is not None

    def put(self, feature: np.ndarray) -> None:
        """Keep `feature` (the full step's deep feature) for later steps."""
        self._fetched = None
        self._layout = (feature.shape, feature.dtype)
        self.feature_mb = feature.nbytes / 2**20
        if self._worker is None:
            self._held = feature
            return
        self._pending = self._worker.submit(self._write, feature)

    def prefetch(self) -> None:
        """Start bringing the feature back (no-op when off, or already under way)."""
        if self._worker is not None and self._fetched is None and self.has_feature:
            self._fetched = self._worker.submit(self._read)

    def take(self) -> np.ndarray:
        """The feature, for the block that reads it now."""
        if self._worker is None:
            if self._held is None:
                raise RuntimeError("the step cache has no feature yet")  # the planner never asks then
            return self._held
        self.prefetch()
        started = time.perf_counter()
        assert self._fetched is not None
        try:
            if self._pending is not None:  # the write before it (done: the thread runs jobs in order)
                self._pending.result()
            feature = self._fetched.result()
        except OSError as error:
            raise EdgekitError(f"--cache-swap {self.mode} could not move the step cache's feature "
                               f"({error.strerror or error}); free space in the work folder, or use --cache-swap "
                               "host or off") from None
        self.wait_ms += (time.perf_counter() - started) * 1000
        self._fetched = None
        return feature

    def discard(self) -> None:
        """Drop the compute path's hold on the feature (a full step will replace it)."""
        self._fetched = None
        if self._worker is None:
            self._held = None

    def close(self) -> None:
        """Finish the thread's work, free the feature, delete the file."""
        if self._worker is not None:
            started = time.perf_counter()
            self._worker.shutdown(wait=True)
            self.wait_ms += (time.perf_counter() - started) * 1000
            self._worker = None
        self._held = self._fetched = self._pending = None
        if self._file is not None:
            self._file.unlink(missing_ok=True)
            self._file = None

    def timings(self) -> dict[str, Any]:
        moved = self.write_ms + self.read_ms
        return {"mode": self.mode, "writes": self.writes, "reads": self.reads, "feature_mb": round(self.feature_mb, 3),
                "write_ms": round(self.write_ms, 3), "read_ms": round(self.read_ms, 3),
                "wait_ms": round(self.wait_ms, 3),
                "hidden_share": None if moved == 0 else round(max(0.0, 1 - self.wait_ms / moved), 4),
                "file": self.used_file}

    # --- the thread's jobs ---------------------------------------------------------------
    def _write(self, feature: np.ndarray) -> None:
        started = time.perf_counter()
        if self.mode == "host":
            if self._held is None or self._held.shape != feature.shape or self._held.dtype != feature.dtype:
                self._held = np.empty_like(feature)  # once: every step's feature has the same shape
            np.copyto(self._held, feature)
        else:
            if self._file is None:
                handle, name = tempfile.mkstemp(prefix="edgekit-step-cache-", suffix=".bin", dir=self.folder)
                self._file = Path(name)
                self.used_file = name
                try:  # allocated now: a full disk is an OSError here, not a SIGBUS on a mapped page later
                    os.posix_fallocate(handle, 0, feature.nbytes)
                finally:
                    os.close(handle)
            mapped = np.memmap(self._file, dtype=feature.dtype, mode="r+", shape=feature.shape)
            mapped[...] = feature
            mapped.flush()
            del mapped
        self.write_ms += (time.perf_counter() - started) * 1000
        self.writes += 1

    def _read(self) -> np.ndarray:
        started = time.perf_counter()
        if self.mode == "host":
            feature = self._held
        else:
            shape, dtype = self._layout  # type: ignore[misc]  # set by put before any read
            mapped = np.memmap(self._file, dtype=dtype, mode="r", shape=shape)
            feature = np.array(mapped)
            del mapped
        self.read_ms += (time.perf_counter() - started) * 1000
        self.reads += 1
        assert feature is not None
        return feature
