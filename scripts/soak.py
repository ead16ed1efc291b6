"""Soak: many queries through ONE Selector; does the process's resident memory keep growing?

Not a unit test (minutes, and RSS depends on the machine). Ranks `--queries` queries (default
1,000) of the shipped dev set (edgekit/data/devset_stdlib.jsonl, cycled) with one Selector and
reports the resident set (VmRSS, /proc/self/status) after query 1, 100 and the last, and the
growth 1 -> last and 100 -> last in percent. Query 1 includes the one-time warm-up (sessions,
arena, tokenizer caches); 100 -> last is the steady-state figure (goal: < 5 %).

`--threads N` shares the Selector between N threads that take the next query as they finish
one (the checkpoints then count finished queries); `queries_per_second` compares N with 1.

    python scripts/soak.py PKG [--queries 1000] [--candidates 50] [--window 2] [--chunk 16]
        [--prune exact] [--threads 1] [--json out.json]

Exit status 1 when the 100 -> last growth exceeds `--limit` percent (default 5), so a CI job or
a bisect can run it.
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import edgekit
from edgekit.dataset import read_examples
from edgekit.measure import current_rss_mb, peak_rss_mb

DEVSET = Path(edgekit.__file__).parent / "data" / "devset_stdlib.jsonl"
CHECKPOINTS = (1, 10, 100, 250, 500, 750)  # RSS is also read after the last query


def growth(before: float, after: float) -> float:
    return round(100.0 * (after - before) / before, 2)


def soak(package: str, queries: int, candidates: int | None, window: int | None, chunk: int | None,
         prune: str, top_k: int, threads: int = 1) -> dict[str, Any]:
    """Rank `queries` dev-set queries (cycled) with one Selector shared by `threads` threads;
    RSS (MiB) after the checkpoint counts of finished queries."""
    examples = read_examples(DEVSET)
    selector = edgekit.load(package, window=window, chunk=chunk)
    rss: dict[int, float] = {}
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    taken = finished = 0

    def work() -> None:
        nonlocal taken, finished
        while True:
            with lock:
                taken += 1
                number = taken
            if number > queries or errors:
                return
            example = examples[(number - 1) % len(examples)]
            texts = example.candidates[:candidates] if candidates else example.candidates
            try:
                ranking = selector.rank(example.query, texts, top_k=top_k, prune=prune)
            except BaseException as error:  # re-raised in the main thread
                errors.append(error)
                return
            with lock:
                finished += 1
                latencies.append(ranking.stats.latency_ms)
                if finished in CHECKPOINTS or finished == queries:
                    rss[finished] = round(current_rss_mb(), 1)

    started = time.perf_counter()
    workers = [threading.Thread(target=work, name=f"soak-{n}") for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - started
    last = queries
    result = {
        "package": package,
        "queries": queries,
        "candidates_per_query": candidates or "all (50)",
        "window": selector.window,
        "chunk": selector.chunk,
        "prune": prune,
        "threads": threads,
        "rss_mb": rss,
        "growth_1_to_last_pct": growth(rss[1], rss[last]),
        "growth_100_to_last_pct": growth(rss[100], rss[last]) if 100 in rss and last > 100 else None,
        "peak_rss_mb": peak_rss_mb(),
        "seconds": round(seconds, 1),
        "queries_per_second": round(queries / seconds, 3),
        "median_latency_ms": round(sorted(latencies)[len(latencies) // 2], 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}, "
                   f"python {platform.python_version()}",
    }
    try:
        result["onnxruntime"] = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:  # e.g. onnxruntime-gpu
        result["onnxruntime"] = metadata.version("onnxruntime-gpu")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=None, help="candidates per query (default: all 50)")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None)
    parser.add_argument("--prune", default="exact")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="threads sharing the one Selector")
    parser.add_argument("--limit", type=float, default=5.0, help="allowed 100 -> last growth, percent")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.queries < 1 or args.threads < 1:
        parser.error("--queries and --threads must be >= 1")
    result = soak(args.package, args.queries, args.candidates, args.window, args.chunk, args.prune, args.top_k,
                  args.threads)
    text = json.dumps(result, indent=2, allow_nan=False)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")
    steady = result["growth_100_to_last_pct"]
    return 1 if steady is not None and steady > args.limit else 0


if __name__ == "__main__":
    raise SystemExit(main())
