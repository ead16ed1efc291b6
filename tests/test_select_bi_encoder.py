"""Story: a tiny sentence-transformers bi-encoder -> export -> rank by cosine -> equals transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.exporters.encoder_export import export_encoder
from tests.conftest import CANDIDATES, QUERY
from tests.reference import bi_encoder_embeddings, cosine_scores
from tests.tiny_models import build_bi_encoder


def _scores(ranking, n: int) -> np.ndarray:
    scores = np.full(n, np.nan)
    for result in ranking:
        scores[result.index] = result.score
    return scores


def test_mean_pooling_bi_encoder_matches_transformers(tiny_bi_encoder: Path, tiny_bi_package: Path) -> None:
    selector = edgekit.load(str(tiny_bi_package), chunk=2)
    assert selector.manifest.task == "select" and selector.manifest.max_length == 48  # sentence_bert_config
    ranking = selector.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = cosine_scores(bi_encoder_embeddings(tiny_bi_encoder, [QUERY, *CANDIDATES], max_length=48))
    np.testing.assert_allclose(_scores(ranking, len(CANDIDATES)), expected, atol=1e-4)
    assert ranking.stats.max_resident_graphs <= 2


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_modes(tmp_path: Path, pooling: str) -> None:
    checkpoint = build_bi_encoder(tmp_path / "ckpt", pooling=pooling, normalize=False, seed=3)
    manifest = export_encoder(str(checkpoint), tmp_path / "pkg")
    assert manifest.scoring.pooling == pooling and manifest.scoring.normalize is False
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
