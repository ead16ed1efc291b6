"""Child process of `edgekit bench select`: one variant over a query set, one JSON line out.

    python -m edgekit.bench.select_variant --variant edgekit-exact --package PKG --data Q.jsonl \
        --top-k 10 --threads 2 [--graph MONO.onnx] [--batch 16] [--chunk 16]

Variants (every batched one sorts the candidates longest-first before cutting them into batches, as
sentence-transformers' `encode` does, and restores the input order for scoring; only `-inorder` does
not; the ONNX ones sort by tokenized length, `torch` by text length, sentence-transformers' own key):
  torch                     transformers eager, the whole model, candidates longest-first in
                            batches of 32 (sentence-transformers' default batch size) — the reference
  onnx-monolithic           one whole-model ONNX graph, all candidates in one run
  onnx-monolithic-batched   the same graph, candidates longest-first in runs of --batch (the
                            latency baseline)
  onnx-monolithic-batched-inorder  the same graph, runs of --batch cut in the given order (each
                            padded to its longest member): the baseline of the figures measured
                            before issue 14, kept so they stay comparable
  onnx-monolithic-optimized the one graph after onnxruntime's transformer optimizer (--graph is
                            the optimized file; exporters/optimized_graph.py), longest-first in
                            runs of --batch
  onnx-monolithic-int8      the one graph with onnxruntime's dynamic int8 MatMul weights (what
                            --dtype int8 does to each layer; --graph is that file), longest-first
                            in runs of --batch: the baseline for the int8 packages
  edgekit-exact             the streamed package, no pruning
  edgekit-pruned            the streamed package, --prune auto, calibrated for cluster pruning
  edgekit-stable            the streamed package, --prune auto, calibrated for rank stability
  edgekit-resident          the package with a window holding every graph: sessions stay open
                            across queries (no streaming), no pruning
  edgekit-shared            as edgekit-exact, on the package exported again with --shared-layers
                            (one session for every layer, each layer's weights fed from its mapped
                            file; edgekit/bench/derived.py builds it)
  edgekit-int8              as edgekit-exact, on the package exported again with --dtype int8
  edgekit-shared-int8       as edgekit-exact, on the package exported with both
  edgekit-mixed             as edgekit-exact, on the package exported with --dtype mixed (the
                            layers that cost the gate most stay fp32)

The first query runs once untimed (warm-up); then every query is timed once, tokenisation
included. Peak RSS is this process's own high-water mark (VmHWM), read at exit.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import edgekit
from edgekit.dataset import read_examples
from edgekit.manifest import Manifest
from edgekit.measure import peak_rss_mb
from edgekit.runtimes.ranking import top_k_order

VARIANTS = ("torch", "onnx-monolithic", "onnx-monolithic-batched", "onnx-monolithic-batched-inorder",
            "onnx-monolithic-optimized", "onnx-monolithic-int8", "edgekit-exact", "edgekit-pruned", "edgekit-stable", "edgekit-resident",
            "edgekit-shared", "edgekit-int8", "edgekit-shared-int8", "edgekit-mixed")
BATCHED = ("onnx-monolithic-batched", "onnx-monolithic-batched-inorder", "onnx-monolithic-optimized",
           "onnx-monolithic-int8")
# calibrated variants: the policy each one's package copy is calibrated for (then run with --prune auto)
CALIBRATED = {"edgekit-pruned": "cluster", "edgekit-stable": "rank-stability"}
TORCH_BATCH = 32

# (query, candidates) -> (top-k indices best first, candidate-layers computed or None)
Ranker = Callable[[str, list[str]], tuple[list[int], int | None]]


def _torch_ranker(manifest: Manifest, top_k: int, threads: int) -> Ranker:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from edgekit.exporters.encoder import BiEncoderHead, logits_to_score

    torch.set_num_threads(threads)
    source = manifest.source["path"]
    tokenizer = AutoTokenizer.from_pretrained(source)
    cross = manifest.ranking.scoring.kind == "logit"
    model = (AutoModelForSequenceClassification if cross else AutoModel).from_pretrained(source).eval()
    head = BiEncoderHead(manifest.ranking.scoring.pooling or "mean", manifest.ranking.scoring.normalize)

    def encode(first: list[str], second: list[str] | None) -> np.ndarray:
        batch = tokenizer(first, second, padding=True, truncation=True, max_length=manifest.ranking.max_length,
                          return_tensors="pt")
        with torch.inference_mode():
            if cross:
                return logits_to_score(model(**batch).logits).numpy()
            return head(model(**batch).last_hidden_state, batch["attention_mask"]).numpy()

    def rank(query: str, candidates: list[str]) -> tuple[list[int], int | None]:
        # longest first by text length, as sentence-transformers' encode/predict sort (no second
        # tokenisation inside the timed call); ties in input order
        order = np.argsort([-len(text) for text in candidates], kind="stable")
        parts = []
        for start in range(0, len(candidates), TORCH_BATCH):
            texts = [candidates[i] for i in order[start : start + TORCH_BATCH]]
            parts.append(encode([query] * len(texts), texts) if cross else encode(texts, None))
        scores = np.empty_like(np.concatenate(parts))
        scores[order] = np.concatenate(parts)  # back to the input order
        if not cross:
            query_embedding = encode([query], None)[0]
            scores = scores @ query_embedding / np.maximum(
                np.linalg.norm(scores, axis=1) * np.linalg.norm(query_embedding), 1e-12)
        return top_k_order(scores, top_k).tolist(), None

    return rank


def _monolithic_ranker(manifest: Manifest, graph: Path, threads: int, batch: int | None, top_k: int,
                       order: str) -> Ranker:
    from edgekit.bench.spine_variant import MonolithicScorer

    # the baseline runs as apps run it: onnxruntime's default session options
    scorer = MonolithicScorer(manifest, graph, threads, "default", batch, order)
    scorer.load()

    def rank(query: str, candidates: list[str]) -> tuple[list[int], int | None]:
        return top_k_order(scorer(query, candidates), top_k).tolist(), None

    return rank


def _edgekit_ranker(package: Path, threads: int, chunk: int, top_k: int, prune: str, window: int) -> Ranker:
    selector = edgekit.load(str(package), window=window, chunk=chunk, threads=threads)

    def rank(query: str, candidates: list[str]) -> tuple[list[int], int | None]:
        ranking = selector.rank(query, candidates, top_k=top_k, prune=prune)
        return [result.index for result in ranking], ranking.stats.candidate_layers

    return rank


def make_ranker(args: argparse.Namespace, manifest: Manifest) -> Ranker:
    if args.variant == "torch":
        return _torch_ranker(manifest, args.top_k, args.threads)
    if args.variant.startswith("onnx-monolithic"):
        batch = args.batch if args.variant in BATCHED else None
        order = "input" if args.variant.endswith("-inorder") else "longest-first"
        return _monolithic_ranker(manifest, Path(args.graph), args.threads, batch, args.top_k, order)
    prune = "auto" if args.variant in CALIBRATED else "exact"
    window = len(manifest.graphs) if args.variant == "edgekit-resident" else 2
    return _edgekit_ranker(Path(args.package), args.threads, args.chunk, args.top_k, prune, window)


def run(args: argparse.Namespace) -> dict[str, Any]:
    manifest = Manifest.load(args.package)
    examples = read_examples(args.data)
    started = time.perf_counter()
    ranker = make_ranker(args, manifest)
    ranker(examples[0].query, examples[0].candidates)  # warm-up, untimed
    setup_ms = (time.perf_counter() - started) * 1000.0
    latencies, selections, costs = [], [], []
    for example in examples:
        start = time.perf_counter()
        selected, cost = ranker(example.query, example.candidates)
        latencies.append((time.perf_counter() - start) * 1000.0)
        selections.append(selected)
        costs.append(cost)
    return {
        "variant": args.variant,
        "latency_ms": latencies,
        "top_k": selections,
        "candidate_layers": None if costs[0] is None else int(sum(costs)),
        "setup_ms": setup_ms,
        "peak_rss_mb": peak_rss_mb(),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one `edgekit bench select` variant")
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--graph", default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv))))


if __name__ == "__main__":
    main()
