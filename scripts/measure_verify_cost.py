"""Measure what integrity on load costs: `edgekit.load` + the first rank with the sha256 check
cold (no remembered hashes), cached (hashes remembered per file identity from an earlier run) and
skipped (`verify=False`, the baseline), each run in a fresh process.

    python scripts/measure_verify_cost.py PKG [PKG ...] [--repeats 3] [--candidates 8] [--json out.json]

Every (mode, repeat) is its own child process, interleaved (no-verify, cold, cached, no-verify,
...), so the in-process cache never helps and drift on a shared machine spreads over every mode.
"cold" gets an empty cache directory; "cached" one that an untimed warm-up run filled. The OS page
cache is not dropped: the files are read once before timing, so "cold" measures hashing bytes that
are in memory (a first run after a reboot also waits for the disk, in every mode). The child
loads onnx's protobuf schema before timing and reports that separately (a fixed per-process cost
of the containment check, the same in every mode). Prints a markdown table: medians (min-max) and the
ratio of each median to the no-verify median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time
import edgekit
from edgekit.containment import onnx_schema
started = time.perf_counter()
onnx_schema()  # the containment check's parser (onnx's protobuf schema): once per process, timed on its own
schema_load = time.perf_counter() - started
from edgekit.demo import demo_corpus
package, verify, count = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3])
corpus = demo_corpus()
candidates = [" ".join(corpus[(c + k) % len(corpus)] for k in range(3)) for c in range(count)]
t0 = time.perf_counter()
selector = edgekit.load(package, verify=verify, threads=2)
t1 = time.perf_counter()
selector.rank(corpus[0], candidates, top_k=1)
t2 = time.perf_counter()
from edgekit.containment import check_contained
check_contained(selector.manifest)  # again, after the timed part: what containment alone costs
t3 = time.perf_counter()
print(json.dumps({"schema_ms": schema_load * 1e3, "load_ms": (t1 - t0) * 1e3, "load_rank_ms": (t2 - t0) * 1e3,
                  "containment_ms": (t3 - t2) * 1e3,
                  "files": len(selector.manifest.files()), "bytes": selector.manifest.total_bytes}))
"""
MODES = ("no-verify", "cold", "cached")


def child(package: Path, verify: bool, cache: Path, candidates: int) -> dict:
    environment = {**os.environ, "EDGEKIT_CACHE": str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(package), "1" if verify else "0", str(candidates)],
                          capture_output=True, text=True, env=environment, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"child failed on {package}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(package: Path, repeats: int, candidates: int, work: Path) -> dict:
    """{mode: [child results]} for one package, plus its size."""
    warm = work / "warm-cache"
    child(package, True, warm, candidates)  # reads every file once (OS page cache) and fills `warm`
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for repeat in range(repeats):
        for mode in MODES:
            cache = warm if mode == "cached" else work / f"cold-{repeat}"  # a fresh, empty directory
            results[mode].append(child(package, mode != "no-verify", cache, candidates))
    return results


def summary(name: str, results: dict[str, list[dict]]) -> list[str]:
    base_load = statistics.median(r["load_ms"] for r in results["no-verify"])
    base_total = statistics.median(r["load_rank_ms"] for r in results["no-verify"])
    first = results["no-verify"][0]
    rows = []
    for mode in MODES:
        loads = [r["load_ms"] for r in results[mode]]
        totals = [r["load_rank_ms"] for r in results[mode]]
        rows.append(f"| {name} ({first['files']} files, {first['bytes'] / 2**20:.0f} MiB) | {mode} | "
                    f"{statistics.median(loads):.0f} ({min(loads):.0f}-{max(loads):.0f}) | "
                    f"{statistics.median(totals):.0f} ({min(totals):.0f}-{max(totals):.0f}) | "
                    f"{statistics.median(loads) / base_load:.2f} | {statistics.median(totals) / base_total:.2f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report, lines = {}, ["| package | verify | load ms, median (min-max) | load + first rank ms | "
                         "load / no-verify | load + rank / no-verify |", "|---|---|---|---|---|---|"]
    imports, containment = [], []
    for package in args.packages:
        with tempfile.TemporaryDirectory(prefix="edgekit-verify-cost-") as work:
            results = measure(package, args.repeats, args.candidates, Path(work))
        report[str(package)] = results
        lines += summary(package.name, results)
        imports += [r["schema_ms"] for mode in MODES for r in results[mode]]
        contained = [r["containment_ms"] for mode in MODES for r in results[mode]]
        containment.append(f"{package.name} {statistics.median(contained):.0f} ms")
    print("\n".join(lines))
    print(f"\nloading onnx's protobuf schema (once per process, every mode): median {statistics.median(imports):.0f} ms "
          f"({min(imports):.0f}-{max(imports):.0f}); the containment check alone (part of every load, median): "
          f"{', '.join(containment)}; {args.repeats} repeats per mode, {args.candidates} candidates.")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
