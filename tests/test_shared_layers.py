"""Story: a tiny cross-encoder, bi-encoder and Qwen3 reranker, each exported with and without
`--shared-layers` -> the shared package holds one layer graph and a weights file per layer ->
it ranks exactly like the per-layer package (scores, pruning decisions) while creating one layer
session instead of one per layer -> a tampered or inconsistent package is refused in one line,
and a model whose layers are not one graph is refused at export (exit 2)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.errors import FormatVersionError, IntegrityError, NotAPackageError, SourceModelError
from edgekit.exporters.shared_layers import SHARED_GRAPH, share_layers
from edgekit.manifest import Manifest
from edgekit.runtimes import selector as selector_module
from edgekit.runtimes.planner import MIB, SESSION_FACTOR, estimate
from edgekit.runtimes.ranking import Ranking
from edgekit.runtimes.shared_weights import MappedWeights
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import rewrite_manifest
from tests.test_runtime_without_torch import _run

MORE = [f"{word} file line {i}" for i, word in enumerate(["read", "open", "sort", "cat", "json", "path"] * 3)]
POOL = CANDIDATES + MORE


def _perturbed(source: Path, out: Path, touch: Callable[[str], bool], seed: int = 0, scale: float = 0.05) -> Path:
    """A copy of checkpoint `source` whose float tensors named `touch`-ingly get seeded noise added:
    every layer's own values then differ from every other layer's (a trained model's situation;
    the tiny random models start with all-ones norms and all-zero biases)."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out)
    tensors = load_file(str(out / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and touch(name):
            tensors[name] = tensor + scale * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def _export(source: Path, out: Path, *extra: str, max_length: int = 64) -> Path:
    """Export through the CLI (the prompt of a decoder reranker needs room: 256 tokens)."""
    result = CliRunner().invoke(app, ["export", str(source), "--out", str(out), "--max-length", str(max_length),
                                      *extra])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())  # the console wraps long lines
    assert ("layers share graphs/layer_shared.onnx" in said) == ("--shared-layers" in extra), result.stdout
    return out


@pytest.fixture(scope="module")
def cross_pair(tiny_source: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(per-layer package, shared package) of one tiny cross-encoder whose layers all differ."""
    work = tmp_path_factory.mktemp("shared-cross")
    source = _perturbed(tiny_source("cross-encoder"), work / "src", lambda name: ".layer." in name)
    return _export(source, work / "plain"), _export(source, work / "shared", "--shared-layers")


@pytest.fixture(scope="module")
def qwen3_pair(tiny_qwen3: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("shared-qwen3")
    source = _perturbed(tiny_qwen3, work / "src", lambda name: ".layers." in name, scale=0.2)
    return (_export(source, work / "plain", max_length=256),
            _export(source, work / "shared", "--shared-layers", max_length=256))


def _scores(ranking: Ranking) -> dict[int, float]:
    return {result.index: result.score for result in ranking}


def test_shared_package_holds_one_layer_graph_and_a_weights_file_per_layer(cross_pair: tuple[Path, Path]) -> None:
    plain, shared = (Manifest.load(package) for package in cross_pair)
    layers = shared.graphs_by_role("layer")
    assert shared.requires == ("shared-layers",) and plain.requires == ()
    assert {graph.path for graph in layers} == {SHARED_GRAPH}
    assert not list((shared.root / "graphs").glob("layer_[0-9][0-9][0-9].onnx"))  # per-layer graphs are gone
    for graph, before in zip(layers, plain.graphs_by_role("layer")):
        assert [entry.file for entry in graph.files] == [SHARED_GRAPH, f"graphs/{graph.name}.onnx.data"]
        assert graph.inputs == before.inputs and graph.outputs == before.outputs  # only the runtime feeds
        assert graph.weights is not None and graph.weights.file == graph.files[1].file
        # the per-layer graph's external data is reused in place; its inline tensors (norms and
        # biases, which differ per layer here) are appended, so the file only grows
        assert graph.files[1].bytes >= before.files[1].bytes
        assert any(tensor.offset >= before.files[1].bytes for tensor in graph.weights.tensors)
    record = shared.exporter["shared_layers"]
    assert record["graph"] == SHARED_GRAPH and record["layers"] == 3 and record["tensors"] == len(layers[0].weights.tensors)
    assert len(shared.files()) == len(plain.files()) - 3 + 1  # the shared graph once, not once per layer


def test_shared_cross_encoder_ranks_like_the_per_layer_package(cross_pair: tuple[Path, Path]) -> None:
    plain, shared = (edgekit.load(str(package), chunk=4) for package in cross_pair)
    layers = plain.manifest.ranking.num_layers
    expected = plain.rank(QUERY, POOL, top_k=len(POOL))
    first = shared.rank(QUERY, POOL, top_k=len(POOL))
    again = shared.rank(QUERY, POOL, top_k=len(POOL))
    assert len(set(_scores(expected).values())) > len(POOL) // 2  # the scores tell candidates apart
    for ranking in (first, again):
        assert [r.index for r in ranking] == [r.index for r in expected]
        assert np.allclose(list(_scores(ranking).values()), list(_scores(expected).values()), rtol=0, atol=1e-6)
    # sessions created: per-layer = embeddings + every layer + head; shared = embeddings + the
    # shared layer graph (once, kept by the Selector) + head, and each layer's weights mapped
    assert expected.stats.graphs_loaded == layers + 2 and expected.stats.layer_weights_mapped == 0
    assert first.stats.graphs_loaded == 3 and again.stats.graphs_loaded == 2
    assert first.stats.layer_weights_mapped == again.stats.layer_weights_mapped == layers
    assert first.stats.max_resident_graphs <= 2


def test_cli_run_reports_the_layer_weights_it_mapped(cross_pair: tuple[Path, Path], tmp_path: Path) -> None:
    candidates = tmp_path / "c.txt"
    candidates.write_text("\n".join(CANDIDATES), encoding="utf-8")
    args = ["run", str(cross_pair[1]), "--query", QUERY, "--candidates", str(candidates), "--top-k", "2"]
    stats = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)["stats"]
    assert (stats["graphs_loaded"], stats["layer_weights_mapped"]) == (3, 3)
    assert "layer weights mapped 3" in " ".join(CliRunner().invoke(app, args).stdout.split())


def test_pruning_decides_the_same_on_both_packages(cross_pair: tuple[Path, Path]) -> None:
    plain, shared = (edgekit.load(str(package), chunk=4) for package in cross_pair)
    expected = plain.rank(QUERY, POOL, top_k=3, prune="threshold:0")
    pruned = shared.rank(QUERY, POOL, top_k=3, prune="threshold:0")
    assert expected.stats.candidate_layers < expected.stats.candidate_layers_exact  # pruning fired
    assert pruned.stats.alive_per_layer == expected.stats.alive_per_layer
    assert [(r.index, r.decided_at_layer) for r in pruned] == [(r.index, r.decided_at_layer) for r in expected]
    assert np.allclose([r.score for r in pruned], [r.score for r in expected], rtol=0, atol=1e-6)
    # a pass that stops early maps no layer past the one already prefetched
    assert pruned.stats.layer_weights_mapped <= len(pruned.stats.alive_per_layer) + 1


def test_resident_window_keeps_every_layer_and_one_session(cross_pair: tuple[Path, Path]) -> None:
    plain, shared = (edgekit.load(str(package), window=8) for package in cross_pair)
    expected = plain.rank(QUERY, CANDIDATES, top_k=4)
    first, again = (shared.rank(QUERY, CANDIDATES, top_k=4) for _ in range(2))
    assert [(r.index, r.score) for r in first] == [(r.index, r.score) for r in again]
    assert np.allclose([r.score for r in first], [r.score for r in expected], rtol=0, atol=1e-6)
    assert first.stats.graphs_loaded == 3 and again.stats.graphs_loaded == 0  # nothing reloaded
    assert first.stats.layer_weights_mapped == 3 and again.stats.layer_weights_mapped == 0
    shared.close()
    assert shared.rank(QUERY, CANDIDATES, top_k=4).stats.graphs_loaded == 3  # closed: opened afresh


def test_at_most_window_layers_are_mapped_at_once(cross_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer stream streams weights: the previous layer's map is closed before the next is
    opened beyond the window, and the prefetch thread opens (and reads ahead) the next one."""
    counts = {"open": 0, "most": 0, "prefetched": 0}
    lock = threading.Lock()  # maps open on the prefetch thread and close on the caller's

    class Counted(MappedWeights):
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            with lock:
                counts["open"] += 1
                counts["most"] = max(counts["most"], counts["open"])

        def prefetch(self) -> None:
            with lock:
                counts["prefetched"] += 1
            super().prefetch()

        def close(self) -> None:
            with lock:
                counts["open"] -= self._map is not None
            super().close()

    monkeypatch.setattr(selector_module, "MappedWeights", Counted)
    for window in (1, 2):
        counts.update(open=0, most=0)
        selector = edgekit.load(str(cross_pair[1]), window=window)
        ranking = selector.rank(QUERY, CANDIDATES, top_k=3)
        assert counts["open"] == 0 and 1 <= counts["most"] <= window  # all unmapped after the pass
        assert ranking.stats.layer_weights_mapped == 3
    assert counts["prefetched"] == 6


def test_shared_bi_encoder_scores_like_the_per_layer_package(tiny_bi_encoder: Path, tmp_path: Path) -> None:
    source = _perturbed(tiny_bi_encoder, tmp_path / "src", lambda name: ".layer." in name)
    plain = edgekit.load(str(_export(source, tmp_path / "plain")))
    shared = edgekit.load(str(_export(source, tmp_path / "shared", "--shared-layers")))
    assert shared.manifest.task == "select"
    expected, actual = (selector.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES)) for selector in (plain, shared))
    assert [r.index for r in actual] == [r.index for r in expected]
    assert np.allclose([r.score for r in actual], [r.score for r in expected], rtol=0, atol=1e-6)
    assert actual.stats.graphs_loaded == 3 and expected.stats.graphs_loaded == 2 + shared.manifest.ranking.num_layers


