"""Core ML packages, exporter side (issue 17): build a tiny model -> `edgekit export --format
coreml|onnx,coreml` -> read what the saved mlprograms declare -> run the package's Core ML
graphs through the real Selector with the MIL evaluator (exporters/coreml/eval_backend.py) ->
compare with its ONNX graphs and the torch model.

Nothing here runs Core ML itself (`predict` is macOS-only): the numbers come from the numpy
evaluator over the saved programs, and scripts/macos_check_coreml.sh is the check on a Mac.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("coremltools", reason="Core ML export needs coremltools (pip install 'edgekit[coreml]')")

import edgekit  # noqa: E402
from edgekit.cli import app  # noqa: E402
from edgekit.exporters.coreml.convert import MAX_BATCH  # noqa: E402
from edgekit.exporters.coreml.eval_backend import MilEvalBackend  # noqa: E402
from edgekit.exporters.coreml.spec_check import read_spec  # noqa: E402
from edgekit.exporters.families import export_source  # noqa: E402
from edgekit.manifest import Manifest  # noqa: E402
from edgekit.runtimes.selector import Selector  # noqa: E402
from tests.conftest import CANDIDATES, QUERY  # noqa: E402

runner = CliRunner()
MAX_LENGTH = 64


def _export(source: Path, out: Path, **options: object) -> Manifest:
    return export_source(source, out, **options).manifest


@pytest.fixture(scope="module")
def mixed_cross(tiny_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coreml") / "cross-mixed"
    _export(tiny_cross_encoder, out, max_length=MAX_LENGTH, format="onnx,coreml")
    return out


def _core_ml_ranking(package: Path, top_k: int) -> list[tuple[int, float]]:
    view = Manifest.load(package).for_format("mlpackage")
    ranking = Selector(view, MilEvalBackend(), window=2, chunk=3).rank(QUERY, CANDIDATES, top_k=top_k)
    return [(result.index, result.score) for result in ranking]


def test_every_onnx_graph_gets_a_core_ml_twin_with_flexible_batch_and_sequence(mixed_cross: Path) -> None:
    manifest = Manifest.load(mixed_cross)
    assert manifest.graph_formats == ("mlpackage", "onnx")
    onnx = {(g.role, g.index): g for g in manifest.for_format("onnx").graphs}
    core_ml = {(g.role, g.index): g for g in manifest.for_format("mlpackage").graphs}
    assert onnx.keys() == core_ml.keys()
    record = manifest.exporter["coreml"]
    assert (record["precision"], record["compute_units"], record["palettize"]) == ("fp16", "all", None)
    for slot, twin in core_ml.items():
        assert twin.name == onnx[slot].name + "_coreml" and twin.path == f"graphs/{twin.name}.mlpackage"
        facts = read_spec(mixed_cross / twin.path)
        assert facts.record() == record["graphs"][twin.name]  # the manifest says what the file declares
        assert list(facts.inputs) == [spec.name for spec in onnx[slot].inputs]
        assert set(facts.outputs.values()) == {"float32"}
        for spec in onnx[slot].inputs:
            ranges = facts.inputs[spec.name]["ranges"]
            assert ranges[0] == [1, MAX_BATCH]
            if len(spec.shape) > 1 and spec.shape[1] == "sequence":
                assert ranges[1] == [1, MAX_LENGTH]
        assert facts.precision in ("fp16", "none") and facts.palettized_weights == 0
        assert facts.weight_bytes < 1_000_000_000
    layer = record["graphs"]["layer_000_coreml"]
    assert layer["precision"] == "fp16" and layer["ops"]["linear"] == 6 and layer["ops"]["softmax"] == 1
    assert all(isinstance(diff, float) and diff <= 2e-2 for diff in record["parity"].values())
    assert record["chained_max_abs_diff"] <= 2e-2
    assert set(record) >= {"coremltools", "minimum_deployment_target", "reference"}


def test_the_mixed_package_ranks_alike_through_onnx_and_core_ml(mixed_cross: Path, tiny_cross_package: Path) -> None:
    """Same source, same options: the ONNX graphs of the mixed package rank exactly as the
    ONNX-only package; its Core ML graphs (fp16, evaluated) keep the top-5 and the scores within
    the fp16 tolerance."""
    mixed = edgekit.load(mixed_cross).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    alone = edgekit.load(tiny_cross_package).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    assert [r.index for r in mixed] == [r.index for r in alone]
    np.testing.assert_array_equal(mixed.scores_by_candidate(), alone.scores_by_candidate())
    core_ml = _core_ml_ranking(mixed_cross, len(CANDIDATES))
    assert [index for index, _ in core_ml][:5] == [r.index for r in alone][:5]
    by_index = dict(core_ml)
    worst = max(abs(by_index[r.index] - r.score) for r in alone)
    assert worst <= 2e-2 * max(1.0, max(abs(r.score) for r in alone))
    verified = runner.invoke(app, ["verify", str(mixed_cross)])
    assert verified.exit_code == 0, verified.output


def test_core_ml_only_package_holds_no_onnx_and_runs_only_where_core_ml_does(tiny_bi_encoder: Path,
                                                                             tmp_path: Path) -> None:
    """A bi-encoder, fp32 programs: the package is Core ML only, its programs compute in fp32
    and match torch to 1e-5 per graph; on Linux `edgekit run` refuses it in one line."""
    out = tmp_path / "bi"
    manifest = _export(tiny_bi_encoder, out, format="coreml", precision="fp32", compute_units="cpu_and_ne")
    assert manifest.graph_formats == ("mlpackage",)
    assert not list(out.glob("graphs/*.onnx*"))
    record = manifest.exporter["coreml"]
    assert record["compute_units"] == "cpu_and_ne"
    assert {facts["precision"] for facts in record["graphs"].values()} <= {"fp32", "none"}
    assert max(record["parity"].values()) <= 1e-5
    assert record["chained_max_abs_diff"] <= 1e-5
    (tmp_path / "c.txt").write_text("\n".join(CANDIDATES[:3]) + "\n")
    result = runner.invoke(app, ["run", str(out), "--query", QUERY, "--candidates", str(tmp_path / "c.txt")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "macOS" in result.output or "--provider coreml" in result.output


def test_qwen3_core_ml_graphs_keep_the_yes_no_scores(tiny_qwen3: Path, tmp_path: Path) -> None:
    """The decoder's layers (rotary, grouped-query attention, a [B,1,S,S] bias) convert with both
    bias dims flexible; fp16 programs over left-padded batches stay finite and close to torch."""
    out = tmp_path / "qwen3"
    manifest = _export(tiny_qwen3, out, format="onnx,coreml")
    record = manifest.exporter["coreml"]
    bias = record["graphs"]["layer_000_coreml"]["inputs"]["attention_bias"]["ranges"]
    assert bias[0] == [1, MAX_BATCH] and bias[1] == [1, 1] and bias[2][0] == bias[3][0] == 1
    assert bias[2][1] == bias[3][1] == manifest.ranking.max_length
    assert all(isinstance(diff, float) and diff <= 2e-2 for diff in record["parity"].values())
    assert record["chained_max_abs_diff"] <= 2e-2
    onnx = edgekit.load(out).rank(QUERY, CANDIDATES[:6], top_k=6)
    view = manifest.for_format("mlpackage")
    core_ml = Selector(view, MilEvalBackend(), window=2, chunk=4).rank(QUERY, CANDIDATES[:6], top_k=6)
    np.testing.assert_allclose(core_ml.scores_by_candidate(), onnx.scores_by_candidate(), atol=2e-2)


def test_palettized_graphs_are_lookup_tables_and_much_smaller(minilm_dir: Path, tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 at 4 bits: every weight matrix is a lookup table, the
    Core ML graphs' weight files are >= 3.5x smaller than unpalettized fp16 ones, and the
    evaluated palettized package still agrees with the fp16 one on the top-5."""
    plain = _export(minilm_dir, tmp_path / "fp16", format="coreml", max_length=128)
    small = _export(minilm_dir, tmp_path / "p4", format="coreml", max_length=128, palettize=4)
    plain_bytes = sum(facts["weight_bytes"] for facts in plain.exporter["coreml"]["graphs"].values())
    small_bytes = sum(facts["weight_bytes"] for facts in small.exporter["coreml"]["graphs"].values())
    assert plain_bytes / small_bytes >= 3.5, (plain_bytes, small_bytes)
    layer = small.exporter["coreml"]["graphs"]["layer_000_coreml"]
    assert layer["palettized_weights"] == 6 and layer["dense_weights"] == 0
    fp16 = _core_ml_ranking(tmp_path / "fp16", 5)
    four_bit = _core_ml_ranking(tmp_path / "p4", 5)
    assert len({index for index, _ in fp16} & {index for index, _ in four_bit}) >= 4


