"""The one benchmark report type: a hand-built Report survives a JSON round trip and renders to a
markdown section (baseline row marked, a column per ratio, replaced on rerun) and a valid PNG."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgekit.bench.render import markdown, plot, write_section
from edgekit.bench.report import Machine, Quality, Ratio, Report, Stage, Table, Variant, Verdict, Workload


def _report() -> Report:
    work = Workload(title="Spine: tiny", key="spine-test", command="edgekit bench spine --candidates 3",
                    subject="tiny bi-encoder", data="w.json", sizes={"candidates": 3, "tokens": 16},
                    threads=1, settings={"batch": 2}, date="2026-12-02 04:00 UTC",
                    machine=Machine(cpu="test cpu", cores=2, memory_gib=4.0, os="linux", load_average=(0.5, 0.4, 0.3)))
    base = Variant("onnx-monolithic", latency_ms=100.0, latency_ms_p90=110.0, peak_rss_mb=500.0,
                   figures={"cold_ms": 130.0}, stages=(Stage("encode", 20.0, 300.0), Stage("decode", 80.0, 500.0)),
                   ratios=(Ratio("latency", 1.0, "onnx-monolithic"), Ratio("peak_rss", 1.0, "onnx-monolithic")),
                   quality=(Quality("onnx-monolithic", top_k_agreement=1.0, same_order=True, max_abs_diff=0.0),))
    edge = Variant("edgekit", latency_ms=87.0, latency_ms_p90=90.0, peak_rss_mb=230.0, figures={"cold_ms": 94.0},
                   stages=(Stage("encode", 17.0, 200.0), Stage("decode", 70.0, 230.0)),
                   ratios=(Ratio("latency", 0.87, "onnx-monolithic", (0.8, 0.9)), Ratio("peak_rss", 0.46, "onnx-monolithic")),
                   quality=(Quality("onnx-monolithic", top_k_agreement=1.0, same_order=True, max_abs_diff=3.8e-8),
                            Quality("onnx-monolithic", "frames", max_abs_diff=1e-3, psnr_db=math.inf)),
                   details={"stats": {"window": 2}})
    return Report(workload=work, baseline="onnx-monolithic", variants=(base, edge), reference="onnx-monolithic",
                  verdicts=(Verdict("peak RSS <= 0.5x", "edgekit", 0.46, 0.5, True, "one process each"),),
                  notes=("Ratios are medians over rounds.",),
                  tables=(Table("Peak RSS (MiB) as N grows", ("candidates", "edgekit"), ((5, 100.0), (10, 120.0)),
                                plot=True),),
                  details={"held_out": [{"variant": "edgekit", "exact_share": 1.0}]})


def test_report_round_trips_through_json() -> None:
    report = _report()
    again = Report.from_json(report.to_json())
    assert again == report
    assert again.variant("edgekit").ratio("latency").range == (0.8, 0.9)
    assert math.isinf(again.variant("edgekit").compared_with("onnx-monolithic", "frames").psnr_db)


def test_report_refuses_other_json() -> None:
    with pytest.raises(ValueError, match="not an edgekit benchmark report"):
        Report.from_json('{"variants": []}')


def test_markdown_marks_the_baseline_and_has_a_column_per_ratio(tmp_path: Path) -> None:
    section = markdown(_report())
    lines = section.splitlines()
    assert lines[0] == "<!-- bench:spine-test:start -->" and lines[-1] == "<!-- bench:spine-test:end -->"
    header = next(line for line in lines if line.startswith("| variant | median ms"))
    assert "latency × onnx-monolithic" in header and "peak RSS × onnx-monolithic" in header
    assert "top-K agree vs onnx-monolithic" in header and "frames PSNR dB vs onnx-monolithic" in header
    assert any(line.startswith("| onnx-monolithic (baseline) | 100 | 110 | 500 |") for line in lines)
    edge = next(line for line in lines if line.startswith("| edgekit |"))
    assert "0.87× (0.80–0.90)" in edge and "0.46×" in edge and "inf" in edge
    assert "| variant | encode ms | decode ms | encode peak RSS MiB | decode peak RSS MiB |" in section
    assert "Peak RSS (MiB) as N grows:" in section and "| 10 | 120 |" in section
    assert "- peak RSS <= 0.5x: edgekit 0.46× (target 0.5×); one process each — **met**" in section
    # written into a file, then replaced by a rerun, other text kept
    target = tmp_path / "BENCH.md"
    target.write_text("# Benchmarks\n\nintro\n", encoding="utf-8")
    write_section(target, section)
    write_section(target, section.replace("| edgekit |", "| edgekit-2 |"))
    text = target.read_text()
    assert "intro" in text and text.count("bench:spine-test:start") == 1 and "| edgekit-2 |" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = plot(_report(), tmp_path / "out" / "report.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


def test_select_deep_report_from_its_childrens_results() -> None:
    """`edgekit bench select-deep` builds its Report from the children's JSON (no model needed here)."""
    from edgekit.bench.deep import DeepBench, build_report

    def child(name: str, latency: float, peak: float, scores: list[list[float]], **extra: object) -> dict:
        return {"variant": name, "latency_ms": latency, "latencies_ms": [latency, latency * 1.1], "peak_rss_mb": peak,
                "scores": scores, **extra}

    plan = {"window": 1, "chunk": 2, "estimated_peak_mb": 90.0, "parts_mb": {"weights": 60.0, "activations": 30.0}}
    baseline = child("onnx-monolithic", 100.0, 400.0, [[0.9, 0.1, 0.5]])
    streamed = child("edgekit", 120.0, 200.0, [[0.9, 0.1, 0.5000001]])
    budgeted = [child("edgekit-budget-0.25", 150.0, 95.0, [[0.9, 0.1, 0.5]], budget_mb=100.0, share=0.25,
                      stats={"plan": plan})]
    model = {"shape": "qwen3-0.6b", "layers": 28, "hidden": 1024, "vocab": 151669, "package_mb": 2300.0,
             "largest_graph_mb": 600.0}
    report = build_report(DeepBench(top_k=2, budget_shares=(0.25,)), model, baseline, streamed, budgeted, "edgekit bench")
    assert report.baseline == "onnx-monolithic" and [v.name for v in report.variants] == [
        "onnx-monolithic", "edgekit", "edgekit-budget-0.25"]
    assert report.variant("edgekit").ratio("peak_rss").value == 0.5
    assert report.variant("edgekit").compared_with("onnx-monolithic").top_k_agreement == 1.0
    assert report.variant("edgekit").compared_with("onnx-monolithic").max_abs_diff == pytest.approx(1e-7, rel=1e-3)
    assert Report.from_json(report.to_json()) == report
    section = markdown(report)
    assert "| onnx-monolithic (baseline) |" in section and "peak RSS × onnx-monolithic" in section
    assert "window 1, chunk 2" in section and "0.95×" in section  # measured / budget


