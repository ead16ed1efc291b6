"""Peak GPU memory of this process, sampled from nvidia-smi on a background thread.

onnxruntime's CUDA provider does not report its allocations, so the benchmarks sample the
driver's per-process figure (`nvidia-smi --query-compute-apps`) every `interval_s` and keep the
maximum. Sampling can miss a spike shorter than the interval; it never over-reports.

    with DeviceMemorySampler() as sampler:
        run()
    sampler.peak_mb, sampler.gpu_name   # None when nvidia-smi is absent
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading


def _query(args: list[str]) -> str | None:
    try:
        return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=5, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


class DeviceMemorySampler:
    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.available = shutil.which("nvidia-smi") is not None
        self.peak_mb: float | None = None
        self.gpu_name: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        pid = str(os.getpid())
        while not self._stop.is_set():
            out = _query(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]) or ""
            for line in out.splitlines():
                fields = [field.strip() for field in line.split(",")]
                if len(fields) == 2 and fields[0] == pid and fields[1].isdigit():
                    self.peak_mb = max(self.peak_mb or 0.0, float(fields[1]))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> DeviceMemorySampler:
        if self.available:
            name = _query(["--query-gpu=name", "--format=csv,noheader"])
            self.gpu_name = name.strip().splitlines()[0] if name and name.strip() else None
            self._thread = threading.Thread(target=self._sample, name="edgekit-nvsmi", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