def test_shared_qwen3_scores_like_the_per_layer_package(qwen3_pair: tuple[Path, Path]) -> None:
    plain, shared = (edgekit.load(str(package), chunk=3) for package in qwen3_pair)
    layers = shared.manifest.graphs_by_role("layer")
    assert {graph.path for graph in layers} == {SHARED_GRAPH}
    assert {spec.name for spec in layers[0].inputs} == {"hidden_states", "attention_bias", "cos", "sin"}
    expected, actual = (selector.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES)) for selector in (plain, shared))
    assert len({round(r.score, 6) for r in expected}) > 1  # the scores tell candidates apart
    assert [r.index for r in actual] == [r.index for r in expected]
    assert np.allclose([r.score for r in actual], [r.score for r in expected], rtol=0, atol=1e-6)
    assert actual.stats.graphs_loaded == 3 and actual.stats.layer_weights_mapped == len(layers)


def _int8_weights(path: Path) -> None:
    """Rewrite the layer graph at `path` with int8 weights: every MatMul's weight becomes
    DequantizeLinear(int8 tensor, float scale, int8 zero point), the shape of graph onnxruntime's
    dynamic quantisation writes (built here with onnx alone: only exporters import onnxruntime)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))  # external data read in: the data file is written anew below
    (path.parent / f"{path.name}.data").unlink()
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            name = node.input[1]
            values = numpy_helper.to_array(weights.pop(name))
            scale = np.float32(np.abs(values).max() / 127)
            model.graph.initializer.extend([
                numpy_helper.from_array(np.round(values / scale).astype(np.int8), f"{name}_quantized"),
                numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{name}_scale"),
                numpy_helper.from_array(np.array(0, dtype=np.int8), f"{name}_zero_point")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}_quantized", f"{name}_scale",
                                                               f"{name}_zero_point"], [f"{name}_dequantized"]))
            node.input[1] = f"{name}_dequantized"
        nodes.append(node)
    kept = [tensor for tensor in model.graph.initializer if tensor.name in weights or tensor.name.endswith(
        ("_quantized", "_scale", "_zero_point"))]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data", size_threshold=512)


def test_an_int8_package_shares_its_layers_too(cross_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """share_layers knows no dtype: layer graphs with int8 weights, float scales and int8 zero
    points share one graph and rank exactly as before."""
    import dataclasses

    from edgekit.manifest import FileEntry

    root = _copy(cross_pair[0], tmp_path)
    manifest = Manifest.load(root)
    graphs = []
    for graph in manifest.graphs:
        if graph.role == "layer":
            _int8_weights(root / graph.path)
            graph = dataclasses.replace(graph, files=tuple(FileEntry.of(root, e.file) for e in graph.files))
        graphs.append(graph)
    dataclasses.replace(manifest, graphs=tuple(graphs)).save(root)
    expected = edgekit.load(str(root)).rank(QUERY, CANDIDATES, top_k=5)
    shared = share_layers(root, Manifest.load(root))
    tensors = {tensor.name: tensor.dtype for tensor in shared.graph("layer", 0).weights.tensors}
    assert {"int8", "float32"} <= set(tensors.values())  # int8 weights and their per-layer scales are inputs
    assert not any(name.endswith("_zero_point") for name in tensors)  # zero in every layer: left inline
    actual = edgekit.load(str(root)).rank(QUERY, CANDIDATES, top_k=5)
    assert [(r.index, r.score) for r in actual] == [(r.index, r.score) for r in expected]


def test_a_shared_graph_whose_inputs_are_not_the_entries_is_refused(cross_pair: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    """Every layer entry renames a weight tensor alike (a consistent manifest): the shared session's
    inputs are checked against feeds + weight names, and the run is refused in one line."""
    package = _copy(cross_pair[1], tmp_path)

    def rename(data: dict) -> None:
        for graph in data["graphs"]:
            if graph["role"] == "layer":
                graph["weights"]["tensors"][0]["name"] = "not_in_the_graph"

    rewrite_manifest(package, rename)
    with pytest.raises(IntegrityError, match="not the graph its entry describes") as caught:
        edgekit.load(str(package)).rank(QUERY, CANDIDATES, top_k=2)
    assert "\n" not in str(caught.value)


def test_runtime_runs_a_shared_package_without_torch(cross_pair: tuple[Path, Path]) -> None:
    result = _run(f"""
        import json, sys, edgekit
        ranking = edgekit.load({str(cross_pair[1])!r}).rank("read a file", ["open the file", "a cat"], top_k=2)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(json.dumps({{"n": len(ranking), "mapped": ranking.stats.layer_weights_mapped, "heavy": heavy}}))
    """)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"n": 2, "mapped": 3, "heavy": []}


def test_planner_counts_the_shared_session_once_and_the_computing_layers_weights(
        cross_pair: tuple[Path, Path]) -> None:
    plain, shared = (Manifest.load(package) for package in cross_pair)
    lengths = [40, 52, 61, 64]
    layer = shared.graph("layer", 0)
    weights_file = max(graph.files[1].bytes for graph in shared.graphs_by_role("layer"))
    embeddings = shared.graph("embeddings")
    for window in (1, 2, 3):
        parts = estimate(shared, lengths, window, 4, 100.0)
        # the computing layer's mapped weights file, as a per-layer session's mapped data file
        assert parts["weights"] == pytest.approx(max(weights_file, embeddings.bytes) * SESSION_FACTOR / MIB)
        # prefetched maps are read ahead into the page cache, not resident: the shared graph is,
        # once, and each other window slot at most the embeddings graph's structure
        idle = (window - 1) * embeddings.files[0].bytes
        assert parts["sessions"] == pytest.approx((layer.files[0].bytes + idle) / MIB)
    per_layer = estimate(plain, lengths, 2, 4, 100.0)
    assert per_layer["sessions"] == pytest.approx(max(g.files[0].bytes for g in plain.stream_graphs[:-1]) / MIB)
    budgeted = edgekit.load(str(shared.root), memory_budget_mb=4096).rank(QUERY, CANDIDATES, top_k=3)
    exact = edgekit.load(str(plain.root)).rank(QUERY, CANDIDATES, top_k=3)
    assert budgeted.stats.plan is not None and [r.index for r in budgeted] == [r.index for r in exact]


# --- refusals --------------------------------------------------------------------------------
def _error_lines(result: object) -> list[str]:
    """The CLI's `error:` lines (exit 2, no traceback); transformers' progress bars may share stderr."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output  # type: ignore[attr-defined]
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # type: ignore[attr-defined]


