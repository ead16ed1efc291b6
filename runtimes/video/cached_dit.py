"""Block caching for the Wan DiT: First-Block-Cache and the interval rule, with the cached
residual swapped out between uses.

The settings are the step cache's (runtimes/video/step_cache.py `parse_step_cache`), read for a
stack of blocks instead of a UNet: `depth:D` (default 0) means blocks 0..D run on every step (the
"head" blocks; D = 0 is First-Block-Cache's single first block) and blocks D+1..n-1 (the "tail")
only on full steps. A full step keeps the tail's residual (tail output - head output); a cached
step runs the embeddings and the head blocks, adds the kept residual and runs the output head.

* `adaptive:T` is First-Block-Cache (diffusers' `FirstBlockCacheConfig(threshold=T)`): after the
  head blocks, the change of their residual (head output - embedding output) against the last
  full step's, sum |r - r_full| / sum |r_full| (the same ratio as diffusers' mean / mean), decides:
  below T, reuse; else run the tail. Like diffusers, the reference residual is the last *full*
  step's. Unlike diffusers, one decision covers the whole guidance batch (the unconditional and
  conditional halves run as one batch here; diffusers decides per half) and `max-skip` (default
  2) bounds a run of cached steps; `max-skip:1000` lifts the bound as diffusers has none.
* `interval:N`: a full step, then N-1 cached steps, and again.
* `adaptive:0` and `interval:1` never reuse (the change is never below 0): every step is full and
  the run equals the uncached one bit for bit (nothing is even kept).

The tail residual goes to the `CacheSwap` right after the full step makes it (off: kept in
place; host: a separate buffer; disk: a file in the work folder, out of the resident set between
steps); a step that may reuse it prefetches it when it starts (the read overlaps the embeddings
and head blocks) and takes it after the head blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends import Session
from edgekit.runtimes.video.cache_swap import CacheSwap
from edgekit.runtimes.video.dit import StreamedDiT
from edgekit.runtimes.video.step_cache import StepCache, StepPlanner, relative_l1


def check_block_depth(settings: StepCache, blocks: int) -> None:
    """InvalidArgumentError unless the head blocks 0..depth leave at least one tail block."""
    if settings.enabled and settings.depth >= blocks - 1:
        raise InvalidArgumentError(f"step cache depth:{settings.depth} leaves no transformer block to skip (this "
                                   f"package has {blocks} blocks: depth 0..{blocks - 2}); pick one of those")


class CachedDiT(StreamedDiT):
    """The package's DiT with a block cache (see the module docstring). Inputs and output are
    StreamedDiT's. `planner.plan` / `planner.changes`: what each step did; `describe()`: that and
    the swap's timings, for VideoStats.step_cache. Call `close()` when the denoising ends."""

    def __init__(self, embed: GraphSpec, blocks: Sequence[GraphSpec], head: GraphSpec, root: Path,
                 load: Callable[[Path], Session], window: int, settings: StepCache, swap: CacheSwap,
                 **rope: Any) -> None:
        super().__init__(embed, blocks, head, root, load, window, **rope)
        check_block_depth(settings, len(self.blocks))
        self.settings, self.swap = settings, swap
        # adaptive: the head residual of the last full step, kept by a second swap of the same mode
        self.reference = CacheSwap(swap.mode, swap.folder) if settings.mode == "adaptive" else None
        self.planner = StepPlanner(settings)
        self._step = 0
        self._head_blocks = self.blocks[: settings.depth + 1]
        self._tail_blocks = self.blocks[settings.depth + 1:]
        self._keeps = not ((settings.mode == "interval" and settings.interval == 1)
                           or (settings.mode == "adaptive" and settings.threshold == 0))

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        state = self.state(inputs)
        may_reuse = self._keeps and self.planner.may_reuse(self._step)
        self._step += 1
        adaptive = self.settings.mode == "adaptive"
        # the head blocks' output, and (adaptive) the embeddings' until the head residual replaces them
        seen: dict[str, np.ndarray] = {}
        # "cached": this step reuses the kept residual; "park": a full step that keeps its residuals
        step = {"cached": may_reuse and not adaptive, "park": not may_reuse and self._keeps and not last_step}

        def after(graph: GraphSpec) -> None:
            if graph is self.embed and adaptive:
                seen["embedded"] = state["hidden_states"]
            elif graph is self._head_blocks[-1]:
                seen["head"] = state["hidden_states"]
                if adaptive:  # the head residual, in the embeddings' place (they are not needed again)
                    seen["residual"] = np.subtract(seen["head"], seen.pop("embedded"))
                if step["cached"]:
                    state["hidden_states"] = seen["head"] + self.swap.take()
            if step["park"]:
                self._park_head(graph, seen, state)

        change: float | None = None
        if not may_reuse:  # a full step, known in advance: one stream
            self.swap.discard()
            self._stream(self.graphs, state, last_step, after)
        elif not adaptive:  # interval: a cached step, known in advance: one stream
            self.swap.prefetch()
            self._stream([self.embed, *self._head_blocks, self.head], state, last_step, after)
        else:  # First-Block-Cache: the head blocks, then decide
            assert self.reference is not None
            self.swap.prefetch()  # read back while the embeddings and the head blocks compute
            self.reference.prefetch()
            self._stream([self.embed, *self._head_blocks], state, last_step, after)
            change = relative_l1(seen["residual"], self.reference.take())
            step["cached"] = self.planner.decide(change)
            if step["cached"]:
                state["hidden_states"] = seen["head"] + self.swap.take()
                self._stream([self.head], state, last_step, after)
            else:
                self.swap.discard()
                step["park"] = not last_step
                if step["park"]:
                    self._park_head(self._head_blocks[-1], seen, state)
                self._stream([*self._tail_blocks, self.head], state, last_step, after)
        seen.clear()
        self.planner.record(step["cached"], change)
        return self.finish(state)

    def _park_head(self, graph: GraphSpec, seen: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
        """A full step that keeps its residuals: while the tail blocks run, the head output waits in
        the swap (off: where it is); it comes back for the last tail block's residual, which then
        replaces it there, and the head residual goes to the reference swap."""
        tail = self._tail_blocks
        if graph is self._head_blocks[-1]:
            self.swap.put(seen.pop("head"))
            if len(tail) == 1:
                self.swap.prefetch()
        elif len(tail) > 1 and graph is tail[-2]:
            self.swap.prefetch()  # back while the last tail block computes
        elif graph is tail[-1]:
            self.swap.put(np.subtract(state["hidden_states"], self.swap.take()))
            if self.reference is not None:
                self.reference.put(seen.pop("residual"))

    def _stream(self, graphs: Sequence[GraphSpec], state: dict[str, np.ndarray], last_step: bool,
                after: Callable[[GraphSpec], None]) -> None:
        """StreamedDiT.stream; on the last step the arena shrinks after the output head only."""
        self.stream(graphs, state, last_step and graphs[-1] is self.head, after)

    def describe(self) -> dict[str, Any]:
        """The block cache's record for VideoStats.step_cache."""
        plan = "".join(self.planner.plan)
        return {"settings": self.settings.text(), "plan": plan, "full_steps": plan.count("F"),
                "cached_steps": plan.count("C"),
                "changes": [None if c is None else round(c, 6) for c in self.planner.changes],
                "blocks": [graph.name for graph in self.blocks],
                "shallow_blocks": [graph.name for graph in self._head_blocks], "swap": self.swap.timings(),
                "reference_swap": None if self.reference is None else self.reference.timings()}

    def close(self) -> None:
        self.swap.close()
        if self.reference is not None:
            self.reference.close()
