"""`edgekit export WAN_DIR`: a diffusers WanPipeline directory (Wan 2.1 text to video) -> a video package.

Pipeline: read the directory (model_index.json naming WanPipeline; text_encoder/, tokenizer/,
transformer/, vae/, scheduler/) -> export the UMT5 text encoder, the DiT's embeddings, one graph
per transformer block and its output head (exporters/wan_transformer.py) and the causal VAE
decoder as a first-chunk graph and a next-chunk graph carrying its feature cache
(exporters/wan_vae.py) with torch.onnx's dynamo exporter (the TorchScript exporter fails on
Wan's rms_norm and causal upsampling, FIELD-NOTES.md) -> check every graph against torch at two
shapes, the streamed DiT against diffusers' whole transformer and the frame-by-frame decode
against diffusers' `vae.decode` -> write the manifest -> move the package into place. Any failure
leaves no package behind.

Run defaults: a released Wan 2.1 transformer (30 or more blocks) gets diffusers' WanPipeline
defaults (81 frames at 480x832, 50 steps); smaller (test and bench) models get 9 frames at
64x64 and 10 steps, which a CPU runs in seconds. The scheduler config is the directory's.

Example::

    manifest = export_wan(Path("tiny-wan"), Path("wan-pkg"))
    [g.name for g in manifest.graphs], manifest.parity["dit_chained_max_abs_diff"]
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekit.atomic import check_destination, staged_directory
from edgekit.errors import InvalidArgumentError, SourceModelError
from edgekit.exporters.package_parts import versions
from edgekit.exporters.source import checkpoint_errors, load_failure, read_json_object
from edgekit.exporters.wan_transformer import CHAINED, WanShape, export_wan_transformer
from edgekit.exporters.wan_vae import export_wan_decoder
from edgekit.manifest import VIDEO_TASK, Manifest
from edgekit.package_files import FileEntry
from edgekit.runtimes.backends import backend_for
from edgekit.runtimes.video.flow_schedulers import check_flow_config
from edgekit.video_manifest import VideoConditioning, VideoSection
from edgekit.wan_manifest import WanConditioning

Progress = Callable[[str, int, int], None]

PIPELINE = "WanPipeline"
PARTS = ("text_encoder", "tokenizer", "transformer", "vae", "scheduler")
RELEASED_BLOCKS = 30  # Wan 2.1 1.3B has 30 blocks, 14B 40: a released model, diffusers' defaults apply
RELEASED_DEFAULTS = {"num_frames": 81, "num_inference_steps": 50, "height": 480, "width": 832}
SMALL_DEFAULTS = {"num_frames": 9, "num_inference_steps": 10, "height": 64, "width": 64}
GUIDANCE_SCALE = 5.0  # WanPipeline.__call__'s default
MAX_SEQUENCE_LENGTH = 512  # WanPipeline.__call__'s default prompt length (tokens)
FPS = 16  # Wan 2.1's frame rate (the diffusers example exports at 16 fps)
ROPE_THETA = 10000.0  # WanRotaryPosEmbed's default
TOLERANCE = 1e-4  # per graph and the chained DiT, relative to max(1, max |reference|); the decode loop: 1e-5


@dataclass
class WanSource:
    """A loaded WanPipeline directory: fp32 modules in eval mode, the scheduler config, the tokenizer file."""

    path: Path
    text_encoder: torch.nn.Module
    transformer: torch.nn.Module
    vae: torch.nn.Module
    scheduler: dict[str, Any]
    tokenizer_file: Path


def load_wan(source: Path) -> WanSource:
    """Load a diffusers Wan 2.1 text-to-video directory; SourceModelError names what is missing or
    unsupported (image-to-video and Wan 2.2's two transformers are not exported yet)."""
    source = Path(source)
    index = read_json_object(source / "model_index.json")
    if index.get("_class_name") != PIPELINE:
        raise SourceModelError(f"{source}: model_index.json names {index.get('_class_name')!r}; the wan family "
                               f"exports {PIPELINE} directories (text to video)")
    if index.get("transformer_2") not in (None, [None, None]) or index.get("boundary_ratio") is not None:
        raise SourceModelError(f"{source} is a Wan 2.2 pipeline with two transformers; edgekit exports Wan 2.1 "
                               "(one transformer)")
    if index.get("expand_timesteps"):
        raise SourceModelError(f"{source} is a Wan 2.2 TI2V pipeline (expand_timesteps: per-token timesteps); "
                               "edgekit exports Wan 2.1 text to video")
    for part in PARTS:
        if not (source / part).is_dir():
            raise SourceModelError(f"{source} has no {part}/ folder; save the whole pipeline with save_pretrained")
    tokenizer_file = source / "tokenizer" / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise SourceModelError(f"{source}/tokenizer has no tokenizer.json (the runtime tokenizes with it); save "
                               "the tokenizer with a transformers version that writes it")
    scheduler = {k: v for k, v in read_json_object(source / "scheduler" / "scheduler_config.json").items()
                 if k != "_diffusers_version"}
    try:
        check_flow_config(scheduler)
    except InvalidArgumentError as error:
        raise SourceModelError(f"{source}/scheduler: {error}") from None
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer",
                                                                torch_dtype=torch.float32)
            vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32)
            text_encoder = UMT5EncoderModel.from_pretrained(source / "text_encoder", dtype=torch.float32)
    except (*checkpoint_errors(), RuntimeError, ValueError) as error:
        raise load_failure("diffusers", source, error) from None
    if getattr(vae.config, "is_residual", False) or getattr(vae.config, "patch_size", None) is not None:
        raise SourceModelError(f"{source}: the VAE is Wan 2.2's (residual blocks, patchified output); edgekit "
                               "exports Wan 2.1's VAE")
    if transformer.config.image_dim is not None or transformer.config.added_kv_proj_dim is not None:
        raise SourceModelError(f"{source}: the transformer takes image embeddings (image to video); edgekit exports "
                               "Wan text-to-video pipelines")
    return WanSource(path=source, text_encoder=text_encoder.float().eval(), transformer=transformer.float().eval(),
                     vae=vae.float().eval(), scheduler=scheduler, tokenizer_file=tokenizer_file)


