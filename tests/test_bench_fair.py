"""Story: the baselines edgekit is measured against are the ones a careful user would run (issue 14).

The batched one-graph baselines sort candidates longest-first before batching and give every
score back in the input order; the optimized baseline (the one graph after onnxruntime's
transformer optimizer) scores like the plain graph within a stated tolerance, and says which
fusions fired; a misspelt variant name is a one-line refusal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekit.bench.spine_variant import MonolithicScorer
from edgekit.cli import app
from edgekit.errors import SourceModelError
from edgekit.exporters.monolithic import export_monolithic
from edgekit.exporters.optimized_graph import TOLERANCE, optimize_graph
from edgekit.manifest import Manifest
from tests.conftest import CANDIDATES, QUERY
from tests.refusals import assert_refused
from tests.test_pruning_e2e import POOL

# input order on purpose: the longest candidate (truncated) sits in the middle, short ones around it
VARIED = [CANDIDATES[4], CANDIDATES[7], CANDIDATES[1], CANDIDATES[0], CANDIDATES[6], CANDIDATES[2], CANDIDATES[3]]
SCORE_TOLERANCE = 1e-5  # same graph, different padding per run: float sums may regroup, values may not move


@pytest.fixture(scope="module")
def mono_graphs(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder: Path, tiny_cross_package: Path,
                tiny_bi_encoder: Path, tiny_bi_package: Path) -> dict[str, tuple[Path, Path]]:
    """family -> (package, plain one-graph model) for the tiny cross- and bi-encoder."""
    out = tmp_path_factory.mktemp("mono")
    graphs = {}
    for name, source, package in (("cross", tiny_cross_encoder, tiny_cross_package),
                                  ("bi", tiny_bi_encoder, tiny_bi_package)):
        graph = out / f"{name}.onnx"
        export_monolithic(source, graph, Manifest.load(package).ranking.max_length)
        graphs[name] = (package, graph)
    return graphs


class _RecordingSession:
    """Wraps a session to record the [B, S] shape of every run."""

    def __init__(self, session: object) -> None:
        self.session, self.shapes = session, []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.shapes.append(feeds["input_ids"].shape)
        return self.session.run(feeds)  # type: ignore[attr-defined]


def _scorer(package: Path, graph: Path, batch: int | None, order: str = "longest-first") -> MonolithicScorer:
    scorer = MonolithicScorer(Manifest.load(package), graph, 1, "default", batch, order)
    scorer.load()
    scorer.session = _RecordingSession(scorer.session)
    return scorer


@pytest.mark.parametrize("family", ["cross", "bi"])
def test_longest_first_batches_score_every_candidate_as_in_order_batches(
        family: str, mono_graphs: dict[str, tuple[Path, Path]]) -> None:
    package, graph = mono_graphs[family]
    in_order = _scorer(package, graph, batch=3, order="input")
    longest_first = _scorer(package, graph, batch=3)
    all_at_once = _scorer(package, graph, batch=None)

    expected = all_at_once(QUERY, VARIED)
    # same score per candidate, in the input order, whichever way the runs were cut
    np.testing.assert_allclose(in_order(QUERY, VARIED), expected, atol=SCORE_TOLERANCE, rtol=0)
    np.testing.assert_allclose(longest_first(QUERY, VARIED), expected, atol=SCORE_TOLERANCE, rtol=0)
    # ... and the sort did happen: runs shrink in width and pad less than the in-order runs
    candidate_runs = slice(1, None) if family == "bi" else slice(None)  # a bi-encoder embeds the query first
    widths = [width for _, width in longest_first.session.shapes[candidate_runs]]
    assert widths == sorted(widths, reverse=True) and len(set(widths)) > 1
    padded = sum(b * s for b, s in longest_first.session.shapes[candidate_runs])
    padded_in_order = sum(b * s for b, s in in_order.session.shapes[candidate_runs])
    assert padded < padded_in_order


def test_torch_reference_restores_the_input_order(tiny_cross_package: Path, mono_graphs) -> None:
    """The reference sorts its batches of 32 too; its full ranking equals the one graph's."""
    from edgekit.bench.select_variant import _monolithic_ranker, _torch_ranker

    manifest = Manifest.load(tiny_cross_package)
    candidates = [*VARIED, *POOL[:33]]  # 40 distinct candidates: two torch batches, lengths interleaved
    reference, _ = _torch_ranker(manifest, 10, 1)(QUERY, candidates)
    graph_ranking, _ = _monolithic_ranker(manifest, mono_graphs["cross"][1], 1, 4, 10, "longest-first")(QUERY,
                                                                                                       candidates)
    assert reference == graph_ranking and len(set(reference)) == 10  # a lost order would name other indices


