"""Story: the memory-budget planner picks the fastest window/chunk whose estimated peak fits,
refuses up front (one line, exit 2) when nothing fits, and a budgeted run scores exactly like an
unbudgeted one while reporting its plan next to the measured peak."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.errors import InvalidArgumentError, MemoryBudgetError
from edgekit.manifest import Manifest
from edgekit.runtimes.planner import CHUNKS, WINDOWS, estimate, plan
from tests.conftest import CANDIDATES, QUERY

LENGTHS = [40, 52, 61, 64, 64, 30, 12, 64]


def _total(manifest: Manifest, window: int, chunk: int, process_mb: float = 100.0) -> float:
    return sum(estimate(manifest, LENGTHS, window, chunk, process_mb).values())


def test_estimates_grow_with_window_and_chunk(tiny_cross_package: Path) -> None:
    manifest = Manifest.load(tiny_cross_package)
    for window in WINDOWS[:-1]:
        assert _total(manifest, window + 1, 4) > _total(manifest, window, 4)
    assert _total(manifest, 2, 8) > _total(manifest, 2, 4) > _total(manifest, 2, 1)
    parts = estimate(manifest, LENGTHS, 2, 4, 100.0)
    assert set(parts) == {"process", "runtime", "weights", "sessions", "states", "activations"} and parts["process"] == 100.0


def test_plan_takes_the_fastest_option_that_fits(tiny_cross_package: Path) -> None:
    manifest = Manifest.load(tiny_cross_package)
    generous = plan(manifest, LENGTHS, budget_mb=10_000, process_mb=100.0)
    assert (generous.window, generous.chunk) == (max(WINDOWS), 8)  # chunks beyond N=8 are pointless
    tight_budget = (_total(manifest, 2, 2) + _total(manifest, 2, 4)) / 2  # (2, 2) fits, (2, 4) does not
    tight = plan(manifest, LENGTHS, budget_mb=tight_budget, process_mb=100.0)
    assert tight.estimated_peak_mb <= tight_budget and tight.window >= 2 and tight.chunk == 2
    every = [(w, c) for w in WINDOWS for c in CHUNKS if c <= len(LENGTHS)]
    for w, c in every:  # nothing that fits is preferred over the choice
        if _total(manifest, w, c) <= tight_budget:
            assert ((w >= 2), c, w) <= ((tight.window >= 2), tight.chunk, tight.window)


def test_plan_refuses_when_nothing_fits(tiny_cross_package: Path) -> None:
    manifest = Manifest.load(tiny_cross_package)
    smallest = _total(manifest, 1, 1)
    with pytest.raises(MemoryBudgetError, match=r"below the smallest plan \(window 1, chunk 1"):
        plan(manifest, LENGTHS, budget_mb=smallest - 1, process_mb=100.0)
    with pytest.raises(MemoryBudgetError, match="positive"):
        plan(manifest, LENGTHS, budget_mb=0, process_mb=100.0)


def test_budgeted_run_scores_like_the_default_and_reports_its_plan(tiny_cross_package: Path) -> None:
    exact = edgekit.load(str(tiny_cross_package)).rank(QUERY, CANDIDATES, top_k=3)
    budgeted = edgekit.load(str(tiny_cross_package), memory_budget_mb=4096).rank(QUERY, CANDIDATES, top_k=3)
    assert [(r.index, r.score) for r in budgeted] == [(r.index, pytest.approx(r.score, abs=1e-6)) for r in exact]
    stats = budgeted.stats
    assert stats.memory_budget_mb == 4096 and stats.plan is not None
    assert (stats.window, stats.chunk) == (stats.plan["window"], stats.plan["chunk"])
    assert stats.max_resident_graphs <= stats.window
    with pytest.raises(InvalidArgumentError, match="not both"):
        edgekit.load(str(tiny_cross_package), window=2, memory_budget_mb=4096)


def test_cli_plan_prints_without_running_and_refusals_are_one_line(tiny_cross_package: Path, tmp_path: Path) -> None:
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(CANDIDATES))
    runner = CliRunner()
    base = ["run", str(tiny_cross_package), "--query", QUERY, "--candidates", str(candidates)]
    shown = runner.invoke(app, [*base, "--memory-budget", "4096", "--plan", "--json"])
    assert shown.exit_code == 0, shown.output
    chosen = json.loads(shown.stdout)
    assert chosen["budget_mb"] == 4096 and chosen["estimated_peak_mb"] <= 4096 and "top_k" not in chosen
    refused = runner.invoke(app, [*base, "--memory-budget", "1"])
    assert refused.exit_code == 2 and refused.output.count("\n") == 1 and "raise --memory-budget" in refused.output
    alone = runner.invoke(app, [*base, "--plan"])
    assert alone.exit_code == 2 and "pass --memory-budget" in alone.output
    ran = runner.invoke(app, [*base, "--memory-budget", "4096", "--json"])
    assert ran.exit_code == 0 and json.loads(ran.stdout)["stats"]["plan"]["budget_mb"] == 4096
