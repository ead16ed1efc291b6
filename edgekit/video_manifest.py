"""The `video` section of a v2 manifest: what only video packages need (scheduler, generic
conditioning, operator groups) and, under the family's own key, the family's details (`svd`,
`wan`: edgekit/wan_manifest.py). docs/FORMAT.md and docs/VIDEO.md document it.

Graph roles of an SVD package: `image_encoder`, `vae_encoder`, `time_embedding`, the UNet as
`down_block` 0..n-1, `mid_block`, `up_block` 0..n-1 or (exported with operator groups) as
`unet_group` 0..m-1, and `vae_decoder`. A Wan package's roles are in edgekit/wan_manifest.py.
Graphs are found by role and index, never by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.manifest_fields import (
    MAX_NAME_CHARS,
    MAX_RANK,
    MAX_TEXT_CHARS,
    ManifestError,
    choice,
    flag,
    integer,
    items,
    number,
    obj,
    optional,
    required,
    shown,
    text,
)
from edgekit.package_files import FileEntry, GraphSpec
from edgekit.wan_manifest import WAN_ROLES, WanConditioning, check_wan_graphs

SCHEDULERS = ("EulerDiscreteScheduler",)  # SVD's; Wan's are runtimes/video/flow_schedulers.py FLOW_SCHEDULERS
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "original_sample")
MAX_FRAMES = 1024
MAX_STEPS = 10_000
MAX_SIDE = 16_384  # pixels
MAX_TRAIN_TIMESTEPS = 100_000
MAX_OPS = 4096
# what the scheduler (runtimes/video/scheduler.py) reads, with its choices; other keys stay as written
SCHEDULER_CHOICES = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
    "interpolation_type": ("linear", "log_linear"),
    "timestep_type": ("discrete", "continuous"),
    "final_sigmas_type": ("zero", "sigma_min"),
    "prediction_type": (*PREDICTION_TYPES, "flow_prediction"),
}
SCHEDULER_FLAGS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "rescale_betas_zero_snr")
# The state a UNet step starts from (runtimes/video/unet.py `unet_state`) and what it must end with
UNET_STATE = frozenset({"hidden_states", "timestep", "added_time_ids", "encoder_hidden_states",
                        "image_only_indicator"})
# SVD: what the family feeds its single-graph stages (runtimes/video/svd.py)
SVD_FEEDS = {"image_encoder": ("pixel_values",), "vae_encoder": ("image",), "vae_decoder": ("latents",)}


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
    def from_dict(data: Any, where: str = "video.conditioning") -> VideoConditioning:
        data = obj(data, where)

        def size(key: str, high: int) -> int:
            return integer(required(data, key, where), f"{where}.{key}", 1, high)

        frames = size("num_frames", MAX_FRAMES)
        return VideoConditioning(
            num_frames=frames, num_inference_steps=size("num_inference_steps", MAX_STEPS),
            height=size("height", MAX_SIDE), width=size("width", MAX_SIDE),
            latent_channels=size("latent_channels", 1024), vae_scale_factor=size("vae_scale_factor", 64),
            scaling_factor=number(required(data, "scaling_factor", where), f"{where}.scaling_factor", 0.0, 1e6,
                                  low_open=True),
            size_multiple=size("size_multiple", 1024),
            decode_chunk_size=optional(data.get("decode_chunk_size"), integer, f"{where}.decode_chunk_size", 1,
                                       MAX_FRAMES),
        )


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
    def from_dict(data: Any, where: str = "video.svd") -> SvdConditioning:
        data = obj(data, where)

        def real(key: str, low: float, high: float) -> float:
            return number(required(data, key, where), f"{where}.{key}", low, high)

        def triple(key: str, low: float, low_open: bool) -> tuple[float, float, float]:
            values = items(required(data, key, where), f"{where}.{key}", 3, 3)
            a, b, c = (number(v, f"{where}.{key}[{i}]", low, 1e3, low_open) for i, v in enumerate(values))
            return (a, b, c)

        return SvdConditioning(
            fps=integer(required(data, "fps", where), f"{where}.fps", 1, 1000),
            motion_bucket_id=integer(required(data, "motion_bucket_id", where), f"{where}.motion_bucket_id", 0,
                                     1 << 20),
            noise_aug_strength=real("noise_aug_strength", 0.0, 1e3),
            min_guidance_scale=real("min_guidance_scale", 0.0, 1e3),
            max_guidance_scale=real("max_guidance_scale", 0.0, 1e3),
            clip_image_size=integer(required(data, "clip_image_size", where), f"{where}.clip_image_size", 1, 4096),
            image_mean=triple("image_mean", -1e3, False),
            image_std=triple("image_std", 0.0, True),
        )


def _step_cache(value: Any, where: str) -> dict[str, Any]:
    """The step-cache calibration (docs/FORMAT.md): `setting` (a step-cache setting string that
    `generate(step_cache="auto")` runs, or null: none kept the target, run uncached) and
    `target_psnr_db` are checked; the rest (what the calibration measured) is kept as written."""
    data = obj(value, where)
    setting = optional(required(data, "setting", where), text, f"{where}.setting", MAX_TEXT_CHARS)
    if setting is not None:
        from edgekit.errors import InvalidArgumentError
        from edgekit.runtimes.video.step_cache import parse_step_cache  # numpy only; imported when present

        try:
            parse_step_cache(setting)
        except InvalidArgumentError as error:
            raise ManifestError(f"{where}.setting: {error}") from None
    number(required(data, "target_psnr_db", where), f"{where}.target_psnr_db", 0.0, 1000.0)
    return data


def _op_groups(data: Any, where: str = "video.op_groups") -> dict[str, OpGroup]:
    data = obj(data, where)
    items(list(data), where, 0, 4096)
    return {text(name, f"{where} key"): OpGroup.from_dict(group, f"{where}.{name}") for name, group in data.items()}


# Graph roles of an SVD package, in execution order. down_block/up_block carry index 0..n-1; a
# package exported with operator groups has unet_group 0..m-1 in place of the blocks.
SVD_ROLES = ("image_encoder", "vae_encoder", "time_embedding", "down_block", "mid_block", "up_block", "unet_group",
             "vae_decoder")
VIDEO_ROLES = (*SVD_ROLES, *WAN_ROLES)
FAMILY_ROLES = {"svd": SVD_ROLES, "wan": WAN_ROLES}
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
    def from_dict(data: Any, where: str = "op group") -> OpGroup:
        """Parse one entry; ManifestError names what is malformed."""
        data = obj(data, where)
        dims = {}
        for key in ("inputs", "outputs"):
            value = required(data, key, where)
            if not isinstance(value, dict) or any(type(v) is not int for v in value.values()):
                raise ManifestError(f"op group {key} must map tensor names to integer dimensions, got {shown(value)}")
            items(list(value), f"{where}.{key}", 0, 256)
            dims[key] = {text(name, f"{where}.{key} key"): integer(dim, f"{where}.{key}.{name}", 0, MAX_RANK - 1)
                         for name, dim in value.items()}
        ops = required(data, "ops", where)
        if not isinstance(ops, list) or not all(isinstance(op, str) for op in ops):
            raise ManifestError(f"op group ops must be a list of module names, got {shown(ops)}")
        items(ops, f"{where}.ops", 0, MAX_OPS)
        return OpGroup(axis=text(required(data, "axis", where), f"{where}.axis"), inputs=dims["inputs"],
                       outputs=dims["outputs"], block=text(required(data, "block", where), f"{where}.block"),
                       ops=tuple(text(op, f"{where}.ops[{i}]", MAX_TEXT_CHARS) for i, op in enumerate(ops)),
                       exact=text(required(data, "exact", where), f"{where}.exact", MAX_TEXT_CHARS, empty=True,
                                  lines=True))


@dataclass(frozen=True)
class VideoSection:
    """Everything a video package needs beyond its graphs (docs/FORMAT.md, "video").

    UNet graphs exchange named tensors: an output `X_out` replaces the running tensor `X`, any
    other output is stored under its name; each `skip_NN` is produced once and consumed once by a
    later graph. `op_groups` (graph name -> OpGroup) says how each unet_group may be sliced;
    empty for block packages. `scheduler` is the diffusers scheduler config (class in
    `_class_name`); `conditioning` the generic shape facts and defaults; `svd` / `wan` the
    family's own details (present exactly when the family is "svd" / "wan").
    """

    scheduler: dict[str, Any]
    conditioning: VideoConditioning
    op_groups: dict[str, OpGroup] = field(default_factory=dict)
    svd: SvdConditioning | None = None
    step_cache: dict[str, Any] | None = None  # written by `edgekit calibrate VPKG --target-psnr`
    wan: WanConditioning | None = None

    @staticmethod
    def from_dict(data: Any, where: str = "video") -> VideoSection:
        data = obj(data, where)
        scheduler = required(data, "scheduler", where)
        if not isinstance(scheduler, dict):
            raise ManifestError("video.scheduler must be an object (a diffusers scheduler config)")
        return VideoSection(
            scheduler=_scheduler(scheduler, f"{where}.scheduler"),
            conditioning=VideoConditioning.from_dict(required(data, "conditioning", where)),
            op_groups=_op_groups(data.get("op_groups", {})),
            svd=optional(data.get("svd"), SvdConditioning.from_dict),
            step_cache=optional(data.get("step_cache"), _step_cache, f"{where}.step_cache"),
            wan=optional(data.get("wan"), WanConditioning.from_dict),
        )

    def files(self) -> list[FileEntry]:
        """The files besides graphs: a Wan package's tokenizer (an SVD package has none)."""
        return [self.wan.tokenizer] if self.wan is not None else []

    def check(self, family: str, graphs_by_role: Callable[[str], list[GraphSpec]],
              unet_graphs: list[GraphSpec]) -> None:
        """Raise ManifestError (a ValueError) when fields contradict each other or what this runtime can
        execute."""
        # the families this runtime runs: its registry, imported here because the runtime imports this module
        from edgekit.runtimes.video.families import VIDEO_FAMILIES

        if family not in VIDEO_FAMILIES:
            raise ManifestError(f"video family {family!r} is not one of {tuple(sorted(VIDEO_FAMILIES))}")
        for name, section in (("svd", self.svd), ("wan", self.wan)):
            if (family == name) != (section is not None):
                raise ManifestError(f"a {family} package " + ("needs its" if family == name else "has no") +
                                    f" family section video.{name}")
        roles = FAMILY_ROLES.get(family, VIDEO_ROLES)  # a family registered elsewhere (tests) names no roles
        foreign = [role for role in VIDEO_ROLES if role not in roles and graphs_by_role(role)]
        if foreign:
            raise ManifestError(f"a {family} package has no {foreign[0]!r} graphs")
        self._check_conditioning()
        if family == "wan":
            assert self.wan is not None
            check_wan_graphs(graphs_by_role)
            self.wan.check(self.conditioning)
            from edgekit.errors import InvalidArgumentError
            from edgekit.runtimes.video.flow_schedulers import check_flow_config  # numpy only

            try:
                check_flow_config(self.scheduler)
            except InvalidArgumentError as error:
                raise ManifestError(f"video.scheduler: {error}") from None
            return
        self._check_svd(graphs_by_role, unet_graphs)

    def _check_svd(self, graphs_by_role: Callable[[str], list[GraphSpec]], unet_graphs: list[GraphSpec]) -> None:
        singles = ("image_encoder", "vae_encoder", "time_embedding", "vae_decoder")
        for role in singles:
            if len(graphs_by_role(role)) != 1:
                raise ManifestError(f"a video package has exactly one {role!r} graph")
        n, m = len(graphs_by_role("down_block")), len(graphs_by_role("unet_group"))
        blocks_ok = n >= 1 and len(graphs_by_role("up_block")) == n and len(graphs_by_role("mid_block")) == 1
        if (m >= 1) == blocks_ok or (m >= 1 and (n or graphs_by_role("mid_block") or graphs_by_role("up_block"))):
            raise ManifestError("the UNet is either n down blocks, a mid_block and n up blocks (n >= 1), or unet "
                                "groups, not both")
        for role, count in (("down_block", n), ("up_block", n), ("unet_group", m)):
            if [graph.index for graph in graphs_by_role(role)] != list(range(count)):
                raise ManifestError(f"{role} graphs must have indices 0..{count - 1}")
        self._check_op_groups(graphs_by_role("unet_group"))
        _check_skips(unet_graphs)
        _check_dataflow(list(unet_graphs))
        if self.svd is not None:
            for role, feeds in SVD_FEEDS.items():
                graph = graphs_by_role(role)[0]
                if tuple(spec.name for spec in graph.inputs) != feeds or not graph.outputs:
                    raise ManifestError(f"graph {graph.name!r}: an svd {role} takes {list(feeds)} and has an output")
        if self.scheduler.get("_class_name") not in SCHEDULERS:
            raise ManifestError(f"scheduler {shown(self.scheduler.get('_class_name'))} is not one of {SCHEDULERS}")
        if self.scheduler.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
            raise ManifestError(f"prediction_type {shown(self.scheduler.get('prediction_type'))} is not one of "
                                f"{PREDICTION_TYPES}")
        if self.svd is not None:
            s = self.svd
            if type(s.clip_image_size) is not int or s.clip_image_size < 1:
                raise ManifestError("video.svd.clip_image_size must be a positive integer")
            if len(s.image_mean) != 3 or len(s.image_std) != 3 or min(s.image_std) <= 0:
                raise ManifestError("image_mean and image_std need three values (std positive)")

    def _check_conditioning(self) -> None:
        c = self.conditioning
        sizes = (c.num_frames, c.num_inference_steps, c.height, c.width, c.latent_channels, c.vae_scale_factor,
                 c.size_multiple)
        if any(type(v) is not int or v < 1 for v in sizes) or not c.scaling_factor > 0:
            raise ManifestError("conditioning sizes must be positive integers and scaling_factor positive")
        if c.height % c.size_multiple or c.width % c.size_multiple:
            raise ManifestError(f"default size {c.height}x{c.width} is not a multiple of {c.size_multiple}")

    def _check_op_groups(self, unet_groups: list[GraphSpec]) -> None:
        groups = {graph.name: graph for graph in unet_groups}
        if set(groups) != set(self.op_groups):
            raise ManifestError(f"op_groups {shown(sorted(self.op_groups))} do not match the unet_group graphs "
                                f"{shown(sorted(groups))}")
        for name, group in self.op_groups.items():
            graph = groups[name]
            if group.axis not in SLICE_AXES:
                raise ManifestError(f"{name}: slice axis {group.axis!r} is not one of {SLICE_AXES}")
            for kind, names, specs in (("input", group.inputs, graph.inputs), ("output", group.outputs, graph.outputs)):
                declared = {spec.name: len(spec.shape) for spec in specs}
                for tensor, dim in names.items():
                    if tensor not in declared or not 0 <= dim < declared[tensor]:
                        raise ManifestError(f"{name}: sliced {kind} {tensor!r} (dim {dim}) is not a dimension of an "
                                         f"{kind} of its graph")
            if not group.inputs or set(group.outputs) != {spec.name for spec in graph.outputs}:
                raise ManifestError(f"{name}: a group slices at least one input and every output")
            # what the runtime's unit rule needs: frames and videos split dimension 0 (N rows, or B
            # for image_only_indicator, which a videos group must split so its units are whole
            # videos), pixels split dimension 1 of the tokens
            expected_dim = 1 if group.axis == "pixels" else 0
            if any(dim != expected_dim for dim in (*group.inputs.values(), *group.outputs.values())):
                raise ManifestError(f"{name}: a {group.axis} group splits dimension {expected_dim} of its tensors")
            reads_indicator = any(spec.name == "image_only_indicator" for spec in graph.inputs)
            if group.axis == "videos" and "image_only_indicator" not in group.inputs:
                raise ManifestError(f"{name}: a videos group must split image_only_indicator (its units are videos)")
            if group.axis == "frames" and reads_indicator:
                raise ManifestError(f"{name}: a frames group cannot read image_only_indicator (it would mix videos)")


