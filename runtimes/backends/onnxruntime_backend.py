"""onnxruntime backend (graph format "onnx"): one InferenceSession per graph, with options tuned
for low peak memory. Implements the contract in runtimes/backends/base.py; get one through
`edgekit.runtimes.backends.backend_for("onnx", provider, threads)`.

Providers are asked for by short name. A provider that this onnxruntime build or machine does
not have is an error, never a silent CPU fallback: after creating a session we check that the
requested provider is really the first one the session uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekit.errors import IntegrityError, InvalidArgumentError, ProviderUnavailableError
from edgekit.measure import trim_heap
from edgekit.runtimes.backends.base import BackendTraits
from edgekit.runtimes.planner import RUNTIME_OVERHEAD_MB

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}

_HOW_TO_GET = {
    "cuda": "install onnxruntime-gpu instead of onnxruntime on a machine with an NVIDIA GPU and CUDA 12",
    "coreml": "run on macOS with the standard onnxruntime wheel",
    "cpu": "reinstall onnxruntime",
}

# runtime_overhead_mb is the planner's RUNTIME_OVERHEAD_MB (runtimes/planner.py), fitted by
# scripts/measure_planner.py with the session options below; refit it after changing them.
# External data (exporters/onnx_writer.py) is memory-mapped, never copied onto the heap.
TRAITS = BackendTraits(runtime_overhead_mb=RUNTIME_OVERHEAD_MB, weights="mmap")


_shared_cpu_arena = False


def _share_cpu_arena() -> None:
    """Register one process-wide CPU arena that every session with `session.use_env_allocators`
    allocates from (once per process). Streamed sessions then reuse the activations memory the
    previous layer's session grew instead of each growing its own arena on its first run."""
    global _shared_cpu_arena
    if _shared_cpu_arena:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))  # ORT's default arena settings
    _shared_cpu_arena = True


def _shrink_options() -> ort.RunOptions:
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class OrtSession:
    """A loaded graph. `run` maps input names to arrays; `release` frees the session now."""

    def __init__(self, session: ort.InferenceSession, path: Path) -> None:
        self._session: ort.InferenceSession | None = session
        self.path = path
        self.input_names = tuple(item.name for item in session.get_inputs())
        self.output_names = tuple(item.name for item in session.get_outputs())

    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]:
        """Run the graph. shrink_arena: after this run, hand the CPU arena's free chunks back to
        the OS, heap included (for the last run of a stage whose activations are much larger than what follows;
        every run shrinking would make the next one allocate again)."""
        if self._session is None:
            raise RuntimeError(f"session for {self.path} was already released")
        options = _shrink_options() if shrink_arena else None
        outputs = self._session.run(None, {name: feeds[name] for name in self.input_names}, options)
        if shrink_arena:
            trim_heap()  # the arena's chunks go back to malloc; make malloc hand them to the OS
        return outputs

    def release(self) -> None:
        self._session = None


@dataclass(frozen=True)
class OrtBackend:
    """Creates sessions for one provider. `threads` = intra-op threads (None: ORT's default).
    tuned=False: onnxruntime's default session options (what an app gets), only the thread
    count set — the benchmarks' baselines."""

    provider: str = "cpu"
    threads: int | None = None
    tuned: bool = True

    @property
    def traits(self) -> BackendTraits:
        return TRAITS

    def __post_init__(self) -> None:
        if PROVIDERS[self.provider] not in ort.get_available_providers():
            raise ProviderUnavailableError(
                f"provider {self.provider!r} ({PROVIDERS[self.provider]}) is not available in this onnxruntime "
                f"(has: {', '.join(ort.get_available_providers())}); {_HOW_TO_GET[self.provider]}"
            )
        if self.threads is not None and self.threads < 1:
            raise InvalidArgumentError(f"threads must be >= 1, got {self.threads}")

    def session_options(self) -> ort.SessionOptions:
        options = ort.SessionOptions()
        if not self.tuned:
            options.log_severity_level = 3
            if self.threads is not None:
                options.intra_op_num_threads = self.threads
            return options
        # Chunked streaming keeps each run small, and a released session frees its arena, so
        # the CPU arena stays on (measured: MiniLM, 50 candidates, chunk 16 — peak RSS 229-271
        # MiB with the arena vs 287-299 MiB without, same latency; FIELD-NOTES.md's "arena off"
        # advice is for whole-batch runs). Memory patterns assume fixed shapes, which chunks of
        # varying length never have.
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = False
        # Every session owns an intra-op pool whose threads spin after each run; with one session
        # per layer (and one loading in the background) the spinning pools steal the cores from
        # the layer that is computing. Measured (MiniLM, 50 candidates, 2 cores): window 2
        # 610 -> 433 ms per query, all graphs resident 546 -> 333 ms; a single monolithic
        # session is unaffected (408-451 ms either way).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Pre-packing copies every MatMul weight into a second, packed buffer when a session is
        # created: a streamed session is created once per pass, so it pays the copy each time and
        # holds the weights twice (memory-mapped external data plus the packed heap copy).
        # Measured: Qwen3-0.6B shape, window 2, peak RSS 371 -> 223 MiB and 3.3 -> 2.9 s per
        # query; MiniLM (50 candidates) latency within noise (469-485 vs 447-491 ms).
        options.add_session_config_entry("session.disable_prepacking", "1")
        # One arena for all sessions (CPU): a layer's first run no longer grows a fresh arena.
        # Measured, Qwen3-0.6B shape, 28 layer sessions created and run once each: 2.56 -> 2.37 s.
        if self.provider == "cpu":
            _share_cpu_arena()
            options.add_session_config_entry("session.use_env_allocators", "1")
        options.log_severity_level = 3
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        return options

    def load(self, path: Path) -> OrtSession:
        providers: list[Any] = [PROVIDERS[self.provider]]
        if self.provider != "cpu":
            providers.append("CPUExecutionProvider")  # for ops the accelerator lacks
        try:
            session = ort.InferenceSession(str(path), sess_options=self.session_options(), providers=providers)
        except Exception as error:  # onnxruntime raises its own pybind types for unreadable graphs
            raise IntegrityError(
                f"onnxruntime cannot load {path.name} ({str(error).splitlines()[0][:160]}); "
                "run `edgekit verify` and re-export the package", [path.name]
            ) from None
        if session.get_providers()[0] != PROVIDERS[self.provider]:
            raise ProviderUnavailableError(
                f"onnxruntime could not start {PROVIDERS[self.provider]} for {path.name} "
                f"(running on {session.get_providers()[0]}); {_HOW_TO_GET[self.provider]}"
            )
        return OrtSession(session, path)
