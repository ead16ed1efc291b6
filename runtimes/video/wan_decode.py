"""Wan's causal VAE decode, streamed: the first latent frame, then chunks of latent frames (numpy only).

The exporter (exporters/wan_vae.py) writes two graphs: "vae_decoder_first" takes `latents`
[B, z, 1, h, w] and returns `frames` [B, 3, 1, H, W] plus one `X_out` per causal-conv cache X;
"vae_decoder_next" takes `latents` [B, z, T, h, w] (any T >= 1) and every cache X and returns
`frames` [B, 3, 4T, H, W] and the `X_out`s. The only contract is the naming: an output `X_out`
replaces the running tensor `X`. The cache names are read from the graphs' IO (`read_cache_names`:
every input of the next graph but `latents`, each of which both graphs must return as `X_out`).

Decoding is exact for any chunk size (the caches carry all the past a call needs), so `chunk`
only trades calls for activation memory: T latent frames -> 1 + 4(T - 1) frames, written into
one preallocated array and clamped to [-1, 1] at the end, as diffusers' `_decode` does.
`latents` are de-normalised already (`latents / latents_std + latents_mean`).

Example::

    decoder = WanDecoder(manifest.graph("vae_decoder_first"), manifest.graph("vae_decoder_next"),
                         manifest.root, backend_for("onnx", "cpu").load)
    frames = decoder.decode(latents, chunk=2)       # [B, 3, 1 + 4(T-1), H, W] in [-1, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import IntegrityError, InvalidArgumentError
from edgekit.manifest import GraphSpec
from edgekit.runtimes.backends.base import Session

LATENTS = "latents"
FRAMES = "frames"
OUT = "_out"
FRAMES_PER_LATENT = 4  # Wan's temporal compression after the first frame


def read_cache_names(next_inputs: Sequence[str], first_outputs: Sequence[str], next_outputs: Sequence[str],
                     files: tuple[str, str] = ("vae_decoder_first", "vae_decoder_next")) -> tuple[str, ...]:
    """The caches X: every input of the next graph but `latents`. IntegrityError (naming the
    graph `files` entry) unless both graphs return `frames` and every `X_out` and the next
    graph takes `latents`."""
    if LATENTS not in next_inputs:
        raise IntegrityError(f"the Wan VAE next-chunk graph {files[1]} has no {LATENTS!r} input; re-export the package",
                             [files[1]])
    names = tuple(name for name in next_inputs if name != LATENTS)
    for graph, outputs in zip(files, (first_outputs, next_outputs)):
        missing = [name for name in (FRAMES, *(f"{n}{OUT}" for n in names)) if name not in outputs]
        if missing:
            raise IntegrityError(f"the Wan VAE graph {graph} lacks outputs {missing[:3]} ({len(missing)} missing); "
                                 "re-export the package", [graph])
    return names


def check_latents(latents: object, channels: int | None = None) -> np.ndarray:
    """latents as float32 [B, z, T, h, w]; InvalidArgumentError (one line) for anything else."""
    if not isinstance(latents, np.ndarray) or latents.ndim != 5 or not np.issubdtype(latents.dtype, np.floating):
        shape = getattr(latents, "shape", None)
        raise InvalidArgumentError(f"Wan VAE latents must be a float numpy array [batch, channels, frames, height, "
                                   f"width], got {type(latents).__name__} of shape {shape}; pass the 5-D latents")
    if channels is not None and latents.shape[1] != channels:
        raise InvalidArgumentError(f"Wan VAE latents have {latents.shape[1]} channels, the decoder takes {channels}; "
                                   "pass latents [batch, channels, frames, height, width] of this model")
    if min(latents.shape) < 1:
        raise InvalidArgumentError(f"Wan VAE latents of shape {latents.shape} are empty; pass at least one frame")
    return np.asarray(latents, dtype=np.float32)


def _check_chunk(chunk: object) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise InvalidArgumentError(f"chunk must be an integer >= 1 (latent frames per call), got {chunk!r}")
    return chunk


def _run(session: Session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip(session.output_names, session.run(feeds)))


def decode_first(first: Session, latents: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Latent frame 0 -> (output array [B, 3, 1 + 4(T-1), H, W] with frame 0 filled, the caches)."""
    outputs = _run(first, {LATENTS: np.ascontiguousarray(latents[:, :, :1])})
    frame = outputs[FRAMES]
    if frame.ndim != 5 or frame.shape[2] != 1:
        raise IntegrityError(f"the Wan VAE first-chunk graph returned frames of shape {frame.shape}, expected "
                             "[batch, 3, 1, height, width]; re-export the package", [])
    b, c, _, h, w = frame.shape
    out = np.empty((b, c, 1 + FRAMES_PER_LATENT * (latents.shape[2] - 1), h, w), dtype=np.float32)
    out[:, :, :1] = frame
    return out, {name: outputs[f"{name}{OUT}"] for name in names}


