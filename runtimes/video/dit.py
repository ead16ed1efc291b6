"""One Wan DiT evaluation from a package's stage graphs, streamed through LayerStream.

The package holds the transformer as `dit_embed` (patch embedding, time and text projections),
one `dit_block` graph per transformer block and `dit_head` (output norm + projection); the
rotary tables and the unpatchify reshape are numpy (runtimes/video/wan_rope.py).

Dataflow contract (the same as the UNet's, runtimes/video/unet.py): a dict `state` of named
arrays. Each graph is fed the inputs it declares, by name, from `state`; an output named `X_out`
replaces `state[X]`, any other output is stored under its own name. One evaluation:

    state = dit_state(inputs, rope)              # latents, timestep, encoder_hidden_states, rope_cos/sin
    stream_graphs([embed, *blocks, head], ...)   # + hidden_states, temb, timestep_proj, context -> patches
    noise_pred = unpatchify(state["patches"], ...)

Nothing is dropped from `state` while streaming: the embed graph's inputs are the caller's own
arrays (dropping them frees nothing) and every block reads `context`, `timestep_proj` and the
rope tables. A step cache (runtimes/video/cached_dit.py: embed + block 0, decide, the remaining blocks or a
cached residual, then the head) streams subsequences over one `state` with `StreamedDiT.stream`,
watching each graph's result through its `after` callback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends import Session
from edgekit.runtimes.layer_stream import LayerStream
from edgekit.runtimes.video.wan_rope import rope_tables, unpatchify

RopeTables = tuple[np.ndarray, np.ndarray]


def apply_dit_graph(graph: GraphSpec, session: Session, state: dict[str, np.ndarray],
                    shrink_arena: bool = False) -> None:
    """Run one DiT stage graph on `state` in place: feed its declared inputs by name, store each
    output `X_out` as `state[X]` and any other output under its own name. shrink_arena: hand the
    session's free arena memory back to the OS after the run (the last graph of the last step)."""
    missing = [spec.name for spec in graph.inputs if spec.name not in state]
    if missing:
        raise InvalidArgumentError(f"DiT graph {graph.name} needs {', '.join(missing)}, which no earlier graph or "
                                   "input provides; re-export the package")
    feeds = {spec.name: state[spec.name] for spec in graph.inputs}
    outputs = session.run(feeds, shrink_arena=shrink_arena)
    del feeds
    for spec, value in zip(graph.outputs, outputs):
        name = spec.name[: -len("_out")] if spec.name.endswith("_out") else spec.name
        state[name] = value


def stream_graphs(graphs: Sequence[GraphSpec], root: Path, load: Callable[[Path], Session], window: int,
                  state: dict[str, np.ndarray], last_step: bool = False,
                  after: Callable[[GraphSpec], None] | None = None) -> LayerStream:
    """Apply `graphs` in order to `state` through one LayerStream (at most `window` sessions
    resident, the next ones prefetched); every session is released when this returns (or raises).
    last_step: shrink the arena after the final graph. after: called with each graph once it ran
    (a block cache watches the state there). Returns the finished stream, whose `loads` and
    `max_resident` the caller counts."""
    stream: LayerStream = LayerStream([root / graph.path for graph in graphs], load, window=window)
    for index, session in stream:
        apply_dit_graph(graphs[index], session, state, shrink_arena=last_step and index == len(graphs) - 1)
        if after is not None:
            after(graphs[index])
    return stream


def dit_state(inputs: dict[str, np.ndarray], rope: RopeTables) -> dict[str, np.ndarray]:
    """The initial state of one evaluation: latents [B, C, F, h, w], timestep [B] (float32),
    encoder_hidden_states [B, L, text_dim] and the rope tables for the latents' shape."""
    return {
        "latents": inputs["latents"],
        "timestep": np.asarray(inputs["timestep"], dtype=np.float32).reshape(-1),
        "encoder_hidden_states": inputs["encoder_hidden_states"],
        "rope_cos": rope[0],
        "rope_sin": rope[1],
    }


class StreamedDiT:
    """The package's Wan transformer as a `Network` (runtimes/video/family.py): embed, blocks and
    head streamed through one LayerStream per evaluation, at most `window` sessions resident.
    Inputs: latents [B, C, F, h, w], timestep [B], encoder_hidden_states [B, L, text_dim]; the
    output is noise_pred [B, C, F, h, w] (the whole transformer's). The rope tables are computed
    once per latent shape and kept."""

    def __init__(self, embed: GraphSpec, blocks: Sequence[GraphSpec], head: GraphSpec, root: Path,
                 load: Callable[[Path], Session], window: int, patch_size: Sequence[int], attention_head_dim: int,
                 rope_max_seq_len: int, theta: float = 10000.0) -> None:
        self.embed, self.blocks, self.head = embed, list(blocks), head
        self.root, self.load, self.window = root, load, window
        self.patch_size = tuple(int(p) for p in patch_size)
        self.attention_head_dim, self.rope_max_seq_len, self.theta = attention_head_dim, rope_max_seq_len, theta
        self.loads = 0
        self.max_resident = 0
        self.block_evals = 0
        self._rope: dict[tuple[int, int, int], RopeTables] = {}

    @property
    def graphs(self) -> list[GraphSpec]:
        """Every graph of one full evaluation, in order."""
        return [self.embed, *self.blocks, self.head]

    def rope(self, frames: int, height: int, width: int) -> RopeTables:
        """The rope tables for latents of frames x height x width (cached per shape)."""
        key = (frames, height, width)
        if key not in self._rope:
            self._rope[key] = rope_tables(self.attention_head_dim, self.patch_size, self.rope_max_seq_len,
                                          frames, height, width, self.theta)
        return self._rope[key]

    def state(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The initial state for `inputs` (checked: latents must be [B, C, F, h, w])."""
        latents = inputs["latents"]
        if latents.ndim != 5:
            raise InvalidArgumentError(f"the DiT takes latents [B, C, F, h, w], got shape {tuple(latents.shape)}")
        return dit_state(inputs, self.rope(*latents.shape[2:]))

    def stream(self, graphs: Sequence[GraphSpec], state: dict[str, np.ndarray], last_step: bool = False,
               after: Callable[[GraphSpec], None] | None = None) -> None:
        """Stream `graphs` (any subsequence of `self.graphs`) over `state`, counting loads,
        residency and block evaluations; `after` as in `stream_graphs`."""
        stream = stream_graphs(graphs, self.root, self.load, self.window, state, last_step=last_step, after=after)
        self.loads += stream.loads
        self.max_resident = max(self.max_resident, stream.max_resident)
        self.block_evals += sum(1 for graph in graphs if graph.role == "dit_block")

    def finish(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """noise_pred [B, C, F, h, w] from the head's `patches` in `state`."""
        frames, height, width = state["latents"].shape[2:]
        return unpatchify(state.pop("patches"), self.patch_size, frames, height, width)

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        state = self.state(inputs)
        self.stream(self.graphs, state, last_step=last_step)
        return self.finish(state)
