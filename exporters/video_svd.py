"""`edgekit export DIR --task video`: a diffusers Stable Video Diffusion directory -> a video package.

Pipeline: read the diffusers directory (model_index.json naming StableVideoDiffusionPipeline;
unet/, vae/, image_encoder/, scheduler/, feature_extractor/) -> cut it into stages
(exporters/video_stages.py) -> export each stage as one ONNX graph (legacy TorchScript
exporter) into a staging directory -> check every graph against its torch module with
onnxruntime at two input shapes (the second one with other batch, frame count, height and
width, so a shape baked into a graph fails here, not on a device) -> run the exported UNet
stages chained with the runtime's own code against diffusers' whole UNet -> write the manifest
-> move the package into place. Any failure leaves no package behind.

Example::

    manifest = export_svd(Path("tiny-svd"), Path("svd-pkg"))
    [g.name for g in manifest.graphs], manifest.parity["unet_chained_max_abs_diff"]
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.atomic import check_destination, staged_directory
from edgekit.errors import SourceModelError
from edgekit.exporters.coreml.options import CoreMLOptions
from edgekit.exporters.coreml.twins import TorchStage, add_core_ml_graphs, record_chained
from edgekit.exporters.package_parts import StagePlan, check_parity, max_diff, versions
from edgekit.exporters.source import checkpoint_errors, load_failure, read_json_object
from edgekit.exporters.video_groups import EXACT, GroupModule, GroupPlan, plan_groups
from edgekit.exporters.video_stages import (
    DownBlockStage,
    ImageEncoderStage,
    MidBlockStage,
    TimeEmbeddingStage,
    UpBlockStage,
    VaeDecoderStage,
    VaeEncoderStage,
    has_cross_attention,
)
from edgekit.manifest import VIDEO_TASK, GraphSpec, Manifest
from edgekit.runtimes.backends import Backend, backend_for
from edgekit.runtimes.video.unet import run_unet, unet_state
from edgekit.video_manifest import OpGroup, SvdConditioning, VideoConditioning, VideoSection

Progress = Callable[[str, int, int], None]

TOLERANCE = 1e-4  # per graph and chained, relative to max(1, max |reference|)
SLICE_TOLERANCE = 1e-5  # sliced vs unsliced UNet (absolute): slicing is exact, so only kernel order differs
CHECK_SLICES = 3  # the sliced check splits every group 3 ways (uneven where units are not a multiple of 3)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# diffusers' StableVideoDiffusionPipeline.__call__ defaults
DEFAULT_STEPS = 25
SVD_DEFAULTS = {"fps": 7, "motion_bucket_id": 127, "noise_aug_strength": 0.02, "min_guidance_scale": 1.0,
                "max_guidance_scale": 3.0}


@dataclass
class SvdSource:
    """The loaded pieces of a diffusers SVD directory (fp32, eval)."""

    path: Path
    unet: Any
    vae: Any
    image_encoder: Any
    scheduler: dict[str, Any]
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Pixels: diffusers needs multiples of 8; the UNet's upsamplers need latent multiples of 2^n."""
        upsamplers = sum(1 for block in self.unet.up_blocks if getattr(block, "upsamplers", None) is not None)
        pixels = self.vae_scale_factor * 2 ** upsamplers
        return pixels * 8 // math.gcd(pixels, 8)


def load_svd(source: Path) -> SvdSource:
    """Load a diffusers SVD directory; SourceModelError names what is missing or unsupported."""
    source = Path(source)
    index_file = source / "model_index.json"
    if not index_file.is_file():
        raise SourceModelError(f"{source} is not a diffusers pipeline directory (no model_index.json); "
                               "--task video exports a Stable Video Diffusion directory")
    index = read_json_object(index_file)
    if index.get("_class_name") != "StableVideoDiffusionPipeline":
        raise SourceModelError(f"{source}: model_index.json names {index.get('_class_name')!r}; --task video "
                               "exports StableVideoDiffusionPipeline directories")
    for part in ("unet", "vae", "image_encoder", "scheduler"):
        if not (source / part).is_dir():
            raise SourceModelError(f"{source} has no {part}/ folder; save the whole pipeline with save_pretrained")
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            unet = UNetSpatioTemporalConditionModel.from_pretrained(source, subfolder="unet")
            vae = AutoencoderKLTemporalDecoder.from_pretrained(source, subfolder="vae")
            image_encoder = CLIPVisionModelWithProjection.from_pretrained(source / "image_encoder")
    except (*checkpoint_errors(), RuntimeError) as error:
        raise load_failure("diffusers", source, error) from None
    scheduler = read_json_object(source / "scheduler" / "scheduler_config.json")
    if scheduler.get("_class_name") != "EulerDiscreteScheduler":
        raise SourceModelError(f"{source}: scheduler {scheduler.get('_class_name')!r} is not supported "
                               "(edgekit runs EulerDiscreteScheduler)")
    processor_file = source / "feature_extractor" / "preprocessor_config.json"
    processor = read_json_object(processor_file) if processor_file.is_file() else {}
    try:
        mean = tuple(float(x) for x in processor.get("image_mean", CLIP_MEAN))
        std = tuple(float(x) for x in processor.get("image_std", CLIP_STD))
    except (TypeError, ValueError):
        raise SourceModelError(f"{processor_file}: image_mean and image_std must be lists of numbers") from None
    return SvdSource(path=source, unet=unet.float().eval(), vae=vae.float().eval(),
                     image_encoder=image_encoder.float().eval(), scheduler=scheduler,
                     image_mean=mean, image_std=std)  # type: ignore[arg-type]


