"""Story: a tiny random Qwen3 reranker (3 layers, hidden 64, an in-process BPE tokenizer with
"yes"/"no") -> `edgekit export` -> the streamed runtime scores every document exactly as
transformers does with the Qwen3-Reranker prompt and left padding, at any chunking, with the
package's instruction or another one; the seq-cls conversion gives the same scores; pruning
equals its offline replay; fp16 stays within its tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import edgekit
from edgekit.cli import app
from edgekit.errors import InvalidArgumentError
from edgekit.manifest import Manifest
from edgekit.models.decoders import PREFIX, SEQ_CLS, SUFFIX, TEMPLATE, tiny_qwen3_config
from edgekit.runtimes.calibration import replay
from edgekit.runtimes.pruning import ClusterPruning
from edgekit.runtimes.ranking import Ranking
from tests.conftest import CANDIDATES, QUERY

MAX_LENGTH = 160  # prefix + suffix 47 tokens, pairs 61-74: only the long candidate is truncated
INSTRUCTION = "Given a question about files, find the passage that answers it"


@pytest.fixture(scope="module")
def qwen3_dir(tiny_qwen3: Path) -> Path:
    return tiny_qwen3  # conftest: the qwen3-reranker family's tiny source, built once per session


@pytest.fixture(scope="module")
def qwen3_package(tmp_path_factory: pytest.TempPathFactory, qwen3_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "qwen3"
    result = CliRunner().invoke(app, ["export", str(qwen3_dir), "--out", str(out), "--max-length", str(MAX_LENGTH)])
    assert result.exit_code == 0, result.output
    return out


def transformers_scores(checkpoint: Path, query: str, documents: list[str], instruction: str) -> np.ndarray:
    """The model card's recipe, written out here: prompt pieces, truncation of the middle, left
    padding by the tokenizer, sigmoid(yes - no) at the last position of the causal LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(checkpoint, attn_implementation="eager").eval()
    prefix = tokenizer.encode(PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(SUFFIX, add_special_tokens=False)
    texts = [TEMPLATE.format(instruction=instruction, query=query, document=d) for d in documents]
    middle = tokenizer(texts, add_special_tokens=False, truncation="longest_first",
                       max_length=MAX_LENGTH - len(prefix) - len(suffix))["input_ids"]
    batch = tokenizer.pad({"input_ids": [prefix + ids + suffix for ids in middle]}, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**batch).logits[:, -1]
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    return torch.sigmoid(last[:, yes] - last[:, no]).numpy()


def scores_by_index(ranking: Ranking) -> np.ndarray:
    scores = np.zeros(len(ranking))
    for result in ranking:
        scores[result.index] = result.score
    return scores


def test_export_writes_a_decoder_package(qwen3_package: Path) -> None:
    manifest = Manifest.load(qwen3_package)
    assert manifest.family == "qwen3" and manifest.task == "rerank" and manifest.ranking.padding_side == "left"
    assert manifest.ranking.scoring.kind == "probability" and set(manifest.ranking.scoring.label_tokens or {}) == {"yes", "no"}
    assert manifest.ranking.rotary is not None and manifest.ranking.rotary.dim == 16 and manifest.ranking.rotary.theta == 1e6
    assert manifest.ranking.prompt is not None and "<Query>" in manifest.ranking.prompt.template
    layer_inputs = [spec.name for spec in manifest.graphs_by_role("layer")[0].inputs]
    assert layer_inputs == ["hidden_states", "attention_bias", "cos", "sin"]
    assert manifest.parity["chained_max_abs_diff"] <= 1e-4 and manifest.ranking.embedding_table is not None
    assert all(len(graph.files) == 2 for graph in manifest.graphs_by_role("layer"))  # .onnx + its mapped data
    inspected = CliRunner().invoke(app, ["inspect", str(qwen3_package)])
    assert inspected.exit_code == 0 and "left padding" in inspected.stdout and "layer_002" in inspected.stdout


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_runtime_scores_equal_transformers_at_any_chunking(qwen3_package: Path, qwen3_dir: Path,
                                                           chunk: int) -> None:
    ranking = edgekit.load(str(qwen3_package), chunk=chunk).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = transformers_scores(qwen3_dir, QUERY, CANDIDATES, Manifest.load(qwen3_package).ranking.prompt.instruction)
    np.testing.assert_allclose(scores_by_index(ranking), expected, atol=1e-4)
    assert ranking.stats.truncated == 1  # the long candidate
    assert [r.index for r in ranking] == sorted(range(len(CANDIDATES)), key=lambda i: (-expected[i], i))


def test_instruction_at_run_time_replaces_the_packaged_one(qwen3_package: Path, qwen3_dir: Path) -> None:
    selector = edgekit.load(str(qwen3_package))
    ranking = selector.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES), instruction=INSTRUCTION)
    expected = transformers_scores(qwen3_dir, QUERY, CANDIDATES, INSTRUCTION)
    np.testing.assert_allclose(scores_by_index(ranking), expected, atol=1e-4)
    default = scores_by_index(selector.rank(QUERY, CANDIDATES, top_k=len(CANDIDATES)))
    assert np.max(np.abs(default - scores_by_index(ranking))) > 1e-6  # the instruction matters


