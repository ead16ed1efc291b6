"""Story: export a tiny BERT cross-encoder, a tiny bi-encoder and a tiny Qwen3 reranker with
`--fuse` and without -> the fused packages record which onnxruntime fusions fired (manifest
`exporter.fusions`, the export progress), hold contrib ops in the layer graphs, verify against
their listed hashes, and rank like the plain packages (same top-K, scores within the parity
tolerance); the plain export is the old graphs (no contrib op, no record); a fused BERT layer
keeps its IO contract for any 0/1 mask; a family that does not fuse refuses `--fuse` in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.errors import InvalidArgumentError
from edgekit.exporters.families import export_source, family_named
from edgekit.runtimes.backends import backend_for
from tests.conftest import CANDIDATES, QUERY

runner = CliRunner()
BERT_LAYER = {"Attention": 1, "BiasGelu": 1, "SkipLayerNormalization": 2}
QWEN3_LAYER = {"SimplifiedLayerNormalization": 3, "SkipSimplifiedLayerNormalization": 1}


def _contrib_ops(graph: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(graph), load_external_data=False).graph.node
            if node.domain == "com.microsoft"}


def _export_pair(source: Path, root: Path) -> tuple[Path, Path, list[str]]:
    """(plain package, fused package, the fused export's progress messages)."""
    messages: list[str] = []
    plain, fused = root / "plain", root / "fused"
    export_source(source, plain, max_length=64)
    export_source(source, fused, max_length=64, fuse=True,
                  progress=lambda message, done, total: messages.append(message))
    return plain, fused, messages


def _same_ranking(plain: Path, fused: Path) -> None:
    """The fused package ranks like the plain one: same order, scores within the fused
    package's parity tolerance (relative to max(1, |score|))."""
    tolerance = json.loads((fused / "manifest.json").read_text())["parity"]["tolerance"]
    expected = edgekit.load(str(plain), window=2, chunk=2).rank(QUERY, CANDIDATES, top_k=4)
    actual = edgekit.load(str(fused), window=2, chunk=2).rank(QUERY, CANDIDATES, top_k=4)
    assert [r.index for r in actual] == [r.index for r in expected]
    scale = max(1.0, max(abs(r.score) for r in expected))
    np.testing.assert_allclose([r.score for r in actual], [r.score for r in expected], atol=tolerance * scale)


@pytest.mark.parametrize("family", ["cross-encoder", "bi-encoder"])
def test_fused_bert_records_attention_fusions_and_ranks_like_plain(
        family: str, tiny_source: Callable[[str], Path], tmp_path: Path) -> None:
    plain, fused, messages = _export_pair(tiny_source(family), tmp_path)
    manifest = json.loads((fused / "manifest.json").read_text())
    fusions = manifest["exporter"]["fusions"]
    assert fusions["model_type"] == "bert" and fusions["optimizer"] == "onnxruntime.transformers"
    layers = [g["name"] for g in manifest["graphs"] if g["role"] == "layer"]
    assert fusions["graphs"] == {name: BERT_LAYER for name in layers}  # embeddings/head: nothing fired
    assert f"fused {layers[0]}: Attention 1, BiasGelu 1, SkipLayerNormalization 2" in messages
    assert _contrib_ops(fused / "graphs/layer_000.onnx") == set(BERT_LAYER)
    assert _contrib_ops(fused / "graphs/embeddings.onnx") == set()
    assert (fused / "graphs/layer_000.onnx.data").stat().st_size > 0  # weights stay external
    assert runner.invoke(app, ["verify", str(fused)]).exit_code == 0  # hashes are of the final files
    _same_ranking(plain, fused)


def test_fused_qwen3_records_rmsnorm_fusions_and_ranks_like_plain(tiny_qwen3: Path, tmp_path: Path) -> None:
    plain, fused, messages = _export_pair(tiny_qwen3, tmp_path)
    fusions = json.loads((fused / "manifest.json").read_text())["exporter"]["fusions"]
    assert fusions["model_type"] == "qwen3"
    assert fusions["graphs"] == {"layer_000": QWEN3_LAYER, "layer_001": QWEN3_LAYER, "layer_002": QWEN3_LAYER,
                                 "head": {"SimplifiedLayerNormalization": 1}}
    assert "fused head: SimplifiedLayerNormalization 1" in messages
    assert _contrib_ops(fused / "graphs/layer_001.onnx") == {"SkipSimplifiedLayerNormalization"}
    assert runner.invoke(app, ["verify", str(fused)]).exit_code == 0
    _same_ranking(plain, fused)


def test_plain_export_is_the_old_graphs(tiny_cross_package: Path) -> None:
    manifest = json.loads((tiny_cross_package / "manifest.json").read_text())
    assert "fusions" not in manifest["exporter"]
    layer = onnx.load(str(tiny_cross_package / "graphs/layer_000.onnx"), load_external_data=False)
    ops = [node.op_type for node in layer.graph.node]
    assert not _contrib_ops(tiny_cross_package / "graphs/layer_000.onnx")
    assert "Expand" not in ops and "Where" not in ops  # the [B,S] mask stays (1 - mask) * min, unexpanded


def test_cli_fuse_flag_writes_a_fused_package(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tiny_cross_encoder), "--out", str(tmp_path / "p"), "--fuse"])
    assert result.exit_code == 0, result.output
    assert "fused 3 graphs (Attention, BiasGelu, SkipLayerNormalization)" in " ".join(result.stdout.split())
    assert json.loads((tmp_path / "p/manifest.json").read_text())["exporter"]["fusions"]["graphs"]["layer_000"] \
        == BERT_LAYER


def test_fused_layer_keeps_its_mask_contract_for_any_mask(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    """The attention fusion is told to keep the raw [B,S] mask (not lengths), so a left-padded
    mask or one with a hole gives what the plain layer gives at every token position."""
    plain, fused = tmp_path / "plain", tmp_path / "fused"
    export_source(tiny_cross_encoder, plain, max_length=64)
    export_source(tiny_cross_encoder, fused, max_length=64, fuse=True)
    backend = backend_for("onnx", "cpu")
    rng = np.random.default_rng(0)
    hidden_size = json.loads((plain / "manifest.json").read_text())["ranking"]["hidden_size"]
    hidden = rng.standard_normal((3, 9, hidden_size)).astype(np.float32)
    mask = np.array([[1] * 9, [0, 0, 0, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 1, 0, 0]], dtype=np.int64)
    outputs = []
    for package in (plain, fused):
        session = backend.load(package / "graphs/layer_000.onnx")
        outputs.append(session.run({"hidden_states": hidden, "attention_mask": mask})[0])
        session.release()
    tokens = mask.astype(bool)
    np.testing.assert_allclose(outputs[1][tokens], outputs[0][tokens], atol=1e-5)


def test_a_family_that_does_not_fuse_refuses_fuse_in_one_line() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        family_named("svd").check_options({"fuse": True})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--fuse does not apply to svd")
