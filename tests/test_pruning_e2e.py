"""Story: tiny cross-encoder package -> exact trace -> pruned run equals its offline replay,
order=exact equals the full model, and calibration meets its target on its own data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.dataset import Example
from edgekit.runtimes.calibration import agreement, record_traces, replay, search
from edgekit.runtimes.pruning import ClusterPruning
from tests.conftest import CANDIDATES, QUERY

MORE = [f"{word} file line {i}" for i, word in enumerate(["read", "open", "sort", "cat", "json", "path"] * 3)]
POOL = CANDIDATES + MORE


def test_pruned_run_fires_and_equals_replay_of_the_exact_trace(tiny_cross_package: Path) -> None:
    selector = edgekit.load(str(tiny_cross_package), chunk=4)
    exact = selector.rank(QUERY, POOL, top_k=3, trace=True)
    assert len(exact.trace) == selector.manifest.ranking.num_layers
    assert exact.stats.candidate_layers == exact.stats.candidate_layers_exact == len(POOL) * 3

    pruned = selector.rank(QUERY, POOL, top_k=3, prune="threshold:0")
    assert pruned.stats.candidate_layers < exact.stats.candidate_layers  # it fired
    expected = replay(exact.trace, ClusterPruning(0.0, "logit"), top_k=3)
    assert [r.index for r in pruned] == expected.selected
    assert pruned.stats.candidate_layers == expected.candidate_layers
    assert len(pruned.stats.alive_per_layer) <= 3 and pruned.stats.prune == "threshold:0@1"
    # a result decided early carries its score at that depth, which the trace recorded
    for result in pruned:
        assert result.score == pytest.approx(exact.trace[result.decided_at_layer - 1][result.index], abs=1e-5)


def test_order_exact_finishes_accepted_candidates(tiny_cross_package: Path) -> None:
    selector = edgekit.load(str(tiny_cross_package), chunk=4)
    exact_run = selector.rank(QUERY, POOL, top_k=len(POOL), trace=True)
    exact = {r.index: r.score for r in exact_run}
    pruned = selector.rank(QUERY, POOL, top_k=3, prune="threshold:0", order="exact")
    assert pruned.stats.candidate_layers < pruned.stats.candidate_layers_exact  # pruning fired
    assert any(r.decided_at_layer < selector.manifest.ranking.num_layers for r in pruned)  # someone was accepted early
    for result in pruned:
        assert result.score == pytest.approx(exact[result.index], abs=1e-5)
    selected = replay(exact_run.trace, ClusterPruning(0.0, "logit"), top_k=3).selected
    assert [r.index for r in pruned] == sorted(selected, key=lambda i: (-exact[i], i))


def test_top_k_at_least_n_ranks_exactly(tiny_cross_package: Path) -> None:
    selector = edgekit.load(str(tiny_cross_package))
    exact = selector.rank(QUERY, POOL[:4], top_k=10)
    pruned = selector.rank(QUERY, POOL[:4], top_k=10, prune="threshold:0")
    assert len(pruned) == 4 and [r.index for r in pruned] == [r.index for r in exact]
    assert pruned.stats.prune == "exact"  # nothing to prune when every candidate is in the top-K


def test_early_stop_skips_loading_the_remaining_layers(tiny_cross_package: Path) -> None:
    selector = edgekit.load(str(tiny_cross_package), window=1)
    ranking = selector.rank(QUERY, POOL, top_k=1, prune="threshold:0")
    layers_run = len(ranking.stats.alive_per_layer)
    if layers_run < selector.manifest.ranking.num_layers:  # everything was decided early
        # with window 1 nothing is prefetched: embeddings + the layers run + the head
        assert ranking.stats.graphs_loaded == 1 + layers_run + 1


def test_bi_encoder_prunes_with_the_query_riding_along(tiny_bi_package: Path) -> None:
    selector = edgekit.load(str(tiny_bi_package), chunk=5)
    exact = selector.rank(QUERY, POOL, top_k=4, trace=True)
    pruned = selector.rank(QUERY, POOL, top_k=4, prune="threshold:0")
    assert [r.index for r in pruned] == replay(exact.trace, ClusterPruning(0.0, "cosine"), 4).selected


def test_calibration_meets_its_target_and_auto_uses_it(tiny_cross_package: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        picks = rng.choice(len(POOL), size=14, replace=False)
        rows.append({"query": f"{QUERY} {i}", "candidates": [POOL[j] for j in picks]})
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    package = tmp_path / "pkg"
    import shutil

    shutil.copytree(tiny_cross_package, package)
    result = CliRunner().invoke(app, ["calibrate", str(package), "--data", str(data), "--target-agreement", "0.9",
                                      "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)["calibration"]
    assert calibration["agreement"] >= 0.9 and calibration["top_k"] == 3
    assert calibration["threshold"] is not None and calibration["candidate_layers_fraction"] < 1.0

    # re-measure on the calibration data with the stored threshold, online
    selector = edgekit.load(str(package))
    examples = [Example(row["query"], row["candidates"]) for row in rows]
    traces = record_traces(selector.rank, examples, top_k=3)
    scores = [agreement([r.index for r in selector.rank(e.query, e.candidates, top_k=3, prune="auto")],
                        replay(t, None, 3).selected) for e, t in zip(examples, traces)]
    assert np.mean(scores) >= 0.9
    assert search(traces, 3, 0.9, "logit", layers=3).agreement >= 0.9
    assert CliRunner().invoke(app, ["verify", str(package)]).exit_code == 0  # graph hashes untouched
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    wrong_k = CliRunner().invoke(app, ["run", str(package), "--query", QUERY, "--candidates", str(candidates),
                                       "--top-k", "5", "--prune", "auto"])
    assert wrong_k.exit_code == 2 and "calibrated for top-k 3" in wrong_k.stderr
