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

import inspect
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError
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
        # refuses a package of no registered video family, now; the frame rate is the package's
        self.frame_rate = self._family().frame_rate
        self.stats = VideoStats()
        self.latents: np.ndarray | None = None
        self.observers: list[StageObserver] = []

    def _family(self) -> VideoFamily:
        return family_for(self.manifest, self.backend, self.window)

    def decode(self, latents: np.ndarray, decode_chunk: int | None = None, tile: int | None = None,
               tile_overlap: int | None = None) -> np.ndarray:
        """Frames [F, H, W, 3] in [0, 1] from denoised latents (SVD: [1, F, C, h, w]; Wan:
        [1, C, T, h, w]), `decode_chunk` frames (Wan: latent frames) per decoder call (None: the
        family's default: SVD all at once, Wan one), in spatial tiles of `tile` latent pixels
        sharing `tile_overlap` (None: untiled); the family's decode (SVD: runtimes/video/svd.py)."""
        return self._family().decode(latents, DecodeSettings(decode_chunk, tile, tile_overlap), self.stats)

    def generate(self, image: Any = None, *, progress: Progress | None = None, **options: Any) -> np.ndarray:
        """Generate a video; returns float32 frames [F, H, W, 3] in [0, 1].

        The options are the family's (`family.request`; SVD: runtimes/video/svd.py `request`):
        image-to-video SVD takes `image` and `num_frames`, `steps`, `seed`, `height`, `width`,
        `decode_chunk`, `fps`, `motion_bucket_id`, `noise_aug_strength`, `min_guidance_scale`,
        `max_guidance_scale`, `latents` [1, F, C, h, w] and `noise` [1, 3, H, W] (replacing the
        seeded draws), `decode_tile` / `decode_tile_overlap` (spatial decode tiles, see `decode`)
        and `slices` (packages exported with operator groups: each UNet operator group runs over
        that many slices of its axis; exact, it bounds the groups' activations), `step_cache`
        ("interval:3", "adaptive:0.05,max-skip:2", ...; "auto": the calibrated setting; reuses deep
        UNet features across steps, approximate; runtimes/video/step_cache.py), `cache_swap`
        ("off", "host", "disk") and `work_dir` (where "disk" writes its file). Unset options
        take the package's defaults. Raises InvalidArgumentError for an option the family does not
        take and for bad input (missing or non-RGB image, zero frames, sizes that are not
        multiples of the package's size_multiple, wrong latents/noise shapes, bad decode tile
        settings, slices on a package without operator groups, a bad step-cache setting or depth, an
        unwritable work folder for the disk swap), before anything runs.
        """
        family = self._family()
        accepted = [name for name in inspect.signature(family.request).parameters if name != "image"]
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InvalidArgumentError(f"{unknown[0]!r} is not an option of the {family.name} family; it takes "
                                       f"{', '.join(accepted)}")
        request = family.request(image=image, **options)
        result = generate(family, request, observers=self.observers, progress=progress)
        self.stats, self.latents = result.stats, result.latents
        return result.frames

    @property
    def fps(self) -> int:
        """Frames per second the package's videos play at (the GIF's frame rate)."""
        return self.frame_rate
