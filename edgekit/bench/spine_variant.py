"""Child process of `edgekit bench spine` (edgekit/bench/spine.py): score one workload with one
variant, print JSON.

    python -m edgekit.bench.spine_variant --variant {edgekit,onnx-monolithic,onnx-monolithic-batched,...}
        --package PKG [--graph MONO.onnx] --workload W.json --threads N [--batch 16]
        [--repeats 5] [--ort-options {edgekit,default}] [--top-k 10] [--window 2]

Variants (all score the query against every candidate, tokenisation included in the time):
  edgekit                  `edgekit.load(PKG, window=W, chunk=batch).rank(...)` (W = --window, 2 by
                           default): graphs streamed one layer at a time, loaded for every query
                           (that load is in the time); a window holding every graph keeps them open.
  onnx-monolithic          one session on the whole-model graph (`exporters/monolithic.py`),
                           created once; the query in one run, all candidates in one run.
  onnx-monolithic-batched  the same session; candidates sorted longest-first (tokenized length),
                           then in runs of `--batch` (as sentence-transformers' `encode` does);
                           scores restored to the input order.
  onnx-monolithic-batched-inorder  the same runs cut in input order (each padded to its longest
                           member): the batched baseline as first measured, kept for comparison.
The monolithic variants tokenize with `tokenizers` from the package's tokenizer.json (padding to
the longest in the run, truncation to the package's max_length), as FlashRank-style apps do.
`--ort-options edgekit` creates their session with edgekit's own session options
(runtimes/backends/onnxruntime_backend.py); `default` with onnxruntime's default SessionOptions
(intra-op threads still set to N): `backend_for("onnx", "cpu", N, tuned=False)`.

Output: ONE JSON object on the last stdout line: latency_ms (each timed repeat), _median, _p90,
cold_ms (tokenizer + session creation + first call), baseline_rss_mb (peak RSS after imports
and reading the workload, before any tokenizer or session), load_peak_rss_mb (monolithic: after
session creation), peak_rss_mb (the process's own high-water mark at the end, from
`edgekit.measure.peak_rss_mb`: VmHWM on Linux), scores (one per candidate, input order), top_k
(indices, best first). No torch/transformers import here, so process baselines are comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

import edgekit
from edgekit.manifest import Manifest
from edgekit.measure import peak_rss_mb
from edgekit.runtimes.backends import backend_for
from edgekit.runtimes.selector import top_k_order

VARIANTS = ("edgekit", "onnx-monolithic", "onnx-monolithic-batched", "onnx-monolithic-batched-inorder")
ORT_OPTIONS = ("edgekit", "default")
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
ORDERS = ("longest-first", "input")  # how the batched baselines cut candidates into runs

Scorer = Callable[[str, Sequence[str]], np.ndarray]


def load_workload(path: Path) -> tuple[str, list[str]]:
    """A workload file is JSON `{"query": str, "candidates": [str, ...]}`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    query, candidates = data["query"], data["candidates"]
    if not isinstance(query, str) or not isinstance(candidates, list) or not candidates:
        raise ValueError(f"{path}: expected {{'query': str, 'candidates': [str, ...]}}")
    return query, [str(text) for text in candidates]


