"""Wan 2.1 text to video: a diffusers `WanPipeline` directory -> a `video` package (UMT5 text
encoder, DiT embeddings, one graph per transformer block, output head, causal VAE decoder as a
first-chunk and a next-chunk graph carrying its feature cache).

Wraps exporters/video_wan.py (`export_wan`); models/video_wan.py builds the tiny pipeline.
`--max-length N` sets the prompt tokens the package pads to (default 512, as WanPipeline).
"""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import InvalidArgumentError
from edgekit.exporters.families.base import ExportFamily, Progress, import_exporter, read_json
from edgekit.manifest import Manifest

PIPELINE = "WanPipeline"


def _recognise(path: Path, task: str | None) -> bool:
    index = read_json(path / "model_index.json")
    return isinstance(index, dict) and index.get("_class_name") == PIPELINE


def _export(source: Path, out: Path, progress: Progress | None, overwrite: bool, max_length: int | None = None,
            dtype: str = "fp32") -> Manifest:
    if dtype != "fp32":
        raise InvalidArgumentError(f"--dtype {dtype} does not apply to wan (--task video), which exports fp32 graphs")
    video_wan = import_exporter("edgekit.exporters.video_wan", "export,video")
    return video_wan.export_wan(source, out, overwrite=overwrite, progress=progress, max_sequence_length=max_length)


def _build_tiny(directory: Path) -> Path:
    from edgekit.models.video_wan import build_tiny_wan

    return build_tiny_wan(directory)


def _summary(manifest: Manifest) -> str:
    assert manifest.video is not None and manifest.video.wan is not None
    blocks = len(manifest.graphs_by_role("dit_block"))
    return (f"video, {manifest.family}, {len(manifest.graphs)} graphs ({blocks} transformer blocks), "
            f"{manifest.total_bytes / 2**20:.1f} MiB, streamed DiT parity "
            f"{manifest.parity['dit_chained_max_abs_diff']:.2g}, frame-by-frame decode parity "
            f"{manifest.parity['decode_chained_max_abs_diff']:.2g}")


WAN = ExportFamily(
    name="wan",
    task="video",
    description=f"a diffusers {PIPELINE} directory (model_index.json, Wan 2.1 text to video)",
    stages=("text_encoder", "dit_embed", "dit_block", "dit_head", "vae_decoder_first", "vae_decoder_next"),
    options=("max_length", "dtype"),
    recognise=_recognise,
    exporter=_export,
    build_tiny=_build_tiny,
    summary=_summary,
    extra="export,video",
)
