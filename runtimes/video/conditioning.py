"""SVD's conditioning in numpy: added time ids, classifier-free guidance and its per-frame ramp.

Mirrors diffusers' StableVideoDiffusionPipeline (0.42) for one video per call (batch 1):

* added_time_ids = [fps - 1, motion_bucket_id, noise_aug_strength] (the UNet was trained on
  fps - 1), one row per UNet batch entry; duplicated for guidance.
* guidance is on when max_guidance_scale > 1. The UNet batch is then [unconditional,
  conditional]: the unconditional half gets zero image embeddings and zero image latents.
* the guidance scale ramps linearly over frames, from min_guidance_scale on the first frame to
  max_guidance_scale on the last; noise_pred = uncond + scale[f] * (cond - uncond).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import InvalidArgumentError


@dataclass(frozen=True)
class Conditioning:
    """Per-call conditioning values (defaults come from the package manifest)."""

    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float

    def __post_init__(self) -> None:
        if self.fps < 1:
            raise InvalidArgumentError(f"fps must be >= 1, got {self.fps}")
        if self.noise_aug_strength < 0:
            raise InvalidArgumentError(f"noise_aug_strength must be >= 0, got {self.noise_aug_strength}")

    @property
    def guidance(self) -> bool:
        return self.max_guidance_scale > 1

    @property
    def batch(self) -> int:
        """UNet batch entries per step: 2 with guidance (uncond, cond), else 1."""
        return 2 if self.guidance else 1


def added_time_ids(conditioning: Conditioning) -> np.ndarray:
    """[batch, 3] float32: [fps - 1, motion_bucket_id, noise_aug_strength] per UNet batch entry."""
    row = np.array([[conditioning.fps - 1, conditioning.motion_bucket_id, conditioning.noise_aug_strength]],
                   dtype=np.float32)
    return np.repeat(row, conditioning.batch, axis=0)


def with_unconditional(values: np.ndarray, conditioning: Conditioning) -> np.ndarray:
    """Prepend an all-zero unconditional entry when guidance is on ([1, ...] -> [2, ...])."""
    if not conditioning.guidance:
        return values
    return np.concatenate([np.zeros_like(values), values], axis=0)


def guidance_ramp(conditioning: Conditioning, num_frames: int) -> np.ndarray:
    """[1, F, 1, 1, 1] float32: linspace(min_guidance_scale, max_guidance_scale, F)."""
    ramp = np.linspace(conditioning.min_guidance_scale, conditioning.max_guidance_scale, num_frames,
                       dtype=np.float64).astype(np.float32)
    return ramp.reshape(1, num_frames, 1, 1, 1)


def guide(noise_pred: np.ndarray, ramp: np.ndarray, conditioning: Conditioning) -> np.ndarray:
    """Combine the UNet's [batch, F, C, h, w] prediction into [1, F, C, h, w]."""
    if not conditioning.guidance:
        return noise_pred
    uncond, cond = noise_pred[:1], noise_pred[1:]
    return (uncond + ramp * (cond - uncond)).astype(np.float32)
