"""The streamed UNet with the deep-feature step cache: a `Network` (runtimes/video/family.py)
that runs the full UNet on some steps and only its shallow path on the others.

A full step runs every stage graph, like `StreamedUNet`, and keeps the deep feature (the
`hidden_states` that up block n-1-depth reads: what the deeper blocks made) in a `CacheSwap`. A
cached step runs the prefix (time embedding, down blocks 0..depth), puts the kept feature in
`hidden_states` and runs the suffix (the last depth+1 up blocks); the deep branch (deeper down
blocks, mid block, deeper up blocks) does not run. `StepPlanner` decides which steps are cached
(runtimes/video/step_cache.py); adaptive steps that may reuse run the prefix first, compare the
first down block's output with the last full step's (`relative_l1`) and then run either the
rest of the UNet or the suffix.

The stage graphs are the same sessions on the same feeds as `StreamedUNet` (operator groups over
`slices` slices included), so a run whose steps are all full equals it bit for bit. Tensors are
dropped as soon as no later graph of the step reads them (outputs of the prefix that only the
deep branch reads, on cached steps, included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends import Session
from edgekit.runtimes.layer_stream import LayerStream
from edgekit.runtimes.video.cache_swap import CacheSwap
from edgekit.runtimes.video.step_cache import StepCache, StepPlanner, UnetSplit, relative_l1
from edgekit.runtimes.video.unet import apply_graph, count_blocks, live_names, unet_state
from edgekit.video_manifest import OpGroup


def _live_by_index(graphs: Sequence[GraphSpec], order: Sequence[int]) -> dict[int, frozenset[str]]:
    return dict(zip(order, live_names([graphs[k] for k in order])))


class CachedUNet:
    """The package's UNet with a step cache (see the module docstring). Inputs and output are
    StreamedUNet's. `planner.plan` / `planner.changes`: what each step did; `describe()`: that and
    the swap's timings, for VideoStats. Call `close()` when the denoising ends."""

    def __init__(self, graphs: Sequence[GraphSpec], root: Path, load: Callable[[Path], Session], window: int,
                 settings: StepCache, split: UnetSplit, swap: CacheSwap,
                 op_groups: Mapping[str, OpGroup] | None = None, slices: int = 1) -> None:
        self.graphs, self.root, self.load, self.window = list(graphs), root, load, window
        self.op_groups, self.slices = op_groups or {}, slices
        self.settings, self.split, self.swap = settings, split, swap
        self.planner = StepPlanner(settings)
        self.counters: dict[str, int] = {"graphs_loaded": 0, "max_resident": 0, "block_evals": 0}
        self._step = 0
        self._reference: np.ndarray | None = None  # adaptive: the first down block's output, last full step
        count = len(self.graphs)
        self._full = list(range(count))
        self._cached = [*range(split.prefix_end), *range(split.suffix_start, count)]
        self._full_live = _live_by_index(self.graphs, self._full)
        self._cached_live = _live_by_index(self.graphs, self._cached)
        # interval:1 and adaptive:0 never reuse: keep nothing
        self._keeps = not ((settings.mode == "interval" and settings.interval == 1)
                           or (settings.mode == "adaptive" and settings.threshold == 0))

    @property
    def loads(self) -> int:
        return self.counters["graphs_loaded"]

    @property
    def max_resident(self) -> int:
        return self.counters["max_resident"]

    @property
    def block_evals(self) -> int:
        return self.counters["block_evals"]

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        state = unet_state(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                           inputs["added_time_ids"])
        batch, frames = state["image_only_indicator"].shape
        split, may_reuse = self.split, self._keeps and self.planner.may_reuse(self._step)
        self._step += 1
        change: float | None = None
        if not may_reuse:
            self.swap.discard()
            self._run(self._full, self._full_live, state, frames, last_step, cached=False)
            cached = False
        elif self.settings.mode == "interval":
            self._run(self._cached, self._cached_live, state, frames, last_step, cached=True)
            cached = True
        else:
            probe = self._run(self._full[:split.prefix_end], self._full_live, state, frames, last_step, cached=True)
            assert probe is not None and self._reference is not None
            change = relative_l1(probe, self._reference)
            cached = self.planner.decide(change)
            if cached:
                suffix = self._cached[split.prefix_end:]
                needed = self._cached_live[split.prefix_end - 1]
                for name in [name for name in state if name not in needed]:
                    del state[name]
                self._run(suffix, self._cached_live, state, frames, last_step, cached=True)
            else:
                self.swap.discard()
                self._run(self._full[split.prefix_end:], self._full_live, state, frames, last_step, cached=False,
                          probe=probe)
        self.planner.record(cached, change)
        noise_pred = state.pop("noise_pred")
        return noise_pred.reshape(batch, frames, *noise_pred.shape[1:])

    def _run(self, order: Sequence[int], live: Mapping[int, frozenset[str]], state: dict[str, np.ndarray],
             frames: int, last_step: bool, cached: bool, probe: np.ndarray | None = None) -> np.ndarray | None:
        """Stream graphs `order` over `state`. cached: the suffix reads the kept feature (prefetched
        when the prefix's last block starts); else the feature the deep branch made is kept for
        later steps. Returns the first down block's output when the probe graph ran (or `probe`)."""
        split, last = self.split, len(self.graphs) - 1
        stream = LayerStream([self.root / self.graphs[k].path for k in order], self.load, window=self.window)
        for position, session in stream:
            k = order[position]
            if k == split.prefetch_at and cached:
                self.swap.prefetch()
            if k == split.suffix_start:
                if cached:
                    state["hidden_states"] = self.swap.take()
                elif self._keeps and not last_step:
                    self.swap.put(state["hidden_states"])
                    if self.settings.mode == "adaptive":
                        self._reference = probe
            graph = self.graphs[k]
            apply_graph(graph, session, state, frames, shrink_arena=last_step and k == last,
                        group=self.op_groups.get(graph.name), slices=self.slices, live_after=live[k])
            for name in [name for name in state if name not in live[k] and name != "noise_pred"]:
                del state[name]  # outputs only the skipped deep branch reads
            if k == split.probe:
                probe = state["hidden_states"]
        self.counters["graphs_loaded"] += stream.loads
        self.counters["max_resident"] = max(self.counters["max_resident"], stream.max_resident)
        self.counters["block_evals"] += count_blocks([self.graphs[k] for k in order], self.op_groups)
        return probe

    def describe(self) -> dict[str, Any]:
        """The step cache's record for VideoStats.step_cache."""
        plan = "".join(self.planner.plan)
        return {"settings": self.settings.text(), "plan": plan, "full_steps": plan.count("F"),
                "cached_steps": plan.count("C"), "changes": [None if c is None else round(c, 6)
                                                            for c in self.planner.changes],
                "blocks": list(self.split.blocks), "shallow_blocks": list(self.split.shallow_blocks),
                "swap": self.swap.timings()}

    def close(self) -> None:
        self.swap.close()
