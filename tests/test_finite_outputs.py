"""Story: a package whose weights are NaN (files re-hashed, so `verify` passes) -> `run` refuses
with one line naming the graph that produced the NaN, exit 2, and prints no ranking; the API
raises the typed error; a pruning policy never sees the NaN; `--json` output is strict JSON;
a video whose latents or frames go non-finite is refused the same way."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edgekit
from edgekit.errors import IntegrityError, NonFiniteOutputError
from edgekit.manifest import Manifest
from edgekit.runtimes.pruning import ClusterPruning
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import write_manifest


def poisoned_copy(package: Path, tmp_path: Path, file: str, value: float = math.nan) -> Path:
    """A copy of `package` whose `file` (a graph's external data or the embedding table's payload)
    holds `value` in every float, with the manifest's sha256 and size updated: integrity checks
    pass, only the numbers are wrong."""
    copy = tmp_path / "poisoned"
    shutil.copytree(package, copy)
    target = copy / file
    if target.suffix == ".npy":
        table = np.load(target)
        np.save(target, np.full_like(table, value))
    else:
        np.full(target.stat().st_size // 4, value, dtype=np.float32).tofile(target)
    data = json.loads((copy / "manifest.json").read_text(encoding="utf-8"))
    raw = target.read_bytes()
    entries = [entry for graph in data["graphs"] for entry in graph["files"] if entry["file"] == file]
    table = (data.get("ranking") or {}).get("embedding_table")
    if table is not None and table["entry"]["file"] == file:
        entries.append(table["entry"])
    assert entries, f"{file} is not listed in the manifest"
    for entry in entries:
        entry["sha256"], entry["bytes"] = hashlib.sha256(raw).hexdigest(), len(raw)
    write_manifest(copy, data)
    Manifest.load(copy).verify()  # the attack passes integrity: hashes match the NaN bytes
    return copy


def run_cli(*argv: object) -> subprocess.CompletedProcess[str]:
    code = "from edgekit.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=120)


def test_nan_weights_in_a_layer_exit_2_naming_that_layer(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = poisoned_copy(tiny_cross_package, tmp_path, "graphs/layer_001.onnx.data")
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(CANDIDATES), encoding="utf-8")

    result = run_cli("run", package, "--query", QUERY, "--candidates", candidates, "--top-k", "3", "--json")

    assert result.returncode == 2
    assert result.stdout == ""  # no ranking, not even a partial one
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("error: graph layer_001 (graphs/layer_001.onnx) produced NaN")
    assert "edgekit verify" in lines[0]


def test_the_api_raises_the_typed_error_naming_the_graph(tiny_cross_package: Path, tmp_path: Path) -> None:
    package = poisoned_copy(tiny_cross_package, tmp_path, "graphs/layer_001.onnx.data")
    selector = edgekit.load(str(package))
    with pytest.raises(NonFiniteOutputError, match=r"^graph layer_001 \(graphs/layer_001.onnx\) produced NaN") as error:
        selector.rank(QUERY, CANDIDATES, top_k=3)
    assert isinstance(error.value, IntegrityError)
    assert error.value.bad_files == ["graphs/layer_001.onnx", "graphs/layer_001.onnx.data"]


@pytest.mark.parametrize("file, graph", [("graphs/head.onnx.data", "head"), ("graphs/layer_000.onnx.data", "layer_000")])
def test_pruning_never_decides_on_nan(tiny_cross_package: Path, tmp_path: Path, monkeypatch: Any,
                                      file: str, graph: str) -> None:
    package = poisoned_copy(tiny_cross_package, tmp_path, file)
    decisions: list[np.ndarray] = []
    original = ClusterPruning.decide

    def spy(self: ClusterPruning, depth: int, scores: np.ndarray, open_slots: int) -> Any:
        decisions.append(scores)
        return original(self, depth, scores, open_slots)

    monkeypatch.setattr(ClusterPruning, "decide", spy)
    with pytest.raises(NonFiniteOutputError, match=f"^graph {graph} "):
        edgekit.load(str(package)).rank(QUERY, CANDIDATES, top_k=2, prune="threshold:0")
    assert decisions == []  # the head's NaN scores were refused before the policy saw any


def test_nan_embedding_table_names_the_embeddings_graph(tiny_bi_package: Path, tmp_path: Path) -> None:
    table = Manifest.load(tiny_bi_package).ranking.embedding_table
    assert table is not None
    package = poisoned_copy(tiny_bi_package, tmp_path, table.entry.file, value=math.inf)
    with pytest.raises(NonFiniteOutputError, match=r"^graph embeddings \(graphs/embeddings.onnx\) produced"):
        edgekit.load(str(package)).rank(QUERY, CANDIDATES, top_k=3)


def _strict(text: str) -> Any:
    """json.loads that refuses NaN/Infinity (Python's own loads accepts them)."""
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict(tiny_cross_package: Path, tmp_path: Path) -> None:
    from edgekit.cli import print_ranking
    from edgekit.runtimes.ranking import Ranking, Result

    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(CANDIDATES), encoding="utf-8")
    result = run_cli("run", tiny_cross_package, "--query", QUERY, "--candidates", candidates, "--top-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert len(_strict(result.stdout)["top_k"]) == 3

    # were a NaN ever to reach the printer, it would refuse rather than print bare NaN
    ranking = edgekit.load(str(tiny_cross_package)).rank(QUERY, CANDIDATES, top_k=1)
    poisoned = Ranking([Result(0, math.nan, "x")], ranking.stats)
    with pytest.raises(ValueError, match="not JSON compliant"):
        print_ranking(poisoned, as_json=True)


# --- video: the driver checks latents after every step and the decoded frames --------------------
class _Graph:
    def __init__(self, name: str) -> None:
        self.name = name


class _NaNAfter:
    """A network whose prediction turns NaN from evaluation `bad` on; it lists its graphs."""

    loads, max_resident = 0, 1
    graphs = [_Graph("down_block_0"), _Graph("mid_block"), _Graph("up_block_0")]

    def __init__(self, bad: int) -> None:
        self.bad, self.calls = bad, 0

    def run(self, inputs: dict[str, np.ndarray], last_step: bool = False) -> np.ndarray:
        self.calls += 1
        out = 0.1 * inputs["sample"]
        return out * np.float32(math.nan) if self.calls >= self.bad else out


def _toy_family() -> Any:
    from tests.test_video_family import ToyFamily

    return ToyFamily(manifest=None, backend=None, window=1)


def test_nan_latents_name_the_step_and_the_network_graphs() -> None:
    from edgekit.runtimes.video.driver import generate

    family = _toy_family()
    network = _NaNAfter(bad=2)
    with pytest.raises(NonFiniteOutputError) as error:
        generate(family, family.request(steps=4), network=network)
    message = str(error.value)
    assert "\n" not in message and message.startswith("the latents after denoising step 2/4 hold NaN or inf")
    assert "graphs down_block_0 … up_block_0 (3 graphs)" in message and "edgekit verify" in message
    assert network.calls == 2  # stopped at the step that went bad: no more evaluations, no decode


def test_nan_frames_name_the_decoder(monkeypatch: Any) -> None:
    from edgekit.runtimes.video.driver import generate

    family = _toy_family()
    monkeypatch.setattr(family, "decode", lambda latents, settings, stats: np.full((3, 4, 4, 3), np.nan, np.float32))
    with pytest.raises(NonFiniteOutputError, match=r"^the decoded frames hold NaN or inf \(toy package, produced by "
                                                   r"the toy decoder graph\)"):
        generate(family, family.request(steps=2))


def test_a_real_video_package_with_nan_unet_weights_is_refused(svd_package: Path, tmp_path: Path) -> None:
    manifest = Manifest.load(svd_package)
    mid = manifest.graph("mid_block")
    data_file = next(entry.file for entry in mid.files if entry.file.endswith(".data"))
    package = poisoned_copy(svd_package, tmp_path, data_file)
    with pytest.raises(NonFiniteOutputError) as error:
        edgekit.load(str(package)).generate(np.full((32, 32, 3), 0.5, np.float32), num_frames=2, steps=2, seed=0)
    message = str(error.value)
    first, last = manifest.unet_graphs[0].name, manifest.unet_graphs[-1].name
    assert "\n" not in message and message.startswith("the latents after denoising step 1/2 hold NaN or inf")
    assert f"(svd package, produced by graphs {first} … {last} ({len(manifest.unet_graphs)} graphs))" in message


def test_a_manifest_is_never_written_with_a_non_finite_number(tiny_cross_package: Path, tmp_path: Path) -> None:
    """Strict JSON on the export side too: a parity figure measured as NaN (a source model that
    produces non-numbers) stops the export with a typed error instead of writing bare `NaN`."""
    import dataclasses

    from edgekit.errors import ParityError

    manifest = dataclasses.replace(Manifest.load(tiny_cross_package), parity={"max_abs_diff": math.nan})
    with pytest.raises(ParityError, match="non-finite number"):
        manifest.save(tmp_path)
    assert not (tmp_path / "manifest.json").exists()
