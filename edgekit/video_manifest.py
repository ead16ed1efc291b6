"""The manifest of a video package (task "video", SVD family): graphs, conditioning defaults
and the scheduler config. docs/VIDEO.md documents it; the shared format rules (format name,
version, file entries, integrity) are those of `edgekit.manifest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import NotAPackageError
from edgekit.manifest import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_FILE,
    VIDEO_TASK,
    FileEntry,
    GraphSpec,
    Manifest,
    check_format,
    check_present,
    known,
    manifest_dict,
    read_manifest_data,
    save_manifest,
    verify_entries,
)

VIDEO_FAMILIES = ("svd",)
SCHEDULERS = ("EulerDiscreteScheduler",)
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "original_sample")


@dataclass(frozen=True)
class VideoConditioning:
    """Shape facts and per-call defaults of an image-to-video package (SVD family).

    Defaults (`num_frames`, `num_inference_steps`, `fps`, `motion_bucket_id`,
    `noise_aug_strength`, `min_guidance_scale`, `max_guidance_scale`, `height`, `width`,
    `decode_chunk_size` (None: all frames at once)) are what a run uses when the caller gives
    none; they are diffusers' StableVideoDiffusionPipeline defaults unless the exporter was told
    otherwise. Shape facts: `clip_image_size` (the image encoder's fixed input side),
    `image_mean`/`image_std` (CLIP normalisation), `latent_channels`, `vae_scale_factor`
    (pixels per latent), `scaling_factor` (latents are divided by it before decoding) and
    `size_multiple` (height and width must be multiples of it).
    """

    num_frames: int
    num_inference_steps: int
    height: int
    width: int
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    min_guidance_scale: float
    max_guidance_scale: float
    clip_image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    latent_channels: int
    vae_scale_factor: int
    scaling_factor: float
    size_multiple: int
    decode_chunk_size: int | None = None

    @staticmethod
    def from_dict(data: dict[str, Any]) -> VideoConditioning:
        values = known(VideoConditioning, data)
        values["image_mean"] = tuple(float(x) for x in values["image_mean"])
        values["image_std"] = tuple(float(x) for x in values["image_std"])
        return VideoConditioning(**values)


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
class VideoManifest:
    """The parsed manifest of an image-to-video package (task "video"); docs/VIDEO.md.

    `graphs`: image_encoder, vae_encoder, time_embedding, then the UNet as down_block 0..n-1,
    mid_block, up_block 0..n-1, or (exported with operator groups) as unet_group 0..m-1, then
    vae_decoder. UNet graphs exchange named tensors: an output `X_out` replaces the running
    tensor `X`, any other output is stored under its name; each `skip_NN` is produced once and
    consumed once by a later graph. `op_groups` (graph name -> OpGroup) says how each
    unet_group may be sliced; empty for block packages. `scheduler` is the diffusers
    scheduler config (class in `_class_name`); `conditioning` the shape facts and defaults.
    """

    task: str
    family: str
    dtype: str
    graphs: tuple[GraphSpec, ...]
    scheduler: dict[str, Any]
    conditioning: VideoConditioning
    source: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    op_groups: dict[str, OpGroup] = field(default_factory=dict)
    root: Path = Path(".")
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @staticmethod
    def load(directory: str | Path) -> VideoManifest:
        """Read and check a video package: format, version, consistency, files present with
        their recorded sizes. Hashes are checked by `verify()`."""
        root = Path(directory)
        manifest = VideoManifest.from_dict(read_manifest_data(root), root)
        check_present(root, manifest.files())
        return manifest

    @staticmethod
    def from_dict(data: dict[str, Any], root: Path) -> VideoManifest:
        check_format(data, root)
        if data.get("task") != VIDEO_TASK:
            raise NotAPackageError(f"{root} is a {data.get('task')!r} package, not a video one; "
                                   "rank with it through `edgekit run PKG --query ...`")
        try:
            manifest = VideoManifest(
                task=data["task"],
                family=data["family"],
                dtype=data["dtype"],
                graphs=tuple(GraphSpec.from_dict(graph) for graph in data["graphs"]),
                scheduler=dict(data["scheduler"]),
                conditioning=VideoConditioning.from_dict(data["conditioning"]),
                source=data.get("source", {}),
                exporter=data.get("exporter", {}),
                parity=data.get("parity", {}),
                op_groups=_op_groups(data.get("op_groups", {})),
                root=root,
            )
            manifest.check_consistency()
            return manifest
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise NotAPackageError(f"{root / MANIFEST_FILE} is malformed ({error}); re-export the package") from None

    @property
    def num_blocks(self) -> int:
        return len(self.graphs_by_role("down_block"))

    def check_consistency(self) -> None:
        """Raise ValueError when fields contradict each other or what this runtime can execute."""
        if self.family not in VIDEO_FAMILIES:
            raise ValueError(f"video family {self.family!r} is not one of {VIDEO_FAMILIES}")
        if self.dtype != "fp32":
            raise ValueError(f"video packages are fp32, not {self.dtype!r}")
        roles = [graph.role for graph in self.graphs]
        n, m = self.num_blocks, len(self.graphs_by_role("unet_group"))
        blocks = ["down_block"] * n + ["mid_block"] + ["up_block"] * n
        expected = ["image_encoder", "vae_encoder", "time_embedding", *(["unet_group"] * m if m else blocks),
                    "vae_decoder"]
        if (n < 1 and m < 1) or roles != expected:
            raise ValueError(f"graph roles {roles} are not image_encoder, vae_encoder, time_embedding, then n down "
                             "blocks, mid_block, n up blocks (n >= 1) or unet groups, then vae_decoder")
        for role, count in (("down_block", n), ("up_block", n), ("unet_group", m)):
            if [graph.index for graph in self.graphs_by_role(role)] != list(range(count)):
                raise ValueError(f"{role} graphs are not in order 0..{count - 1}")
        self._check_op_groups()
        self._check_skips()
        if self.scheduler.get("_class_name") not in SCHEDULERS:
            raise ValueError(f"scheduler {self.scheduler.get('_class_name')!r} is not one of {SCHEDULERS}")
        if self.scheduler.get("prediction_type", "epsilon") not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.scheduler.get('prediction_type')!r} is not one of "
                             f"{PREDICTION_TYPES}")
        c = self.conditioning
        sizes = (c.num_frames, c.num_inference_steps, c.height, c.width, c.clip_image_size, c.latent_channels,
                 c.vae_scale_factor, c.size_multiple)
        if any(not isinstance(v, int) or v < 1 for v in sizes) or c.scaling_factor <= 0:
            raise ValueError("conditioning sizes must be positive integers and scaling_factor positive")
        if c.height % c.size_multiple or c.width % c.size_multiple:
            raise ValueError(f"default size {c.height}x{c.width} is not a multiple of {c.size_multiple}")
        if len(c.image_mean) != 3 or len(c.image_std) != 3 or min(c.image_std) <= 0:
            raise ValueError("image_mean and image_std need three values (std positive)")

    def _check_op_groups(self) -> None:
        groups = {graph.name: graph for graph in self.graphs_by_role("unet_group")}
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

    def _check_skips(self) -> None:
        """Every skip_NN a UNet graph produces is consumed exactly once, by a later graph."""
        produced: set[str] = set()
        consumed: set[str] = set()
        for graph in self.unet_graphs:
            needs = [spec.name for spec in graph.inputs if spec.name.startswith("skip_")]
            if any(name not in produced or name in consumed for name in needs):
                raise ValueError(f"{graph.name} takes skips {needs} that no earlier graph produced or that are "
                                 "already consumed")
            consumed.update(needs)
            produced.update(spec.name for spec in graph.outputs if spec.name.startswith("skip_"))
        if consumed != produced:
            raise ValueError(f"skip connections {sorted(produced - consumed)} are never consumed")

    def to_dict(self) -> dict[str, Any]:
        return manifest_dict(self)

    def save(self, directory: Path) -> Path:
        return save_manifest(self, directory)

    def files(self) -> list[FileEntry]:
        """Every file the package lists: each graph's .onnx file and its external data."""
        return [entry for graph in self.graphs for entry in graph.files]

    def verify(self) -> None:
        """Re-hash every listed file; raise IntegrityError naming each file that fails."""
        verify_entries(self.root, self.files())

    def graphs_by_role(self, role: str) -> list[GraphSpec]:
        return [graph for graph in self.graphs if graph.role == role]

    def graph(self, role: str) -> GraphSpec:
        """The single graph of `role` (image_encoder, vae_encoder, time_embedding, mid_block, vae_decoder)."""
        (found,) = self.graphs_by_role(role)
        return found

    @property
    def unet_graphs(self) -> tuple[GraphSpec, ...]:
        """time_embedding, down blocks, mid block, up blocks: what one denoising step runs, in order."""
        return self.graphs[2:-1]

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files())


def load_any(directory: str | Path) -> Manifest | VideoManifest:
    """Read a package of any task: a VideoManifest for "video", else a (ranking) Manifest."""
    root = Path(directory)
    data = read_manifest_data(root)
    if isinstance(data, dict) and data.get("task") == VIDEO_TASK:
        manifest: Manifest | VideoManifest = VideoManifest.from_dict(data, root)
    else:
        manifest = Manifest.from_dict(data, root)
    check_present(root, manifest.files())
    return manifest
