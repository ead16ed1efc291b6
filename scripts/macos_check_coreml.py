"""The Python half of scripts/macos_check_coreml.sh (run that on a Mac; nothing here ran on one).

`compare` starts one child process per variant (`variant ...`), so each peak RSS is that
runtime's alone, then compares every variant's top-10 and scores with the onnxruntime CPU
baseline on the same queries of the bundled dev set. Children use only the public API
(`edgekit.load` with provider, graph_format and compute_units).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edgekit.dataset import read_examples

DEVSET = Path(__file__).resolve().parents[1] / "edgekit" / "data" / "devset_stdlib.jsonl"
TOP_K = 10
# (name, package option, provider, graph format, compute units); the first is the baseline
VARIANTS = (
    ("onnxruntime-cpu", "package", "cpu", "onnx", None),
    ("onnxruntime-coreml-ep", "package", "coreml", "onnx", None),
    ("coreml-all", "package", "coreml", "mlpackage", "all"),
    ("coreml-cpu_and_ne", "package", "coreml", "mlpackage", "cpu_and_ne"),
    ("coreml-cpu_and_gpu", "package", "coreml", "mlpackage", "cpu_and_gpu"),
    ("coreml-cpu_only", "package", "coreml", "mlpackage", "cpu_only"),
    ("coreml-4bit-all", "palettized", "coreml", "mlpackage", "all"),
)


def peak_rss_mib() -> float:
    """ru_maxrss is bytes on macOS, KiB on Linux."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_variant(args: argparse.Namespace) -> None:
    import edgekit

    examples = read_examples(DEVSET)[: args.queries]
    selector = edgekit.load(args.package, provider=args.provider, graph_format=args.graph_format,
                            compute_units=args.compute_units)
    selector.rank(examples[0].query, examples[0].candidates, top_k=TOP_K)  # warm-up: compile, first load
    latencies, rankings = [], []
    for example in examples:
        start = time.perf_counter()
        ranking = selector.rank(example.query, example.candidates, top_k=TOP_K)
        latencies.append((time.perf_counter() - start) * 1000)
        rankings.append([[result.index, float(result.score)] for result in ranking])
    Path(args.out).write_text(json.dumps({"latency_ms": statistics.median(latencies), "peak_rss_mib": peak_rss_mib(),
                                          "rankings": rankings}))


def compare(args: argparse.Namespace) -> None:
    out = Path(args.out)
    results: dict[str, dict] = {}
    for name, which, provider, graph_format, units in VARIANTS:
        child = out.with_name(f"{name}.json")
        command = [sys.executable, __file__, "variant", "--package", getattr(args, which), "--provider", provider,
                   "--graph-format", graph_format, "--queries", str(args.queries), "--out", str(child)]
        if units:
            command += ["--compute-units", units]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            results[name] = {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
            continue
        results[name] = json.loads(child.read_text())
    baseline = results["onnxruntime-cpu"]
    if "error" in baseline:
        raise SystemExit(f"error: the onnxruntime CPU baseline failed ({baseline['error']}); nothing to compare")
    print(f"{'variant':24} {'top-10 agree':>12} {'max |Δscore|':>12} {'latency ms':>11} {'× base':>7} "
          f"{'peak MiB':>9} {'× base':>7}")
    for name, result in results.items():
        if "error" in result:
            print(f"{name:24} error: {result['error']}")
            continue
        agree, worst = [], 0.0
        for mine, base in zip(result["rankings"], baseline["rankings"]):
            agree.append(len({i for i, _ in mine} & {i for i, _ in base}) / len(base))
            base_scores = dict(map(tuple, base))
            worst = max([worst, *(abs(score - base_scores[i]) for i, score in mine if i in base_scores)])
        result.update(top10_agreement=statistics.mean(agree), max_abs_score_diff=worst)
        print(f"{name:24} {result['top10_agreement']:12.4f} {worst:12.2e} {result['latency_ms']:11.1f} "
              f"{result['latency_ms'] / baseline['latency_ms']:7.2f} {result['peak_rss_mib']:9.0f} "
              f"{result['peak_rss_mib'] / baseline['peak_rss_mib']:7.2f}")
    out.write_text(json.dumps({name: {k: v for k, v in r.items() if k != "rankings"} for name, r in results.items()},
                              indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    both = argparse.ArgumentParser(add_help=False)
    both.add_argument("--queries", type=int, default=30)
    both.add_argument("--out", required=True)
    one = sub.add_parser("variant", parents=[both])
    one.add_argument("--package", required=True)
    one.add_argument("--provider", required=True)
    one.add_argument("--graph-format", required=True)
    one.add_argument("--compute-units")
    many = sub.add_parser("compare", parents=[both])
    many.add_argument("--package", required=True)
    many.add_argument("--palettized", required=True)
    args = parser.parse_args()
    run_variant(args) if args.command == "variant" else compare(args)


if __name__ == "__main__":
    main()
