"""Story: tiny cross-encoder package -> exact trace -> pruned run equals its offline replay,
order=exact equals the full model, and calibration meets its target on its own data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.dataset import Example
from edgekit.runtimes.calibration import record_traces, replay, search
from edgekit.runtimes.policies import parse_prune
from edgekit.runtimes.policy_rank_stability import RankStability
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


def _dataset(tmp_path: Path, queries: int) -> tuple[Path, list[Example]]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(queries):
        picks = rng.choice(len(POOL), size=14, replace=False)
        rows.append({"query": f"{QUERY} {i}", "candidates": [POOL[j] for j in picks]})
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return data, [Example(row["query"], row["candidates"]) for row in rows]


def test_rank_stability_online_equals_replay_and_large_m_equals_exact(tiny_cross_package: Path,
                                                                    tmp_path: Path) -> None:
    selector = edgekit.load(str(tiny_cross_package), chunk=4)
    _, examples = _dataset(tmp_path, 10)
    fired = 0
    for example in examples:
        exact = selector.rank(example.query, example.candidates, top_k=3, trace=True)
        # m larger than the depths the head sees: the set is never declared final -> the exact run
        patient = selector.rank(example.query, example.candidates, top_k=3, prune="stable:5")
        assert [r.index for r in patient] == [r.index for r in exact]
        assert [r.score for r in patient] == pytest.approx([r.score for r in exact], abs=1e-6)
        assert patient.stats.candidate_layers == exact.stats.candidate_layers and patient.stats.prune == "stable:5"
        # m = 1: whatever it decides, online equals the offline replay of the exact trace
        eager = selector.rank(example.query, example.candidates, top_k=3, prune="stable:1")
        expected = replay(exact.trace, RankStability(1), top_k=3)
        assert [r.index for r in eager] == expected.selected
        assert eager.stats.candidate_layers == expected.candidate_layers
        fired += eager.stats.candidate_layers < exact.stats.candidate_layers
    assert fired  # the story is not vacuous: on some queries the set settled early
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(examples[0].candidates) + "\n", encoding="utf-8")
    cli = CliRunner().invoke(app, ["run", str(tiny_cross_package), "--query", examples[0].query, "--candidates",
                                   str(candidates), "--top-k", "3", "--prune", "stable:1", "--json"])
    assert cli.exit_code == 0, cli.output
    assert json.loads(cli.stdout)["stats"]["prune"] == "stable:1"


@pytest.mark.parametrize("policy, target", [("cluster", 0.7), ("rank-stability", 0.5)])
def test_calibration_certifies_a_setting_and_auto_rebuilds_exactly_it(tiny_cross_package: Path, tmp_path: Path,
                                                                      policy: str, target: float) -> None:
    """calibrate -> manifest calibration {policy, params, delta, lower_bound, samples} -> --prune auto
    rebuilds the identical policy, whose online runs equal its replay on the exact traces."""
    data, examples = _dataset(tmp_path, 30)
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    result = CliRunner().invoke(app, ["calibrate", str(package), "--data", str(data), "--target-agreement",
                                      str(target), "--policy", policy, "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    calibration = json.loads(result.stdout)["calibration"]
    assert calibration["policy"] == policy and calibration["params"] is not None
    assert calibration["samples"] == 30 and calibration["delta"] == 0.1 and calibration["top_k"] == 3
    assert calibration["lower_bound"] >= target and calibration["exact_share"] >= calibration["lower_bound"]
    assert calibration["candidate_layers_fraction"] < 1.0

    selector = edgekit.load(str(package))
    traces = record_traces(selector.rank, examples, top_k=3)
    searched = search(traces, 3, target, "logit", layers=3, policy=policy, delta=0.1)
    rebuilt = parse_prune("auto", "logit", selector.manifest.ranking.calibration, top_k=3)
    assert rebuilt == searched.setting and rebuilt.params() == calibration["params"]
    for example, trace in zip(examples[:8], traces):
        ranking = selector.rank(example.query, example.candidates, top_k=3, prune="auto")
        assert [r.index for r in ranking] == replay(trace, rebuilt, 3).selected
        assert ranking.stats.prune == rebuilt.describe()
    assert CliRunner().invoke(app, ["verify", str(package)]).exit_code == 0  # graph hashes untouched
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(POOL) + "\n", encoding="utf-8")
    wrong_k = CliRunner().invoke(app, ["run", str(package), "--query", QUERY, "--candidates", str(candidates),
                                       "--top-k", "5", "--prune", "auto"])
    assert wrong_k.exit_code == 2 and "calibrated for top-k 3" in wrong_k.stderr


def test_too_few_queries_certify_nothing_and_auto_runs_exact(tiny_cross_package: Path, tmp_path: Path) -> None:
    data, _ = _dataset(tmp_path, 6)  # 0.9^6 > 0.1: not even a perfect record certifies 0.9
    package = tmp_path / "pkg"
    shutil.copytree(tiny_cross_package, package)
    result = CliRunner().invoke(app, ["calibrate", str(package), "--data", str(data), "--target-agreement", "0.9",
                                      "--top-k", "3"])
    assert result.exit_code == 0, result.output
    assert "no cluster setting is certified" in result.stdout and ">= 29" in result.stdout  # 2 chains: δ/2
    selector = edgekit.load(str(package))
    assert selector.manifest.ranking.calibration["params"] is None
    assert selector.rank(QUERY, POOL, top_k=3, prune="auto").stats.prune == "exact"
    unknown = CliRunner().invoke(app, ["calibrate", str(package), "--data", str(data), "--policy", "beam"])
    assert unknown.exit_code == 2 and "'beam'" in unknown.stderr
