"""Story: a tiny sentence-transformers bi-encoder -> export -> rank by cosine -> equals transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.exporters.encoder_export import export_encoder
from edgekit.models.encoder_builds import build_bi_encoder
from tests.conftest import CANDIDATES, QUERY
from tests.reference import bi_encoder_embeddings, cosine_scores


def _scores(ranking, n: int) -> np.ndarray:
    scores = np.full(n, np.nan)
    for result in ranking:
        scores[result.index] = result.score
    return scores


def test_mean_pooling_bi_encoder_matches_transformers(tiny_bi_encoder: Path, tiny_bi_package: Path) -> None:
    selector = edgekit.load(str(tiny_bi_package), chunk=2)
    assert selector.manifest.task == "select" and selector.manifest.ranking.max_length == 48  # sentence_bert_config
    ranking = selector.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = cosine_scores(bi_encoder_embeddings(tiny_bi_encoder, [QUERY, *CANDIDATES], max_length=48))
    np.testing.assert_allclose(_scores(ranking, len(CANDIDATES)), expected, atol=1e-4)
    assert ranking.stats.max_resident_graphs <= 2


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_modes(tmp_path: Path, pooling: str) -> None:
    checkpoint = build_bi_encoder(tmp_path / "ckpt", pooling=pooling, normalize=False, seed=3)
    manifest = export_encoder(str(checkpoint), tmp_path / "pkg")
    assert manifest.ranking.scoring.pooling == pooling and manifest.ranking.scoring.normalize is False
    ranking = edgekit.load(str(tmp_path / "pkg")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = cosine_scores(bi_encoder_embeddings(checkpoint, [QUERY, *CANDIDATES], 48, pooling, normalize=False))
    np.testing.assert_allclose(_scores(ranking, len(CANDIDATES)), expected, atol=1e-4)


def test_window_and_chunk_do_not_change_scores(tiny_bi_package: Path) -> None:
    reference = edgekit.load(str(tiny_bi_package), window=1, chunk=1).rank(QUERY, CANDIDATES, top_k=5)
    for window, chunk in [(2, 3), (3, 8), (10, 100)]:
        ranking = edgekit.load(str(tiny_bi_package), window=window, chunk=chunk).rank(QUERY, CANDIDATES, top_k=5)
        assert [r.index for r in ranking] == [r.index for r in reference]
        np.testing.assert_allclose([r.score for r in ranking], [r.score for r in reference], atol=1e-5)
        assert ranking.stats.max_resident_graphs <= window


def test_fp16_package_is_half_the_size_and_ranks_like_fp32(tiny_bi_encoder: Path, tiny_bi_package: Path,
                                                           tmp_path: Path) -> None:
    manifest = export_encoder(str(tiny_bi_encoder), tmp_path / "pkg16", dtype="fp16")
    assert manifest.dtype == "fp16" and manifest.ranking.embedding_table.dtype == "float16"
    assert manifest.parity["chained_max_abs_diff"] <= manifest.parity["tolerance"] == 2e-2
    assert {spec.dtype for spec in manifest.graphs[1].inputs} == {"float16", "int64"}
    fp32 = edgekit.load(str(tiny_bi_package))
    assert manifest.ranking.embedding_table.entry.bytes < 0.6 * fp32.manifest.ranking.embedding_table.entry.bytes
    half = edgekit.load(str(tmp_path / "pkg16")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    full = fp32.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    by_index = {r.index: r.score for r in full}
    assert max(abs(r.score - by_index[r.index]) for r in half) < 2e-2
    assert isinstance(half[0].score, float)


def test_unknown_dtype_is_refused(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    from edgekit.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="fp32, fp16, int8, mixed"):
        export_encoder(str(tiny_bi_encoder), tmp_path / "pkg", dtype="int4")
    assert not (tmp_path / "pkg").exists()


def test_a_window_holding_every_graph_keeps_sessions_open_across_calls(tiny_bi_package: Path) -> None:
    streamed = edgekit.load(str(tiny_bi_package), window=2)
    resident = edgekit.load(str(tiny_bi_package), window=len(streamed.manifest.graphs))
    first = resident.rank(QUERY, CANDIDATES, top_k=3)
    second = resident.rank(QUERY, CANDIDATES, top_k=3)
    reference = streamed.rank(QUERY, CANDIDATES, top_k=3)
    assert [r.index for r in second] == [r.index for r in first] == [r.index for r in reference]
    assert first.stats.graphs_loaded == len(streamed.manifest.graphs) and second.stats.graphs_loaded == 0
    assert reference.stats.graphs_loaded == len(streamed.manifest.graphs)  # streaming loads every call
    assert second.stats.max_resident_graphs == len(streamed.manifest.graphs)
    resident.close()


def test_a_long_query_is_truncated_and_said_so(tiny_bi_package: Path) -> None:
    ranking = edgekit.load(str(tiny_bi_package)).rank("read a file " * 40, CANDIDATES[:3], top_k=2)
    assert ranking.stats.query_truncated is True and ranking.stats.truncated == 0