def _conditioning(src: WanSource) -> tuple[VideoConditioning, WanConditioning, str]:
    t, v = src.transformer.config, src.vae.config
    # as WanPipeline reads them (its config's scale factors where the VAE has them)
    spatial = int(getattr(v, "scale_factor_spatial", None) or 2 ** len(v.temperal_downsample))
    temporal = int(getattr(v, "scale_factor_temporal", None) or 2 ** sum(bool(x) for x in v.temperal_downsample))
    _, ph, pw = (int(x) for x in t.patch_size)
    defaults = RELEASED_DEFAULTS if int(t.num_layers) >= RELEASED_BLOCKS else SMALL_DEFAULTS
    conditioning = VideoConditioning(latent_channels=int(v.z_dim), vae_scale_factor=spatial, scaling_factor=1.0,
                                     size_multiple=spatial * max(ph, pw), **defaults)
    tokenizer_entry = "tokenizer/tokenizer.json"
    wan = WanConditioning(
        tokenizer=FileEntry(file=tokenizer_entry, sha256="", bytes=0),  # hashed once copied into the package
        max_sequence_length=MAX_SEQUENCE_LENGTH, text_dim=int(t.text_dim),
        patch_size=tuple(int(x) for x in t.patch_size),  # type: ignore[arg-type]
        attention_head_dim=int(t.attention_head_dim), rope_max_seq_len=int(t.rope_max_seq_len),
        rope_theta=ROPE_THETA, vae_scale_factor_temporal=temporal,
        latents_mean=tuple(float(x) for x in v.latents_mean), latents_std=tuple(float(x) for x in v.latents_std),
        guidance_scale=GUIDANCE_SCALE, negative_prompt="", fps=FPS)
    return conditioning, wan, tokenizer_entry


def export_wan(source: str | Path, out: Path, overwrite: bool = False, progress: Progress | None = None,
               max_sequence_length: int | None = None) -> Manifest:
    """Export a diffusers WanPipeline directory as a video package at `out` (atomically); returns
    its manifest. `max_sequence_length`: prompt tokens the package pads to (default 512, as
    WanPipeline)."""
    source, out = Path(source), Path(out)
    check_destination(out, source, overwrite)
    if max_sequence_length is not None and (isinstance(max_sequence_length, bool) or
                                            not isinstance(max_sequence_length, int) or max_sequence_length < 1):
        raise InvalidArgumentError(f"--max-length must be a positive integer, got {max_sequence_length!r}")
    report = progress or (lambda message, done, total: None)
    report("loading the diffusers pipeline", 0, 4)
    src = load_wan(source)
    conditioning, wan, tokenizer_entry = _conditioning(src)
    if max_sequence_length is not None:
        wan = dataclasses.replace(wan, max_sequence_length=max_sequence_length)
    backend = backend_for("onnx", "cpu")
    unit = conditioning.size_multiple // conditioning.vae_scale_factor  # latent multiple
    with staged_directory(out, overwrite=overwrite) as staging:
        report("exporting the text encoder and the transformer", 1, 4)
        dit_graphs, dit_diffs = export_wan_transformer(
            src.text_encoder, src.transformer, staging, backend=backend,
            shapes=[WanShape(2, 7, 3, 2 * unit, 2 * unit), WanShape(1, 5, 2, unit, 3 * unit)])
        report("exporting the VAE decoder", 2, 4)
        vae_graphs, vae_diffs = export_wan_decoder(src.vae, staging, backend=backend,
                                                   latent_hw=[(2 * unit, 2 * unit), (unit, 3 * unit)])
        (staging / "tokenizer").mkdir()
        shutil.copyfile(src.tokenizer_file, staging / tokenizer_entry)
        wan = dataclasses.replace(wan, tokenizer=FileEntry.of(staging, tokenizer_entry))
        import diffusers

        manifest = Manifest(
            task=VIDEO_TASK, family="wan", dtype="fp32", graphs=tuple(dit_graphs + vae_graphs),
            video=VideoSection(scheduler=src.scheduler, conditioning=conditioning, wan=wan),
            source={"path": str(source.resolve()), "pipeline": PIPELINE,
                    "transformer_params": sum(p.numel() for p in src.transformer.parameters()),
                    "vae_params": sum(p.numel() for p in src.vae.parameters()),
                    "text_encoder_params": sum(p.numel() for p in src.text_encoder.parameters())},
            exporter={**versions(), "diffusers": diffusers.__version__, "onnx_exporter": "dynamo"},
            parity={"tolerance": TOLERANCE, "graphs_max_abs_diff": {k: v for k, v in dit_diffs.items() if k != CHAINED},
                    "dit_chained_max_abs_diff": dit_diffs[CHAINED],
                    "decode_chained_max_abs_diff": max(v for k, v in vae_diffs.items() if k.startswith("loop_")),
                    "decode_max_abs_diff": vae_diffs},
            root=staging,
        )
        manifest.check_consistency()
        report("writing the manifest", 3, 4)
        manifest.save(staging)
        Manifest.load(staging)
    report("done", 4, 4)
    return Manifest.load(out)