# --- stage plans -------------------------------------------------------------------------
def _spatial(name: str) -> dict[int, str]:
    return {0: "batch_frames", 2: f"{name}_height", 3: f"{name}_width"}


def _block_inputs(block: torch.nn.Module, skips: list[str]) -> list[str]:
    cross = ["encoder_hidden_states"] if has_cross_attention(block) else []
    return ["hidden_states", *skips, "temb", *cross, "image_only_indicator"]


def _axes(names: list[str]) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for name in names:
        if name in ("temb", "encoder_hidden_states"):
            axes[name] = {0: "batch_frames"}
        elif name == "image_only_indicator":
            axes[name] = {0: "batch", 1: "frames"}
        elif name.startswith("tokens"):
            axes[name] = {0: "batch_frames", 1: f"{name}_pixels"}
        else:
            axes[name] = _spatial(name)
    return axes


def _unet_feeds(names: list[str], values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(values[name] for name in names)


def plan_stages(src: SvdSource, shapes: list[tuple[int, int, int, int]], seed: int = 0,
                groups: list[GroupPlan] | None = None) -> list[StagePlan]:
    """Stage plans with example inputs for each (batch, frames, latent_h, latent_w) in `shapes`,
    produced by chaining the torch stages (so every stage sees realistic activations). `groups`
    (exporters/video_groups.plan_groups): the UNet as operator-group graphs instead of blocks."""
    unet, vae = src.unet, src.vae
    generator = torch.Generator().manual_seed(seed)
    size = int(src.image_encoder.config.image_size)
    channels = int(unet.config.in_channels)
    latent_channels = int(vae.config.latent_channels)
    time_stage = TimeEmbeddingStage(unet)
    downs = [DownBlockStage(unet, i) for i in range(len(unet.down_blocks))]
    mid = MidBlockStage(unet)
    examples: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    names: dict[str, tuple[list[str], list[str]]] = {}
    ups: list[UpBlockStage] = []

    def add(key: str, inputs: list[str], outputs: list[str], values: tuple[torch.Tensor, ...]) -> None:
        examples.setdefault(key, []).append(values)
        names[key] = (inputs, outputs)

    with torch.no_grad():
        for batch, frames, lh, lw in shapes:
            add("image_encoder", ["pixel_values"], ["image_embeds"],
                (torch.randn(batch, 3, size, size, generator=generator),))
            add("vae_encoder", ["image"], ["image_latents"],
                (torch.rand(batch, 3, lh * src.vae_scale_factor, lw * src.vae_scale_factor,
                            generator=generator) * 2 - 1,))
            timestep = torch.full((batch,), 1.5) + torch.rand(batch, generator=generator)
            time_ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1)
            add("time_embedding", ["timestep", "added_time_ids"], ["time_embedding"], (timestep, time_ids))
            values = {
                "hidden_states": torch.randn(batch * frames, channels, lh, lw, generator=generator),
                "temb": time_stage(timestep, time_ids).repeat_interleave(frames, dim=0),
                "encoder_hidden_states": torch.randn(batch * frames, 1, int(unet.config.cross_attention_dim),
                                                     generator=generator),
                "image_only_indicator": torch.zeros(batch, frames),
            }
            if groups is not None:
                for group in groups:
                    feeds = _unet_feeds(group.inputs, values)
                    add(group.name, group.inputs, group.output_names, feeds)
                    outputs = GroupModule(group)(*feeds)
                    values.update(zip([name for name, _ in group.outputs],
                                      outputs if isinstance(outputs, tuple) else (outputs,)))
                add("vae_decoder", ["latents"], ["frames"],
                    (torch.randn(frames, latent_channels, lh, lw, generator=generator),))
                continue
            skips: list[str] = []
            for i, stage in enumerate(downs):
                inputs = _block_inputs(stage.block, [])
                feeds = _unet_feeds(inputs, values)
                outputs = stage(*feeds)
                new = [f"skip_{len(skips) + k:02d}" for k in range(len(outputs) - 1)]
                add(f"down_block_{i}", inputs, ["hidden_states_out", *new], feeds)
                values["hidden_states"] = outputs[0]
                values.update(zip(new, outputs[1:]))
                skips += new
            feeds = _unet_feeds(["hidden_states", "temb", "encoder_hidden_states", "image_only_indicator"], values)
            add("mid_block", ["hidden_states", "temb", "encoder_hidden_states", "image_only_indicator"],
                ["hidden_states_out"], feeds)
            values["hidden_states"] = mid(*feeds)
            for j, block in enumerate(unet.up_blocks):
                taken, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
                if len(ups) < len(unet.up_blocks):
                    ups.append(UpBlockStage(unet, j, len(taken)))
                inputs = _block_inputs(block, taken)
                last = j == len(unet.up_blocks) - 1
                feeds = _unet_feeds(inputs, values)
                add(f"up_block_{j}", inputs, ["noise_pred" if last else "hidden_states_out"], feeds)
                values["hidden_states"] = ups[j](*feeds)
            add("vae_decoder", ["latents"], ["frames"],
                (torch.randn(frames, latent_channels, lh, lw, generator=generator),))

    modules: dict[str, tuple[str, int | None, torch.nn.Module]] = {
        "image_encoder": ("image_encoder", None, ImageEncoderStage(src.image_encoder)),
        "vae_encoder": ("vae_encoder", None, VaeEncoderStage(vae)),
        "time_embedding": ("time_embedding", None, time_stage),
    }
    if groups is not None:
        modules.update({group.name: ("unet_group", k, GroupModule(group)) for k, group in enumerate(groups)})
    else:
        modules.update({f"down_block_{i}": ("down_block", i, stage) for i, stage in enumerate(downs)})
        modules["mid_block"] = ("mid_block", None, mid)
        modules.update({f"up_block_{j}": ("up_block", j, stage) for j, stage in enumerate(ups)})
    modules["vae_decoder"] = ("vae_decoder", None, VaeDecoderStage(vae))
    fixed_axes = {
        "image_encoder": {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
        "vae_encoder": {"image": {0: "batch", 2: "height", 3: "width"},
                        "image_latents": {0: "batch", 2: "latent_height", 3: "latent_width"}},
        "time_embedding": {"timestep": {0: "batch"}, "added_time_ids": {0: "batch"}, "time_embedding": {0: "batch"}},
        "vae_decoder": {"latents": {0: "frames", 2: "latent_height", 3: "latent_width"},
                        "frames": {0: "frames", 2: "height", 3: "width"}},
    }
    plans = []
    for key, (role, index, module) in modules.items():
        inputs, outputs = names[key]
        axes = fixed_axes.get(key) or _axes(inputs + outputs)
        plans.append(StagePlan(name=key, role=role, index=index, module=module.eval(), input_names=inputs,
                               output_names=outputs, dynamic_axes=axes, examples=examples[key]))
    return plans


def _chained_unet_diff(src: SvdSource, manifest: Manifest, backend: Backend,
                       shape: tuple[int, int, int, int], tolerance: float = TOLERANCE,
                       what: str = "ONNX") -> tuple[float, float | None]:
    """diffusers' whole UNet vs the exported UNet stages run by the runtime's own code (the
    graphs `backend` loads: ONNX, or the Core ML twins under the MIL evaluator); with operator
    groups also the Feature Slicer's run (CHECK_SLICES slices) vs the unsliced one.
    Returns (chained max abs diff, sliced-vs-unsliced max abs diff or None)."""
    batch, frames, lh, lw = shape
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, frames, int(src.unet.config.in_channels), lh, lw, generator=generator)
    timestep = torch.tensor(1.6)
    ehs = torch.randn(batch, 1, int(src.unet.config.cross_attention_dim), generator=generator)
    time_ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(batch, 1)
    with torch.no_grad():
        expected = src.unet(sample, timestep, encoder_hidden_states=ehs, added_time_ids=time_ids,
                            return_dict=False)[0].numpy()

    def run(slices: int) -> np.ndarray:
        state = unet_state(sample.numpy(), np.full((batch,), 1.6, dtype=np.float32), ehs.numpy(), time_ids.numpy())
        return run_unet(manifest.unet_graphs, manifest.root, backend.load, 2, state, op_groups=manifest.video.op_groups,
                        slices=slices)

    actual = run(1)
    diff, scale = max_diff(actual, expected)
    check_parity("UNet stages chained", diff, scale, tolerance, what)
    if not manifest.video.op_groups:
        return diff, None
    sliced = float(np.max(np.abs(run(CHECK_SLICES) - actual)))
    if not sliced <= SLICE_TOLERANCE:
        raise SourceModelError(f"the UNet's operator groups run over {CHECK_SLICES} slices differ from the unsliced "
                               f"run by {sliced:.3g} (> {SLICE_TOLERANCE}); slicing is not exact for this model")
    return diff, sliced