def test_svd_stages_convert_and_match_torch_under_the_evaluator(tiny_svd: Path, tmp_path: Path) -> None:
    """Every SVD stage converts (flexible GroupNorm, broadcast_to registered) and, with conv and
    nearest upsampling computed in numpy, matches its torch module in fp16; the chained Core ML
    UNet stages match diffusers' UNet; the mixed package's ONNX graphs are untouched."""
    out = tmp_path / "svd"
    manifest = _export(tiny_svd, out, format="onnx,coreml")
    onnx_roles = sorted((g.role, g.index or 0) for g in manifest.for_format("onnx").graphs)
    assert onnx_roles == sorted((g.role, g.index or 0) for g in manifest.for_format("mlpackage").graphs)
    record = manifest.exporter["coreml"]
    assert all(isinstance(diff, float) and diff <= 2e-2 for diff in record["parity"].values()), record["parity"]
    assert isinstance(record["chained_max_abs_diff"], float) and record["chained_max_abs_diff"] <= 2e-2
    down = record["graphs"]["down_block_0_coreml"]
    assert list(down["outputs"])[0] == "hidden_states_out" and down["ops"]["conv"] >= 1
    assert record["graphs"]["up_block_0_coreml"]["ops"]["upsample_nearest_neighbor"] >= 1


