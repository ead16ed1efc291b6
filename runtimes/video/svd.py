"""The SVD family (Stable Video Diffusion, image to video): the first `VideoFamily`.

The run reproduces diffusers' StableVideoDiffusionPipeline (0.42) step for step:

1. CLIP image embeddings of the input image (zeros prepended for guidance);
2. VAE latents of the image resized to height x width, after noise augmentation
   (image + noise_aug_strength * noise), repeated over frames (zeros prepended for guidance);
3. Euler denoising (the driver's loop): latents = initial noise * init_noise_sigma; per step,
   scale the latents, concatenate the image latents on channels, run the UNet (`StreamedUNet`:
   its stage graphs streamed through LayerStream, at most `window` resident; or any other
   `Network` with the one-graph UNet's inputs), apply the per-frame guidance ramp, step;
4. decode latents / scaling_factor with the VAE decoder, `chunk` frames per call (all frames by
   default, like diffusers; smaller chunks bound memory but SVD's temporal decoder mixes frames
   inside a chunk, so chunked output is an approximation), and map [-1, 1] -> [0, 1]. Optionally
   each chunk is decoded in spatial tiles (runtimes/video/tiles.py), also an approximation.

Randomness: `seed` drives numpy's default_rng (noise-augmentation noise first, then the initial
latents); `latents` [1, F, C, h, w] and `noise` [1, 3, H, W] supply both explicitly (that is how
the tests reproduce a diffusers run).

Graph sessions: the family loads each encoder and the decoder when it runs them and releases
them after (encoders also give their arena back to the OS). `sessions` (role -> open session)
replaces that for the roles it names: the caller opened them, keeps them open and the family runs
them with the caller's options (the bench's one-graph baseline, an app holding its models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import InvalidArgumentError
from edgekit.manifest import Manifest
from edgekit.measure import trim_heap
from edgekit.runtimes.backends import Backend, Session
from edgekit.runtimes.video.cache_swap import CacheSwap, check_swap
from edgekit.runtimes.video.cached_unet import CachedUNet
from edgekit.runtimes.video.conditioning import (
    Conditioning,
    added_time_ids,
    guidance_ramp,
    guide,
    with_unconditional,
)
from edgekit.runtimes.video.driver import VideoStats
from edgekit.runtimes.video.family import DecodeSettings, Network, Prepared, positive
from edgekit.runtimes.video.images import clip_input, read_image, vae_input
from edgekit.runtimes.video.scheduler import EulerScheduler, Schedule
from edgekit.runtimes.video.step_cache import StepCache, UnetSplit, parse_step_cache, split_unet
from edgekit.runtimes.video.tiles import blend_into, box_weights
from edgekit.runtimes.video.unet import StreamedUNet


@dataclass(frozen=True)
class SvdRequest:
    """One checked SVD run: the image [3, H0, W0] in [0, 1], sizes, the initial latents and the
    noise-augmentation noise (drawn or given), the conditioning, decode settings, UNet slices."""

    pixels: np.ndarray
    num_frames: int
    steps: int
    height: int
    width: int
    latents: np.ndarray
    noise: np.ndarray
    conditioning: Conditioning
    decode: DecodeSettings
    slices: int = 1
    step_cache: StepCache = StepCache()
    split: UnetSplit | None = None  # where the UNet splits for the step cache (None: no cache)
    cache_swap: str = "off"
    swap_folder: Path | None = None  # --cache-swap disk: the work folder, checked writable


@dataclass(frozen=True)
class SvdState:
    """The conditioning every UNet step reads (guidance batch first: [uncond, cond])."""

    conditioning: Conditioning
    embeddings: np.ndarray  # [B, 1, D]
    image_latents: np.ndarray  # [B, F, C, h, w]
    time_ids: np.ndarray  # [B, 3]
    ramp: np.ndarray  # [1, F, 1, 1, 1]


class SvdFamily:
    """Stable Video Diffusion over an edgekit video package (manifest `video.svd`)."""

    name: ClassVar[str] = "svd"

    def __init__(self, manifest: Manifest, backend: Backend, window: int = 2,
                 sessions: Mapping[str, Session] | None = None) -> None:
        if manifest.video is None or manifest.video.svd is None:
            raise InvalidArgumentError(f"{manifest.root} has no video.svd section; the svd family runs svd packages")
        self.manifest, self.backend, self.window = manifest, backend, positive("window", window)
        self.svd = manifest.video.svd
        self.frame_rate = int(self.svd.fps)
        self.sessions = dict(sessions or {})
        self.scheduler = EulerScheduler(manifest.video.scheduler)

    # --- the contract ----------------------------------------------------------------------
    def request(self, image: Any = None, num_frames: int | None = None, steps: int | None = None, seed: int = 0,
                height: int | None = None, width: int | None = None, decode_chunk: int | None = None,
                fps: int | None = None, motion_bucket_id: int | None = None,
                noise_aug_strength: float | None = None, min_guidance_scale: float | None = None,
                max_guidance_scale: float | None = None, latents: np.ndarray | None = None,
                noise: np.ndarray | None = None, decode_tile: int | None = None,
                decode_tile_overlap: int | None = None, slices: int | None = None, step_cache: Any = None,
                cache_swap: str | None = None, work_dir: Any = None) -> SvdRequest:
        """Check every option (unset ones: the package's defaults) and draw the seeded noise; see
        VideoPipeline.generate for the options and the errors."""
        c = self.manifest.video.conditioning
        pixels = read_image(image)
        frames = positive("num_frames", c.num_frames if num_frames is None else num_frames)
        steps = positive("steps", c.num_inference_steps if steps is None else steps)
        height = positive("height", c.height if height is None else height)
        width = positive("width", c.width if width is None else width)
        if height % c.size_multiple or width % c.size_multiple:
            raise InvalidArgumentError(f"height and width must be multiples of {c.size_multiple} for this package, "
                                       f"got {height}x{width}")
        if decode_chunk is None:
            decode_chunk = c.decode_chunk_size
        chunk = frames if decode_chunk is None else min(positive("decode_chunk", decode_chunk), frames)
        decode = DecodeSettings(chunk, decode_tile, decode_tile_overlap)
        slices = 1 if slices is None else positive("slices", slices)
        if slices > 1 and not self.manifest.video.op_groups:
            raise InvalidArgumentError(f"{self.manifest.root} has no operator groups to slice; re-export it with "
                                       "`edgekit export DIR --task video --op-groups`, or drop --slices")
        cache = parse_step_cache(self._calibrated() if step_cache == "auto" else step_cache)
        split = split_unet(self.manifest.unet_graphs, self.manifest.video.op_groups, cache.depth) if cache.enabled else None
        swap, folder = check_swap(cache_swap, work_dir)
        if swap != "off" and not cache.enabled:
            raise InvalidArgumentError(f"cache swap {swap!r} moves the step cache's feature; it needs a step cache "
                                       "(--step-cache interval:N or adaptive:T), or drop --cache-swap")
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
        noise = _given("noise", noise, (1, 3, height, width), rng)  # drawn first, as in every release so far
        latents = _given("latents", latents, latent_shape, rng)
        return SvdRequest(pixels=pixels, num_frames=frames, steps=steps, height=height, width=width, latents=latents,
                          noise=noise, conditioning=conditioning, slices=slices,
                          decode=decode, step_cache=cache, split=split, cache_swap=swap, swap_folder=folder)

    def _calibrated(self) -> str | None:
        """The setting `edgekit calibrate --target-psnr` stored (None: it found none that kept the
        target: run uncached); InvalidArgumentError when the package was never calibrated."""
        calibration = self.manifest.video.step_cache
        if calibration is None:
            raise InvalidArgumentError(f"step cache 'auto' reads the calibrated setting, and {self.manifest.root} has "
                                       "none; run `edgekit calibrate PKG --target-psnr DB` first, or give a setting")
        return calibration["setting"]

    def schedule(self, steps: int) -> Schedule:
        return self.scheduler.schedule(steps)

    def prepare(self, request: SvdRequest, stats: VideoStats) -> Prepared:
        """CLIP embeddings and VAE latents of the (noise-augmented) image, guidance batch first."""
        conditioning, frames = request.conditioning, request.num_frames
        stats.decode_chunk, stats.guidance, stats.window = request.decode.chunk, conditioning.guidance, self.window
        stats.slices, stats.op_groups = request.slices, len(self.manifest.video.op_groups)
        embeddings = with_unconditional(self.encode_image(request.pixels, stats), conditioning)
        augmented = (vae_input(request.pixels, request.height, request.width)
                     + np.float32(conditioning.noise_aug_strength) * request.noise)
        image_latents = self._run_single("vae_encoder", {"image": augmented.astype(np.float32)}, stats)
        image_latents = with_unconditional(image_latents, conditioning)
        image_latents = np.repeat(image_latents[:, None], frames, axis=1)
        state = SvdState(conditioning=conditioning, embeddings=embeddings, image_latents=image_latents,
                         time_ids=added_time_ids(conditioning), ramp=guidance_ramp(conditioning, frames))
        return Prepared(latents=request.latents, state=state)

    def network(self, request: SvdRequest) -> Network:
        """StreamedUNet, or CachedUNet with the request's step cache and swap."""
        if request.split is not None:
            return CachedUNet(self.manifest.unet_graphs, self.manifest.root, self.backend.load, self.window,
                              request.step_cache, request.split, CacheSwap(request.cache_swap, request.swap_folder),
                              op_groups=self.manifest.video.op_groups, slices=request.slices)
        return StreamedUNet(self.manifest.unet_graphs, self.manifest.root, self.backend.load, self.window,
                            op_groups=self.manifest.video.op_groups, slices=request.slices)

    def predict(self, network: Network, latents: np.ndarray, t: np.float32, prepared: Prepared,
                last_step: bool) -> np.ndarray:
        """One UNet evaluation on [latents x guidance batch, image latents] (channels), guided."""
        state: SvdState = prepared.state
        batch = state.conditioning.batch
        sample = np.concatenate([np.concatenate([latents] * batch, axis=0), state.image_latents], axis=2)
        noise_pred = network.run({"sample": sample, "timestep": np.full((batch,), t, dtype=np.float32),
                                  "encoder_hidden_states": state.embeddings, "added_time_ids": state.time_ids},
                                 last_step=last_step)
        return guide(noise_pred, state.ramp, state.conditioning)

    def decode(self, latents: np.ndarray, settings: DecodeSettings, stats: VideoStats) -> np.ndarray:
        """Frames [F, H, W, 3] in [0, 1] from denoised latents [1, F, C, h, w], `settings.chunk`
        frames per decoder call (None: all at once).

        `settings.tile` (latent pixels, None: no tiles): when smaller than h or w, each chunk is
        decoded tile by tile, `tile` x `tile` latent tiles sharing `tile_overlap` latent pixels
        with their neighbours (None: tile // 4; must be in [0, tile/2)), blended with linear ramps
        across the overlaps (runtimes/video/tiles.py). Tiling bounds the decoder's activations per
        call but is an approximation (GroupNorm statistics and the receptive field cross tile
        borders); a tile at least as large as the latent is the untiled decode, bit for bit.
        """
        c = self.manifest.video.conditioning
        flat = latents.reshape(-1, *latents.shape[2:]) * np.float32(1.0 / c.scaling_factor)
        chunk = flat.shape[0] if settings.chunk is None else settings.chunk
        lh, lw = flat.shape[-2:]
        grid = None
        tile, overlap = settings.tile, settings.tile_overlap
        if tile is not None:
            stats.decode_tile, stats.decode_tile_overlap = tile, overlap
            if tile < lh or tile < lw:
                grid = box_weights(lh, lw, tile, overlap, c.vae_scale_factor)
        stats.decode_tiles = 1 if grid is None else len(grid)
        session = self.sessions.get("vae_decoder")
        opened = session is None
        if session is None:
            session = self.backend.load(self.manifest.root / self.manifest.graph("vae_decoder").path)
            stats.graphs_loaded += 1
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
            if opened:
                session.release()
        frames = np.concatenate(pieces, axis=0)
        return np.clip(frames / np.float32(2) + np.float32(0.5), 0.0, 1.0).transpose(0, 2, 3, 1).astype(np.float32)

    # --- pieces ----------------------------------------------------------------------------
    def encode_image(self, pixels: np.ndarray, stats: VideoStats) -> np.ndarray:
        """CLIP image embeddings [1, 1, D] of a [3, H, W] image in [0, 1]."""
        svd = self.svd
        feeds = {"pixel_values": clip_input(pixels, svd.clip_image_size, svd.image_mean, svd.image_std)}
        return self._run_single("image_encoder", feeds, stats)[:, None, :]

    def _run_single(self, role: str, feeds: dict[str, np.ndarray], stats: VideoStats) -> np.ndarray:
        if role in self.sessions:
            return self.sessions[role].run(feeds)[0]
        session = self.backend.load(self.manifest.root / self.manifest.graph(role).path)
        try:
            stats.graphs_loaded += 1
            stats.max_resident_graphs = max(stats.max_resident_graphs, 1)
            # encoders run once, on full-size images: return their activations to the OS before the
            # denoising starts (measured, mid-size SVD 256x256: 444 -> 224 MiB resident at denoise start)
            return session.run(feeds, shrink_arena=True)[0]
        finally:
            session.release()
            trim_heap()  # what the released session held goes back to the OS too


def _given(name: str, value: np.ndarray | None, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if value is None:
        return rng.standard_normal(shape, dtype=np.float32)
    array = np.asarray(value, dtype=np.float32)
    if array.shape != shape:
        raise InvalidArgumentError(f"{name} has shape {tuple(array.shape)}, expected {shape} for this run")
    return array