@pytest.mark.parametrize("family", ["cross", "bi"])
def test_optimized_graph_fuses_bert_and_scores_like_the_plain_graph(
        family: str, mono_graphs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    package, graph = mono_graphs[family]
    source = Path(Manifest.load(package).source["path"])
    record = optimize_graph(graph, tmp_path / "optimized.onnx", source)

    assert record.model_type == "bert" and record.fallback is None
    assert record.fusions["Attention"] == 3 and record.fusions["SkipLayerNormalization"] > 0  # 3 layers
    assert "model type bert: Attention ×3" in record.describe()
    plain = _scorer(package, graph, batch=3)(QUERY, VARIED)
    fused = _scorer(package, Path(record.path), batch=3)(QUERY, VARIED)
    assert np.max(np.abs(fused - plain)) <= TOLERANCE * max(1.0, float(np.max(np.abs(plain))))
    # a second call finds the cached graph and its record instead of optimizing again
    mtime = Path(record.path).stat().st_mtime_ns
    assert optimize_graph(graph, tmp_path / "optimized.onnx", source) == record
    assert Path(record.path).stat().st_mtime_ns == mtime


def test_optimized_qwen3_graph_fuses_rmsnorm_and_scores_like_the_plain_graph(tiny_qwen3: Path, tmp_path: Path) -> None:
    """Qwen3: the optimizer's qwen3 type recognises the RMSNorms of the torch.onnx export (not its
    attention or rotary); scores with left padding stay within the tolerance."""
    from edgekit.bench.deep_variant import _monolithic
    from edgekit.exporters.families import export_source
    from edgekit.exporters.monolithic_decoder import export_monolithic_decoder

    package = tmp_path / "pkg"
    export_source(str(tiny_qwen3), package, max_length=160)
    graph = export_monolithic_decoder(tiny_qwen3, tmp_path / "mono", max_length=160)
    record = optimize_graph(graph, tmp_path / "optimized.onnx", tiny_qwen3)

    assert record.model_type == "qwen3" and record.fallback is None
    assert set(record.fusions) == {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"}
    manifest = Manifest.load(package)
    plain = _monolithic(manifest, str(graph), 1, "cpu")(QUERY, VARIED)
    fused = _monolithic(manifest, record.path, 1, "cpu")(QUERY, VARIED)
    assert np.max(np.abs(fused - plain)) <= TOLERANCE * max(1.0, float(np.max(np.abs(plain))))


def test_unrecognised_model_falls_back_to_onnxruntime_offline_optimization(
        mono_graphs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """A model type the transformer optimizer has no pattern for still gets onnxruntime's own
    graph optimizations (ORT_ENABLE_ALL, saved offline), and the record says so."""
    package, graph = mono_graphs["cross"]
    source = tmp_path / "renamed"
    source.mkdir()
    config = json.loads((Path(Manifest.load(package).source["path"]) / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "model_type": "made-up"}))
    record = optimize_graph(graph, tmp_path / "optimized.onnx", source)

    assert record.model_type is None and record.fusions == {} and "ORT_ENABLE_ALL" in record.fallback
    plain = _scorer(package, graph, batch=None)(QUERY, VARIED)
    fused = _scorer(package, Path(record.path), batch=None)(QUERY, VARIED)
    assert np.max(np.abs(fused - plain)) <= TOLERANCE


def test_external_data_is_renamed_with_the_graph(mono_graphs: dict[str, tuple[Path, Path]], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A model over protobuf's 2 GiB is written with its weights beside it; the file keeps
    the graph's final name (forced here on a tiny model)."""
    import edgekit.exporters.optimized_graph as optimized_graph

    monkeypatch.setattr(optimized_graph, "_PROTOBUF_LIMIT", 0)
    package, graph = mono_graphs["bi"]
    record = optimize_graph(graph, tmp_path / "optimized.onnx", Path(Manifest.load(package).source["path"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimized.onnx", "optimized.onnx.data",
                                                          "optimized.onnx.json"]
    plain = _scorer(package, graph, batch=None)(QUERY, VARIED)
    np.testing.assert_allclose(_scorer(package, Path(record.path), batch=None)(QUERY, VARIED), plain,
                               atol=TOLERANCE, rtol=0)


def test_a_source_without_a_config_is_a_one_line_error(mono_graphs, tmp_path: Path) -> None:
    with pytest.raises(SourceModelError, match=r"config.json: cannot read model_type.*transformers checkpoint"):
        optimize_graph(mono_graphs["bi"][1], tmp_path / "optimized.onnx", tmp_path)
    assert not (tmp_path / "optimized.onnx").exists()


def test_a_misspelt_variant_is_a_one_line_refusal(tiny_cross_package: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"query": QUERY, "candidates": CANDIDATES}) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["bench", "select", str(tiny_cross_package), "--data", str(data),
                                      "--variants", "onnx-monolithic-batched,onnx-monolithic-optimised"])
    assert_refused(result, "unknown variants ['onnx-monolithic-optimised']", "onnx-monolithic-optimized")
