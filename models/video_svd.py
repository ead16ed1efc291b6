"""Stable Video Diffusion (SVD) models from configs: tiny ones for tests and offline demos, and
the mid-size benchmark model (`build_mid_svd`, MID_* configs below) for `edgekit bench video`.

The configs are diffusers' own SVD test dummy sizes (tests/pipelines/stable_video_diffusion;
`sample_size` 16 and `num_frames` 4 are edgekit's defaults for 32-pixel, 4-frame videos):
a 1.8M-parameter `UNetSpatioTemporalConditionModel` (block_out_channels 32/64, one cross-attention
down block, 8 heads), a 0.67M-parameter `AutoencoderKLTemporalDecoder` (32/64: VAE scale factor 2),
a 5-layer `CLIPVisionModelWithProjection` with image_size 32 and patch_size 1, and the SVD Euler
scheduler config (v-prediction, continuous timesteps, Karras sigmas 0.002..700).

This module holds plain dicts at import time; torch, transformers and diffusers are imported
only by `build_tiny_svd` (which `build_mid_svd` calls).

Example::

    path = build_tiny_svd(Path("/tmp/tiny-svd"))     # a diffusers-layout directory
    # StableVideoDiffusionPipeline.from_pretrained(path) loads it; `edgekit export path --task video`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_UNET: dict[str, Any] = {
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "sample_size": 16,  # latent size: 32-pixel videos with the tiny VAE (scale factor 2)
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "cross_attention_dim": 32,
    "num_attention_heads": 8,
    "projection_class_embeddings_input_dim": 96,
    "addition_time_embed_dim": 32,
    "num_frames": 4,
}

TINY_VAE: dict[str, Any] = {
    "block_out_channels": [32, 64],
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "latent_channels": 4,
}

TINY_CLIP: dict[str, Any] = {
    "hidden_size": 32,
    "projection_dim": 32,
    "num_hidden_layers": 5,
    "num_attention_heads": 4,
    "image_size": 32,
    "intermediate_size": 37,
    "patch_size": 1,
}

SVD_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "sigma_max": 700.0,
    "sigma_min": 0.002,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "timestep_type": "continuous",
    "trained_betas": None,
    "use_karras_sigmas": True,
}


# --- the mid-size benchmark configuration (`edgekit bench video`) ---------------------------
# The real SVD VAE layout (stabilityai/stable-video-diffusion-img2vid's vae/config.json, written
# by hand: 97.7M parameters, 128/256/512/512, two resnets per block, scale factor 8), a UNet with
# SVD's block structure at a quarter of its width (64/128/256/256 instead of 320/640/1280/1280,
# 64-dimensional heads as in SVD) and a 2-layer CLIP vision encoder at SVD's 224-pixel input.
MID_UNET: dict[str, Any] = {
    "block_out_channels": (64, 128, 256, 256),
    "layers_per_block": 2,
    "sample_size": 32,  # latent size: 256-pixel videos with the real VAE (scale factor 8)
    "in_channels": 8,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlockSpatioTemporal", "CrossAttnDownBlockSpatioTemporal",
                         "CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    "up_block_types": ("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal",
                       "CrossAttnUpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    "cross_attention_dim": 128,
    "num_attention_heads": (1, 2, 4, 4),
    "transformer_layers_per_block": 1,
    "projection_class_embeddings_input_dim": 768,
    "addition_time_embed_dim": 256,
    "num_frames": 8,
}

MID_VAE: dict[str, Any] = {
    "block_out_channels": [128, 256, 512, 512],
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "layers_per_block": 2,
    "latent_channels": 4,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "force_upcast": True,
}

MID_CLIP: dict[str, Any] = {
    "hidden_size": 128,
    "projection_dim": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 224,
    "intermediate_size": 512,
    "patch_size": 14,
}


def build_mid_svd(out: Path, seed: int = 0) -> Path:
    """The mid-size benchmark SVD (MID_UNET, MID_VAE, MID_CLIP; random weights, seeded) at `out`."""
    return build_tiny_svd(out, seed=seed, unet=MID_UNET, vae=MID_VAE, clip=MID_CLIP, replace=True)


def build_tiny_svd(out: Path, seed: int = 0, unet: dict[str, Any] | None = None,
                   vae: dict[str, Any] | None = None, clip: dict[str, Any] | None = None,
                   scheduler: dict[str, Any] | None = None, replace: bool = False) -> Path:
    """Build a randomly initialised SVD pipeline and save it as a diffusers directory at `out`.

    Writes model_index.json, unet/, vae/, image_encoder/, scheduler/ and feature_extractor/
    (safetensors weights). `unet`, `vae` and `clip` update the tiny configs (or, with
    `replace=True`, replace them). Each model is initialised after `torch.manual_seed(seed)`, as
    diffusers' tests do, so the same seed gives the same weights. Returns `out`.
    """
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    base_unet, base_vae, base_clip = ({}, {}, {}) if replace else (TINY_UNET, TINY_VAE, TINY_CLIP)
    clip_config = {**base_clip, **(clip or {})}
    torch.manual_seed(seed)
    unet_model = UNetSpatioTemporalConditionModel(**{**base_unet, **(unet or {})})
    torch.manual_seed(seed)
    vae_model = AutoencoderKLTemporalDecoder(**{**base_vae, **(vae or {})})
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**clip_config))
    size = clip_config["image_size"]
    feature_extractor = CLIPImageProcessor(crop_size=size, size=size)
    pipeline = StableVideoDiffusionPipeline(
        vae=vae_model, image_encoder=image_encoder, unet=unet_model,
        scheduler=EulerDiscreteScheduler(**{**SVD_SCHEDULER, **(scheduler or {})}),
        feature_extractor=feature_extractor,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out)
    return out
