"""The one video driver: prepare -> denoise (network + scheduler, per step) -> decode, for any family.

`generate(family, request)` runs a `VideoFamily` (runtimes/video/family.py) and records, per
stage, wall time and memory in `VideoStats`. `network=` replaces the family's own network for the
denoising loop (the bench's one-graph baseline passes `OneGraph(session)`); `observers` are told
when each stage starts and ends.

Finite outputs: the latents after every step and the decoded frames are checked; a NaN or inf is
a `NonFiniteOutputError` naming the stage, the step and the graphs that produced it (the
network's graphs when it lists them, as the streamed UNet does), never a video. The check reads
the latents once per step (tiny next to a UNet evaluation). The frames are checked after the
family maps them to [0, 1]: a NaN survives that clip, an inf saturates to a white pixel.

Example::

    family = family_for(manifest, backend, window=2)              # runtimes/video/families.py
    result = generate(family, family.request(image="in.png", num_frames=4, steps=2, seed=0))
    result.frames, result.stats.to_dict()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import NonFiniteOutputError
from edgekit.measure import current_rss_mb, peak_rss_mb
from edgekit.runtimes.video.family import Network, Request, StageObserver, VideoFamily

Progress = Callable[[str, int, int], None]


@dataclass
class VideoStats:
    """What the last `generate` did.

    Stages: `encode` (the family's conditioning: SVD's CLIP image encoder + VAE encoder, with the
    input preprocessing), `denoise` (every network step, scheduler included), `decode` (VAE
    decoder + the map to [0, 1]); `latency_ms` is the whole call (about their sum). Memory, per stage:

    * `stage_peak_rss_mb[s]`: the process's resident-set high-water mark (VmHWM) read when stage
      `s` ends. It is cumulative (a high-water mark never goes down): it is the peak of stage `s`
      only when it exceeds the previous stage's value; when it equals it, stage `s` peaked at or
      below that. It counts everything in the process (imports, the caller's data), as does
      `peak_rss_mb` (the same mark at the end of the call).
    * `stage_start_rss_mb[s]`: the resident set (VmRSS) when stage `s` starts. Where stage `s` set
      a new mark, `stage_peak_rss_mb[s] - stage_start_rss_mb[s]` is what it added at its peak on
      top of what it found resident (e.g. memory an earlier stage left behind).

    For an exact per-stage peak, reset the mark between stages (Linux: write "5" to
    /proc/self/clear_refs), as `edgekit bench video` does with a `StageObserver`.
    """

    frames: int = 0
    height: int = 0
    width: int = 0
    steps: int = 0
    decode_chunk: int = 0
    decode_tile: int | None = None  # latent pixels; None: untiled
    decode_tile_overlap: int | None = None
    decode_tiles: int = 0  # tiles per decoder chunk (1: untiled)
    slices: int = 1  # Feature Slicer: slices per operator group (1: unsliced)
    op_groups: int = 0  # unet_group graphs per UNet evaluation (0: a block package)
    unet_block_evals: int = 0  # UNet blocks run over the denoising (a step cache skips the deep ones)
    step_cache: dict[str, Any] = field(default_factory=dict)  # CachedUNet.describe(): plan, swap timings
    guidance: bool = False
    latency_ms: float = 0.0
    encode_ms: float = 0.0
    denoise_ms: float = 0.0
    decode_ms: float = 0.0
    graphs_loaded: int = 0
    max_resident_graphs: int = 0
    window: int = 0
    peak_rss_mb: float | None = None
    stage_peak_rss_mb: dict[str, float | None] = field(default_factory=dict)
    stage_start_rss_mb: dict[str, float] = field(default_factory=dict)

    def begin(self, stage: str) -> float:
        """Mark the start of `stage`; returns the perf_counter start time."""
        self.stage_start_rss_mb[stage] = round(current_rss_mb(), 1)
        return time.perf_counter()

    def end(self, stage: str, started: float) -> None:
        """Mark the end of `stage` (its time in `<stage>_ms`, the high-water mark so far)."""
        setattr(self, f"{stage}_ms", (time.perf_counter() - started) * 1000)
        self.stage_peak_rss_mb[stage] = peak_rss_mb()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Generation:
    """One run: frames [F, H, W, 3] float32 in [0, 1], the denoised latents [1, F, C, h, w] the
    decoder took, and the stats."""

    frames: np.ndarray
    latents: np.ndarray
    stats: VideoStats


@contextmanager
def _stage(stage: str, stats: VideoStats, observers: Sequence[StageObserver]) -> Iterator[None]:
    for observer in observers:  # first: an observer resetting the high-water mark precedes every reading
        observer.begin(stage)
    started = stats.begin(stage)
    yield
    stats.end(stage, started)
    for observer in reversed(observers):
        observer.end(stage)


def generate(family: VideoFamily, request: Request, network: Network | None = None,
             observers: Sequence[StageObserver] = (), progress: Progress | None = None) -> Generation:
    """Run `family` on `request` (from `family.request(...)`); see the module docstring."""
    started = time.perf_counter()
    steps = request.steps
    stats = VideoStats(frames=request.num_frames, height=request.height, width=request.width, steps=steps)
    report = progress or (lambda message, done, total: None)

    report("encoding", 0, steps)
    with _stage("encode", stats, observers):
        prepared = family.prepare(request, stats)

    with _stage("denoise", stats, observers):
        schedule = family.schedule(steps)
        network = network or family.network(request)
        latents = (prepared.latents * schedule.init_noise_sigma).astype(np.float32)
        last = len(schedule.timesteps) - 1
        try:
            for i, t in enumerate(schedule.timesteps):
                prediction = family.predict(network, schedule.scale(latents, i), t, prepared, last_step=i == last)
                latents = schedule.step(prediction, i, latents)
                if not np.isfinite(latents).all():
                    raise _non_finite(family, f"the latents after denoising step {i + 1}/{steps}",
                                      _network_name(network))
                report("denoising", i + 1, steps)
        finally:
            close = getattr(network, "close", None)  # a step cache's swap thread and file
            if close is not None:
                close()
    del prepared  # the conditioning is not needed to decode
    stats.graphs_loaded += network.loads
    stats.max_resident_graphs = max(stats.max_resident_graphs, network.max_resident)
    stats.unet_block_evals = getattr(network, "block_evals", 0)
    describe = getattr(network, "describe", None)
    if describe is not None:
        stats.step_cache = describe()

    report("decoding", steps, steps)
    with _stage("decode", stats, observers):
        frames = family.decode(latents, request.decode, stats)
        if not np.isfinite(frames).all():
            raise _non_finite(family, "the decoded frames", f"the {family.name} decoder graph")
    stats.latency_ms = (time.perf_counter() - started) * 1000
    stats.peak_rss_mb = peak_rss_mb()
    return Generation(frames=frames, latents=latents, stats=stats)


def _network_name(network: Network) -> str:
    """The graphs a network evaluates, for an error message: their names when the network lists
    `graphs` (GraphSpec, as StreamedUNet does), else its type."""
    names = [str(getattr(graph, "name", graph)) for graph in getattr(network, "graphs", ())]
    if not names:
        return f"the network {type(network).__name__}"
    return f"graph {names[0]}" if len(names) == 1 else f"graphs {names[0]} … {names[-1]} ({len(names)} graphs)"


def _non_finite(family: VideoFamily, what: str, graphs: str) -> NonFiniteOutputError:
    return NonFiniteOutputError(f"{what} hold NaN or inf ({family.name} package, produced by {graphs}); the "
                                "package's weights are corrupt or overflow its dtype; re-export the package (`edgekit "
                                "verify PKG` says whether its files changed since the export)", [])
