"""The native runtime (runtimes/native/) against the Python runtime, on the same packages.

Story: build libedgekit and edgekit-rank (with AddressSanitizer: any memory error in a run fails
its exit status), export a package, rank with both runtimes, compare the top-K and the scores.
Each native run is its own process, as an app would be.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import edgekit
from edgekit.manifest import Manifest
from edgekit.runtimes.text import TextEncoder
from tests.conftest import CANDIDATES, QUERY

REPO = Path(__file__).resolve().parents[1]
DEVSET = REPO / "edgekit" / "data" / "devset_stdlib.jsonl"
ASAN = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=23",
        "LSAN_OPTIONS": f"suppressions={REPO / 'runtimes' / 'native' / 'tests' / 'lsan.supp'}:print_suppressions=0"}


def rank_native(build: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """edgekit-rank with `args`, under ASan (exit status 23 on a memory error or leak)."""
    env = dict(os.environ, **ASAN)
    return subprocess.run([str(build / "edgekit-rank"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def write_ids(path: Path, encoded: list) -> Path:
    path.write_text("".join(json.dumps({"ids": list(e.ids), "type_ids": list(e.type_ids)}) + "\n" for e in encoded))
    return path


def test_the_host_ranks_the_dev_set_as_the_python_runtime(native_build: Path, minilm_package: Path) -> None:
    """All-MiniLM-L6-v2 on the 120 dev-set queries (50 candidates each): natively tokenised, the
    same top-10 in the same order as the Python runtime, every score within 1e-5."""
    proc = rank_native(native_build, str(minilm_package), "--queries", str(DEVSET), "--top-k", "10", "--window", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    native = [json.loads(line) for line in proc.stdout.splitlines()]
    records = [json.loads(line) for line in DEVSET.read_text().splitlines()]
    assert len(native) == len(records) == 120
    selector = edgekit.load(str(minilm_package), window=8)
    worst = 0.0
    for record, got in zip(records, native):
        want = selector.rank(record["query"], record["candidates"], top_k=10)
        assert [r["index"] for r in got["top_k"]] == [r.index for r in want], record["query"]
        worst = max(worst, *(abs(r["score"] - w.score) for r, w in zip(got["top_k"], want)))
        assert got["stats"]["max_resident_graphs"] <= 8 and got["stats"]["candidates"] == len(record["candidates"])
    assert worst < 1e-5


def test_rank_ids_on_the_tiny_qwen3_package_equals_python(native_build: Path, tiny_qwen3: Path, tmp_path: Path) -> None:
    """A decoder reranker (left padding, causal bias, rotary cos/sin, yes/no probability head):
    the host brings the prompt's token ids (ek_rank_ids); every candidate's score equals Python's."""
    from edgekit.exporters.families import export_source

    package = tmp_path / "qwen3"
    export_source(str(tiny_qwen3), package, max_length=160)
    encoded = TextEncoder(Manifest.load(package)).encode_pairs(QUERY, CANDIDATES)
    ids = write_ids(tmp_path / "ids.jsonl", encoded)
    proc = rank_native(native_build, str(package), "--ids", str(ids), "--top-k", str(len(CANDIDATES)), "--json",
                       "--chunk", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)["top_k"]
    want = edgekit.load(str(package), chunk=3).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    assert [r["index"] for r in got] == [r.index for r in want]
    assert max(abs(r["score"] - w.score) for r, w in zip(got, want)) < 1e-5
    assert all(0.0 <= r["score"] <= 1.0 for r in got)


def test_streaming_keeps_at_most_the_window_resident(native_build: Path, minilm_package: Path, tmp_path: Path) -> None:
    """Window 1, 2 and 3 give the same ranking; the stats say how many sessions were open at once."""
    encoded = TextEncoder(Manifest.load(minilm_package)).encode_texts([*CANDIDATES, QUERY])
    ids = write_ids(tmp_path / "ids.jsonl", encoded[:-1])
    query_ids = ",".join(map(str, encoded[-1].ids))
    runs = {}
    for window in (1, 2, 3):
        proc = rank_native(native_build, str(minilm_package), "--ids", str(ids), "--query-ids", query_ids, "--json",
                           "--window", str(window), "--top-k", "5")
        assert proc.returncode == 0, proc.stderr[-2000:]
        runs[window] = json.loads(proc.stdout)
        stats = runs[window]["stats"]
        assert stats["max_resident_graphs"] == window and stats["graphs_loaded"] == 8  # embeddings, 6 layers, head
    assert runs[1]["top_k"] == runs[2]["top_k"] == runs[3]["top_k"]
    want = edgekit.load(str(minilm_package)).rank(QUERY, CANDIDATES, top_k=5)
    assert [r["index"] for r in runs[2]["top_k"]] == [r.index for r in want]


@pytest.mark.parametrize("spec", ["threshold:0", "threshold:0.05@2", "threshold:0.5@3"])
def test_cluster_pruning_decides_as_python(native_build: Path, minilm_package: Path, spec: str,
                                           tmp_path: Path) -> None:
    """The same pruning setting accepts and drops the same candidates at the same depths as the
    Python runtime (exact 1-D k-means, same boundary rule), on dev-set queries."""
    records = [json.loads(line) for line in DEVSET.read_text().splitlines()[:6]]
    selector = edgekit.load(str(minilm_package), window=8)
    subset = tmp_path / "queries.jsonl"
    subset.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = rank_native(native_build, str(minilm_package), "--queries", str(subset), "--top-k", "5", "--window", "8",
                       "--prune", spec)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pruned_somewhere = False
    for record, line in zip(records, proc.stdout.splitlines()):
        got = json.loads(line)
        want = selector.rank(record["query"], record["candidates"], top_k=5, prune=spec)
        assert [(r["index"], r["decided_at_layer"]) for r in got["top_k"]] == [(r.index, r.decided_at_layer) for r in want]
        assert max(abs(r["score"] - w.score) for r, w in zip(got["top_k"], want)) < 1e-5
        assert got["stats"]["candidate_layers"] == want.stats.candidate_layers
        pruned_somewhere |= want.stats.candidate_layers < want.stats.candidate_layers_exact
    assert pruned_somewhere or spec == "threshold:0.5@3"


def test_user_mistakes_exit_2_with_one_line(native_build: Path, minilm_package: Path, tmp_path: Path) -> None:
    candidates = tmp_path / "c.txt"
    candidates.write_text("a\nb\n")
    cases = {
        ("--top-k", "0"): "--top-k must be a positive integer",
        ("--window", "0"): "window must be >= 1",
        ("--chunk", "x"): "--chunk takes an integer",
        ("--prune", "sideways"): "--prune 'sideways' is not understood",
        ("--prune", "auto"): "--prune auto needs a calibrated package",
    }
    for extra, needle in cases.items():
        proc = rank_native(native_build, str(minilm_package), "--query", "q", "--candidates", str(candidates), *extra)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, (extra, proc.stderr)
    proc = rank_native(native_build, str(tmp_path / "nowhere"), "--query", "q", "--candidates", str(candidates))
    assert proc.returncode == 2 and "does not exist" in proc.stderr and proc.stderr.count("\n") == 1
    proc = rank_native(native_build, str(minilm_package), "--query", "q", "--candidates", str(tmp_path / "c.csv"))
    assert proc.returncode == 2 and "must end in .txt" in proc.stderr
