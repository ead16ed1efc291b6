"""Child process of `edgekit bench native` (edgekit/bench/native.py): score one workload with the
native host `edgekit-rank` (runtimes/native/), print JSON in `spine_variant`'s shape.

    python -m edgekit.bench.native_variant [--variant native] --binary build/native/edgekit-rank --package PKG
        --workload W.json --threads N [--window 2] [--chunk 16] [--repeats 5] [--top-k 10]

The host runs once, in its own process, on one open package (`--queries`): the same
{"query", "candidates"} record repeats+2 times, each asking for every candidate's score. The
first call is the warm-up (`cold_ms`: process start, package open and that call), the next
`repeats` are timed, the last keeps the process alive while its memory is read. The host
flushes one JSON line per call, so a call's latency is the time between two lines arriving:
it covers what the Python child's timed `rank` covers (tokenisation, every graph, scoring)
plus the host's parsing of one record and printing of one line. The host's own in-pass time
(`stats.latency_ms`, tokenisation excluded) is kept in `extra.pass_ms`.

Peak RSS is the host process's own high-water mark, VmHWM in /proc/PID/status, read when the
last timed call's line arrives (the host's `getrusage` maxrss would include the peak of the
process that started it on Linux, see subprocess_runner.py; it is kept as
`getrusage_maxrss_mb`). Where /proc is missing, the getrusage figure stands in and
`peak_rss_source` says so.

Output: ONE JSON object on the last stdout line, with spine_variant's keys (latency_ms,
latency_ms_median, latency_ms_p90, cold_ms, peak_rss_mb, scores in input order, top_k indices).
A failing host: its stderr is copied to ours and this exits with the host's status.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench.spine_variant import load_workload
from edgekit.runtimes.selector import top_k_order


def vm_hwm_mb(pid: int) -> float | None:
    """VmHWM of a running process in MiB; None when /proc does not say (not Linux, gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def host_command(args: argparse.Namespace, queries: Path, candidates: int) -> list[str]:
    return [str(args.binary), str(args.package), "--queries", str(queries), "--top-k", str(candidates),
            "--window", str(args.window), "--chunk", str(args.chunk), "--threads", str(args.threads)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the host as the module doc says; the result object, or SystemExit with the host's status."""
    query, candidates = load_workload(args.workload)
    record = json.dumps({"query": query, "candidates": candidates}) + "\n"
    calls = args.repeats + 2  # warm-up, timed calls, one more while VmHWM is read
    with tempfile.TemporaryDirectory(prefix="edgekit-native-bench-") as folder:
        queries = Path(folder) / "queries.jsonl"
        queries.write_text(record * calls, encoding="utf-8")
        stderr_file = Path(folder) / "stderr.txt"
        with stderr_file.open("w") as stderr:
            start = time.perf_counter()
            host = subprocess.Popen(host_command(args, queries, len(candidates)), stdout=subprocess.PIPE,
                                    stderr=stderr, text=True)
            assert host.stdout is not None
            arrivals: list[float] = []
            outputs: list[dict[str, Any]] = []
            vm_hwm = None
            for line in host.stdout:
                arrivals.append(time.perf_counter())
                outputs.append(json.loads(line))
                if len(outputs) == args.repeats + 1:  # the last timed call is done; the host is still running
                    vm_hwm = vm_hwm_mb(host.pid)
            returncode = host.wait()
        if returncode != 0 or len(outputs) != calls:
            text = stderr_file.read_text()
            last = (text.strip().splitlines() or ["(no message)"])[-1]
            sys.stderr.write(text)
            sys.stderr.write(f"edgekit-rank exited with status {returncode} after {len(outputs)} of {calls} calls: "
                             f"{last}\n")
            raise SystemExit(returncode or 1)
    latencies = [(arrivals[i] - arrivals[i - 1]) * 1000.0 for i in range(1, args.repeats + 1)]
    last = outputs[args.repeats]
    scores = np.full(len(candidates), np.nan)
    for item in last["top_k"]:
        scores[int(item["index"])] = float(item["score"])
    stats = last["stats"]
    return {
        "variant": args.variant,
        "threads": args.threads,
        "batch": args.chunk,
        "candidates": len(candidates),
        "repeats": args.repeats,
        "latency_ms": latencies,
        "latency_ms_median": float(np.median(latencies)),
        "latency_ms_p90": float(np.percentile(latencies, 90)),
        "cold_ms": (arrivals[0] - start) * 1000.0,
        "peak_rss_mb": vm_hwm if vm_hwm is not None else stats["peak_rss_mb"],
        "peak_rss_source": "VmHWM" if vm_hwm is not None else "getrusage",
        "getrusage_maxrss_mb": stats["peak_rss_mb"],
        "scores": [float(value) for value in scores],
        "top_k": [int(index) for index in top_k_order(scores, min(args.top_k, len(scores)))],
        "extra": {"pass_ms": [outputs[i]["stats"]["latency_ms"] for i in range(1, args.repeats + 1)],
                  **{key: stats[key] for key in ("window", "chunk", "chunks", "graphs_loaded", "max_resident_graphs",
                                                  "padded_tokens", "tokens", "truncated", "runtime")}},
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m edgekit.bench.native_variant", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="native", help="the name this result carries")
    parser.add_argument("--binary", type=Path, required=True, help="the edgekit-rank executable")
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--workload", type=Path, required=True, help='JSON {"query": str, "candidates": [str]}')
    parser.add_argument("--threads", type=int, required=True, help="onnxruntime intra-op threads")
    parser.add_argument("--window", type=int, default=2, help="graphs resident at once")
    parser.add_argument("--chunk", type=int, default=16, help="sequences per graph run")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args(argv)
    if min(args.threads, args.window, args.chunk, args.repeats, args.top_k) < 1:
        parser.error("--threads, --window, --chunk, --repeats and --top-k must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    print(json.dumps(run(parse_args(argv))))


if __name__ == "__main__":
    main()
