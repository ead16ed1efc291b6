"""The `video` section of a v2 manifest: what only video packages need (scheduler, generic
conditioning, operator groups) and, under the family's own key, the family's details (`svd`).
docs/FORMAT.md and docs/VIDEO.md document it.

Graph roles of a video package: `image_encoder`, `vae_encoder`, `time_embedding`, the UNet as
`down_block` 0..n-1, `mid_block`, `up_block` 0..n-1 or (exported with operator groups) as
`unet_group` 0..m-1, and `vae_decoder`. Graphs are found by role and index, never by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.package_files import FileEntry, GraphSpec, known

SCHEDULERS = ("EulerDiscreteScheduler",)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "original_sample")


@dataclass(frozen=True)
class VideoConditioning:
    """Shape facts and per-call defaults every video family has.

    Defaults (`num_frames`, `num_inference_steps`, `height`, `width`, `decode_chunk_size` (None:
    all frames at once)) are what a run uses when the caller gives none. Shape facts:
    `latent_channels`, `vae_scale_factor` (pixels per latent), `scaling_factor` (latents are
    divided by it before decoding) and `size_multiple` (height and width must be multiples of it).
    """

    num_frames: int
    num_inference_steps: int
    height: int
    width: int
    latent_channels: int
    vae_scale_factor: int
    scaling_factor: float
    size_multiple: int
    decode_chunk_size: int | None = None

    @staticmethod
    def from_dict(data: dict[str, Any]) -> VideoConditioning:
        return VideoConditioning(**known(VideoConditioning, data))


@dataclass(frozen=True)
class SvdConditioning:
    """The SVD family's own conditioning (manifest `video.svd`): diffusers'
    StableVideoDiffusionPipeline defaults (`fps`, `motion_bucket_id`, `noise_aug_strength`, the
    guidance ramp `min_guidance_scale`..`max_guidance_scale`) unless the exporter was told
    otherwise, and the CLIP image encoder's input: `clip_image_size` (fixed side) and
    `image_mean`/`image_std` (normalisation)."""

    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    clip_image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @staticmethod
    def from_dict(data: dict[str, Any]) -> SvdConditioning:
        values = known(SvdConditioning, data)
        values["image_mean"] = tuple(float(x) for x in values["image_mean"])
        values["image_std"] = tuple(float(x) for x in values["image_std"])
        return SvdConditioning(**values)



def _op_groups(data: Any) -> dict[str, OpGroup]:
    if not isinstance(data, dict):
        raise TypeError(f"op_groups must be an object (graph name -> op group), got {type(data).__name__}")
    return {str(name): OpGroup.from_dict(group) for name, group in data.items()}


# Graph roles of a video package, in execution order. down_block/up_block carry index 0..n-1; a
# package exported with operator groups has unet_group 0..m-1 in place of the blocks.
VIDEO_ROLES = ("image_encoder", "vae_encoder", "time_embedding", "down_block", "mid_block", "up_block", "unet_group",
               "vae_decoder")
SLICE_AXES = ("frames", "pixels", "videos")


@dataclass(frozen=True)
class OpGroup:
    """How the Feature Slicer may split one `unet_group` graph (docs/VIDEO.md, "Operator groups").

    `axis`: what the group's ops are independent along: `frames` (units: the B*F frames),
    `videos` (units: the B videos of the guidance batch) or `pixels` (units: the h*w token
    positions). `inputs`/`outputs` map each tensor that is split to the dimension it is split on;
    every other input goes whole to each slice; every output is split. A tensor's size along its dimension is a multiple
    of the unit count (e.g. N = B*F rows for `videos`), and slice s takes the rows of its units.
    `block` is the UNet block the group belongs to, `ops` the diffusers modules it runs, in order,
    and `exact` why splitting along `axis` changes no arithmetic.
    """

    axis: str
    inputs: dict[str, int]
    outputs: dict[str, int]
    block: str
    ops: tuple[str, ...]
    exact: str

    @staticmethod
    def from_dict(data: dict[str, Any]) -> OpGroup:
        """Parse one entry; TypeError/ValueError name what is malformed."""
        values = known(OpGroup, data)
        for key in ("inputs", "outputs"):
            dims = values[key]
            if not isinstance(dims, dict) or any(type(v) is not int for v in dims.values()):
                raise TypeError(f"op group {key} must map tensor names to integer dimensions, got {dims!r}")
        ops = values["ops"]
        if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
            raise TypeError(f"op group ops must be a list of module names, got {ops!r}")
        if not isinstance(values["axis"], str) or not isinstance(values["exact"], str):
            raise TypeError("op group axis and exact must be strings")
        return OpGroup(axis=values["axis"], inputs=dict(values["inputs"]), outputs=dict(values["outputs"]),
                       block=str(values["block"]), ops=tuple(ops), exact=values["exact"])


@dataclass(frozen=True)
class VideoSection:
    """Everything a video package needs beyond its graphs (docs/FORMAT.md, "video").

    UNet graphs exchange named tensors: an output `X_out` replaces the running tensor `X`, any
    other output is stored under its name; each `skip_NN` is produced once and consumed once by a
    later graph. `op_groups` (graph name -> OpGroup) says how each unet_group may be sliced;
    empty for block packages. `scheduler` is the diffusers scheduler config (class in
    `_class_name`); `conditioning` the generic shape facts and defaults; `svd` the SVD family's
    own details (present exactly when the family is "svd").
    """

    scheduler: dict[str, Any]
    conditioning: VideoConditioning
    op_groups: dict[str, OpGroup] = field(default_factory=dict)
    svd: SvdConditioning | None = None

    @staticmethod
    def from_dict(data: dict[str, Any]) -> VideoSection:
        if not isinstance(data.get("scheduler"), dict):
            raise TypeError("video.scheduler must be an object (a diffusers scheduler config)")
        return VideoSection(
            scheduler=dict(data["scheduler"]),
            conditioning=VideoConditioning.from_dict(data["conditioning"]),
            op_groups=_op_groups(data.get("op_groups", {})),
            svd=SvdConditioning.from_dict(data["svd"]) if data.get("svd") is not None else None,
        )

    def files(self) -> list[FileEntry]:
        return []  # every file of a video package belongs to a graph

    def check(self, family: str, graphs_by_role: Callable[[str], list[GraphSpec]],
              unet_graphs: list[GraphSpec]) -> None:
        """Raise ValueError when fields contradict each other or what this runtime can execute."""
        # the families this runtime runs: its registry, imported here because the runtime imports this module
        from edgekit.runtimes.video.families import VIDEO_FAMILIES

        if family not in VIDEO_FAMILIES:
            raise ValueError(f"video family {family!r} is not one of {tuple(sorted(VIDEO_FAMILIES))}")
        if family == "svd" and self.svd is None:
            raise ValueError("an svd package needs its family section video.svd")
        singles = ("image_encoder", "vae_encoder", "time_embedding", "vae_decoder")
        for role in singles:
            if len(graphs_by_role(role)) != 1:
                raise ValueError(f"a video package has exactly one {role!r} graph")
        n, m = len(graphs_by_role("down_block")), len(graphs_by_role("unet_group"))
        blocks_ok = n >= 1 and len(graphs_by_role("up_block")) == n and len(graphs_by_role("mid_block")) == 1
        if (m >= 1) == blocks_ok or (m >= 1 and (n or graphs_by_role("mid_block") or graphs_by_role("up_block"))):
            raise ValueError("the UNet is either n down blocks, a mid_block and n up blocks (n >= 1), or unet "
                             "groups, not both")
        for role, count in (("down_block", n), ("up_block", n), ("unet_group", m)):
            if [graph.index for graph in graphs_by_role(role)] != list(range(count)):
                raise ValueError(f"{role} graphs must have indices 0..{count - 1}")
        self._check_op_groups(graphs_by_role("unet_group"))
        _check_skips(unet_graphs)
        if self.scheduler.get("_class_name") not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler.get('_class_name')!r} is not one of {SCHEDULERS}")
        if self.scheduler.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.scheduler.get('prediction_type')!r} is not one of "
                             f"{PREDICTION_TYPES}")
        c = self.conditioning
        sizes = (c.num_frames, c.num_inference_steps, c.height, c.width, c.latent_channels, c.vae_scale_factor,
                 c.size_multiple)
        if any(type(v) is not int or v < 1 for v in sizes) or not c.scaling_factor > 0:
            raise ValueError("conditioning sizes must be positive integers and scaling_factor positive")
        if c.height % c.size_multiple or c.width % c.size_multiple:
            raise ValueError(f"default size {c.height}x{c.width} is not a multiple of {c.size_multiple}")
        if self.svd is not None:
            s = self.svd
            if type(s.clip_image_size) is not int or s.clip_image_size < 1:
                raise ValueError("video.svd.clip_image_size must be a positive integer")
            if len(s.image_mean) != 3 or len(s.image_std) != 3 or min(s.image_std) <= 0:
                raise ValueError("image_mean and image_std need three values (std positive)")

    def _check_op_groups(self, unet_groups: list[GraphSpec]) -> None:
        groups = {graph.name: graph for graph in unet_groups}
        if set(groups) != set(self.op_groups):
            raise ValueError(f"op_groups {sorted(self.op_groups)} do not match the unet_group graphs {sorted(groups)}")
        for name, group in self.op_groups.items():
            graph = groups[name]
            if group.axis not in SLICE_AXES:
                raise ValueError(f"{name}: slice axis {group.axis!r} is not one of {SLICE_AXES}")
            for kind, names, specs in (("input", group.inputs, graph.inputs), ("output", group.outputs, graph.outputs)):
                declared = {spec.name: len(spec.shape) for spec in specs}
                for tensor, dim in names.items():
                    if tensor not in declared or not 0 <= dim < declared[tensor]:
                        raise ValueError(f"{name}: sliced {kind} {tensor!r} (dim {dim}) is not a dimension of an "
                                         f"{kind} of its graph")
            if not group.inputs or set(group.outputs) != {spec.name for spec in graph.outputs}:
                raise ValueError(f"{name}: a group slices at least one input and every output")
            # what the runtime's unit rule needs: frames and videos split dimension 0 (N rows, or B
            # for image_only_indicator, which a videos group must split so its units are whole
            # videos), pixels split dimension 1 of the tokens
            expected_dim = 1 if group.axis == "pixels" else 0
            if any(dim != expected_dim for dim in (*group.inputs.values(), *group.outputs.values())):
                raise ValueError(f"{name}: a {group.axis} group splits dimension {expected_dim} of its tensors")
            reads_indicator = any(spec.name == "image_only_indicator" for spec in graph.inputs)
            if group.axis == "videos" and "image_only_indicator" not in group.inputs:
                raise ValueError(f"{name}: a videos group must split image_only_indicator (its units are videos)")
            if group.axis == "frames" and reads_indicator:
                raise ValueError(f"{name}: a frames group cannot read image_only_indicator (it would mix videos)")


def _check_skips(unet_graphs: list[GraphSpec]) -> None:
    """Every skip_NN a UNet graph produces is consumed exactly once, by a later graph."""
    produced: set[str] = set()
    consumed: set[str] = set()
    for graph in unet_graphs:
        needs = [spec.name for spec in graph.inputs if spec.name.startswith("skip_")]
        if any(name not in produced or name in consumed for name in needs):
            raise ValueError(f"{graph.name} takes skips {needs} that no earlier graph produced or that are "
                             "already consumed")
        consumed.update(needs)
        produced.update(spec.name for spec in graph.outputs if spec.name.startswith("skip_"))
    if consumed != produced:
        raise ValueError(f"skip connections {sorted(produced - consumed)} are never consumed")
