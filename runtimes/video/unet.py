"""One UNet evaluation from a video package's stage graphs, streamed through LayerStream.

Dataflow contract (docs/VIDEO.md): a dict `state` of named float32 arrays. Each graph is fed
the inputs it lists, by name, from `state`; an output named `X_out` replaces `state[X]`, any
other output is stored under its own name. A skip tensor (`skip_NN`) is dropped from `state`
as soon as the up block that consumes it has run, so at most the skips still pending are held.
The time_embedding graph's output [B, T] is repeated over frames into `temb` [B*F, T].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from edgekit.manifest import GraphSpec
from edgekit.runtimes.layer_stream import LayerStream


class Session(Protocol):
    def run(self, feeds: dict[str, np.ndarray], shrink_arena: bool = False) -> list[np.ndarray]: ...
    def release(self) -> None: ...


def apply_graph(graph: GraphSpec, session: Session, state: dict[str, np.ndarray], num_frames: int,
                shrink_arena: bool = False) -> None:
    """Run one UNet stage graph on `state` in place (see the module docstring)."""
    feeds = {spec.name: state[spec.name] for spec in graph.inputs}
    outputs = session.run(feeds, shrink_arena=shrink_arena)
    for spec, value in zip(graph.outputs, outputs):
        if graph.role == "time_embedding":
            state["temb"] = np.repeat(value, num_frames, axis=0)
        elif spec.name.endswith("_out"):
            state[spec.name[: -len("_out")]] = value
        else:
            state[spec.name] = value
    for spec in graph.inputs:
        if spec.name.startswith("skip_"):
            del state[spec.name]


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
             last_step: bool = False) -> np.ndarray:
    """Stream the UNet graphs over `state` (from `unet_state`); return noise_pred [B, F, C, h, w].
    last_step: after the final graph, hand the arena's free memory back to the OS before decoding."""
    batch, frames = state["image_only_indicator"].shape
    stream = LayerStream([root / graph.file for graph in graphs], load, window=window)
    for index, session in stream:
        apply_graph(graphs[index], session, state, frames, shrink_arena=last_step and index == len(graphs) - 1)
    if counters is not None:
        counters["graphs_loaded"] = counters.get("graphs_loaded", 0) + stream.loads
        counters["max_resident"] = max(counters.get("max_resident", 0), stream.max_resident)
    noise_pred = state.pop("noise_pred")
    return noise_pred.reshape(batch, frames, *noise_pred.shape[1:])
