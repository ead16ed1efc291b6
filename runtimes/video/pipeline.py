"""Image-to-video generation from an edgekit video package, numpy and a graph backend only.

`VideoPipeline` is the public API (`edgekit.load` returns it for video packages). It picks the
package's family from the registry (runtimes/video/families.py; SVD: runtimes/video/svd.py,
which says what the run computes) and runs it with the one driver (runtimes/video/driver.py:
encode -> denoise -> decode, stage times and memory in `stats`).

Randomness: `seed` drives numpy's default_rng (SVD: noise-augmentation noise first, then the
initial latents); pass `latents` [1, F, C, h, w] and `noise` [1, 3, H, W] to supply both
explicitly. Output: float32 frames [F, H, W, 3] in [0, 1].

Example::

    pipeline = edgekit.load("svd-pkg")                 # a VideoPipeline for video packages
    frames = pipeline.generate("in.png", num_frames=4, steps=2, seed=0)
    pipeline.stats.to_dict()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.manifest import Manifest
from edgekit.runtimes.backends import Backend, backend_for
from edgekit.runtimes.video.driver import Progress, VideoStats, generate
from edgekit.runtimes.video.families import family_for
from edgekit.runtimes.video.family import DecodeSettings, StageObserver, VideoFamily, positive

__all__ = ["VideoPipeline", "VideoStats"]


class VideoPipeline:
    """A loaded video package. `generate` runs one image-to-video generation.

    `stats`: what the last call did. `latents`: the denoised latents of the last `generate`
    ([1, F, C, h, w], what `decode` takes: decode them again with other settings without
    denoising again). `observers`: StageObservers told when each stage starts and ends.
    `backend` may be replaced between calls (each call binds the family to the current one).
    """

    def __init__(self, manifest: Manifest, backend: Backend | None = None, window: int | None = None) -> None:
        self.manifest = manifest
        self.backend = backend or backend_for("onnx")
        self.window = positive("window", 2 if window is None else window)
        family = self._family()  # refuses a package of no registered video family, now
        self.svd = manifest.video.svd  # the SVD conditioning defaults (the CLI writes the GIF at svd.fps)
        self.family_name = family.name
        self.stats = VideoStats()
        self.latents: np.ndarray | None = None
        self.observers: list[StageObserver] = []

    def _family(self) -> VideoFamily:
        return family_for(self.manifest, self.backend, self.window)

    def decode(self, latents: np.ndarray, decode_chunk: int | None = None, tile: int | None = None,
               tile_overlap: int | None = None) -> np.ndarray:
        """Frames [F, H, W, 3] in [0, 1] from denoised latents [1, F, C, h, w], `decode_chunk`
        frames per decoder call (None: all at once), in spatial tiles of `tile` latent pixels
        sharing `tile_overlap` (None: untiled); the family's decode (SVD: runtimes/video/svd.py)."""
        return self._family().decode(latents, DecodeSettings(decode_chunk, tile, tile_overlap), self.stats)

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
        bad decode tile settings, slices on a package without operator groups), before anything runs.
        `decode_tile` / `decode_tile_overlap`: spatial decode tiles (see `decode`). `slices`
        (packages exported with operator groups): run each UNet operator group over that many
        slices of its axis (frames, videos or pixels; fewer where the axis has fewer units);
        exact, it bounds the groups' activations (runtimes/video/unet.py).
        """
        family = self._family()
        request = family.request(image=image, num_frames=num_frames, steps=steps, seed=seed, height=height,
                                 width=width, decode_chunk=decode_chunk, fps=fps, motion_bucket_id=motion_bucket_id,
                                 noise_aug_strength=noise_aug_strength, min_guidance_scale=min_guidance_scale,
                                 max_guidance_scale=max_guidance_scale, latents=latents, noise=noise,
                                 decode_tile=decode_tile, decode_tile_overlap=decode_tile_overlap, slices=slices)
        result = generate(family, request, observers=self.observers, progress=progress)
        self.stats, self.latents = result.stats, result.latents
        return result.frames