def _scheduler(config: dict[str, Any], where: str) -> dict[str, Any]:
    """The scheduler config, its keys the runtime reads typed and bounded (a 1e12-step training
    schedule would be allocated at load); other keys are kept as written."""
    obj(config, where)
    steps = integer(config.get("num_train_timesteps", 1000), f"{where}.num_train_timesteps", 2, MAX_TRAIN_TIMESTEPS)
    for key in ("beta_start", "beta_end"):
        if key in config:
            number(config[key], f"{where}.{key}", 0.0, 1.0)
    for key in ("sigma_min", "sigma_max"):
        optional(config.get(key), number, f"{where}.{key}", 0.0, 1e6, True)
    for key, options in SCHEDULER_CHOICES.items():
        if key in config:
            choice(config[key], f"{where}.{key}", options)
    for key in SCHEDULER_FLAGS:
        if key in config:
            flag(config[key], f"{where}.{key}")
    integer(config.get("steps_offset", 0), f"{where}.steps_offset", 0, steps)
    betas = config.get("trained_betas")
    if betas is not None:
        for i, beta in enumerate(items(betas, f"{where}.trained_betas", steps, steps)):
            number(beta, f"{where}.trained_betas[{i}]", 0.0, 1.0, low_open=True)
    text(config.get("_class_name"), f"{where}._class_name", MAX_NAME_CHARS)
    return dict(config)


