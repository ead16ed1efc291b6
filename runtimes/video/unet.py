"""One UNet evaluation from a video package's stage graphs, streamed through LayerStream, with the
Feature Slicer for packages exported with operator groups.

Dataflow contract (docs/VIDEO.md): a dict `state` of named float32 arrays. Each graph is fed
the inputs it lists, by name, from `state`; an output named `X_out` replaces `state[X]`, any
other output is stored under its own name. A tensor is dropped from `state` as soon as it is
dead: no later graph reads it before one rewrites it (a skip right after the graph that
consumes it, a transformer's `tokens` after its last group), so at most the
tensors still pending are held. The time_embedding graph's output [B, T] is repeated over
frames into `temb` [B*F, T].

Feature Slicer: a `unet_group` graph with an OpGroup runs `slices` times, each on the rows of a
contiguous run of its axis' units (frames, videos or pixels) in every input the OpGroup lists,
the other inputs whole; each sliced output is written into its place in one preallocated array.
The group's ops are independent along that axis (the exporter checks it), so the merged result
equals the unsliced run; only the group's activations shrink to about 1/slices.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends import Session
from edgekit.runtimes.layer_stream import LayerStream
from edgekit.video_manifest import OpGroup


def _slice_bounds(group: OpGroup, feeds: dict[str, np.ndarray], slices: int) -> list[tuple[int, int]]:
    """[start, stop) unit ranges of each slice: units = the smallest size among the sliced inputs
    (B for `videos`, whose N-row tensors hold F rows per unit)."""
    units = min(feeds[name].shape[dim] for name, dim in group.inputs.items())
    count = max(1, min(slices, units))
    edges = [round(k * units / count) for k in range(count + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _run_sliced(graph: GraphSpec, group: OpGroup, session: Session, feeds: dict[str, np.ndarray], slices: int,
                shrink_arena: bool) -> list[np.ndarray]:
    bounds = _slice_bounds(group, feeds, slices)
    if len(bounds) == 1:
        return session.run(feeds, shrink_arena=shrink_arena)
    units = bounds[-1][1]
    merged: list[np.ndarray | None] = [None] * len(graph.outputs)
    for number, (start, stop) in enumerate(bounds):
        part = dict(feeds)
        for name, dim in group.inputs.items():
            rows = feeds[name].shape[dim] // units
            index = [slice(None)] * feeds[name].ndim
            index[dim] = slice(start * rows, stop * rows)
            part[name] = np.ascontiguousarray(feeds[name][tuple(index)])
        outputs = session.run(part, shrink_arena=shrink_arena and number == len(bounds) - 1)
        for k, (spec, value) in enumerate(zip(graph.outputs, outputs)):
            dim = group.outputs[spec.name]  # the manifest check: every output of a group is split
            rows = value.shape[dim] // (stop - start)
            if merged[k] is None:
                shape = list(value.shape)
                shape[dim] = rows * units
                merged[k] = np.empty(shape, dtype=value.dtype)
            index = [slice(None)] * value.ndim
            index[dim] = slice(start * rows, stop * rows)
            merged[k][tuple(index)] = value  # type: ignore[index]
    return merged  # type: ignore[return-value]  # all set: every slice writes every output


def apply_graph(graph: GraphSpec, session: Session, state: dict[str, np.ndarray], num_frames: int,
                shrink_arena: bool = False, group: OpGroup | None = None, slices: int = 1,
                live_after: frozenset[str] = frozenset()) -> None:
    """Run one UNet stage graph on `state` in place (see the module docstring). `group`: its
    OpGroup, run over `slices` slices when > 1. `live_after`: the names a later graph reads before
    rewriting them (`live_names`); the inputs not among them are dropped."""
    feeds = {spec.name: state[spec.name] for spec in graph.inputs}
    if group is not None and slices > 1:
        outputs = _run_sliced(graph, group, session, feeds, slices, shrink_arena)
    else:
        outputs = session.run(feeds, shrink_arena=shrink_arena)
    del feeds
    for spec in graph.inputs:
        if spec.name not in live_after:
            state.pop(spec.name, None)
    for spec, value in zip(graph.outputs, outputs):
        if graph.role == "time_embedding":
            value = np.repeat(value, num_frames, axis=0)
        state[state_name(graph, spec.name)] = value


def block_name(graph: GraphSpec, op_groups: Mapping[str, OpGroup]) -> str | None:
    """The UNet block a stage graph belongs to (`down_block_0`, `mid_block`, `up_block_1`, …; an
    operator group's `block`), None for the time embedding."""
    if graph.role == "time_embedding":
        return None
    group = op_groups.get(graph.name)
    return group.block if group is not None else graph.name


def count_blocks(graphs: Sequence[GraphSpec], op_groups: Mapping[str, OpGroup]) -> int:
    """UNet block evaluations in running `graphs` in order: a block counts once each time one of
    its graphs follows a graph of another block (or none)."""
    count, previous = 0, None
    for graph in graphs:
        name = block_name(graph, op_groups)
        if name is not None and name != previous:
            count += 1
        previous = name
    return count


def state_name(graph: GraphSpec, output: str) -> str:
    """The dataflow name an output is stored under (see apply_graph)."""
    if graph.role == "time_embedding":
        return "temb"
    return output[: -len("_out")] if output.endswith("_out") else output


def live_names(graphs: Sequence[GraphSpec]) -> list[frozenset[str]]:
    """For each graph, the names still needed after it: read by a later graph before any later
    graph writes them again (a backward liveness pass over the step)."""
    live: set[str] = set()
    after: list[frozenset[str]] = []
    for graph in reversed(graphs):
        after.append(frozenset(live))
        live -= {state_name(graph, spec.name) for spec in graph.outputs}
        live |= {spec.name for spec in graph.inputs}
    return after[::-1]


def unet_state(latent_model_input: np.ndarray, timestep: np.ndarray, encoder_hidden_states: np.ndarray,
               added_time_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The initial state for one step: latent_model_input [B, F, 2C, h, w] (noisy latents already
    scaled, concatenated with the image latents), timestep [B], encoder_hidden_states [B, 1, D]."""
    batch, frames = latent_model_input.shape[:2]
    return {
        "hidden_states": np.ascontiguousarray(latent_model_input.reshape(batch * frames, *latent_model_input.shape[2:])),
        "timestep": timestep.astype(np.float32),
        "added_time_ids": added_time_ids.astype(np.float32),
        "encoder_hidden_states": np.repeat(encoder_hidden_states, frames, axis=0),
        "image_only_indicator": np.zeros((batch, frames), dtype=np.float32),
    }


def run_unet(graphs: Sequence[GraphSpec], root: Path, load: Callable[[Path], Session], window: int,
             state: dict[str, np.ndarray], counters: dict[str, int] | None = None,
             last_step: bool = False, op_groups: Mapping[str, OpGroup] | None = None,
             slices: int = 1) -> np.ndarray:
    """Stream the UNet graphs over `state` (from `unet_state`); return noise_pred [B, F, C, h, w].
    last_step: after the final graph, hand the arena's free memory back to the OS before decoding.
    op_groups / slices: run each graph that has an OpGroup over `slices` slices of its axis."""
    batch, frames = state["image_only_indicator"].shape
    groups = op_groups or {}
    live = live_names(graphs)
    stream = LayerStream([root / graph.path for graph in graphs], load, window=window)
    for index, session in stream:
        graph = graphs[index]
        apply_graph(graph, session, state, frames, shrink_arena=last_step and index == len(graphs) - 1,
                    group=groups.get(graph.name), slices=slices, live_after=live[index])
    if counters is not None:
        counters["block_evals"] = counters.get("block_evals", 0) + count_blocks(graphs, groups)
        counters["graphs_loaded"] = counters.get("graphs_loaded", 0) + stream.loads
        counters["max_resident"] = max(counters.get("max_resident", 0), stream.max_resident)
    noise_pred = state.pop("noise_pred")
    return noise_pred.reshape(batch, frames, *noise_pred.shape[1:])


class StreamedUNet:
    """The package's UNet as a `Network` (runtimes/video/family.py): its stage graphs (blocks or
    operator groups) streamed through LayerStream per evaluation, at most `window` resident, each
    operator group over `slices` slices. Inputs are the one-graph UNet's: sample [B, F, 2C, h, w],
    timestep [B], encoder_hidden_states [B, 1, D], added_time_ids [B, 3]; the output is
    noise_pred [B, F, C, h, w]."""

    def __init__(self, graphs: Sequence[GraphSpec], root: Path, load: Callable[[Path], Session], window: int,
                 op_groups: Mapping[str, OpGroup] | None = None, slices: int = 1) -> None:
        self.graphs, self.root, self.load, self.window = list(graphs), root, load, window
        self.op_groups, self.slices = op_groups or {}, slices
        self.counters: dict[str, int] = {}

    @property
    def loads(self) -> int:
        return self.counters.get("graphs_loaded", 0)

    @property
    def max_resident(self) -> int:
        return self.counters.get("max_resident", 0)

    @property
    def block_evals(self) -> int:
        """UNet block evaluations so far (`count_blocks` per evaluation)."""
        return self.counters.get("block_evals", 0)

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        state = unet_state(inputs["sample"], inputs["timestep"], inputs["encoder_hidden_states"],
                           inputs["added_time_ids"])
        return run_unet(self.graphs, self.root, self.load, self.window, state, self.counters, last_step=last_step,
                        op_groups=self.op_groups, slices=self.slices)
