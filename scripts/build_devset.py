"""Build the offline selection dev set from the Python standard library's docstrings.

Each example: query = a function's one-sentence docstring summary; candidates = 50 passages
("qualified.name(signature): rest of the docstring") picked by a BM25 first stage (rank-bm25)
so the negatives are hard; relevant = the function's own passage (added if BM25 missed it).
Only `models.docstrings.DEVSET_MODULES` are used, so training recipes can use the other stdlib
modules. Deterministic for a seed on one Python version.

    python scripts/build_devset.py --out edgekit/data/devset_stdlib.jsonl [--queries 120]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from edgekit.models.docstrings import DEVSET_MODULES, collect_passages, words

CANDIDATES = 50


def build(queries: int, seed: int) -> list[dict]:
    from rank_bm25 import BM25Okapi

    passages = collect_passages(DEVSET_MODULES)
    bm25 = BM25Okapi([words(p.passage) for p in passages])
    rng = random.Random(seed)
    chosen = rng.sample(range(len(passages)), k=min(queries, len(passages)))
    examples = []
    for index in chosen:
        query = passages[index].summary
        scores = bm25.get_scores(words(query))
        ranked = [int(i) for i in sorted(range(len(passages)), key=lambda i: (-scores[i], i))[:CANDIDATES]]
        if index not in ranked:
            ranked[-1] = index
        rng.shuffle(ranked)
        examples.append({
            "query": query,
            "candidates": [passages[i].passage for i in ranked],
            "relevant": [ranked.index(index)],
            "source": passages[index].name,
        })
    return examples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=120)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    examples = build(args.queries, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples), encoding="utf-8")
    print(f"wrote {len(examples)} examples x {CANDIDATES} candidates to {args.out} "
          f"({args.out.stat().st_size / 1e6:.1f} MB, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