def _copy(package: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pkg"
    shutil.copytree(package, target)
    return target


def test_tampered_weights_file_is_refused_by_its_hash(cross_pair: tuple[Path, Path], tmp_path: Path) -> None:
    package = _copy(cross_pair[1], tmp_path)
    data = package / "graphs" / "layer_001.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="layer_001.onnx.data") as caught:
        edgekit.load(str(package))
    assert "\n" not in str(caught.value)
    candidates = tmp_path / "c.txt"
    candidates.write_text("open the file\nsort a list\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(package), "--query", "q", "--candidates", str(candidates)])
    assert result.exit_code == 2 and "layer_001.onnx.data" in result.stderr
    assert _error_lines(result) == [result.stderr.strip()]


def _first_tensor(data: dict) -> dict:
    return next(graph for graph in data["graphs"] if graph["role"] == "layer")["weights"]["tensors"][0]


def _layer(data: dict, index: int) -> dict:
    return next(graph for graph in data["graphs"] if graph["role"] == "layer" and graph["index"] == index)


EDITS: dict[str, tuple[Callable[[dict], None], str]] = {
    "offset past the end": (lambda d: _first_tensor(d).update(offset=_layer(d, 0)["files"][1]["bytes"]),
                            "past the end of graphs/layer_000.onnx.data"),
    "bytes not the shape's": (lambda d: _first_tensor(d).update(bytes=_first_tensor(d)["bytes"] - 4),
                              "do not hold a float32 tensor"),
    "unknown dtype": (lambda d: _first_tensor(d).update(dtype="int4"), "is not one of"),
    "name of a feed": (lambda d: _first_tensor(d).update(name="hidden_states"), "also an input or output"),
    "the graph as weights file": (lambda d: _layer(d, 0)["weights"].update(file=_layer(d, 0)["path"]),
                                  "other than"),
    "another layer's layout": (lambda d: _layer(d, 1)["weights"]["tensors"].pop(), "other inputs, outputs or weight"),
    "weights without requires": (lambda d: d.pop("requires"), "does not require 'shared-layers'"),
    "weights on a head": (lambda d: next(g for g in d["graphs"] if g["role"] == "head").update(
        weights={"file": "graphs/head.onnx.data", "tensors": []}), "only layer graphs carry weights"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_inconsistent_weights_entries_are_refused_in_one_line(cross_pair: tuple[Path, Path], tmp_path: Path,
                                                              edit: str) -> None:
    package = _copy(cross_pair[1], tmp_path)
    change, message = EDITS[edit]
    rewrite_manifest(package, change)
    with pytest.raises(NotAPackageError, match=message) as caught:
        Manifest.load(package)
    assert "\n" not in str(caught.value)


def test_a_feature_this_runtime_does_not_know_is_refused(cross_pair: tuple[Path, Path], tmp_path: Path) -> None:
    package = _copy(cross_pair[1], tmp_path)
    rewrite_manifest(package, lambda data: data["requires"].append("weights-in-the-cloud"))
    with pytest.raises(FormatVersionError, match="requires 'weights-in-the-cloud'.*does not implement"):
        Manifest.load(package)


def test_share_layers_refuses_layers_that_are_not_one_graph(tiny_cross_package: Path, tmp_path: Path) -> None:
    """A staged package whose layer 1 graph has one extra node: share_layers names the layer and
    the node, and leaves the package as it was."""
    import onnx
    from onnx import helper

    package = _copy(tiny_cross_package, tmp_path)
    path = package / "graphs" / "layer_001.onnx"
    model = onnx.load(str(path), load_external_data=False)
    model.graph.node.append(helper.make_node("Identity", ["hidden_states"], ["spare"], name="spare_copy"))
    onnx.save(model, str(path))
    manifest = Manifest.from_dict(json.loads((package / "manifest.json").read_text(encoding="utf-8")), package)
    with pytest.raises(SourceModelError, match=r"--shared-layers: layer 1 differs from layer 0 \(.*nodes.*\); "
                                               "export without --shared-layers"):
        share_layers(package, manifest)
    assert not (package / SHARED_GRAPH).exists() and (package / "graphs" / "layer_000.onnx").is_file()


def test_export_of_a_model_whose_layers_differ_exits_2(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    """torch.onnx folds a layer's equal-valued tensors into one (the tiny model's all-zero biases):
    perturbing layer 1 alone gives it another graph than layers 0 and 2."""
    source = _perturbed(tiny_cross_encoder, tmp_path / "src", lambda name: ".layer.1." in name)
    out = tmp_path / "pkg"
    result = CliRunner().invoke(app, ["export", str(source), "--out", str(out), "--max-length", "64",
                                      "--shared-layers"])
    errors = _error_lines(result)
    assert len(errors) == 1 and "--shared-layers: layer 1 differs from layer 0" in errors[0], result.output
    assert "export without --shared-layers" in errors[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg")]  # nothing left


def test_shared_layers_on_a_video_source_exits_2(tmp_path: Path) -> None:
    source = tmp_path / "svd"
    source.mkdir()
    (source / "model_index.json").write_text(json.dumps({"_class_name": "StableVideoDiffusionPipeline"}),
                                             encoding="utf-8")
    result = CliRunner().invoke(app, ["export", str(source), "--out", str(tmp_path / "pkg"), "--shared-layers"])
    assert result.exit_code == 2 and "--shared-layers does not apply to svd" in result.stderr, result.output
    assert _error_lines(result) == [result.stderr.strip()]
