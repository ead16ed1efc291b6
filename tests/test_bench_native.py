"""`edgekit bench native`: the C host against the Python runtime, each in its own process.

Story: build the native runtime (the `native_build` fixture: AddressSanitizer, so its RSS and
speed mean nothing here), export a tiny bi-encoder, run the bench on four candidates with one
timed call: a Report whose native variants rank exactly as the Python runtime, with every ratio
computed against a variant measured in the same command and the issue's targets checked. No
speed or memory figure is asserted. A missing host binary is refused in one line naming
`make native`; a failing host is one line naming the host's own error.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.bench.report import Report
from edgekit.cli import app
from edgekit.manifest import Manifest
from tests.test_native_runtime import ASAN

NAMES = ["python", "native", "python-resident", "native-resident"]


def bench(tmp_path: Path, source: Path, binary: Path, *extra: str):
    return CliRunner().invoke(app, [
        "bench", "native", "--source", str(source), "--cache", str(tmp_path / "cache"), "--candidates", "4",
        "--tokens", "24", "--repeats", "1", "--threads", "1", "--chunk", "2", "--top-k", "3",
        "--native-bin", str(binary), *extra])


def test_the_c_host_ranks_as_the_python_runtime_and_every_ratio_is_measured(
        native_build: Path, tiny_bi_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ASAN.items():  # the host's children inherit them: ASan's leak check knows onnxruntime's
        monkeypatch.setenv(name, value)
    result = bench(tmp_path, tiny_bi_encoder, native_build / "edgekit-rank", "--json", str(tmp_path / "native.json"),
                   "--markdown", "--markdown-file", str(tmp_path / "BENCH.md"), "--plot", str(tmp_path / "native.png"))
    assert result.exit_code == 0, result.output
    report = Report.load(tmp_path / "native.json")
    assert [v.name for v in report.variants] == NAMES and report.baseline == "python"
    graphs = len(Manifest.load(tmp_path / "cache" / "package").stream_graphs)
    for variant in report.variants:
        resident = variant.name.endswith("-resident")
        assert variant.figures["window"] == (graphs if resident else 2)
        assert variant.figures["max_resident_graphs"] <= variant.figures["window"]
        wanted = {("latency", "python"), ("peak_rss", "python")} | (
            {("latency", "python-resident"), ("peak_rss", "python-resident")} if resident else set())
        assert {(r.measure, r.baseline) for r in variant.ratios} == wanted
        assert all(math.isfinite(r.value) and r.value > 0 for r in variant.ratios)
        compared = variant.compared_with("python")
        assert compared.top_k_agreement == 1.0 and compared.same_order and compared.max_abs_diff < 1e-5
    native = report.variant("native")
    assert native.details["peak_rss_source"] == "VmHWM"  # the host's own high-water mark, not getrusage's
    assert native.details["extra"]["runtime"] == "native" and native.details["extra"]["chunk"] == 2
    assert report.variant("python").ratio("latency", "python").value == 1.0
    assert [v.variant for v in report.verdicts] == ["native", "native"]
    assert [v.target for v in report.verdicts] == [0.5, 1.0]
    assert all(v.met == (v.value <= v.target) for v in report.verdicts)
    text = (tmp_path / "BENCH.md").read_text()
    assert "<!-- bench:native:start -->" in text and "| python (baseline) |" in text and "Targets:" in text
    assert (tmp_path / "native.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_host_is_refused_naming_make_native(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no build/native/edgekit-rank here
    result = CliRunner().invoke(app, ["bench", "native", "--candidates", "2"])
    assert result.exit_code == 2
    assert "build/native/edgekit-rank" in result.output and "make native" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_failing_host_is_one_line_naming_its_error(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    host = tmp_path / "broken-rank"
    host.write_text("#!/bin/sh\necho 'error: this host cannot open anything' >&2\nexit 2\n")
    host.chmod(0o755)
    result = bench(tmp_path, tiny_bi_encoder, host, "--no-resident")
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert "native" in last and "this host cannot open anything" in last and "Traceback" not in result.output
