"""`edgekit bench select` in smoke mode on a tiny package: every variant runs in its own process
and the report, markdown and plot come out well-formed (no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from edgekit.bench.derived import DERIVED
from edgekit.bench.report import Report
from edgekit.cli import app
from tests.conftest import CANDIDATES, QUERY
from tests.test_pruning_e2e import POOL


def test_bench_select_smoke(tiny_cross_package: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.jsonl"
    rng = np.random.default_rng(0)  # queries over varied candidate sets, so calibration has something to learn
    rows = [{"query": f"{QUERY} {i}", "candidates": [POOL[j] for j in rng.choice(len(POOL), 14, replace=False)],
             "relevant": [0]} for i in range(12)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    markdown_file = tmp_path / "BENCH.md"
    result = CliRunner().invoke(app, [
        "bench", "select", str(tiny_cross_package), "--data", str(data), "--top-k", "3", "--threads", "1",
        "--batch", "4", "--chunk", "4", "--target-agreement", "0.5", "--delta", "0.5", "--memory-sweep", "5,10",
        "--json", str(tmp_path / "r.json"), "--markdown", "--markdown-file", str(markdown_file),
        "--plot", str(tmp_path / "r.png"), "--title", "smoke",
    ])
    assert result.exit_code == 0, result.output
    report = Report.load(tmp_path / "r.json")
    names = [v.name for v in report.variants]
    assert names[:7] == ["torch", "onnx-monolithic", "onnx-monolithic-batched", "onnx-monolithic-batched-inorder",
                         "onnx-monolithic-optimized", "onnx-monolithic-int8", "edgekit-exact"]
    # the int8 one graph is a baseline for the int8 packages: approximate, so only its agreement is reported
    assert 0.0 <= report.variant("onnx-monolithic-int8").compared_with("torch").top_k_agreement <= 1.0
    assert report.baseline == "onnx-monolithic-batched" and report.reference == "torch"
    # exact variants select exactly what the reference selects; every ratio is finite
    for name in ("onnx-monolithic", "onnx-monolithic-batched", "onnx-monolithic-batched-inorder",
                 "onnx-monolithic-optimized", "edgekit-exact", "edgekit-resident"):
        variant = report.variant(name)
        assert variant.compared_with("torch").top_k_agreement == 1.0
        assert variant.peak_rss_mb > 0 and variant.latency_ms > 0
    for variant in report.variants:
        assert [(r.measure, r.baseline) for r in variant.ratios] == [
            ("latency", "onnx-monolithic-batched"), ("peak_rss", "onnx-monolithic"),
            ("peak_rss", "onnx-monolithic-batched")]
        assert all(math.isfinite(r.value) and r.value > 0 for r in variant.ratios)
        assert variant.compared_with("labels").precision_at_k is not None  # the data has labels
    assert report.variant("onnx-monolithic-batched").ratio("latency").value == 1.0
    assert report.workload.sizes["queries_measured"] == 6 and report.workload.sizes["queries_calibration"] == 6
    # each pruning policy was calibrated on the first half, with its guarantee recorded ...
    calibrations, held_out = report.details["calibration"], report.details["held_out"]
    assert set(calibrations) == {"cluster", "rank-stability"}
    for calibration in calibrations.values():
        assert calibration["samples"] == 6 and calibration["delta"] == 0.5 and calibration["target_agreement"] == 0.5
    # ... and every calibrated variant that ran is checked on the half it never saw
    # packages exported again from the same source run, or say in a note why their export refused
    # (the tiny random model's int8 top-3 agreement is far below the default 0.99 gate)
    for name in DERIVED:
        assert name in names or any(note.startswith(f"`{name}` skipped: its export refused") for note in report.notes)
    assert report.variant("edgekit-shared").compared_with("edgekit-exact").top_k_agreement == 1.0
    ran = {name for name in ("edgekit-pruned", "edgekit-stable") if name in names}
    assert ran == {row["variant"] for row in held_out} and ran  # at least one policy was certified
    for row in held_out:
        assert row["reference"] == "edgekit-exact" and row["queries"] == 6 and 0.0 <= row["exact_share"] <= 1.0
        assert row["meets_target"] == (row["exact_share"] >= 0.5) and row["lower_bound"] >= 0.5
    (sweep,) = report.tables
    assert [row[0] for row in sweep.rows] == [5, 10] and sweep.plot
    text = markdown_file.read_text()
    assert "| edgekit-exact |" in text and "| onnx-monolithic-batched (baseline) |" in text
    assert "latency × onnx-monolithic-batched" in text and text.count("bench:select:smoke:start") == 1
    assert "Calibration, rank-stability:" in text and "Held out (6 queries" in text
    # the report says how the baselines batch and which fusions fired in the optimized graph
    assert "sort the candidates longest-first by tokenized length" in text
    assert "`onnx-monolithic-optimized`: onnxruntime transformer optimizer, model type bert: Attention ×" in text
    # a rerun replaces the section instead of appending a second one
    rerun = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data), "--top-k", "3",
                                     "--threads", "1", "--variants", "edgekit-exact", "--no-split", "--markdown",
                                     "--markdown-file", str(markdown_file), "--title", "smoke"])
    assert rerun.exit_code == 0, rerun.output
    text = markdown_file.read_text()
    assert text.count("bench:select:smoke:start") == 1
    assert "| edgekit-exact |" in text and "| torch |" not in text  # the section was replaced
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_select_rejects_unknown_variant(tiny_cross_package: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"query": QUERY, "candidates": CANDIDATES}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data),
                                      "--variants", "fastest"])
    assert result.exit_code == 2 and "unknown variants" in result.stderr
    zero = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data),
                                    "--threads", "0"])
    assert zero.exit_code == 2 and "--threads must be >= 1" in zero.stderr
