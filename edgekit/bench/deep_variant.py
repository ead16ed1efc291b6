"""Child process of `edgekit bench select-deep`: one variant, one JSON line out.

    python -m edgekit.bench.deep_variant --variant edgekit --package PKG --data Q.jsonl --top-k 5 \
        [--graph MONO/model.onnx] [--memory-budget MB] [--provider cpu|cuda] --threads 2

Variants:
  onnx-monolithic   the whole model as one ONNX graph (one session with onnxruntime's default
                    options, opened once), every candidate in one run — what an app does with
                    an exported reranker today
  onnx-monolithic-optimized  the same, on the graph after onnxruntime's transformer optimizer
                    (exporters/optimized_graph.py; --graph names the optimized file)
  edgekit           the streamed package, window 2, default chunk, no pruning
  edgekit-budget    the streamed package with --memory-budget MB: the planner picks W and C
  edgekit-shared, edgekit-int8, edgekit-shared-int8, edgekit-mixed
                    as edgekit, on the package exported again with --shared-layers, --dtype int8,
                    both, or --dtype mixed (edgekit/bench/derived.py; --package names it)

No variant batches: every candidate has the same length here (truncated to --tokens), so there is
no padding for a longest-first sort to save. Each query is run once untimed (warm-up) and then timed `--repeat` times; the scores of the
last run are printed so the parent can compare variants. Peak RSS is VmHWM at exit; with
`--provider cuda` the process's peak device memory is sampled from nvidia-smi.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

import edgekit
from edgekit.bench.device_memory import DeviceMemorySampler
from edgekit.dataset import read_examples
from edgekit.manifest import Manifest
from edgekit.measure import peak_rss_mb

VARIANTS = ("onnx-monolithic", "onnx-monolithic-optimized", "edgekit", "edgekit-budget", "edgekit-shared",
            "edgekit-int8", "edgekit-shared-int8", "edgekit-mixed")


def _monolithic(manifest: Manifest, graph: str, threads: int, provider: str) -> Any:
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.text import TextEncoder

    encoder = TextEncoder(manifest)
    # onnxruntime's default options (what an app gets); a provider it cannot start is an error
    session = backend_for("onnx", provider, threads, tuned=False).load(Path(graph))

    def score(query: str, candidates: list[str]) -> np.ndarray:
        encoded = encoder.encode_pairs(query, candidates)
        length = max(len(item.ids) for item in encoded)
        ids = np.full((len(encoded), length), manifest.ranking.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, item in enumerate(encoded):  # left padding, as the package does
            ids[row, length - len(item.ids):] = item.ids
            mask[row, length - len(item.ids):] = 1
        return session.run({"input_ids": ids, "attention_mask": mask})[0].astype(np.float64)

    return score


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--graph")
    parser.add_argument("--memory-budget", type=float)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--provider", default="cpu")
    args = parser.parse_args()
    manifest = Manifest.load(args.package)
    examples = read_examples(args.data)
    result: dict[str, Any] = {"variant": args.variant}
    if args.variant.startswith("onnx-monolithic"):
        scorer = _monolithic(manifest, args.graph, args.threads, args.provider)
    else:
        budget = args.memory_budget if args.variant == "edgekit-budget" else None
        selector = edgekit.load(args.package, threads=args.threads, memory_budget_mb=budget, provider=args.provider)

        def scorer(query: str, candidates: list[str]) -> np.ndarray:
            ranking = selector.rank(query, candidates, top_k=len(candidates))
            scores = ranking.scores_by_candidate()
            result["stats"] = ranking.stats.to_dict()
            return scores

    latencies, scores = [], []
    with DeviceMemorySampler() if args.provider == "cuda" else nullcontext() as sampler:
        for example in examples:
            scorer(example.query, example.candidates)  # warm-up
            for _ in range(args.repeat):
                started = time.perf_counter()
                last = scorer(example.query, example.candidates)
                latencies.append((time.perf_counter() - started) * 1000)
            scores.append(last.tolist())
    result.update(latency_ms=float(np.median(latencies)), latencies_ms=latencies, scores=scores,
                  peak_rss_mb=peak_rss_mb(), provider=args.provider,
                  device_peak_mb=getattr(sampler, "peak_mb", None), gpu=getattr(sampler, "gpu_name", None))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
