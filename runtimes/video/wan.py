"""The Wan 2.1 family (text to video): the second `VideoFamily`.

The run reproduces diffusers' WanPipeline (0.42) step for step:

1. the prompt (and, with guidance, the negative prompt; the package's default is "") cleaned,
   tokenized to `max_sequence_length` and encoded by the UMT5 graph, positions past each
   prompt's length zeroed (runtimes/video/wan_text.py);
2. flow-matching denoising (the driver's loop) with the package's scheduler
   (runtimes/video/flow_schedulers.py: UniPC in flow-prediction mode, or flow-match Euler): per
   step the DiT (`StreamedDiT`, runtimes/video/dit.py: embed, blocks and head graphs streamed
   with at most `window` resident) predicts the flow; with guidance (guidance_scale > 1) the
   unconditional and conditional halves run as one batch of 2 and combine as
   uncond + scale * (cond - uncond) (diffusers runs them as two calls of 1: equal up to float
   rounding);
3. the latents mapped to latents * latents_std + latents_mean and decoded by the causal VAE one
   latent frame at a time, its feature cache carried between calls (runtimes/video/wan_decode.py):
   exact, not approximate (the first latent frame alone, then `decode_chunk` latent frames per
   call, 1 by default as diffusers does), clamped to [-1, 1] and mapped to [0, 1].

Latents are [1, C, T, h, w] (diffusers' Wan layout: channels before frames), T = (F - 1) / 4 + 1
latent frames for F frames. Randomness: `seed` drives numpy's default_rng (the initial latents);
`latents` supplies them explicitly (how the tests reproduce a diffusers run).
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
from edgekit.runtimes.video.cached_dit import CachedDiT, check_block_depth
from edgekit.runtimes.video.dit import StreamedDiT
from edgekit.runtimes.video.driver import VideoStats
from edgekit.runtimes.video.family import DecodeSettings, Network, Prepared, positive
from edgekit.runtimes.video.flow_schedulers import flow_schedule
from edgekit.runtimes.video.scheduler import Schedule
from edgekit.runtimes.video.step_cache import StepCache, parse_step_cache
from edgekit.runtimes.video.wan_decode import WanDecoder
from edgekit.runtimes.video.wan_rope import token_grid
from edgekit.runtimes.video.wan_text import PromptTokenizer, check_prompt, keep_prompt_positions


@dataclass(frozen=True)
class WanRequest:
    """One checked Wan run: prompts, sizes, guidance, the initial latents (drawn or given)."""

    prompt: str
    negative_prompt: str
    num_frames: int
    steps: int
    height: int
    width: int
    guidance_scale: float
    latents: np.ndarray
    decode: DecodeSettings
    step_cache: StepCache = StepCache()
    cache_swap: str = "off"
    swap_folder: Path | None = None  # --cache-swap disk: the work folder, checked writable

    @property
    def guidance(self) -> bool:
        return self.guidance_scale > 1.0  # as diffusers' do_classifier_free_guidance


@dataclass(frozen=True)
class WanState:
    """What every DiT step reads: the text embeddings, guidance batch first ([uncond, cond])."""

    context: np.ndarray  # [B, L, text_dim]
    guidance_scale: float
    guidance: bool


class WanFamily:
    """Wan 2.1 text-to-video over an edgekit video package (manifest `video.wan`)."""

    name: ClassVar[str] = "wan"

    def __init__(self, manifest: Manifest, backend: Backend, window: int = 2,
                 sessions: Mapping[str, Session] | None = None) -> None:
        if manifest.video is None or manifest.video.wan is None:
            raise InvalidArgumentError(f"{manifest.root} has no video.wan section; the wan family runs wan packages")
        self.manifest, self.backend, self.window = manifest, backend, positive("window", window)
        self.wan = manifest.video.wan
        self.frame_rate = int(self.wan.fps)
        # open sessions by role, used instead of loading the package's graph: "text_encoder"
        # (encode_prompts) and "vae_decoder_whole" (decode in one call; the one-graph baseline)
        self.sessions = dict(sessions or {})

    # --- the contract ----------------------------------------------------------------------
    def request(self, image: Any = None, prompt: Any = None, negative_prompt: Any = None,
                num_frames: int | None = None, steps: int | None = None, seed: int = 0, height: int | None = None,
                width: int | None = None, guidance_scale: float | None = None, latents: np.ndarray | None = None,
                decode_chunk: int | None = None, step_cache: Any = None, cache_swap: str | None = None,
                work_dir: Any = None) -> WanRequest:
        """Check every option (unset ones: the package's defaults) and draw the seeded latents.

        Refused in one line, before anything runs: an image (Wan packages are text to video), a
        missing or empty prompt, frames not of the form 4k+1, sizes that are not multiples of the
        package's size multiple (VAE scale x patch), a negative guidance scale, latents of the
        wrong shape, a bad seed or decode chunk, a bad block-cache setting or depth, a cache swap
        without a cache, an unwritable work folder for the disk swap.

        `step_cache`: the block cache (runtimes/video/cached_dit.py): "adaptive:T" is
        First-Block-Cache at threshold T, "interval:N" a full step every N; `cache_swap` "off",
        "host" or "disk" (in `work_dir`) is where the cached residual waits between steps."""
        if image is not None:
            raise InvalidArgumentError(f"{self.manifest.root} is a text-to-video (wan) package; it takes --prompt, "
                                       "not --image")
        if prompt is None:
            raise InvalidArgumentError("wan packages need a prompt (--prompt TEXT or --prompt-file FILE)")
        prompt = check_prompt(prompt)
        negative = check_prompt(self.wan.negative_prompt if negative_prompt is None else negative_prompt,
                                "negative_prompt")
        c = self.manifest.video.conditioning
        temporal = self.wan.vae_scale_factor_temporal
        frames = positive("num_frames", c.num_frames if num_frames is None else num_frames)
        if (frames - 1) % temporal:
            below = (frames - 1) // temporal * temporal + 1
            raise InvalidArgumentError(f"num_frames must be of the form {temporal}k+1 (the causal VAE decodes 1 + "
                                       f"{temporal}(T-1) frames), got {frames}; use {below} or {below + temporal}")
        steps = positive("steps", c.num_inference_steps if steps is None else steps)
        height = positive("height", c.height if height is None else height)
        width = positive("width", c.width if width is None else width)
        if height % c.size_multiple or width % c.size_multiple:
            raise InvalidArgumentError(f"height and width must be multiples of {c.size_multiple} for this package "
                                       f"(VAE scale factor x patch size), got {height}x{width}")
        given = self.wan.guidance_scale if guidance_scale is None else guidance_scale
        if isinstance(given, bool) or not isinstance(given, (int, float, np.integer, np.floating)):
            raise InvalidArgumentError(f"guidance_scale must be a number, got {type(given).__name__}")
        scale = float(given)
        if not np.isfinite(scale) or scale < 0:
            raise InvalidArgumentError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        decode = DecodeSettings(chunk=None if decode_chunk is None else positive("decode_chunk", decode_chunk))
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative integer, got {seed!r}")
        cache = parse_step_cache(self._calibrated() if step_cache == "auto" else step_cache)
        check_block_depth(cache, len(self.manifest.graphs_by_role("dit_block")))
        swap, folder = check_swap(cache_swap, work_dir)
        if swap != "off" and not cache.enabled:
            raise InvalidArgumentError(f"cache swap {swap!r} moves the block cache's residual; it needs a block cache "
                                       "(--step-cache interval:N or adaptive:T), or drop --cache-swap")
        shape = (1, c.latent_channels, (frames - 1) // temporal + 1, height // c.vae_scale_factor,
                 width // c.vae_scale_factor)
        # the token grid patches evenly and fits the rotary tables: checked now, before any compute
        token_grid(self.wan.patch_size, self.wan.rope_max_seq_len, *shape[2:])
        if latents is None:
            initial = np.random.default_rng(int(seed)).standard_normal(shape, dtype=np.float32)
        else:
            try:
                initial = np.asarray(latents, dtype=np.float32)
            except (TypeError, ValueError):
                raise InvalidArgumentError(f"latents must be a float array of shape {shape}") from None
            if initial.shape != shape:
                raise InvalidArgumentError(f"latents has shape {tuple(initial.shape)}, expected {shape} for this run "
                                           "([1, channels, latent frames, latent height, latent width])")
            if not np.isfinite(initial).all():
                raise InvalidArgumentError("latents hold NaN or inf; pass finite initial latents")
        return WanRequest(prompt=prompt, negative_prompt=negative, num_frames=frames, steps=steps, height=height,
                          width=width, guidance_scale=scale, latents=initial, decode=decode, step_cache=cache,
                          cache_swap=swap, swap_folder=folder)

    def _calibrated(self) -> str | None:
        """The setting a calibration stored in the package (None: run uncached)."""
        calibration = self.manifest.video.step_cache
        if calibration is None:
            raise InvalidArgumentError(f"step cache 'auto' reads the calibrated setting, and {self.manifest.root} has "
                                       "none (`edgekit calibrate` does not calibrate wan packages yet); give a "
                                       "setting (e.g. adaptive:0.05)")
        return calibration["setting"]

    def schedule(self, steps: int) -> Schedule:
        return flow_schedule(self.manifest.video.scheduler, steps)

    def prepare(self, request: WanRequest, stats: VideoStats) -> Prepared:
        """The prompt embeddings ([negative, prompt] with guidance) and the initial latents."""
        stats.decode_chunk, stats.guidance, stats.window = request.decode.chunk or 1, request.guidance, self.window
        prompts = [request.negative_prompt, request.prompt] if request.guidance else [request.prompt]
        context = self.encode_prompts(prompts, stats)
        return Prepared(latents=request.latents,
                        state=WanState(context=context, guidance_scale=request.guidance_scale,
                                       guidance=request.guidance))

    def network(self, request: WanRequest) -> Network:
        """The package's DiT, its graphs streamed (runtimes/video/dit.py), with the request's block
        cache and swap when it has one (runtimes/video/cached_dit.py)."""
        graphs = (self.manifest.graph("dit_embed"), self.manifest.graphs_by_role("dit_block"),
                  self.manifest.graph("dit_head"), self.manifest.root, self.backend.load, self.window)
        rope = {"patch_size": self.wan.patch_size, "attention_head_dim": self.wan.attention_head_dim,
                "rope_max_seq_len": self.wan.rope_max_seq_len, "theta": self.wan.rope_theta}
        if request.step_cache.enabled:
            return CachedDiT(*graphs, settings=request.step_cache,
                             swap=CacheSwap(request.cache_swap, request.swap_folder), **rope)
        return StreamedDiT(*graphs, **rope)

    def predict(self, network: Network, latents: np.ndarray, t: np.float32, prepared: Prepared,
                last_step: bool) -> np.ndarray:
        """One DiT evaluation (the guidance batch at once), guided."""
        state: WanState = prepared.state
        batch = state.context.shape[0]
        sample = np.concatenate([latents] * batch, axis=0) if batch > 1 else latents
        flow = network.run({"latents": sample, "timestep": np.full((batch,), t, dtype=np.float32),
                            "encoder_hidden_states": state.context}, last_step=last_step)
        if not state.guidance:
            return flow
        uncond, cond = flow[:1], flow[1:]
        return (uncond + np.float32(state.guidance_scale) * (cond - uncond)).astype(np.float32)

    def decode(self, latents: np.ndarray, settings: DecodeSettings, stats: VideoStats) -> np.ndarray:
        """Frames [F, H, W, 3] in [0, 1] from denoised latents [1, C, T, h, w]: the first latent
        frame alone, then `settings.chunk` latent frames per decoder call (None: 1), exact. With a
        "vae_decoder_whole" session given at construction (the bench's one-graph baseline,
        exporters/wan_vae.export_whole_decoder, exported for this T) the de-normalised latents are
        decoded by it in one call instead; the caller opened it and keeps it open."""
        if settings.tile is not None:
            raise InvalidArgumentError("wan packages decode without spatial tiles (Wan's causal VAE decodes exactly "
                                       "frame by frame; tiles would be approximate); drop --decode-tile and use "
                                       "--decode-chunk N to trade memory for calls")
        c = self.manifest.video.conditioning
        if not isinstance(latents, np.ndarray) or latents.ndim != 5 or latents.shape[:2] != (1, c.latent_channels):
            shape = tuple(latents.shape) if isinstance(latents, np.ndarray) else type(latents).__name__
            raise InvalidArgumentError(f"latents must be an array [1, {c.latent_channels}, T, h, w], got {shape}")
        mean = np.asarray(self.wan.latents_mean, dtype=np.float32).reshape(1, -1, 1, 1, 1)
        inverse_std = (np.float32(1.0) / np.asarray(self.wan.latents_std, dtype=np.float32)).reshape(1, -1, 1, 1, 1)
        denormalised = (latents.astype(np.float32) / inverse_std + mean).astype(np.float32)  # as WanPipeline
        whole = self.sessions.get("vae_decoder_whole")
        if whole is not None:  # the bench's one-graph baseline: every latent frame in one call
            video = whole.run({whole.input_names[0]: denormalised})[0]
        else:
            decoder = WanDecoder(self.manifest.graph("vae_decoder_first"), self.manifest.graph("vae_decoder_next"),
                                 self.manifest.root, self.backend.load)
            video = decoder.decode(denormalised, chunk=settings.chunk or 1)  # [1, 3, F, H, W] in [-1, 1]
            stats.graphs_loaded += decoder.loads
        stats.max_resident_graphs = max(stats.max_resident_graphs, 1)
        frames = video[0].transpose(1, 2, 3, 0)
        return np.clip(frames / np.float32(2) + np.float32(0.5), 0.0, 1.0).astype(np.float32)

    # --- pieces ----------------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], stats: VideoStats) -> np.ndarray:
        """UMT5 embeddings [len(prompts), max_sequence_length, text_dim], zero past each prompt."""
        tokenizer = PromptTokenizer(self.manifest.root / self.wan.tokenizer.file, self.wan.max_sequence_length)
        ids, mask = tokenizer(prompts)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "text_encoder" in self.sessions:
            embeddings = self.sessions["text_encoder"].run(feeds)[0]
        else:
            session = self.backend.load(self.manifest.root / self.manifest.graph("text_encoder").path)
            try:
                stats.graphs_loaded += 1
                stats.max_resident_graphs = max(stats.max_resident_graphs, 1)
                embeddings = session.run(feeds, shrink_arena=True)[0]
            finally:
                session.release()
                trim_heap()
        return keep_prompt_positions(embeddings, mask)