def test_select_deep_report_carries_the_optimized_baseline() -> None:
    """With the optimized one graph measured, it is a variant against the plain baseline and the
    report names the fusions that fired."""
    from edgekit.bench.deep import DeepBench, build_report

    def child(name: str, latency: float, scores: list[list[float]]) -> dict:
        return {"variant": name, "latency_ms": latency, "latencies_ms": [latency], "peak_rss_mb": 400.0,
                "scores": scores}

    model = {"shape": "qwen3-0.6b", "layers": 28, "hidden": 1024, "vocab": 151669, "package_mb": 2300.0,
             "largest_graph_mb": 600.0}
    report = build_report(DeepBench(top_k=2, budget_shares=()), model, child("onnx-monolithic", 100.0, [[0.9, 0.1]]),
                          child("edgekit", 120.0, [[0.9, 0.1]]), [], "edgekit bench",
                          child("onnx-monolithic-optimized", 80.0, [[0.9, 0.1000001]]),
                          "onnxruntime transformer optimizer, model type qwen3: SimplifiedLayerNormalization ×57")
    assert [v.name for v in report.variants] == ["onnx-monolithic", "onnx-monolithic-optimized", "edgekit"]
    assert report.variant("onnx-monolithic-optimized").ratio("latency").value == 0.8
    assert "`onnx-monolithic-optimized`: onnxruntime transformer optimizer, model type qwen3" in markdown(report)


def test_select_deep_report_carries_the_derived_packages_and_why_one_was_skipped() -> None:
    """edgekit-shared / edgekit-int8 rows sit after `edgekit`, each with its latency against the
    plain and the optimized one graph; a variant whose export refused is a note, not a row."""
    from edgekit.bench.deep import DeepBench, build_report

    def child(name: str, latency: float, scores: list[list[float]]) -> dict:
        return {"variant": name, "latency_ms": latency, "latencies_ms": [latency], "peak_rss_mb": 400.0,
                "scores": scores}

    model = {"shape": "qwen3-0.6b", "layers": 28, "hidden": 1024, "vocab": 151669, "package_mb": 2300.0,
             "largest_graph_mb": 600.0}
    refusal = "`edgekit-int8` skipped: its export refused (int8 agreement 0.80 < 0.99; worst layers 3, 7)"
    report = build_report(DeepBench(top_k=2, budget_shares=()), model, child("onnx-monolithic", 100.0, [[0.9, 0.1]]),
                          child("edgekit", 120.0, [[0.9, 0.1]]), [], "edgekit bench",
                          child("onnx-monolithic-optimized", 80.0, [[0.9, 0.1]]), "fusions",
                          [child("edgekit-shared", 90.0, [[0.9, 0.1]])], [refusal])
    assert [v.name for v in report.variants] == ["onnx-monolithic", "onnx-monolithic-optimized", "edgekit",
                                                 "edgekit-shared"]
    shared = report.variant("edgekit-shared")
    assert [(r.baseline, r.value) for r in shared.ratios if r.measure == "latency"] == [
        ("onnx-monolithic", 0.9), ("onnx-monolithic-optimized", 1.125)]
    assert refusal in report.notes and any(note.startswith("`edgekit-shared` (--shared-layers): the same checkpoint")
                                           for note in report.notes)
