"""Measure what export-time fusion (exporters/fusion.py) buys: streamed edgekit latency of a
fused package (`edgekit export --fuse`) against the same model exported plain, in one process, rounds
interleaved (plain, fused, plain, fused, ...) so drift on a shared machine spreads over both.

    python scripts/measure_fusion.py PLAIN_PKG FUSED_PKG [--rounds 7] [--candidates 50] [--threads 2]
        [--prompt-tokens N] [--json out.json]

Each round is one `rank` call per package (window 2, chunk 16, verify on: hashes are remembered
after the first load, so only the first, untimed warm-up call hashes); the call includes session
creation, which streaming does per pass. Candidates are built from the demo corpus (three
sentences each). Prints medians (min-max) per package, the ratio of medians, the top-10 overlap
and the largest score difference between the two packages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import edgekit
from edgekit.demo import demo_corpus

QUERY = "how do I sort a list in python"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plain", type=Path)
    parser.add_argument("fused", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    corpus = demo_corpus()
    candidates = [" ".join(corpus[(c + k) % len(corpus)] for k in range(3)) for c in range(args.candidates)]
    selectors = {name: edgekit.load(str(path), window=2, chunk=16, threads=args.threads)
                 for name, path in (("plain", args.plain), ("fused", args.fused))}
    rankings = {name: selector.rank(QUERY, candidates, top_k=10) for name, selector in selectors.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in selectors}
    for _ in range(args.rounds):
        for name, selector in selectors.items():
            started = time.perf_counter()
            rankings[name] = selector.rank(QUERY, candidates, top_k=10)
            times[name].append(time.perf_counter() - started)
    scores = {name: {r.index: r.score for r in ranking} for name, ranking in rankings.items()}
    overlap = len(set(scores["plain"]) & set(scores["fused"])) / min(10, len(candidates))
    shared = set(scores["plain"]) & set(scores["fused"])
    diff = max(abs(scores["plain"][i] - scores["fused"][i]) for i in shared)
    result = {"rounds": args.rounds, "candidates": args.candidates, "threads": args.threads,
              "seconds": times, "top10_overlap": overlap, "max_score_diff": diff,
              "ratio_of_medians": statistics.median(times["fused"]) / statistics.median(times["plain"])}
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms "
              f"(min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f}) over {len(values)} rounds")
    print(f"fused/plain median ratio {result['ratio_of_medians']:.3f}; top-10 overlap {overlap:.2f}, "
          f"max score diff {diff:.2g}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
