"""`edgekit bench select` in smoke mode on a tiny package: every variant runs in its own process
and the report, markdown and plot come out well-formed (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgekit.cli import app
from tests.conftest import CANDIDATES, QUERY


def test_bench_select_smoke(tiny_cross_package: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data.jsonl"
    rows = [{"query": f"{QUERY} {i}", "candidates": CANDIDATES[i % 3:] + CANDIDATES[: i % 3], "relevant": [0]}
            for i in range(4)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    markdown_file = tmp_path / "BENCH.md"
    result = CliRunner().invoke(app, [
        "bench", "select", str(tiny_cross_package), "--data", str(data), "--top-k", "3", "--threads", "1",
        "--batch", "4", "--chunk", "4", "--target-agreement", "0.5", "--memory-sweep", "5,10",
        "--json", str(tmp_path / "r.json"), "--markdown", "--markdown-file", str(markdown_file),
        "--plot", str(tmp_path / "r.png"), "--title", "smoke",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    names = [v["name"] for v in report["variants"]]
    assert names[:4] == ["torch", "onnx-monolithic", "onnx-monolithic-batched", "edgekit-exact"]
    by_name = {v["name"]: v for v in report["variants"]}
    # exact variants select exactly what the reference selects
    for name in ("onnx-monolithic", "onnx-monolithic-batched", "edgekit-exact", "edgekit-resident"):
        assert by_name[name]["agreement"] == 1.0
        assert by_name[name]["peak_rss_mb"] > 0 and by_name[name]["latency_ms_median"] > 0
    assert report["workload"]["queries_measured"] == 2 and report["workload"]["queries_calibration"] == 2
    assert {r["candidates"] for r in report["sweep"]} == {5, 10}
    text = markdown_file.read_text()
    assert "| edgekit-exact |" in text and text.count("bench:select:smoke:start") == 1
    # a rerun replaces the section instead of appending a second one
    rerun = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data), "--top-k", "3",
                                     "--threads", "1", "--variants", "edgekit-exact", "--no-split", "--markdown",
                                     "--markdown-file", str(markdown_file), "--title", "smoke"])
    assert rerun.exit_code == 0, rerun.output
    text = markdown_file.read_text()
    assert text.count("bench:select:smoke:start") == 1
    assert "| edgekit-exact |" in text and "| torch |" not in text  # the section was replaced
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_bench_select_rejects_unknown_variant(tiny_cross_package: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"query": QUERY, "candidates": CANDIDATES}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data),
                                      "--variants", "fastest"])
    assert result.exit_code == 2 and "unknown variants" in result.stderr
    zero = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data),
                                    "--threads", "0"])
    assert zero.exit_code == 2 and "--threads must be >= 1" in zero.stderr