class MonolithicScorer:
    """Scores with one whole-model graph; `batch=None` runs all candidates at once.

    `order="longest-first"` (the default) sorts the candidates by tokenized length, longest first,
    before cutting them into runs of `batch`, so each run pads only to lengths close to its own
    (what sentence-transformers' `encode` does; it sorts by text length); scores come back in the
    input order. `order="input"` cuts the runs in the given order, each padded to its longest
    member: the baseline as first measured (kept as `onnx-monolithic-batched-inorder`)."""

    def __init__(self, manifest: Manifest, graph: Path, threads: int, options: str, batch: int | None,
                 order: str = "longest-first") -> None:
        if order not in ORDERS:
            raise ValueError(f"order {order!r}: expected one of {ORDERS}")
        self.manifest = manifest
        self.graph = graph
        self.threads = threads
        self.options = options
        self.batch = batch
        self.order = order
        self.session: Any = None
        self.tokenizer = Tokenizer.from_file(str(manifest.root / manifest.ranking.tokenizer.files[0].file))
        pad_id = manifest.ranking.tokenizer.pad_token_id
        self.tokenizer.enable_truncation(manifest.ranking.max_length, strategy=manifest.ranking.tokenizer.truncation)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=self.tokenizer.id_to_token(pad_id) or "[PAD]")

    def load(self) -> None:
        tuned = self.options == "edgekit"  # else onnxruntime's default options (arena on)
        self.session = backend_for("onnx", "cpu", self.threads, tuned=tuned).load(self.graph)

    def _feeds(self, inputs: Sequence[str | tuple[str, str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids, type ids, mask [B, S], padded on the right to the longest of `inputs`."""
        encodings = self.tokenizer.encode_batch(list(inputs))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        types = np.asarray([e.type_ids for e in encodings], dtype=np.int64)
        if not self.manifest.ranking.tokenizer.type_ids:
            types = np.zeros_like(ids)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, types, mask

    def _run(self, inputs: Sequence[str | tuple[str, str]]) -> np.ndarray:
        return self.session.run(dict(zip(INPUT_NAMES, self._feeds(inputs))))[0]

    def _runs(self, inputs: Sequence[str | tuple[str, str]]) -> np.ndarray:
        step = self.batch or len(inputs)
        if self.order == "input" or step >= len(inputs):
            return np.concatenate([self._run(inputs[start:start + step]) for start in range(0, len(inputs), step)])
        # tokenize once, padded to the overall longest; each run is cut back to its own longest
        ids, types, mask = self._feeds(inputs)
        lengths = mask.sum(axis=1)
        order = np.argsort(-lengths, kind="stable")  # longest first, ties in input order
        outputs: list[np.ndarray] = []
        for start in range(0, len(order), step):
            rows = order[start:start + step]
            width = int(lengths[rows].max())
            feeds = (ids[rows, :width], types[rows, :width], mask[rows, :width])
            outputs.append(self.session.run(dict(zip(INPUT_NAMES, feeds)))[0])
        restored = np.empty_like(np.concatenate(outputs))
        restored[order] = np.concatenate(outputs)
        return restored

    def __call__(self, query: str, candidates: Sequence[str]) -> np.ndarray:
        if self.manifest.ranking.scoring.kind == "logit":  # cross-encoder: one score per (query, candidate)
            return self._runs([(query, text) for text in candidates]).astype(np.float64)
        query_embedding = self._run([query])[0]
        embeddings = self._runs(list(candidates))
        norms = np.linalg.norm(embeddings, axis=1) * np.linalg.norm(query_embedding)
        return ((embeddings @ query_embedding) / np.maximum(norms, 1e-12)).astype(np.float64)


def _edgekit_scorer(package: Path, threads: int, batch: int, extra: dict[str, Any], window: int = 2) -> Scorer:
    selector = edgekit.load(str(package), window=window, chunk=batch, threads=threads)

    def score(query: str, candidates: Sequence[str]) -> np.ndarray:
        ranking = selector.rank(query, list(candidates), top_k=len(candidates))
        scores = ranking.scores_by_candidate()
        stats = ranking.stats
        extra.update(window=stats.window, chunk=stats.chunk, chunks=stats.chunks, graphs_loaded=stats.graphs_loaded,
                     max_resident_graphs=stats.max_resident_graphs, padded_tokens=stats.padded_tokens,
                     tokens=stats.tokens, truncated=stats.truncated)
        return scores

    return score


def _getrusage_maxrss_mb() -> float | None:
    """Raw `getrusage` maxrss in MiB, recorded beside VmHWM for transparency."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the variant described by parsed `args`; return the result object (see module doc)."""
    query, candidates = load_workload(args.workload)
    manifest = Manifest.load(args.package)
    extra: dict[str, Any] = {}
    backend_for("onnx", "cpu", args.threads)  # imports onnxruntime, so the baseline below includes it
    baseline = peak_rss_mb()  # imports and workload only: no tokenizer, no session yet

    start = time.perf_counter()
    load_ms = load_peak = None
    if args.variant != "edgekit":
        batch = args.batch if args.variant.startswith("onnx-monolithic-batched") else None
        order = "input" if args.variant.endswith("-inorder") else "longest-first"
        monolithic = MonolithicScorer(manifest, args.graph, args.threads, args.ort_options, batch, order)
        monolithic.load()
        load_ms = (time.perf_counter() - start) * 1000.0
        load_peak = peak_rss_mb()
        scorer: Scorer = monolithic
    else:
        scorer = _edgekit_scorer(args.package, args.threads, args.batch, extra, args.window)
    scores = scorer(query, candidates)  # the first call is the warm-up, timed as "cold"
    cold_ms = (time.perf_counter() - start) * 1000.0
    for _ in range(args.warmup - 1):
        scorer(query, candidates)
    latencies = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        scores = scorer(query, candidates)
        latencies.append((time.perf_counter() - began) * 1000.0)
    return {
        "variant": args.variant,
        "ort_options": "edgekit" if args.variant == "edgekit" else args.ort_options,
        "threads": args.threads,
        "batch": args.batch if args.variant != "onnx-monolithic" else len(candidates),
        "candidates": len(candidates),
        "repeats": args.repeats,
        "latency_ms": latencies,
        "latency_ms_median": float(np.median(latencies)),
        "latency_ms_p90": float(np.percentile(latencies, 90)),
        "cold_ms": cold_ms,
        "load_ms": load_ms,
        "baseline_rss_mb": baseline,
        "load_peak_rss_mb": load_peak,  # monolithic: peak after session creation, before any run
        "peak_rss_mb": peak_rss_mb(),
        "getrusage_maxrss_mb": _getrusage_maxrss_mb(),  # Linux: includes the parent's peak inherited at spawn
        "scores": [float(value) for value in scores],
        "top_k": [int(index) for index in top_k_order(scores, min(args.top_k, len(scores)))],
        "torch_imported": "torch" in sys.modules,
        "extra": extra,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgekit.bench.spine_variant", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, required=True)
    parser.add_argument("--package", type=Path, required=True, help="edgekit package (also gives the tokenizer)")
    parser.add_argument("--graph", type=Path, help="monolithic ONNX graph (monolithic variants)")
    parser.add_argument("--workload", type=Path, required=True, help='JSON {"query": str, "candidates": [str]}')
    parser.add_argument("--threads", type=int, required=True, help="onnxruntime intra-op threads")
    parser.add_argument("--batch", type=int, default=16, help="candidates per run (batched variant, edgekit chunk)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls first (>= 1; the first is cold_ms)")
    parser.add_argument("--window", type=int, default=2, help="edgekit: graphs resident at once")
    parser.add_argument("--ort-options", choices=ORT_OPTIONS, default="edgekit")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args(argv)
    if args.variant != "edgekit" and args.graph is None:
        parser.error(f"--variant {args.variant} needs --graph MONO.onnx")
    if min(args.threads, args.batch, args.repeats, args.warmup, args.window) < 1:
        parser.error("--threads, --batch, --repeats, --warmup and --window must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv))))


if __name__ == "__main__":
    main()