def _check_dataflow(unet_graphs: list[GraphSpec]) -> None:
    """Replay a UNet step's dataflow by name (runtimes/video/unet.py): every input a graph takes
    is in the state when it runs (the initial state, `temb`, or an earlier graph's output), the
    time embedding has one output, and the step ends with `noise_pred`."""
    state = set(UNET_STATE)
    for graph in unet_graphs:
        missing = sorted({spec.name for spec in graph.inputs} - state)
        if missing:
            raise ManifestError(f"graph {graph.name!r} takes {shown(missing[0])}, which no earlier UNet graph "
                                "produces")
        if graph.role == "time_embedding" and len(graph.outputs) != 1:
            raise ManifestError(f"graph {graph.name!r}: the time embedding has one output (temb)")
        for spec in graph.outputs:
            state.add("temb" if graph.role == "time_embedding" else spec.name.removesuffix("_out"))
    if "noise_pred" not in state:
        raise ManifestError("no UNet graph outputs noise_pred")


def _check_skips(unet_graphs: list[GraphSpec]) -> None:
    """Every skip_NN a UNet graph produces is consumed exactly once, by a later graph."""
    produced: set[str] = set()
    consumed: set[str] = set()
    for graph in unet_graphs:
        needs = [spec.name for spec in graph.inputs if spec.name.startswith("skip_")]
        if any(name not in produced or name in consumed for name in needs):
            raise ManifestError(f"{graph.name} takes skips {shown(needs, 80)} that no earlier graph produced or "
                                "that are already consumed")
        consumed.update(needs)
        produced.update(spec.name for spec in graph.outputs if spec.name.startswith("skip_"))
    if consumed != produced:
        raise ManifestError(f"skip connections {shown(sorted(produced - consumed), 80)} are never consumed")