def _op_group(group: GroupPlan) -> OpGroup:
    inputs, outputs = group.sliced_dims()
    return OpGroup(axis=group.axis, inputs=inputs, outputs=outputs, block=group.block,
                   ops=tuple(op.name for op in group.ops if op.axis is not None), exact=EXACT[group.axis])


def export_svd(source: str | Path, out: Path, overwrite: bool = False, progress: Progress | None = None,
               seed: int = 0, op_groups: bool = False, coreml: CoreMLOptions | None = None) -> Manifest:
    """Export a diffusers SVD directory as a video package at `out` (atomically); returns its manifest.
    op_groups: export the UNet as operator-group graphs (exporters/video_groups.py) that the
    runtime can slice (`generate(..., slices=N)`), instead of one graph per block. coreml: the
    graph formats to write (Core ML twins of every stage: exporters/coreml/twins.py; their spatial,
    frame and token dims are flexible up to exporters/coreml/convert.py's bounds)."""
    formats = coreml or CoreMLOptions()
    source = Path(source)
    out = Path(out)
    check_destination(out, source, overwrite)
    report = progress or (lambda message, done, total: None)
    report("loading the diffusers pipeline", 0, 1)
    src = load_svd(source)
    unit = src.size_multiple // src.vae_scale_factor  # latent multiple
    shapes = [(2, 3, 2 * unit, 2 * unit), (1, 2, unit, 3 * unit)]
    groups = plan_groups(src.unet) if op_groups else None
    plans = plan_stages(src, shapes, seed=seed, groups=groups)
    backend = backend_for("onnx", "cpu")
    diffs: dict[str, float] = {}
    with staged_directory(out, overwrite=overwrite) as staging:
        graphs: list[GraphSpec] = []
        for done, plan in enumerate(plans):
            report(f"exporting {plan.name}", done, len(plans))
            graph = plan.export(staging)
            diffs[plan.name] = plan.check(graph, staging, backend, TOLERANCE)
            graphs.append(graph)
        c = src.unet.config
        height = int(c.sample_size) * src.vae_scale_factor
        height = max(src.size_multiple, height - height % src.size_multiple)
        conditioning = VideoConditioning(
            num_frames=int(c.num_frames), num_inference_steps=DEFAULT_STEPS, height=height, width=height,
            latent_channels=int(src.vae.config.latent_channels), vae_scale_factor=src.vae_scale_factor,
            scaling_factor=float(src.vae.config.scaling_factor), size_multiple=src.size_multiple,
        )
        svd = SvdConditioning(clip_image_size=int(src.image_encoder.config.image_size), image_mean=src.image_mean,
                              image_std=src.image_std, **SVD_DEFAULTS)  # type: ignore[arg-type]
        import diffusers

        manifest = Manifest(
            task=VIDEO_TASK, family="svd", dtype="fp32", graphs=tuple(graphs),
            video=VideoSection(scheduler={k: v for k, v in src.scheduler.items() if k != "_diffusers_version"},
                               conditioning=conditioning, svd=svd,
                               op_groups={group.name: _op_group(group) for group in groups or []}),
            source={"path": str(source.resolve()), "pipeline": "StableVideoDiffusionPipeline",
                    "unet_params": sum(p.numel() for p in src.unet.parameters()),
                    "vae_params": sum(p.numel() for p in src.vae.parameters())},
            exporter={**versions(), "diffusers": diffusers.__version__},
            root=staging,
        )
        manifest.check_consistency()
        report("checking the chained UNet", len(plans), len(plans))
        chained, sliced = _chained_unet_diff(src, manifest, backend, shapes[0])
        parity: dict[str, Any] = {"tolerance": TOLERANCE, "graphs_max_abs_diff": diffs,
                                  "unet_chained_max_abs_diff": chained,
                                  "shapes_checked": [list(shape) for shape in shapes]}
        if sliced is not None:
            parity.update(sliced_vs_unsliced_max_abs_diff=sliced, slice_tolerance=SLICE_TOLERANCE,
                          slices_checked=CHECK_SLICES)
        manifest = dataclasses.replace(manifest, parity=parity)
        manifest.save(staging)
        if formats.wants_coreml:
            stages = [TorchStage(graph, plan.module, plan.examples[0], tuple(plan.input_names))
                      for plan, graph in zip(plans, graphs)]
            manifest = add_core_ml_graphs(staging, manifest, stages, formats, {}, TOLERANCE, report)
            manifest = record_chained(staging, manifest, formats, lambda view, backend, allowed: _chained_unet_diff(
                src, view, backend, shapes[0], allowed, "Core ML")[0])
        Manifest.load(staging)
    report("done", len(plans), len(plans))
    return Manifest.load(out)
