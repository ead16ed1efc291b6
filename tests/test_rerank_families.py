"""Story: build a tiny cross-encoder of each family -> export -> rank -> equals transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.exporters.encoder_export import export_encoder
from edgekit.manifest import Manifest
from edgekit.models.encoder_builds import build_cross_encoder
from edgekit.models.encoders import ENCODER_FAMILIES
from tests.conftest import CANDIDATES, QUERY
from tests.reference import cross_encoder_scores


def test_every_family_has_a_tiny_config() -> None:
    assert all(family.tiny_config for family in ENCODER_FAMILIES)


@pytest.mark.parametrize("family", [family.name for family in ENCODER_FAMILIES])
def test_tiny_cross_encoder_ranks_like_transformers(tmp_path: Path, family: str) -> None:
    checkpoint = build_cross_encoder(tmp_path / "ckpt", family)
    manifest = export_encoder(str(checkpoint), tmp_path / "pkg", max_length=40)
    assert manifest.task == "rerank" and manifest.family == family
    assert [g.role for g in manifest.graphs] == ["embeddings"] + ["layer"] * manifest.ranking.num_layers + ["head"]

    ranking = edgekit.load(str(tmp_path / "pkg"), chunk=3).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = cross_encoder_scores(checkpoint, QUERY, CANDIDATES, max_length=40)

    scores = np.zeros(len(CANDIDATES))
    for result in ranking:
        scores[result.index] = result.score
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    assert [r.index for r in ranking] == list(np.lexsort((np.arange(len(expected)), -expected)))
    assert ranking.stats.truncated == 1  # the long candidate


def test_two_label_head_scores_log_odds(tmp_path: Path) -> None:
    checkpoint = build_cross_encoder(tmp_path / "ckpt", "bert", num_labels=2)
    export_encoder(str(checkpoint), tmp_path / "pkg", max_length=40)
    ranking = edgekit.load(str(tmp_path / "pkg")).rank(QUERY, CANDIDATES, top_k=3)
    expected = cross_encoder_scores(checkpoint, QUERY, CANDIDATES, max_length=40)
    for result in ranking:
        assert result.score == pytest.approx(expected[result.index], abs=1e-4)


def test_manifest_records_parity_and_hashes(tiny_cross_package: Path) -> None:
    manifest = Manifest.load(tiny_cross_package)
    assert manifest.parity["chained_max_abs_diff"] <= manifest.parity["tolerance"]
    assert set(manifest.parity["graphs_max_abs_diff"]) == {g.name for g in manifest.graphs}
    assert manifest.ranking.tokenizer.files[0].file.endswith("tokenizer.json")
    assert manifest.exporter["torch"] and manifest.source["model_type"] == "bert"
    manifest.verify()


def test_embedding_rows_are_gathered_from_a_memory_mapped_table(tiny_cross_package: Path) -> None:
    from edgekit.runtimes.selector import Selector

    selector = edgekit.load(str(tiny_cross_package))
    assert isinstance(selector, Selector) and isinstance(selector.embedding_table, np.memmap)
    manifest = selector.manifest
    assert manifest.ranking.embedding_table is not None
    assert "inputs_embeds" in [spec.name for spec in manifest.graphs[0].inputs]
    assert manifest.ranking.embedding_table.entry in manifest.files()  # verified like any graph file


def test_fp16_cross_encoder_scores_close_to_transformers(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    manifest = export_encoder(str(tiny_cross_encoder), tmp_path / "pkg16", max_length=40, dtype="fp16")
    ranking = edgekit.load(str(tmp_path / "pkg16")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = cross_encoder_scores(tiny_cross_encoder, QUERY, CANDIDATES, max_length=40)
    assert manifest.dtype == "fp16"
    assert max(abs(r.score - expected[r.index]) for r in ranking) <= 2e-2 * max(1.0, float(np.abs(expected).max()))
