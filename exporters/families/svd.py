"""Stable Video Diffusion: a diffusers `StableVideoDiffusionPipeline` directory -> a `video`
package (image encoder, VAE encoder, UNet blocks or operator groups, VAE decoder).

Wraps exporters/video_svd.py (`export_svd`); models/video_svd.py builds the tiny pipeline.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import InvalidArgumentError
from edgekit.exporters.families.base import (
    FORMAT_OPTIONS,
    ExportFamily,
    Progress,
    core_ml_options,
    import_exporter,
    read_json,
)
from edgekit.manifest import Manifest

PIPELINE = "StableVideoDiffusionPipeline"


def _recognise(path: Path, task: str | None) -> bool:
    index = read_json(path / "model_index.json")
    return isinstance(index, dict) and index.get("_class_name") == PIPELINE


def _export(source: Path, out: Path, progress: Progress | None, overwrite: bool, op_groups: bool = False,
            dtype: str = "fp32", format: str | None = None, compute_units: str | None = None,
            precision: str | None = None, palettize: int | None = None) -> Manifest:
    if dtype != "fp32":  # --dtype fp32 is accepted, as before the families: it is what svd writes
        raise InvalidArgumentError(f"--dtype {dtype} does not apply to svd (--task video), which exports fp32 graphs")
    formats = core_ml_options(format, compute_units, precision, palettize)
    video_svd = import_exporter("edgekit.exporters.video_svd", "export,video")
    return video_svd.export_svd(source, out, overwrite=overwrite, progress=progress, op_groups=op_groups,
                                coreml=formats)


def _build_tiny(directory: Path) -> Path:
    from edgekit.models.video_svd import build_tiny_svd

    return build_tiny_svd(directory)


def _summary(manifest: Manifest) -> str:
    assert manifest.video is not None
    groups = (f", {len(manifest.video.op_groups)} operator groups, sliced vs unsliced "
              f"{manifest.parity['sliced_vs_unsliced_max_abs_diff']:.2g}" if manifest.video.op_groups else "")
    return (f"video, {manifest.family}, {len(manifest.graphs)} graphs, {manifest.total_bytes / 2**20:.1f} MiB, "
            f"chained UNet parity {manifest.parity['unet_chained_max_abs_diff']:.2g}{groups}")


SVD = ExportFamily(
    name="svd",
    task="video",
    description=f"a diffusers {PIPELINE} directory (model_index.json)",
    stages=("image_encoder", "vae_encoder", "time_embedding", "down_block", "mid_block", "up_block", "unet_group",
            "vae_decoder"),
    options=("op_groups", "dtype", *FORMAT_OPTIONS),
    recognise=_recognise,
    exporter=_export,
    build_tiny=_build_tiny,
    summary=_summary,
    extra="export,video",
)
