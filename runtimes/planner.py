"""Memory-budget planner: choose the window W and chunk C of a pass from the manifest's byte
sizes and the input's shapes, or refuse up front when no plan fits.

The estimate of a pass's peak resident memory (MiB) is a sum of parts, each from numbers the
runtime knows before it runs anything:

  process     the process's resident memory now (interpreter, onnxruntime, tokenizer)
  weights     W resident graphs plus one being read while loading (LayerStream keeps at most W
              sessions loaded or loading; onnxruntime holds a file's bytes twice while it
              builds a session) -> (W + 1) x the largest graph, x SESSION_FACTOR; plus the head
              (and per-depth heads) when pruning or tracing keeps them resident
  states      every candidate's hidden states [n_i, H], kept between layers, twice (the layer's
              input and output) plus the chunk's padded copy
  activations one chunk inside one layer: C x S x (hidden and MLP widths) + C x heads x S^2
              (attention scores), x ACTIVATION_FACTOR for the copies onnxruntime's arena holds

The factors were fitted on measured peaks (docs/BENCHMARKS.md, "Deep model"); the planner picks
the fastest plan whose estimate fits (prefetch first: W >= 2, then the largest C, then the
largest W) and reports the estimate so the measured peak can be put beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import MemoryBudgetError
from edgekit.manifest import Manifest

MIB = 1024 * 1024
SESSION_FACTOR = 1.0  # resident bytes of a loaded session per byte of graph file
ACTIVATION_FACTOR = 3.0  # copies of a layer's activations onnxruntime holds at its peak
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
             heads_resident: bool = False) -> dict[str, float]:
    """Estimated peak parts (MiB) of one pass over sequences of `lengths` tokens."""
    graphs = manifest.stream_graphs
    body = graphs[:-1]
    largest = max(graph.bytes for graph in body)
    heads = sum(g.bytes for g in (graphs[-1], *manifest.graphs_by_role("depth_head"))) if heads_resident else 0
    weights = (min(window, len(body)) + 1) * largest * SESSION_FACTOR + heads
    size = _itemsize(manifest)
    hidden = manifest.hidden_size
    longest = max(lengths)
    chunk = min(chunk, len(lengths))
    states = (2 * sum(lengths) + chunk * longest) * hidden * size
    dims = manifest.dims
    width = hidden * 6 + 4 * dims.get("intermediate_size", 4 * hidden)
    attention_heads = dims.get("num_attention_heads", max(1, hidden // 64))
    activations = chunk * longest * (width + 3 * attention_heads * longest) * size * ACTIVATION_FACTOR
    if manifest.embedding_table is not None:  # the gathered rows of one chunk
        activations += chunk * longest * manifest.embedding_table.shape[1] * size
    return {"process": process_mb, "weights": weights / MIB, "states": states / MIB,
            "activations": activations / MIB}


def plan(manifest: Manifest, lengths: Sequence[int], budget_mb: float, process_mb: float,
         heads_resident: bool = False) -> Plan:
    """The fastest (W, C) whose estimate fits `budget_mb`; MemoryBudgetError when none does."""
    if not budget_mb > 0:
        raise MemoryBudgetError(f"--memory-budget must be a positive number of MiB, got {budget_mb}")
    options = []
    for window in WINDOWS:
        for chunk in CHUNKS:
            if chunk > max(1, len(lengths)) and chunk != CHUNKS[0]:
                continue
            parts = estimate(manifest, lengths, window, chunk, process_mb, heads_resident)
            options.append((sum(parts.values()), window, chunk, parts))
    fitting = [option for option in options if option[0] <= budget_mb]
    if not fitting:
        smallest = min(options, key=lambda option: option[0])
        parts = ", ".join(f"{name} {value:.0f}" for name, value in smallest[3].items())
        raise MemoryBudgetError(
            f"memory budget {budget_mb:.0f} MiB is below the smallest plan (window {smallest[1]}, chunk {smallest[2]} "
            f"needs ~{smallest[0]:.0f} MiB: {parts}); raise --memory-budget, pass fewer or shorter candidates, "
            "or export with --dtype fp16")
    total, window, chunk, parts = max(fitting, key=lambda option: (option[1] >= 2, option[2], option[1]))
    return Plan(window, chunk, round(total, 1), budget_mb, {k: round(v, 1) for k, v in parts.items()})
