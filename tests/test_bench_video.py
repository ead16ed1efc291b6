"""`edgekit bench video` as a story: a tiny random SVD -> its package and the whole-UNet baseline
graph (and the package exported with operator groups) -> nine variants, each in its own process, on the same image, latents and noise -> a
report with per-stage time and peak RSS, frame errors against diffusers and ratios against the
one-graph baseline, as JSON, markdown and a PNG. No timing assertions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")

from edgekit.bench.report import Quality, Report  # noqa: E402
from edgekit.cli import app  # noqa: E402

runner = CliRunner()
FRAMES, SIZE = 2, 32
MEMORY_VARIANTS = ("diffusers", "diffusers-memory", "onnx-monolithic", "edgekit", "edgekit-chunked", "edgekit-tiled",
                   "edgekit-groups", "edgekit-sliced", "edgekit-lean")


@pytest.fixture(scope="module")
def tiny_package(tiny_svd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekit.exporters.video_svd import export_svd

    root = tmp_path_factory.mktemp("bench-video")
    export_svd(tiny_svd, root / "pkg")
    return root / "pkg"


def test_bench_video_reports_every_variant_per_stage(tiny_package: Path, tmp_path: Path) -> None:
    out, md, png = tmp_path / "report.json", tmp_path / "BENCH.md", tmp_path / "video.png"
    md.write_text("# Benchmarks\n", encoding="utf-8")
    result = runner.invoke(app, ["bench", "video", str(tiny_package), "--frames", str(FRAMES), "--size", str(SIZE),
                                 str(SIZE), "--steps", "2", "--work", str(tmp_path / "work"), "--json", str(out),
                                 "--markdown", "--markdown-file", str(md), "--plot", str(png),
                                 "--variants", ",".join(MEMORY_VARIANTS)])
    assert result.exit_code == 0, result.output
    report = Report.load(out)
    by = {v.name: v for v in report.variants}
    assert list(by) == list(MEMORY_VARIANTS)
    assert report.baseline == "onnx-monolithic" and report.reference == "diffusers"
    for v in by.values():
        assert [s.name for s in v.stages] == ["encode", "denoise", "decode"]
        for stage in v.stages:
            assert stage.ms > 0 and stage.peak_rss_mb > 0
        assert v.peak_rss_mb >= max(s.peak_rss_mb for s in v.stages)
        assert {r.measure for r in v.ratios} >= {"decode_peak", "denoise_peak", "latency", "peak"}
        assert all(r.baseline == "onnx-monolithic" and math.isfinite(r.value) for r in v.ratios)
    assert by["onnx-monolithic"].ratio("decode_peak").value == 1.0

    def frames(name: str, reference: str) -> Quality:
        return by[name].compared_with(reference, "frames")

    # the same inputs give the same video: edgekit vs diffusers, and vs the one-graph baseline
    assert frames("diffusers", "diffusers").max_abs_diff == 0
    assert frames("edgekit", "diffusers").max_abs_diff <= 1e-3
    assert frames("edgekit", "onnx-monolithic").max_abs_diff <= 1e-4
    assert frames("onnx-monolithic", "diffusers").max_abs_diff <= 1e-3
    # chunked decoding is measured against the full decode, not claimed exact
    assert frames("edgekit-chunked", "edgekit").psnr_db is not None
    # tiles of 16 latent pixels cover this 16 x 16 latent: edgekit-tiled is edgekit-chunked, bit for bit
    assert by["edgekit-tiled"].details["tile"] == {"tile": 16, "overlap": 4}
    assert frames("edgekit-tiled", "edgekit-chunked").max_abs_diff == 0
    assert by["edgekit-tiled"].details["stats"]["decode_tiles"] == 1
    verdicts = report.details["verdicts"]
    assert verdicts["decode_peak"]["variant"] in ("edgekit-chunked", "edgekit-tiled", "edgekit-lean")
    assert set(verdicts["decode_peak"]["considered"]) == {"edgekit-chunked", "edgekit-tiled", "edgekit-lean"}
    assert [v.variant for v in report.verdicts] == [v["variant"] for v in verdicts.values()]
    switches = by["diffusers-memory"].details["switches"]
    assert switches["decode_chunk_size"] == 1 and "GPU-only" in switches["enable_model_cpu_offload"]
    # the runtime's own per-stage stats
    stats = by["edgekit"].details["stats"]
    assert stats["encode_ms"] > 0 and set(stats["stage_peak_rss_mb"]) == {"encode", "denoise", "decode"}
    assert stats["stage_peak_rss_mb"]["decode"] <= stats["peak_rss_mb"]
    assert set(verdicts) == {"decode_peak", "denoise_peak", "latency", "denoise_peak_sliced"}
    # the Feature Slicer: the grouped package, unsliced and sliced 4 ways, makes diffusers' video; the
    # sliced run is compared with the unsliced one (one-frame slices round differently in onnxruntime's
    # kernels, ~1e-6 per UNet call, which this random tiny UNet amplifies; tests/test_video_slicing.py
    # checks exactness per UNet evaluation)
    sliced, groups = by["edgekit-sliced"].details["stats"], by["edgekit-groups"].details["stats"]
    assert sliced["slices"] == 4 and groups["slices"] == 1 and sliced["op_groups"] > 0
    assert frames("edgekit-groups", "onnx-monolithic").max_abs_diff <= 1e-4
    assert frames("edgekit-sliced", "diffusers").max_abs_diff <= 1e-3
    assert by["edgekit-sliced"].compared_with("edgekit-groups", "latents").max_abs_diff <= 1e-3
    # edgekit-lean: the sliced denoise with the tiled decode (tiles cover this latent: the chunked decode)
    lean = by["edgekit-lean"].details["stats"]
    assert (lean["slices"], lean["decode_chunk"], lean["decode_tile"]) == (4, 1, 16)
    assert frames("edgekit-lean", "edgekit").max_abs_diff == pytest.approx(
        frames("edgekit-chunked", "edgekit").max_abs_diff, abs=1e-3)
    assert np.load(by["edgekit"].details["frames_file"]).shape == (FRAMES, SIZE, SIZE, 3)
    text = md.read_text()
    assert text.startswith("# Benchmarks") and text.count("<!-- bench:video:start -->") == 1
    assert "<!-- bench:video:end -->" in text and "| edgekit-chunked |" in text
    assert "| onnx-monolithic (baseline) |" in text and "decode peak × onnx-monolithic" in text
    assert "Outputs compared:" in text and "frames PSNR dB vs diffusers" in text and "Targets:" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_video_default_compares_the_step_cache_variants(tiny_package: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["bench", "video", str(tiny_package), "--frames", str(FRAMES), "--size", str(SIZE),
                                 str(SIZE), "--steps", "4", "--work", str(tmp_path / "work"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = Report.load(out)
    by = {v.name: v for v in report.variants}
    assert list(by) == ["onnx-monolithic", "edgekit", "edgekit-cached", "edgekit-adaptive", "edgekit-cached-noswap",
                        "edgekit-streamlined"]
    assert report.details["config"]["steps"] == 4
    evals = {name: v.figures["unet_block_evals"] for name, v in by.items()}
    # interval:3 over 4 steps: F C C F -> 2 full (5 blocks) + 2 cached (2 blocks) of the tiny UNet's 5
    assert evals["edgekit"] == 20 and evals["edgekit-cached"] == evals["edgekit-streamlined"] == 14
    for name in ("edgekit-cached", "edgekit-adaptive", "edgekit-cached-noswap", "edgekit-streamlined"):
        v = by[name]
        assert {r.measure for r in v.ratios if r.baseline == "edgekit"} == {"denoise_time", "latency",
                                                                           "denoise_peak", "peak"}
        assert v.ratio("denoise_time", "onnx-monolithic") is not None
        assert v.compared_with("edgekit", "latents").max_abs_diff is not None
        assert v.compared_with("edgekit", "frames").psnr_db is not None
    cached, noswap = by["edgekit-cached"].details["stats"], by["edgekit-cached-noswap"].details["stats"]
    assert cached["step_cache"]["swap"]["mode"] == "disk" and noswap["step_cache"]["swap"]["mode"] == "off"
    assert np.array_equal(np.load(by["edgekit-cached"].details["frames_file"]),
                          np.load(by["edgekit-cached-noswap"].details["frames_file"]))  # swap changes nothing
    streamlined = by["edgekit-streamlined"].details["stats"]
    assert (streamlined["slices"], streamlined["decode_chunk"], streamlined["decode_tile"]) == (4, 1, 16)
    assert streamlined["step_cache"]["plan"] == "FCCF"
    verdicts = report.details["verdicts"]
    assert {"edgekit-cached_denoise_time", "cached_denoise_peak", "streamlined_latency",
            "streamlined_peak"} <= set(verdicts)


def test_bench_video_refuses_bad_step_cache_settings(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "video", str(tmp_path), "--step-cache", "interval:0"])
    assert result.exit_code == 2 and "interval must be >= 1" in result.output


def test_bench_video_refuses_unknown_variants(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "video", str(tmp_path), "--variants", "edgekit,torch-compile"])
    assert result.exit_code == 2 and "torch-compile" in result.output


def test_rounds_report_medians_and_each_rounds_ratio_range() -> None:
    from edgekit.bench.video import _ratio_range, median_run

    def run(latency: float, decode_peak: float) -> dict:
        stages = {stage: {"ms": latency / 3, "peak_rss_mb": decode_peak if stage == "decode" else 100.0}
                  for stage in ("encode", "denoise", "decode")}
        return {"latency_ms": latency, "load_ms": 5.0, "peak_rss_mb": decode_peak, "stages": stages, "frames_file": "f"}

    variant = [run(10, 200), run(30, 100), run(20, 150)]
    baseline = [run(10, 1000), run(20, 1000), run(20, 500)]
    merged = median_run(variant)
    assert merged["latency_ms"] == 20 and merged["stages"]["decode"]["peak_rss_mb"] == 150
    assert merged["frames_file"] == "f" and variant[0]["latency_ms"] == 10  # the runs are not modified
    spread = _ratio_range(variant, baseline)
    assert spread["decode_peak"] == [0.1, 0.3]  # round by round: 0.2, 0.1, 0.3
    assert spread["latency"] == [1.0, 1.5]
