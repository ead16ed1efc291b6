"""The CLI commands on a tiny sweep: well-formed JSONL, CSV (the issue's columns), PNG and
markdown; context parallelism through torchrun; user errors as `InvalidArgumentError`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from edgekit.bench.report import Report
from edgekit.errors import InvalidArgumentError
from edgekit.runtimes.attention.cli import attention, attention_cp

torch.set_num_threads(1)
REQUIRED = {"kernel", "mask", "seqlen", "batch", "heads", "kv_heads", "head_dim", "dtype", "pass", "status",
            "ms_median", "flops", "tflops", "peak_mem_mb"}


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("attention")(attention)
    app.command("attention-cp")(attention_cp)
    return app


def test_attention_writes_jsonl_csv_png_and_markdown(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "attention", "--kernels", "sdpa-math,sdpa-flash,sdpa-cudnn,flex,ort-attention",
        "--masks", "causal,document,block-sparse", "--seqlens", "64,128", "--heads", "4", "--kv-heads", "2",
        "--head-dim", "16", "--backward", "--reps", "2", "--warmup", "0", "--threads", "1",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "attention.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 5 * 2
    assert all(REQUIRED <= set(r) for r in rows)
    assert {r["status"] for r in rows} == {"ok", "unsupported"}
    assert all(r["ms_median"] > 0 and r["tflops"] > 0 for r in rows if r["status"] == "ok")
    with (tmp_path / "attention.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and REQUIRED <= set(table[0])
    assert (tmp_path / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (tmp_path / "attention.md").read_text()
    assert "| document | 128 | sdpa-flash | bwd | ok |" in summary and "Unsupported, and why" in summary

    report = Report.load(tmp_path / "attention.report.json")  # the typed report, as every bench command writes
    names = {f"{r['kernel']} {r['pass']}" for r in rows}
    assert report.baseline == "sdpa-math fwd" and report.variant("sdpa-math bwd") is not None
    assert {v.name for v in report.variants} == names
    for v in report.variants:
        mine = [r for r in rows if f"{r['kernel']} {r['pass']}" == v.name]
        assert v.figures["ok"] + v.figures["unsupported"] == len(mine)
        ratio = v.ratio("latency", f"sdpa-math {v.name.split()[-1]}")
        assert ratio is not None
        if v.figures["ok"]:  # every cell that ran has its sdpa-math cell: a finite, positive ratio
            assert ratio.value is not None and math.isfinite(ratio.value) and ratio.value > 0
            assert v.figures["cells_compared"] == v.figures["ok"]
            assert v.quality[0].max_abs_diff == max(r["max_err"] for r in mine if r["max_err"] is not None)
        else:
            assert ratio.value is None and v.latency_ms is None
    assert report.variant("sdpa-math fwd").ratio("latency").value == pytest.approx(1.0)
    tables = {t.title.split(":")[0]: t for t in report.tables}
    assert set(tables) == {"causal", "document", "block-sparse"}
    for mask, table in tables.items():
        assert table.columns[0] == "seqlen" and set(table.columns[1:]) == names
        assert [row[0] for row in table.rows] == [64, 128]
        cell = table.rows[1][table.columns.index("sdpa-cudnn fwd")]
        assert cell == "unsupported"
        tflops = next(r["tflops"] for r in rows if (r["mask"], r["seqlen"], r["kernel"], r["pass"]) ==
                      (mask, 128, "sdpa-flash", "bwd"))
        assert table.rows[1][table.columns.index("sdpa-flash bwd")] == pytest.approx(tflops)
    section = (tmp_path / "attention.report.md").read_text()
    assert "<!-- bench:attention:start -->" in section and "sdpa-math fwd (baseline)" in section
    assert (tmp_path / "attention.report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_attention_cp_launches_torchrun(app: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "attention-cp", "--nproc", "2", "--methods", "ring,usp", "--masks", "causal,sliding-window",
        "--seqlen", "64", "--heads", "4", "--head-dim", "16", "--reps", "1", "--warmup", "0",
        "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "attention_cp.jsonl").read_text().splitlines()]
    assert [(r["method"], r["mask"], r["status"]) for r in rows] == [
        ("single", "causal", "ok"), ("single", "sliding-window", "ok"),  # the single-process baseline
        ("ring", "causal", "ok"), ("ring", "sliding-window", "ok"),
        ("usp", "causal", "ok"), ("usp", "sliding-window", "ok")]
    assert all(r["world"] == 1 for r in rows[:2]) and all(r["world"] == 2 for r in rows[2:])
    assert (tmp_path / "attention_cp.csv").exists() and "ring" in (tmp_path / "attention_cp.md").read_text()

    report = Report.load(tmp_path / "attention_cp.report.json")
    assert report.baseline == "single-process causal" and report.variant(report.baseline) is not None
    assert [v.name for v in report.variants] == [
        "single-process causal", "single-process sliding-window",
        "ring causal", "ring sliding-window", "usp causal", "usp sliding-window"]
    for v, r in zip(report.variants, rows, strict=True):
        mask = v.name.split()[-1]
        ratio = v.ratio("latency", f"single-process {mask}")
        assert ratio is not None and ratio.value is not None and math.isfinite(ratio.value) and ratio.value > 0
        base = report.variant(f"single-process {mask}")
        assert ratio.value == pytest.approx(v.latency_ms / base.latency_ms)
        assert v.latency_ms == r["ms_median"] and v.quality[0].max_abs_diff == r["max_err"] < 1e-6
    assert "<!-- bench:attention-cp:start -->" in (tmp_path / "attention_cp.report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["attention", "--masks", "diagonal"], "unknown mask"),
    (["attention", "--kernels", "sdpa-turbo"], "unknown kernel"),
    (["attention", "--seqlens", "1k"], "comma-separated integers"),
    (["attention", "--heads", "6", "--kv-heads", "4"], "multiple of kv-heads"),
    (["attention", "--dtype", "fp8"], "unknown dtype"),
    (["attention-cp", "--nproc", "4", "--methods", "ulysses", "--heads", "6"], "divisible by the Ulysses degree"),
])
def test_user_errors_are_one_line_invalid_argument_errors(app: typer.Typer, args: list[str], message: str,
                                                          tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path)])
    assert isinstance(result.exception, InvalidArgumentError)
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_gpu_check_replaces_its_section_in_benchmarks_md() -> None:
    from edgekit.runtimes.attention.gpu_check import MARK_BEGIN, replace_section

    once = replace_section("# Benchmarks\n\nother text\n", "## table v1")
    twice = replace_section(once, "## table v2")
    assert "other text" in twice and "v2" in twice and "v1" not in twice and twice.count(MARK_BEGIN) == 1


def test_mounting_the_commands_imports_no_torch() -> None:
    """The project CLI may import `attention`/`attention_cp` at start-up: that must stay light."""
    import subprocess
    import sys

    code = ("import sys, edgekit.runtimes, edgekit.runtimes.attention.cli; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sweep_report_without_sdpa_math_and_with_oom_and_wrong_cells() -> None:
    """The typed report from hand-made rows: the first kernel is the baseline when sdpa-math was not
    swept; oom cells count but are not compared; wrong cells keep their TFLOP/s in the table but
    stay out of the ratio; the report survives its JSON round trip."""
    from edgekit.runtimes.attention.measure import Row
    from edgekit.runtimes.attention.report import sweep_report

    def row(kernel: str, s: int, status: str, ms: float | None = None, err: float | None = None) -> Row:
        return Row(kernel, "causal", s, 1, 4, 4, 16, "bfloat16", "fwd", status, ms_median=ms,
                   tflops=None if ms is None else 1.0 / ms, max_err=err, device="cuda:0")

    rows = [row("sdpa-flash", 64, "ok", 2.0, 1e-3), row("flex-compiled", 64, "ok", 1.0, 2e-3),
            row("sdpa-flash", 128, "ok", 4.0, 1e-3), row("flex-compiled", 128, "wrong", 1.0, 0.5),
            row("sdpa-flash", 256, "oom"), row("flex-compiled", 256, "ok", 3.0, 1e-3)]
    report = sweep_report(rows, command="edgekit bench attention", where="test GPU")
    assert report.baseline == "sdpa-flash fwd" and "first kernel swept" in report.notes[0]
    flex = report.variant("flex-compiled fwd")
    assert flex.figures["ok"] == 2 and flex.figures["wrong"] == 1 and flex.figures["cells_compared"] == 1
    assert flex.ratio("latency").value == pytest.approx(0.5) and flex.quality[0].max_abs_diff == 0.5
    assert flex.quality[0].reference == report.reference == "math-float32"
    assert report.variant("sdpa-flash fwd").figures["oom"] == 1
    (table,) = report.tables
    assert table.rows == ((64, 0.5, 1.0), (128, 0.25, "wrong (1)"), (256, "oom", pytest.approx(1 / 3)))
    assert Report.from_json(report.to_json()) == report
