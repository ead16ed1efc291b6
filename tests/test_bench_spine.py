"""Smoke test of the spine benchmark's pieces on a tiny model (no timing assertions).

export_monolithic -> same scores as the edgekit package; run_variant on each variant -> one JSON
object with finite fields; a failing child -> VariantError carrying its stderr.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.bench.spine_variant import VARIANTS
from edgekit.bench.subprocess_runner import VariantError, run_variant
from edgekit.exporters.monolithic import export_monolithic
from edgekit.manifest import Manifest
from tests.conftest import CANDIDATES, QUERY

CHILD = "edgekit.bench.spine_variant"


@pytest.fixture(scope="module")
def tiny_mono_graph(tmp_path_factory: pytest.TempPathFactory, tiny_bi_encoder: Path, tiny_bi_package: Path) -> Path:
    graph = tmp_path_factory.mktemp("mono") / "bi.onnx"
    export_monolithic(tiny_bi_encoder, graph, Manifest.load(tiny_bi_package).ranking.max_length)
    return graph


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("workload") / "w.json"
    path.write_text(json.dumps({"query": QUERY, "candidates": CANDIDATES}))
    return path


def _child_args(variant: str, package: Path, graph: Path, workload: Path, options: str = "edgekit") -> list[str]:
    return ["--variant", variant, "--package", str(package), "--graph", str(graph), "--workload", str(workload),
            "--batch", "3", "--repeats", "2", "--ort-options", options, "--top-k", "5"]


def test_monolithic_graph_matches_package(tiny_bi_package: Path, tiny_mono_graph: Path, workload: Path) -> None:
    from edgekit.bench.spine_variant import parse_args, run

    ranking = edgekit.load(str(tiny_bi_package), chunk=3).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = np.full(len(CANDIDATES), np.nan)
    for result in ranking:
        expected[result.index] = result.score
    result = run(parse_args(_child_args("onnx-monolithic", tiny_bi_package, tiny_mono_graph, workload)
                            + ["--threads", "1"]))
    np.testing.assert_allclose(result["scores"], expected, atol=1e-5)


def test_monolithic_cross_encoder_exports(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    export_monolithic(tiny_cross_encoder, tmp_path / "cross.onnx", max_length=64)  # parity checked inside
    assert (tmp_path / "cross.onnx").stat().st_size > 0
    assert not list(tmp_path.glob(".cross.onnx.tmp-*"))


@pytest.mark.parametrize("variant", VARIANTS)
def test_run_variant_returns_finite_json(variant: str, tiny_bi_package: Path, tiny_mono_graph: Path,
                                         workload: Path) -> None:
    result = run_variant(CHILD, _child_args(variant, tiny_bi_package, tiny_mono_graph, workload), threads=1)
    assert result["variant"] == variant and result["threads"] == 1
    assert len(result["latency_ms"]) == 2 and len(result["scores"]) == len(CANDIDATES)
    for key in ("latency_ms_median", "latency_ms_p90", "cold_ms", "peak_rss_mb", "baseline_rss_mb"):
        assert math.isfinite(result[key]) and result[key] > 0, key
    assert all(math.isfinite(score) for score in result["scores"])
    assert len(result["top_k"]) == 5 and len(set(result["top_k"])) == 5
    assert result["torch_imported"] is False  # process baselines stay comparable


def test_default_ort_options_variant(tiny_bi_package: Path, tiny_mono_graph: Path, workload: Path) -> None:
    args = _child_args("onnx-monolithic-batched", tiny_bi_package, tiny_mono_graph, workload, options="default")
    result = run_variant(CHILD, args, threads=1)
    assert result["ort_options"] == "default" and math.isfinite(result["peak_rss_mb"])


def test_failing_child_raises_with_stderr(tiny_bi_package: Path, workload: Path) -> None:
    args = ["--variant", "onnx-monolithic", "--package", str(tiny_bi_package), "--graph", "/nonexistent.onnx",
            "--workload", str(workload)]
    with pytest.raises(VariantError) as error:
        run_variant(CHILD, args, threads=1)
    assert error.value.returncode != 0 and "nonexistent" in str(error.value)


def test_bench_spine_command_fills_a_report(tiny_bi_encoder: Path, tmp_path: Path, monkeypatch) -> None:
    """The parent: tiny model -> package and monolithic graph -> three variants, each in its own
    process -> one Report with ratios against onnx-monolithic and scores compared with it."""
    from typer.testing import CliRunner

    from edgekit.bench.report import Report
    from edgekit.cli import app

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, [
        "bench", "spine", "--source", str(tiny_bi_encoder), "--cache", str(tmp_path / "spine"), "--candidates", "4",
        "--tokens", "24", "--repeats", "1", "--threads", "1", "--batch", "2", "--no-default-options",
        "--json", str(tmp_path / "spine.json"), "--markdown", "--markdown-file", str(tmp_path / "BENCH.md"),
        "--plot", str(tmp_path / "spine.png")])
    assert result.exit_code == 0, result.output
    report = Report.load(tmp_path / "spine.json")
    assert [v.name for v in report.variants] == ["onnx-monolithic", "onnx-monolithic-batched", "edgekit"]
    assert report.baseline == "onnx-monolithic" and report.workload.sizes["candidates"] == 4
    for variant in report.variants:
        assert {(r.measure, r.baseline) for r in variant.ratios} == {
            ("latency", "onnx-monolithic"), ("latency", "onnx-monolithic-batched"),
            ("peak_rss", "onnx-monolithic"), ("peak_rss", "onnx-monolithic-batched")}
        assert all(math.isfinite(r.value) and r.value > 0 for r in variant.ratios)
        compared = variant.compared_with("onnx-monolithic")
        assert compared.top_k_agreement == 1.0 and compared.max_abs_diff < 1e-4
    assert report.variant("onnx-monolithic").ratio("latency", "onnx-monolithic").value == 1.0
    text = (tmp_path / "BENCH.md").read_text()
    assert "<!-- bench:spine:start -->" in text and "| onnx-monolithic (baseline) |" in text
    assert "latency × onnx-monolithic-batched" in text and "Reading: edgekit vs onnx-monolithic-batched" in text
    assert (tmp_path / "spine.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