def decode_rest(next_: Session, latents: np.ndarray, caches: dict[str, np.ndarray], out: np.ndarray,
                chunk: int) -> None:
    """Latent frames 1.. in chunks of `chunk`, written into `out` after frame 0 (`caches` updated)."""
    for start in range(1, latents.shape[2], chunk):
        piece = np.ascontiguousarray(latents[:, :, start:start + chunk])
        outputs = _run(next_, {LATENTS: piece, **caches})
        frames = outputs[FRAMES]
        at = 1 + FRAMES_PER_LATENT * (start - 1)
        expected = (out.shape[0], out.shape[1], FRAMES_PER_LATENT * piece.shape[2], *out.shape[3:])
        if frames.shape != expected:
            raise IntegrityError(f"the Wan VAE next-chunk graph returned frames of shape {frames.shape}, expected "
                                 f"{expected}; re-export the package", [])
        out[:, :, at:at + frames.shape[2]] = frames
        caches.update({name: outputs[f"{name}{OUT}"] for name in caches})


def decode_latents(first: Session, next_: Session | None, latents: np.ndarray, chunk: int = 1,
                   cache_names: Sequence[str] | None = None, channels: int | None = None) -> np.ndarray:
    """De-normalised latents [B, z, T, h, w] -> frames [B, 3, 1 + 4(T-1), H, W] in [-1, 1].

    The first call decodes latent frame 0; then `next_` decodes `chunk` latent frames per call
    (the last call may take fewer). next_ may be None only when T == 1. cache_names: the caches
    (default: read from the sessions' IO names with `read_cache_names`). channels: z, checked when given."""
    latents = check_latents(latents, channels)
    chunk = _check_chunk(chunk)
    if next_ is None and latents.shape[2] > 1:
        raise InvalidArgumentError(f"{latents.shape[2]} latent frames need the next-chunk graph; pass next_")
    if cache_names is None:
        if next_ is None:
            names: Sequence[str] = [name[:-len(OUT)] for name in first.output_names if name.endswith(OUT)]
        else:
            names = read_cache_names(next_.input_names, first.output_names, next_.output_names)
    else:
        names = cache_names
    out, caches = decode_first(first, latents, names)
    if next_ is not None:
        decode_rest(next_, latents, caches, out, chunk)
    return np.clip(out, -1.0, 1.0, out=out)


class WanDecoder:
    """Loads one graph at a time: the first-chunk graph (run, released), then the next-chunk
    graph for every chunk (released at the end, also on errors). Memory: one graph, one chunk's
    activations, the caches and the output array. `loads` counts sessions loaded."""

    def __init__(self, first: GraphSpec, next_: GraphSpec, root: Path, load: Callable[[Path], Session]) -> None:
        self.first, self.next, self.root, self.load = first, next_, Path(root), load
        self.names = read_cache_names([t.name for t in next_.inputs], [t.name for t in first.outputs],
                                      [t.name for t in next_.outputs], (first.path, next_.path))
        latents = [t for t in first.inputs if t.name == LATENTS]
        if not latents or len(latents[0].shape) != 5:
            raise IntegrityError(f"the Wan VAE first-chunk graph {first.path} has no 5-D 'latents' input; "
                                 "re-export the package", [first.path])
        dim = latents[0].shape[1]
        self.channels = dim if isinstance(dim, int) else None
        self.loads = 0

    def _load(self, spec: GraphSpec) -> Session:
        self.loads += 1
        return self.load(self.root / spec.path)

    def decode(self, latents: np.ndarray, chunk: int = 1) -> np.ndarray:
        """De-normalised latents [B, z, T, h, w] -> frames [B, 3, 1 + 4(T-1), H, W] in [-1, 1]."""
        latents = check_latents(latents, self.channels)
        chunk = _check_chunk(chunk)
        session = self._load(self.first)
        try:
            out, caches = decode_first(session, latents, self.names)
        finally:
            session.release()
        if latents.shape[2] > 1:
            session = self._load(self.next)
            try:
                decode_rest(session, latents, caches, out, chunk)
            finally:
                session.release()
        return np.clip(out, -1.0, 1.0, out=out)
