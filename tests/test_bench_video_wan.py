"""`edgekit bench video --family wan` as a story: the tiny exported Wan -> its two one-graph
baselines (whole transformer, whole VAE decoder) -> six variants, each in its own process, on the
same prompt and initial latents -> a report with per-stage time and peak RSS, frames and latents
against diffusers and against each cached variant's own no-cache run, ratios against the
one-graph baseline and the issue's verdicts, as JSON, a markdown section of its own and a PNG.
No timing assertions."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("diffusers")
pytest.importorskip("matplotlib")

from edgekit.bench.report import Report  # noqa: E402
from edgekit.cli import app  # noqa: E402

runner = CliRunner()
VARIANTS = ("diffusers", "diffusers-fbc", "onnx-monolithic", "edgekit", "edgekit-cached", "edgekit-chunked")
VERDICTS = {"decode_peak", "denoise_peak", "cached_denoise_time", "cached_denoise_peak", "cached_vs_fbc_denoise_peak",
            "frames_vs_diffusers", "chunked_exact"}
SVD_SECTION = "<!-- bench:video:start -->\n## SVD\n<!-- bench:video:end -->\n"


@pytest.fixture(scope="module")
def bench_run(wan_package: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Report, str, Path]:
    """One bench run of every variant: 9 frames (3 latent frames, so a decode chunk of 2 differs
    from 1), 16x16, 2 steps, First-Block-Cache at 0.3 (skips the second step on this model)."""
    tmp = tmp_path_factory.mktemp("bench-wan")
    out, md, png = tmp / "report.json", tmp / "BENCH.md", tmp / "wan.png"
    md.write_text("# Benchmarks\n\n" + SVD_SECTION, encoding="utf-8")
    result = runner.invoke(app, ["bench", "video", str(wan_package), "--family", "wan", "--frames", "9", "--size",
                                 "16", "16", "--steps", "2", "--adaptive", "adaptive:0.3,max-skip:1000",
                                 "--work", str(tmp / "work"), "--json", str(out), "--markdown", "--markdown-file",
                                 str(md), "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 0
    return Report.load(out), md.read_text(encoding="utf-8"), tmp / "work"


def test_every_variant_reports_its_stages_and_ratios(bench_run: tuple[Report, str, Path]) -> None:
    report, _, _ = bench_run
    by = {v.name: v for v in report.variants}
    assert tuple(by) == VARIANTS
    assert report.baseline == "onnx-monolithic" and report.reference == "diffusers"
    for v in by.values():
        assert [s.name for s in v.stages] == ["encode", "denoise", "decode"]
        for stage in v.stages:
            assert stage.ms > 0 and stage.peak_rss_mb > 0
        assert v.latency_ms > 0 and v.figures["load_ms"] > 0
        assert v.peak_rss_mb >= max(s.peak_rss_mb for s in v.stages)
        measures = {r.measure for r in v.ratios if r.baseline == "onnx-monolithic"}
        assert measures == {"denoise_time", "decode_peak", "denoise_peak", "peak", "latency"}
        assert all(math.isfinite(r.value) for r in v.ratios)
    assert by["onnx-monolithic"].ratio("decode_peak").value == 1.0
    # each cached variant is also measured against its own no-cache run
    assert by["edgekit-cached"].ratio("denoise_time", "edgekit") is not None
    assert by["diffusers-fbc"].ratio("denoise_peak", "diffusers") is not None
    plan = by["edgekit-cached"].details["step_cache"]["plan"]
    assert len(plan) == 2 and plan.startswith("F")
    assert by["edgekit-cached"].figures["block_evals"] >= 1


def test_outputs_match_diffusers_and_the_chunked_decode_is_exact(bench_run: tuple[Report, str, Path]) -> None:
    report, _, _ = bench_run
    by = {v.name: v for v in report.variants}
    for name in ("onnx-monolithic", "edgekit", "edgekit-chunked"):
        assert by[name].compared_with("diffusers", "frames").max_abs_diff <= 1e-3, name
        assert by[name].compared_with("diffusers", "latents").max_abs_diff <= 1e-3, name
    assert by["edgekit-chunked"].compared_with("edgekit", "frames").max_abs_diff <= 1e-5
    # a cached step changes the output; without one the cached run is the uncached run bit for bit
    cached = by["edgekit-cached"].compared_with("edgekit", "frames").max_abs_diff
    skipped = "C" in by["edgekit-cached"].details["step_cache"]["plan"]
    assert (cached > 0) if skipped else (cached == 0)
    fbc = by["diffusers-fbc"].compared_with("diffusers", "frames").max_abs_diff
    assert fbc is not None and math.isfinite(fbc)

def test_verdicts_and_their_own_markdown_section(bench_run: tuple[Report, str, Path]) -> None:
    report, markdown, _ = bench_run
    verdicts = report.details["verdicts"]
    assert set(verdicts) == VERDICTS
    assert all(isinstance(v["met"], bool) and v["value"] is not None for v in verdicts.values())
    assert verdicts["frames_vs_diffusers"]["met"] and verdicts["chunked_exact"]["met"]
    assert verdicts["decode_peak"]["target"] == 0.20 and verdicts["denoise_peak"]["target"] == 0.30
    assert len(report.verdicts) == len(VERDICTS)
    assert report.workload.key == "video-wan"
    assert "<!-- bench:video-wan:start -->" in markdown and "<!-- bench:video-wan:end -->" in markdown
    assert SVD_SECTION in markdown  # the SVD bench's section is left alone


@pytest.mark.parametrize("args, named", [
    (["--family", "wan", "--slices", "2"], "--slices"),
    (["--family", "wan", "--step-cache", "interval:2"], "--step-cache"),
    (["--family", "svd", "--variants", "diffusers-fbc"], "diffusers-fbc"),
    (["--family", "wan", "--variants", "edgekit-tiled"], "edgekit-tiled"),
    (["--family", "mp4"], "--family"),
    (["--family", "wan", "--adaptive", "interval:3"], "adaptive:T"),
])
def test_family_misuse_is_one_line(args: list[str], named: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "video", str(tmp_path), *args, "--work", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    assert named in result.output and len(result.output.strip().splitlines()) == 1, result.output
