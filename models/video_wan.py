"""Wan 2.1 text-to-video models from configs: the tiny pipeline for tests and offline demos, and
the mid-size benchmark model (`build_mid_wan`) for `edgekit bench video --family wan`.

The tiny configs are diffusers' own Wan test dummy sizes (tests/pipelines/wan/test_wan.py): a
2-block `WanTransformer3DModel` (2 heads of 12, patch 1x2x2, text_dim 32), an
`AutoencoderKLWan` with base_dim 3 and z_dim 16 (scale factor 8 in space, 4 in time), a 2-layer
UMT5 encoder of width 32, and a unigram `T5Tokenizer` built in process from a small vocabulary
(no download). The scheduler is Wan's own: `UniPCMultistepScheduler` in flow-prediction mode
(`use_flow_sigmas`, `flow_shift` 3.0, Wan 2.1's 480p setting).

The mid-size model keeps the real Wan 2.1 VAE layout (base_dim 96, dim_mult 1/2/4/4, two
res blocks) and a transformer with the 1.3B model's block shape (12 heads of 128, ffn 8960,
text_dim 4096, freq_dim 256) but fewer blocks, and a small UMT5 (the 1.3B model's text encoder
is the 5.7B-parameter umt5-xxl, which does not fit a 15-minute CPU bench).

This module holds plain dicts at import time; torch, transformers and diffusers are imported
only by the builders.

Example::

    path = build_tiny_wan(Path("/tmp/tiny-wan"))     # a diffusers-layout directory
    # WanPipeline.from_pretrained(path) loads it; `edgekit export path --out VPKG`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TINY_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}

TINY_VAE: dict[str, Any] = {
    "base_dim": 3,
    "z_dim": 16,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "temperal_downsample": [False, True, True],
}

TINY_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 64,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
    "pad_token_id": 0,
    "eos_token_id": 1,
    "decoder_start_token_id": 0,
}

# Wan 2.1's scheduler (Wan-AI/Wan2.1-T2V-1.3B-Diffusers scheduler/scheduler_config.json, 480p shift)
WAN_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "solver_order": 2,
    "solver_type": "bh2",
    "predict_x0": True,
    "lower_order_final": True,
}

# --- the mid-size benchmark configuration ---------------------------------------------------
# Wan 2.1's VAE as released (Wan-AI/Wan2.1-T2V-1.3B-Diffusers vae/config.json: base_dim 96,
# dim_mult 1/2/4/4, num_res_blocks 2, z_dim 16, temporal downsample F/T/T).
MID_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
}

# The 1.3B transformer's block shape (1536 wide: 12 heads of 128, ffn 8960, text_dim 4096), 8 of
# its 30 blocks (46M parameters, 186 MB each): enough blocks that two resident are a small share.
MID_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 8,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
}

MID_TEXT_ENCODER: dict[str, Any] = {**TINY_TEXT_ENCODER, "d_model": 4096, "d_kv": 64, "d_ff": 1024, "num_layers": 1,
                                    "num_heads": 4}

# The tiny tokenizer's pieces besides the specials: lower-case letters and a few words, with the
# sentencepiece word-start marker, so ordinary English prompts tokenize to more than one piece.
_WORDS = ("a", "cat", "dog", "runs", "on", "the", "beach", "at", "sunset", "video", "of", "red", "blue", "car")


def tiny_tokenizer() -> Any:
    """A unigram T5Tokenizer over a small vocabulary (pad 0, eos 1, unk 2), built in process."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{word}", -3.0 - 0.1 * i) for i, word in enumerate(_WORDS)]
    pieces += [(chr(c), -8.0) for c in range(ord("a"), ord("z") + 1)]
    assert len(pieces) <= TINY_TEXT_ENCODER["vocab_size"], "the tiny tokenizer outgrew the encoder's vocabulary"
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_mid_wan(out: Path, seed: int = 0) -> Path:
    """The mid-size benchmark Wan (MID_TRANSFORMER, MID_VAE, MID_TEXT_ENCODER; random, seeded)."""
    return build_tiny_wan(out, seed=seed, transformer=MID_TRANSFORMER, vae=MID_VAE, text_encoder=MID_TEXT_ENCODER)


def build_tiny_wan(out: Path, seed: int = 0, transformer: dict[str, Any] | None = None,
                   vae: dict[str, Any] | None = None, text_encoder: dict[str, Any] | None = None,
                   scheduler: str = "unipc") -> Path:
    """Build a randomly initialised WanPipeline and save it as a diffusers directory at `out`.

    Writes model_index.json, transformer/, vae/, text_encoder/, tokenizer/ (tokenizer.json
    included) and scheduler/. `transformer`, `vae` and `text_encoder` update the tiny configs.
    `scheduler`: "unipc" (Wan's UniPC flow scheduler) or "euler" (FlowMatchEulerDiscreteScheduler,
    shift 7.0 as diffusers' Wan tests use). Each model is initialised after
    `torch.manual_seed(seed)`; the VAE's latents_mean/latents_std keep Wan's released values.
    Returns `out`.
    """
    import torch
    from diffusers import (
        AutoencoderKLWan,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    transformer_model = WanTransformer3DModel(**{**TINY_TRANSFORMER, **(transformer or {})})
    torch.manual_seed(seed)
    vae_model = AutoencoderKLWan(**{**TINY_VAE, **(vae or {})})
    torch.manual_seed(seed)
    encoder = UMT5EncoderModel(UMT5Config(**{**TINY_TEXT_ENCODER, **(text_encoder or {})}))
    if scheduler == "unipc":
        schedule = UniPCMultistepScheduler(**WAN_SCHEDULER)
    elif scheduler == "euler":
        schedule = FlowMatchEulerDiscreteScheduler(shift=7.0)
    else:
        raise ValueError(f"scheduler must be 'unipc' or 'euler', got {scheduler!r}")
    pipeline = WanPipeline(tokenizer=tiny_tokenizer(), text_encoder=encoder, vae=vae_model,
                           transformer=transformer_model, scheduler=schedule)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pipeline.save_pretrained(out)
    return out