def test_gathered_embedding_rows_equal_a_full_lookup(qwen3_package: Path, qwen3_dir: Path) -> None:
    from safetensors.torch import load_file

    from edgekit.runtimes.chunks import ChunkRunner
    from edgekit.runtimes.selector import open_embedding_table
    from edgekit.runtimes.text import TextEncoder

    manifest = Manifest.load(qwen3_package)
    encoded = TextEncoder(manifest).encode_pairs(QUERY, CANDIDATES[:3])
    table = open_embedding_table(manifest)
    assert isinstance(table, np.memmap)  # memory-mapped, never read whole
    runner = ChunkRunner(encoded, 3, manifest.ranking.tokenizer.pad_token_id, False, table, "left")
    feeds = runner._token_feeds(np.arange(3), max(len(e.ids) for e in encoded))
    full = load_file(qwen3_dir / "model.safetensors")["model.embed_tokens.weight"]
    np.testing.assert_array_equal(feeds["inputs_embeds"], full[torch.from_numpy(feeds["input_ids"])].numpy())


def test_seq_cls_conversion_scores_like_the_causal_lm(tmp_path: Path, qwen3_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from edgekit.exporters.families import export_source
    from edgekit.models.decoder_builds import build_qwen3_reranker

    seq_cls = build_qwen3_reranker(tmp_path / "seq-cls", tiny_qwen3_config(512), architecture=SEQ_CLS)
    assert json.loads((seq_cls / "config.json").read_text())["architectures"] == [SEQ_CLS]
    assert AutoModelForSequenceClassification.from_pretrained(seq_cls).config.num_labels == 1
    manifest = export_source(str(seq_cls), tmp_path / "pkg", max_length=MAX_LENGTH).manifest
    assert manifest.ranking.scoring.num_labels == 1
    ranking = edgekit.load(str(tmp_path / "pkg")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = transformers_scores(qwen3_dir, QUERY, CANDIDATES, manifest.ranking.prompt.instruction)
    np.testing.assert_allclose(scores_by_index(ranking), expected, atol=1e-4)


def test_pruning_equals_the_replay_of_the_exact_trace(qwen3_package: Path) -> None:
    pool = CANDIDATES + [f"{word} file line {i}" for i, word in enumerate(["read", "open", "sort", "json"] * 2)]
    selector = edgekit.load(str(qwen3_package), chunk=4)
    exact = selector.rank(QUERY, pool, top_k=3, trace=True)
    never = selector.rank(QUERY, pool, top_k=3, prune="threshold:1e9")  # dispersion never that high
    assert [r.index for r in never] == [r.index for r in exact]
    assert [r.score for r in never] == pytest.approx([r.score for r in exact], abs=1e-6)
    assert never.stats.candidate_layers == exact.stats.candidate_layers_exact
    pruned = selector.rank(QUERY, pool, top_k=3, prune="threshold:0")
    expected = replay(exact.trace, ClusterPruning(0.0, "probability"), top_k=3)
    assert [r.index for r in pruned] == expected.selected
    assert pruned.stats.candidate_layers == expected.candidate_layers < exact.stats.candidate_layers_exact


def test_fp16_package_stays_within_its_tolerance(tmp_path: Path, qwen3_dir: Path) -> None:
    from edgekit.exporters.families import export_source

    manifest = export_source(str(qwen3_dir), tmp_path / "half", max_length=MAX_LENGTH, dtype="fp16").manifest
    assert manifest.dtype == "fp16" and manifest.ranking.embedding_table.dtype == "float16"
    assert manifest.parity["tolerance"] == 2e-2 and manifest.parity["chained_max_abs_diff"] <= 2e-2
    ranking = edgekit.load(str(tmp_path / "half")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES))
    expected = transformers_scores(qwen3_dir, QUERY, CANDIDATES, manifest.ranking.prompt.instruction)
    np.testing.assert_allclose(scores_by_index(ranking), expected, atol=2e-2)


def test_decoder_mistakes_get_one_line_errors(qwen3_dir: Path, qwen3_package: Path, tiny_cross_package: Path,
                                              tmp_path: Path) -> None:
    runner = CliRunner()
    select = runner.invoke(app, ["export", str(qwen3_dir), "--out", str(tmp_path / "a"), "--task", "select"])
    assert select.exit_code == 2 and "decoders as rerankers" in select.output
    short = runner.invoke(app, ["export", str(qwen3_dir), "--out", str(tmp_path / "b"), "--max-length", "20"])
    assert short.exit_code == 2 and "--max-length 20 is out of range" in short.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    candidates = tmp_path / "c.txt"
    candidates.write_text("a\nb\n")
    wrong = runner.invoke(app, ["run", str(tiny_cross_package), "--query", "q", "--candidates", str(candidates),
                                "--instruction", "find it"])
    assert wrong.exit_code == 2 and "decoder rerankers" in wrong.output
    with pytest.raises(InvalidArgumentError, match="instruction is empty"):
        edgekit.load(str(qwen3_package)).rank(QUERY, CANDIDATES, instruction=" ")
