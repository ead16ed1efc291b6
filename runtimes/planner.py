"""Memory-budget planner: choose the window W and chunk C of a pass from the manifest's byte
sizes and the input's shapes, or refuse up front when no plan fits.

The estimate of a pass's peak resident memory (MiB) is a sum of parts, each from numbers the
runtime knows before it runs anything:

  process     the process's resident memory when the package was opened (interpreter,
              onnxruntime, tokenizer, anything the app holds)
  runtime     RUNTIME_OVERHEAD_MB: what onnxruntime allocates once it runs (thread pools,
              kernels, the shared arena's first chunk)
  weights     the largest graph x SESSION_FACTOR: weights are memory-mapped external data, and
              only the computing session touches its pages; plus the head (and per-depth heads)
              when pruning or tracing keeps them resident
  sessions    the other W - 1 sessions LayerStream keeps loaded or loading: each holds its
              graph structure (the .onnx file without its data file) until it runs

Shared-layers packages (docs/FORMAT.md, "Shared layers") hold the shared graph's session once,
for the whole run ("sessions": the shared .onnx file's bytes, not x W), and stream weights. The
computing layer's weights are a memory-mapped file read by the run, as a per-layer session's
external data is, so "weights" is its weights file x SESSION_FACTOR; the W - 1 prefetched
layers' maps are read ahead into the page cache (MADV_WILLNEED) and add to the process's resident
memory only once their run reads them (0 each). Checked on a 4-layer Qwen3-0.6B-shaped package:
the shared and the per-layer package peaked alike at windows 1-3.
  states      every candidate's hidden states [n_i, H], kept between layers, twice (the layer's
              input and output) plus the chunk's padded copy
  activations one chunk inside one layer: C x S x (hidden and MLP widths) + C x heads x S^2
              (attention scores), x ACTIVATION_FACTOR for the copies the shared arena holds

The factors were fitted on measured peaks (scripts/measure_planner.py); the planner picks
the fastest plan whose estimate fits (prefetch first: W >= 2, then the largest C, then the
largest W) and reports the estimate so the measured peak can be put beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import MemoryBudgetError
from edgekit.manifest import GraphSpec, Manifest
from edgekit.runtimes.backends.base import BackendTraits

MIB = 1024 * 1024
# Fitted (non-negative least squares, then rounded up) on 24 measured runs of
# scripts/measure_planner.py: the Qwen3-0.6B-shaped package (8 x 128 tokens) and the MiniLM
# cross-encoder (8 and 50 candidates), windows 1-3, chunks 1-50. Fit: 61.8 MiB, 0.155, 0.722;
# the worst run was 9% above its fitted share. Refit after changing session options.
RUNTIME_OVERHEAD_MB = 65.0
SESSION_FACTOR = 0.25  # resident bytes of the computing session per byte of its graph's files
ACTIVATION_FACTOR = 0.8  # the estimate below, scaled to what the shared arena really holds
WINDOWS = (1, 2, 3, 4)
CHUNKS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class Plan:
    """A chosen (window, chunk) and its estimated peak, part by part (MiB)."""

    window: int
    chunk: int
    estimated_peak_mb: float
    budget_mb: float
    parts_mb: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {value:.0f}" for name, value in self.parts_mb.items())
        return (f"plan: window {self.window}, chunk {self.chunk}; estimated peak {self.estimated_peak_mb:.0f} MiB "
                f"of a {self.budget_mb:.0f} MiB budget ({parts})")


def _itemsize(manifest: Manifest) -> int:
    return 2 if manifest.dtype == "fp16" else 4


def estimate(manifest: Manifest, lengths: Sequence[int], window: int, chunk: int, process_mb: float,
             heads_resident: bool = False, traits: BackendTraits | None = None) -> dict[str, float]:
    """Estimated peak parts (MiB) of one pass over sequences of `lengths` tokens. traits: the
    backend's (None: the figures fitted here, onnxruntime's). A backend that copies weights holds
    a loaded graph's whole bytes, computing or idle."""
    graphs = manifest.stream_graphs
    body = graphs[:-1]
    copied = traits is not None and traits.weights == "copy"
    heads = sum(g.bytes for g in (graphs[-1], *manifest.graphs_by_role("depth_head"))) if heads_resident else 0
    weights = max(_computing_bytes(graph, copied) for graph in body) + heads
    shared = sum({graph.path: graph.files[0].bytes for graph in body if graph.weights is not None}.values())
    sessions = (min(window, len(body)) - 1) * max(_idle_bytes(graph, copied) for graph in body) + shared
    runtime = RUNTIME_OVERHEAD_MB if traits is None else traits.runtime_overhead_mb
    size = _itemsize(manifest)
    hidden = manifest.ranking.hidden_size
    longest = max(lengths)
    chunk = min(chunk, len(lengths))
    states = (2 * sum(lengths) + chunk * longest) * hidden * size
    dims = manifest.ranking.dims
    width = hidden * 6 + 4 * dims.get("intermediate_size", 4 * hidden)
    attention_heads = dims.get("num_attention_heads", max(1, hidden // 64))
    activations = chunk * longest * (width + 3 * attention_heads * longest) * size * ACTIVATION_FACTOR
    if manifest.ranking.embedding_table is not None:  # the gathered rows of one chunk
        activations += chunk * longest * manifest.ranking.embedding_table.shape[1] * size
    return {"process": process_mb, "runtime": runtime, "weights": weights / MIB, "sessions": sessions / MIB, "states": states / MIB,
            "activations": activations / MIB}


def _computing_bytes(graph: GraphSpec, copied: bool) -> float:
    """Resident bytes of a graph's weights while it computes."""
    factor = 1.0 if copied else SESSION_FACTOR
    if graph.weights is not None:  # a shared layer: its mapped weights file (the shared graph is counted once)
        return graph.weights_entry.bytes * factor
    return graph.bytes * factor


def _idle_bytes(graph: GraphSpec, copied: bool) -> int:
    """Resident bytes of a graph loaded (or loading) in the window but not computing."""
    if graph.weights is not None:  # its weights map, read ahead into the page cache (not resident)
        return 0
    return graph.bytes if copied else graph.files[0].bytes  # the .onnx file; its data file is mapped


def plan(manifest: Manifest, lengths: Sequence[int], budget_mb: float, process_mb: float,
         heads_resident: bool = False, traits: BackendTraits | None = None) -> Plan:
    """The fastest (W, C) whose estimate fits `budget_mb`; MemoryBudgetError when none does."""
    if not budget_mb > 0:
        raise MemoryBudgetError(f"--memory-budget must be a positive number of MiB, got {budget_mb}")
    options = []
    for window in WINDOWS:
        for chunk in CHUNKS:
            if chunk > max(1, len(lengths)) and chunk != CHUNKS[0]:
                continue
            parts = estimate(manifest, lengths, window, chunk, process_mb, heads_resident, traits)
            options.append((sum(parts.values()), window, chunk, parts))
    fitting = [option for option in options if option[0] <= budget_mb]
    if not fitting:
        smallest = min(options, key=lambda option: option[0])
        parts = ", ".join(f"{name} {value:.0f}" for name, value in smallest[3].items())
        raise MemoryBudgetError(
            f"memory budget {budget_mb:.0f} MiB is below the smallest plan (window {smallest[1]}, chunk {smallest[2]} "
            f"needs ~{smallest[0]:.0f} MiB: {parts}); raise --memory-budget or pass fewer or shorter candidates")
    total, window, chunk, parts = max(fitting, key=lambda option: (option[1] >= 2, option[2], option[1]))
    return Plan(window, chunk, round(total, 1), budget_mb, {k: round(v, 1) for k, v in parts.items()})
