"""Story: a tiny BERT cross-encoder and a tiny Qwen3 reranker -> `edgekit export --dtype int8` ->
the exporter stages the fp32 package, quantizes every layer graph with onnxruntime's own tool
and the embedding table per row, and writes the int8 package only after running both through
the runtime on gate data -> the manifest records the agreement, the int8 package ranks within
the stated tolerance of fp32 (torch blocked), and its files pass verify and containment. A
damaged quantisation (one layer's weight scales x100) is refused, naming that layer, with
nothing written; `--dtype mixed` keeps that layer fp32 and passes. Bad values exit 2 in one
line, before any model is loaded."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.dataset import read_examples
from edgekit.errors import NotAPackageError
from edgekit.exporters import quant_gate
from edgekit.exporters.quant_gate import DEV_SET, Gate
from edgekit.exporters.quantize import graph_files, save_graph
from edgekit.manifest import Manifest
from tests.conftest import CANDIDATES, QUERY
from tests.manifest_edit import rewrite_manifest
from tests.refusals import assert_refused

GATE_QUERIES = 30  # the first 30 dev-set queries (50 candidates each): the gate in ~1 s per pass
# Random tiny models score all 50 candidates of a query nearly alike (the tiny BERT's logits
# span ~5e-5), so int8 rounding already reorders the top-10 boundary: measured all-int8
# agreement 0.843 (tiny BERT) and 0.927 (tiny Qwen3) on these queries; the BERT with layer 1's
# scales x100: 0.22 for that layer alone (chance is 10/50 = 0.2), 0.873 with it kept fp32.
# 0.7 separates the two with margin. (A trained model is held to the default 0.99.)
TINY_MIN_AGREEMENT = 0.7
# int8 vs the fp32 package, max abs score difference on the conftest candidates. Measured:
# tiny BERT 1.2e-5 (logits 5e-5 apart; 1.4e-5 over the gate data), tiny Qwen3 1.2e-3
# (probabilities ~0.6; 2.5e-3 over the gate data). Stated with a margin of about 4x.
BERT_SCORE_TOLERANCE = 5e-5
QWEN3_SCORE_TOLERANCE = 5e-3
QWEN3_MAX_LENGTH = 160


@pytest.fixture(scope="module")
def gate_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gate") / "gate.jsonl"
    path.write_text("".join(DEV_SET.read_text(encoding="utf-8").splitlines(keepends=True)[:GATE_QUERIES]),
                    encoding="utf-8")
    return path


def export(source: Path, out: Path, *options: str) -> Manifest:
    result = CliRunner().invoke(app, ["export", str(source), "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return Manifest.load(out)


@pytest.fixture(scope="module")
def bert_int8(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder: Path, gate_data: Path) -> Path:
    out = tmp_path_factory.mktemp("int8") / "bert"
    export(tiny_cross_encoder, out, "--dtype", "int8", "--max-length", "64", "--gate-data", str(gate_data),
           "--min-agreement", str(TINY_MIN_AGREEMENT))
    return out


def scores(package: Path, query: str = QUERY) -> np.ndarray:
    ranking = edgekit.load(str(package)).rank(query, CANDIDATES, top_k=len(CANDIDATES))
    out = np.zeros(len(CANDIDATES))
    for result in ranking:
        out[result.index] = result.score
    return out


def op_types(package: Path, name: str) -> set[str]:
    import onnx

    manifest = Manifest.load(package)
    graph = next(graph for graph in manifest.graphs if graph.name == name)
    return {node.op_type for node in onnx.load(str(package / graph.path), load_external_data=False).graph.node}


def gate_agreement(fp32: Path, int8: Path, data: Path, top_k: int = 10) -> float:
    """The agreement of two written packages, measured again from outside the exporter."""
    return Gate(Manifest.load(fp32), read_examples(data), top_k).measure(Manifest.load(int8)).agreement


def test_tiny_bert_int8_records_its_agreement_and_scores_within_tolerance(
        bert_int8: Path, tiny_cross_package: Path, gate_data: Path) -> None:
    manifest = Manifest.load(bert_int8)
    manifest.verify()  # every file re-hashed: the quantized graphs and the table were re-listed
    record = manifest.quantization
    assert manifest.dtype == "int8" and record is not None
    assert record["int8_graphs"] == ["layer_000", "layer_001", "layer_002"]
    assert record["fp32_graphs"] == ["embeddings", "head"]
    assert (record["top_k"], record["min_agreement"], record["gate_data"], record["gate_queries"]) == (
        10, TINY_MIN_AGREEMENT, "gate.jsonl", GATE_QUERIES)
    assert TINY_MIN_AGREEMENT <= record["agreement"] < 1.0  # a real measurement of a random model, not a copy
    assert record["agreement"] == pytest.approx(gate_agreement(tiny_cross_package, bert_int8, gate_data))
    assert "MatMulInteger" in op_types(bert_int8, "layer_001") and "MatMulInteger" not in op_types(bert_int8, "head")
    table = manifest.ranking.embedding_table
    assert table.dtype == "int8" and table.scales is not None
    fp32_table = Manifest.load(tiny_cross_package).ranking.embedding_table
    assert table.entry.bytes < fp32_table.entry.bytes / 3.5  # int8 rows (+ a .npy header)
    assert np.max(np.abs(scores(bert_int8) - scores(tiny_cross_package))) <= BERT_SCORE_TOLERANCE
    assert not (bert_int8 / ".int8").exists()  # no candidate files left behind
    on_disk = {p.relative_to(bert_int8).as_posix() for p in bert_int8.rglob("*") if p.is_file()}
    assert on_disk == {e.file for e in manifest.files()} | {"manifest.json", "manifest.sha256"}


def test_tiny_qwen3_int8_scores_within_tolerance(tiny_qwen3: Path, gate_data: Path, tmp_path: Path) -> None:
    fp32 = export(tiny_qwen3, tmp_path / "fp32", "--max-length", str(QWEN3_MAX_LENGTH))
    int8 = export(tiny_qwen3, tmp_path / "int8", "--max-length", str(QWEN3_MAX_LENGTH), "--dtype", "int8",
                  "--gate-data", str(gate_data), "--min-agreement", str(TINY_MIN_AGREEMENT))
    record = int8.quantization
    assert int8.dtype == "int8" and record["int8_graphs"] == ["layer_000", "layer_001", "layer_002"]
    assert TINY_MIN_AGREEMENT <= record["agreement"] < 1.0
    assert record["agreement"] == pytest.approx(gate_agreement(fp32.root, int8.root, gate_data))
    assert "MatMulInteger" in op_types(int8.root, "layer_000")
    assert np.max(np.abs(scores(int8.root) - scores(fp32.root))) <= QWEN3_SCORE_TOLERANCE
    assert int8.total_bytes < fp32.total_bytes


def damage_layer_one(original):  # noqa: ANN001, ANN202 (wraps quant_gate.quantize_graph)
    """quantize_graph, then every weight scale of layer 1 multiplied by 100 (a broken quantisation)."""
    import onnx
    from onnx import numpy_helper

    def quantize(root: Path, spec, *args):  # noqa: ANN001, ANN202
        quantized = original(root, spec, *args)
        if spec.index != 1:
            return quantized
        model = onnx.load(str(root / quantized.path))
        for tensor in model.graph.initializer:
            if tensor.name.endswith("_scale"):
                tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 100, tensor.name))
        save_graph(model, root / quantized.path)
        return dataclasses.replace(quantized, files=graph_files(root, quantized.path))

    return quantize


def test_gate_refuses_a_damaged_layer_and_mixed_keeps_it_fp32(
        tiny_cross_encoder: Path, gate_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quant_gate, "quantize_graph", damage_layer_one(quant_gate.quantize_graph))
    options = ["--max-length", "64", "--gate-data", str(gate_data), "--min-agreement", str(TINY_MIN_AGREEMENT)]
    refused = CliRunner().invoke(app, ["export", str(tiny_cross_encoder), "--out", str(tmp_path / "int8"),
                                       "--dtype", "int8", *options])
    # transformers' own "Loading weights" progress bar precedes edgekit's line on stderr
    refused.stderr_bytes = "\n".join(line for line in refused.stderr.splitlines()
                                      if not line.startswith("Loading weights")).encode()
    line = assert_refused(refused, "below --min-agreement 0.7", "costliest layers: layer_001", "--dtype mixed")
    assert not (tmp_path / "int8").exists(), line  # nothing written, not even a staging folder
    assert list(tmp_path.iterdir()) == []

    mixed = export(tiny_cross_encoder, tmp_path / "mixed", "--dtype", "mixed", *options)
    record = mixed.quantization
    assert mixed.dtype == "mixed"
    assert record["fp32_graphs"] == ["embeddings", "layer_001", "head"]
    assert record["int8_graphs"] == ["layer_000", "layer_002"]
    sensitivity = record["sensitivity"]
    assert min(sensitivity, key=lambda name: sensitivity[name]["agreement"]) == "layer_001"
    assert sensitivity["layer_001"]["agreement"] < TINY_MIN_AGREEMENT <= record["agreement"]
    assert "MatMulInteger" not in op_types(mixed.root, "layer_001")
    assert "MatMulInteger" in op_types(mixed.root, "layer_002")
    mixed.verify()
    shown = " ".join(CliRunner().invoke(app, ["inspect", str(mixed.root)]).output.split())
    assert "int8: 2 layer graphs int8 (layer_001 kept fp32)" in shown, shown


def test_bad_values_exit_2_in_one_line_before_loading_a_model(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    out = ["--out", str(tmp_path / "pkg")]

    def run(*options: str):  # noqa: ANN202
        return CliRunner().invoke(app, ["export", str(tiny_cross_encoder), *out, *options])

    assert_refused(run("--dtype", "int3"), "int3", "fp32, fp16, int8, mixed")
    assert_refused(run("--dtype", "int8", "--min-agreement", "1.5"), "--min-agreement must be in (0, 1]", "1.5")
    assert_refused(run("--dtype", "mixed", "--min-agreement", "0"), "--min-agreement must be in (0, 1]")
    assert_refused(run("--dtype", "int8", "--gate-top-k", "0"), "--gate-top-k must be a positive integer")
    assert_refused(run("--dtype", "int8", "--gate-data", str(tmp_path / "missing.jsonl")), "is not a file")
    assert_refused(run("--min-agreement", "0.9"), "apply to --dtype int8 or mixed, not fp32")
    assert not (tmp_path / "pkg").exists()


def test_manifest_refuses_inconsistent_int8_records(bert_int8: Path, tmp_path: Path) -> None:
    cases = {
        "no record": lambda data: data.pop("quantization"),
        "record on fp32": lambda data: data.update(dtype="fp32"),
        "int8 table without scales": lambda data: data["ranking"]["embedding_table"].pop("scales"),
        "agreement out of range": lambda data: data["quantization"].update(agreement=1.5),
    }
    for name, mutate in cases.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(bert_int8, copy)
        rewrite_manifest(copy, mutate)
        with pytest.raises(NotAPackageError, match="is malformed"):
            Manifest.load(copy)


def test_int8_package_ranks_with_torch_blocked(bert_int8: Path) -> None:
    code = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "transformers", "diffusers", "optimum"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
        import edgekit
        ranking = edgekit.load({str(bert_int8)!r}).rank({QUERY!r}, {CANDIDATES!r}, top_k=3)
        print(json.dumps([[r.index, r.score] for r in ranking]))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    blocked = json.loads(result.stdout.strip().splitlines()[-1])
    expected = edgekit.load(str(bert_int8)).rank(QUERY, CANDIDATES, top_k=3)
    assert blocked == [[r.index, r.score] for r in expected]


def test_fused_graphs_quantize_too(tiny_cross_encoder: Path, gate_data: Path, tmp_path: Path) -> None:
    """--fuse then int8: onnxruntime's fused Attention keeps its QKV weights fp32 (only MatMuls
    are quantized), the other MatMuls become MatMulInteger; shape inference cannot type the
    contrib ops' outputs, which once made quantize_dynamic fail with a traceback."""
    manifest = export(tiny_cross_encoder, tmp_path / "fused", "--fuse", "--dtype", "int8", "--max-length", "64",
                      "--gate-data", str(gate_data), "--min-agreement", str(TINY_MIN_AGREEMENT))
    assert {"Attention", "MatMulInteger"} <= op_types(manifest.root, "layer_000")
    assert manifest.quantization["agreement"] >= TINY_MIN_AGREEMENT


def test_int8_layers_share_one_graph(tmp_path: Path, tiny_cross_encoder: Path, gate_data: Path,
                                     bert_int8: Path) -> None:
    """`--dtype int8 --shared-layers`: the layers are quantized and gated per layer, then share one
    graph with their int8 weights and scales fed as inputs; the package ranks exactly as the
    per-layer int8 package (same gate data, same quantizer: the same bytes)."""
    shared = export(tiny_cross_encoder, tmp_path / "shared8", "--dtype", "int8", "--shared-layers", "--max-length",
                    "64", "--gate-data", str(gate_data), "--min-agreement", str(TINY_MIN_AGREEMENT))
    assert shared.requires == ("shared-layers",) and shared.dtype == "int8"
    layers = shared.graphs_by_role("layer")
    assert {graph.path for graph in layers} == {"graphs/layer_shared.onnx"}
    assert any(tensor.dtype == "int8" for tensor in layers[0].weights.tensors)  # the quantized MatMul weights
    assert shared.quantization["agreement"] == Manifest.load(bert_int8).quantization["agreement"]
    np.testing.assert_allclose(scores(tmp_path / "shared8"), scores(bert_int8), rtol=0, atol=1e-6)
