"""Image-to-video generation from an edgekit video package (SVD family), numpy and a graph backend only.

The run reproduces diffusers' StableVideoDiffusionPipeline (0.42) step for step:

1. CLIP image embeddings of the input image (zeros prepended for guidance);
2. VAE latents of the image resized to height x width, after noise augmentation
   (image + noise_aug_strength * noise), repeated over frames (zeros prepended for guidance);
3. Euler denoising: latents = initial noise * init_noise_sigma; per step, scale the latents,
   concatenate the image latents on channels, run the UNet's stage graphs (streamed through
   LayerStream, at most `window` resident), apply the per-frame guidance ramp, step;
4. decode latents / scaling_factor with the VAE decoder, `decode_chunk` frames per call
   (all frames by default, like diffusers; smaller chunks bound memory but SVD's temporal
   decoder mixes frames inside a chunk, so chunked output is an approximation), and map
   [-1, 1] -> [0, 1]. Optionally each chunk is decoded in spatial tiles (`decode_tile` latent
   pixels, `decode_tile_overlap` shared, linear-ramp blending: runtimes/video/tiles.py), which
   bounds the decoder's activations per call; also an approximation.

Randomness: `seed` drives numpy's default_rng (noise-augmentation noise first, then the initial
latents); pass `latents` [1, F, C, h, w] and `noise` [1, 3, H, W] to supply both explicitly
(that is how the tests reproduce a diffusers run). Output: float32 frames [F, H, W, 3] in [0, 1].

Example::

    pipeline = edgekit.load("svd-pkg")                 # a VideoPipeline for video packages
    frames = pipeline.generate("in.png", num_frames=4, steps=2, seed=0)
    pipeline.stats.to_dict()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import Manifest
from edgekit.measure import current_rss_mb, peak_rss_mb, trim_heap
from edgekit.runtimes.backends import Backend, backend_for
from edgekit.runtimes.video.conditioning import (
    Conditioning,
    added_time_ids,
    guidance_ramp,
    guide,
    with_unconditional,
)
from edgekit.runtimes.video.images import clip_input, read_image, vae_input
from edgekit.runtimes.video.scheduler import EulerScheduler
from edgekit.runtimes.video.tiles import blend_into, box_weights, check_tile
from edgekit.runtimes.video.unet import run_unet, unet_state

Progress = Callable[[str, int, int], None]


@dataclass
class VideoStats:
    """What the last `generate` did.

    Stages: `encode` (CLIP image encoder + VAE encoder, with the input preprocessing), `denoise`
    (every UNet step, scheduler included), `decode` (VAE decoder + the map to [0, 1]);
    `latency_ms` is the whole call (about their sum). Memory, per stage:

    * `stage_peak_rss_mb[s]`: the process's resident-set high-water mark (VmHWM) read when stage
      `s` ends. It is cumulative (a high-water mark never goes down): it is the peak of stage `s`
      only when it exceeds the previous stage's value; when it equals it, stage `s` peaked at or
      below that. It counts everything in the process (imports, the caller's data), as does
      `peak_rss_mb` (the same mark at the end of the call).
    * `stage_start_rss_mb[s]`: the resident set (VmRSS) when stage `s` starts. Where stage `s` set
      a new mark, `stage_peak_rss_mb[s] - stage_start_rss_mb[s]` is what it added at its peak on
      top of what it found resident (e.g. memory an earlier stage left behind).

    For an exact per-stage peak, reset the mark between stages (Linux: write "5" to
    /proc/self/clear_refs), as `edgekit bench video` does from outside the runtime.
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


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class VideoPipeline:
    """A loaded video package. `generate` runs one image-to-video generation."""

    def __init__(self, manifest: Manifest, backend: Backend | None = None, window: int | None = None) -> None:
        if manifest.video is None or manifest.video.svd is None:
            raise InvalidArgumentError(f"{manifest.root} is a {manifest.task} package of family {manifest.family!r}; "
                                       "VideoPipeline runs svd video packages")
        self.manifest = manifest
        self.svd = manifest.video.svd
        self.backend = backend or backend_for("onnx")
        self.window = _positive("window", 2 if window is None else window)
        self.scheduler = EulerScheduler(manifest.video.scheduler)
        self.stats = VideoStats()

    # --- pieces ----------------------------------------------------------------------------
    def _run_single(self, role: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        graph = self.manifest.graph(role)
        session = self.backend.load(self.manifest.root / graph.path)
        try:
            self.stats.graphs_loaded += 1
            self.stats.max_resident_graphs = max(self.stats.max_resident_graphs, 1)
            # encoders run once, on full-size images: return their activations to the OS before the
            # denoising starts (measured, mid-size SVD 256x256: 444 -> 224 MiB resident at denoise start)
            return session.run(feeds, shrink_arena=True)[0]
        finally:
            session.release()
            trim_heap()  # what the released session held goes back to the OS too

    def encode_image(self, pixels: np.ndarray) -> np.ndarray:
        """CLIP image embeddings [1, 1, D] of a [3, H, W] image in [0, 1]."""
        svd = self.svd
        embeds = self._run_single("image_encoder", {"pixel_values": clip_input(pixels, svd.clip_image_size,
                                                                               svd.image_mean, svd.image_std)})
        return embeds[:, None, :]

    def decode(self, latents: np.ndarray, decode_chunk: int | None = None, tile: int | None = None,
               tile_overlap: int | None = None) -> np.ndarray:
        """Frames [F, H, W, 3] in [0, 1] from denoised latents [1, F, C, h, w], `decode_chunk`
        frames per decoder call (None: all at once).

        `tile` (latent pixels, None: no tiles): when smaller than h or w, each chunk is decoded tile
        by tile, `tile` x `tile` latent tiles sharing `tile_overlap` latent pixels with their
        neighbours (None: tile // 4; must be in [0, tile/2)), blended with linear ramps across the
        overlaps (runtimes/video/tiles.py). Tiling bounds the decoder's activations per call but is
        an approximation (GroupNorm statistics and the receptive field cross tile borders); a tile
        at least as large as the latent is the untiled decode, bit for bit.
        """
        c = self.manifest.video.conditioning
        flat = latents.reshape(-1, *latents.shape[2:]) * np.float32(1.0 / c.scaling_factor)
        chunk = flat.shape[0] if decode_chunk is None else _positive("decode_chunk", decode_chunk)
        lh, lw = flat.shape[-2:]
        grid = None
        if tile is not None:
            tile, overlap = check_tile(tile, tile_overlap)
            self.stats.decode_tile, self.stats.decode_tile_overlap = tile, overlap
            if tile < lh or tile < lw:
                grid = box_weights(lh, lw, tile, overlap, c.vae_scale_factor)
        elif tile_overlap is not None:
            raise InvalidArgumentError("decode tile overlap needs a decode tile (--decode-tile N)")
        self.stats.decode_tiles = 1 if grid is None else len(grid)
        graph = self.manifest.graph("vae_decoder")
        session = self.backend.load(self.manifest.root / graph.path)
        self.stats.graphs_loaded += 1
        try:
            pieces = []
            for i in range(0, flat.shape[0], chunk):
                part = flat[i: i + chunk]
                if grid is None:
                    pieces.append(session.run({"latents": np.ascontiguousarray(part)})[0])
                    continue
                scale = c.vae_scale_factor
                canvas = np.zeros((part.shape[0], 3, lh * scale, lw * scale), dtype=np.float32)
                for (y0, y1, x0, x1), wy, wx in grid:
                    decoded = session.run({"latents": np.ascontiguousarray(part[..., y0:y1, x0:x1])})[0]
                    blend_into(canvas, decoded, (y0, y1, x0, x1), wy, wx, scale)
                pieces.append(canvas)
        finally:
            session.release()
        frames = np.concatenate(pieces, axis=0)
        return np.clip(frames / np.float32(2) + np.float32(0.5), 0.0, 1.0).transpose(0, 2, 3, 1).astype(np.float32)

    # --- the whole run ---------------------------------------------------------------------
    def generate(self, image: Any, num_frames: int | None = None, steps: int | None = None, seed: int = 0,
                 height: int | None = None, width: int | None = None, decode_chunk: int | None = None,
                 fps: int | None = None, motion_bucket_id: int | None = None,
                 noise_aug_strength: float | None = None, min_guidance_scale: float | None = None,
                 max_guidance_scale: float | None = None, latents: np.ndarray | None = None,
                 noise: np.ndarray | None = None, progress: Progress | None = None,
                 decode_tile: int | None = None, decode_tile_overlap: int | None = None,
                 slices: int | None = None) -> np.ndarray:
        """Generate a video from `image`; returns float32 frames [F, H, W, 3] in [0, 1].

        Unset arguments take the package's defaults (manifest `conditioning`). `latents`
        [1, F, C, h, w] (unscaled standard normal) and `noise` [1, 3, H, W] replace the seeded
        draws. Raises InvalidArgumentError for bad input (missing or non-RGB image, zero frames,
        sizes that are not multiples of the package's size_multiple, wrong latents/noise shapes,
        bad decode tile settings, slices on a package without operator groups).
        `decode_tile` / `decode_tile_overlap`: spatial decode tiles (see `decode`). `slices`
        (packages exported with operator groups): run each UNet operator group over that many
        slices of its axis (frames, videos or pixels; fewer where the axis has fewer units);
        exact, it bounds the groups' activations (runtimes/video/unet.py).
        """
        started = time.perf_counter()
        c = self.manifest.video.conditioning
        pixels = read_image(image)
        frames = _positive("num_frames", c.num_frames if num_frames is None else num_frames)
        steps = _positive("steps", c.num_inference_steps if steps is None else steps)
        height = _positive("height", c.height if height is None else height)
        width = _positive("width", c.width if width is None else width)
        if height % c.size_multiple or width % c.size_multiple:
            raise InvalidArgumentError(f"height and width must be multiples of {c.size_multiple} for this package, "
                                       f"got {height}x{width}")
        if decode_chunk is None:
            decode_chunk = c.decode_chunk_size
        chunk = frames if decode_chunk is None else min(_positive("decode_chunk", decode_chunk), frames)
        if decode_tile is not None:
            check_tile(decode_tile, decode_tile_overlap)
        elif decode_tile_overlap is not None:
            raise InvalidArgumentError("decode tile overlap needs a decode tile (--decode-tile N)")
        slices = 1 if slices is None else _positive("slices", slices)
        if slices > 1 and not self.manifest.video.op_groups:
            raise InvalidArgumentError(f"{self.manifest.root} has no operator groups to slice; re-export it with "
                                       "`edgekit export DIR --task video --op-groups`, or drop --slices")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
        svd = self.svd
        conditioning = Conditioning(
            fps=int(svd.fps if fps is None else fps),
            motion_bucket_id=int(svd.motion_bucket_id if motion_bucket_id is None else motion_bucket_id),
            noise_aug_strength=float(svd.noise_aug_strength if noise_aug_strength is None else noise_aug_strength),
            min_guidance_scale=float(svd.min_guidance_scale if min_guidance_scale is None else min_guidance_scale),
            max_guidance_scale=float(svd.max_guidance_scale if max_guidance_scale is None else max_guidance_scale),
        )
        latent_shape = (1, frames, c.latent_channels, height // c.vae_scale_factor, width // c.vae_scale_factor)
        rng = np.random.default_rng(int(seed))
        noise = self._given("noise", noise, (1, 3, height, width), rng)
        latents = self._given("latents", latents, latent_shape, rng)
        self.stats = VideoStats(frames=frames, height=height, width=width, steps=steps, decode_chunk=chunk,
                                guidance=conditioning.guidance, window=self.window, slices=slices,
                                op_groups=len(self.manifest.video.op_groups))
        report = progress or (lambda message, done, total: None)

        report("encoding the image", 0, steps)
        encode_start = self.stats.begin("encode")
        embeddings = with_unconditional(self.encode_image(pixels), conditioning)
        augmented = vae_input(pixels, height, width) + np.float32(conditioning.noise_aug_strength) * noise
        image_latents = self._run_single("vae_encoder", {"image": augmented.astype(np.float32)})
        image_latents = with_unconditional(image_latents, conditioning)
        image_latents = np.repeat(image_latents[:, None], frames, axis=1)
        time_ids = added_time_ids(conditioning)
        ramp = guidance_ramp(conditioning, frames)
        self.stats.end("encode", encode_start)

        denoise_start = self.stats.begin("denoise")
        schedule = self.scheduler.schedule(steps)
        latents = (latents * schedule.init_noise_sigma).astype(np.float32)
        counters: dict[str, int] = {}
        for i, t in enumerate(schedule.timesteps):
            model_input = np.concatenate([latents] * conditioning.batch, axis=0)
            model_input = np.concatenate([schedule.scale(model_input, i), image_latents], axis=2)
            state = unet_state(model_input, np.full((conditioning.batch,), t, dtype=np.float32), embeddings,
                               time_ids)
            noise_pred = run_unet(self.manifest.unet_graphs, self.manifest.root, self.backend.load, self.window,
                                  state, counters, last_step=i == len(schedule.timesteps) - 1,
                                  op_groups=self.manifest.video.op_groups, slices=slices)
            latents = schedule.step(guide(noise_pred, ramp, conditioning), i, latents)
            report("denoising", i + 1, steps)
        self.stats.end("denoise", denoise_start)
        self.stats.graphs_loaded += counters.get("graphs_loaded", 0)
        self.stats.max_resident_graphs = max(self.stats.max_resident_graphs, counters.get("max_resident", 0))

        report("decoding", steps, steps)
        decode_start = self.stats.begin("decode")
        video = self.decode(latents, chunk, decode_tile, decode_tile_overlap)
        self.stats.end("decode", decode_start)
        self.stats.latency_ms = (time.perf_counter() - started) * 1000
        self.stats.peak_rss_mb = peak_rss_mb()
        return video

    @staticmethod
    def _given(name: str, value: np.ndarray | None, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        if value is None:
            return rng.standard_normal(shape, dtype=np.float32)
        array = np.asarray(value, dtype=np.float32)
        if array.shape != shape:
            raise InvalidArgumentError(f"{name} has shape {tuple(array.shape)}, expected {shape} for this run")
        return array