@pytest.mark.parametrize(("args", "expected"), [
    (["--format", "tflite"], "unknown format 'tflite'"),
    (["--palettize", "4"], "--palettize applies to Core ML graphs"),
    (["--format", "coreml", "--palettize", "3"], "--palettize 3"),
    (["--format", "coreml", "--dtype", "int8"], "--palettize 8"),
    (["--format", "coreml", "--shared-layers"], "--shared-layers applies to ONNX graphs only"),
    (["--format", "coreml", "--compute-units", "gpu"], "--compute-units 'gpu'"),
])
def test_bad_core_ml_options_are_one_line_before_any_model_loads(tiny_cross_encoder: Path, tmp_path: Path,
                                                                 args: list[str], expected: str) -> None:
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(tmp_path / "p"), *args])
    assert result.exit_code == 2 and expected in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_missing_or_wrong_dependencies_are_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy >= 2.4 breaks coremltools 9.0's torch frontend; k-means palettization needs
    scikit-learn: both are refused before a model loads, naming the coreml extra."""
    import importlib.util

    import numpy

    from edgekit.errors import MissingDependencyError
    from edgekit.exporters.coreml.library import import_coremltools
    from edgekit.exporters.families.base import core_ml_options

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else
                        real_find_spec(name, *a))
    with pytest.raises(MissingDependencyError, match="scikit-learn, which is missing; pip install 'edgekit\\[coreml\\]'"):
        core_ml_options("coreml", palettize=4)
    assert core_ml_options("coreml").wants_coreml  # no palettization: no scikit-learn needed
    monkeypatch.setattr(numpy, "__version__", "2.4.1")
    with pytest.raises(MissingDependencyError, match="only with numpy < 2.4 \\(this is numpy 2.4.1\\)"):
        import_coremltools()


def test_a_non_finite_difference_is_a_parity_error_whatever_the_tolerance() -> None:
    from edgekit.errors import ParityError
    from edgekit.exporters.package_parts import check_parity

    with pytest.raises(ParityError, match="chained package: Core ML output differs from torch by nan"):
        check_parity("chained package", float("nan"), 1.0, float("inf"), "Core ML")
    check_parity("chained package", 1e9, 1.0, float("inf"), "Core ML")  # palettized: measured, not gated
