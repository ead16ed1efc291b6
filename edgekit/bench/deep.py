"""`edgekit bench select-deep`: a Qwen3-0.6B-shaped reranker (random weights, the real layer
count, width and vocabulary) streamed by edgekit against the whole model in one ONNX Runtime
graph, each variant in its own process, the same prompts and candidates for all.

Variants: onnx-monolithic (the baseline), onnx-monolithic-optimized (the same graph after
onnxruntime's transformer optimizer, model type qwen3; `optimized=False` skips it), edgekit (window 2, no pruning), edgekit-budget (the
planner under --memory-budget = each of `budget_shares` x the baseline's measured peak). The
`Report` (edgekit/bench/report.py) holds per variant: median latency and peak RSS (and device
peak on CUDA) as ratios of the baseline's, and the max abs score difference and top-K agreement
against the baseline's scores; the budgets and the planner's choices are an extra table.

The checkpoint, package and baseline graph are built once under `work` (minutes, ~5 GB of
disk) and reused. Needs the export extra (torch, transformers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.bench.derived import derived_package, describe
from edgekit.bench.report import Machine, Quality, Ratio, Report, Table, Variant, Workload, ratio
from edgekit.bench.subprocess_runner import run_bench_variant as run_variant
from edgekit.dataset import Example
from edgekit.demo import cache_dir
from edgekit.manifest import MANIFEST_FILE
from edgekit.runtimes.ranking import top_k_order

if TYPE_CHECKING:
    from edgekit.exporters.optimized_graph import OptimizedGraph

Progress = Callable[[str], None]
VARIANT_MODULE = "edgekit.bench.deep_variant"
SHAPE = "qwen3-0.6b"
BASELINE = "onnx-monolithic"
OPTIMIZED = "onnx-monolithic-optimized"


@dataclass(frozen=True)
class DeepBench:
    candidates: int = 8
    tokens: int = 128  # every sequence (prompt included) is truncated to this length
    top_k: int = 5
    queries: int = 2
    repeat: int = 2
    threads: int = 2
    budget_shares: tuple[float, ...] = (0.25, 0.09)
    provider: str = "cpu"
    optimized: bool = True  # also run onnx-monolithic-optimized
    # packages exported again (bench/derived.py); edgekit-mixed is left to --derived: its layer search
    # runs the gate once per layer (28 on this shape) when all-int8 fails
    derived: tuple[str, ...] = ("edgekit-shared", "edgekit-int8", "edgekit-shared-int8")
    int8_min_agreement: float | None = None  # the int8 export's gate (None: the exporter's default)
    work: Path = cache_dir() / "bench" / "deep"


def optimized(checkpoint: Path, graph: Path, progress: Progress) -> OptimizedGraph:
    """The monolithic graph after onnxruntime's transformer optimizer, in a folder beside it (cached)."""
    from edgekit.exporters.optimized_graph import optimize_graph

    out = graph.parent.with_name("monolithic-optimized") / graph.name
    if not out.is_file():
        progress(f"optimizing the monolithic graph into {out.parent}")
        out.parent.mkdir(parents=True, exist_ok=True)
    return optimize_graph(graph, out, checkpoint)


def prepare(config: DeepBench, progress: Progress) -> tuple[Path, Path, Path]:
    """(checkpoint, package, monolithic graph), built when missing."""
    from edgekit.exporters.families import export_source
    from edgekit.exporters.monolithic_decoder import GRAPH_FILE, export_monolithic_decoder
    from edgekit.models.decoder_builds import build_qwen3_reranker
    from edgekit.models.decoders import qwen3_reranker_0_6b_config

    root = config.work / SHAPE
    checkpoint, package, graph_dir = root / "checkpoint", root / f"package-{config.tokens}", root / "monolithic"
    if not (checkpoint / "model.safetensors").is_file():
        progress(f"building a random {SHAPE}-shaped checkpoint in {checkpoint}")
        build_qwen3_reranker(checkpoint, qwen3_reranker_0_6b_config())
    if not (package / MANIFEST_FILE).is_file():
        progress(f"exporting the package to {package}")
        export_source(str(checkpoint), package, max_length=config.tokens, overwrite=True)
    if not (graph_dir / GRAPH_FILE).is_file():
        progress(f"exporting the monolithic baseline graph to {graph_dir}")
        export_monolithic_decoder(checkpoint, graph_dir, max_length=config.tokens)
    return checkpoint, package, graph_dir / GRAPH_FILE


def examples(config: DeepBench) -> list[Example]:
    """Queries from the demo corpus; candidates long enough that every sequence is truncated."""
    from edgekit.demo import demo_corpus

    corpus = demo_corpus()
    out = []
    for q in range(config.queries):
        candidates = [" ".join(corpus[(q * 7 + c + k) % len(corpus)] for k in range(12))
                      for c in range(config.candidates)]
        out.append(Example(query=corpus[(q * 13) % len(corpus)], candidates=candidates, relevant=[]))
    return out


def _variant(result: dict[str, Any], baseline: dict[str, Any], top_k: int,
             optimized: dict[str, Any] | None = None) -> Variant:
    """One child's result as a Variant: ratios of latency, peak RSS (and device peak) against the
    baseline (and latency against the optimized one graph when it ran), and its scores compared
    with the baseline's."""
    diffs = [float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(result["scores"], baseline["scores"])]
    agree = [len(set(top_k_order(np.array(a), top_k).tolist()) & set(top_k_order(np.array(b), top_k).tolist())) / top_k
             for a, b in zip(result["scores"], baseline["scores"])]
    ratios = [Ratio("latency", ratio(result["latency_ms"], baseline["latency_ms"]), BASELINE),
              Ratio("peak_rss", ratio(result["peak_rss_mb"], baseline["peak_rss_mb"]), BASELINE)]
    if optimized is not None:
        ratios.append(Ratio("latency", ratio(result["latency_ms"], optimized["latency_ms"]), OPTIMIZED))
    if result.get("device_peak_mb") and baseline.get("device_peak_mb"):
        ratios.append(Ratio("device_peak", ratio(result["device_peak_mb"], baseline["device_peak_mb"]), BASELINE))
    latencies = result.get("latencies_ms") or [result["latency_ms"]]
    details = {key: result[key] for key in ("stats", "gpu", "budget_mb", "share") if result.get(key) is not None}
    return Variant(result["variant"], latency_ms=result["latency_ms"], latency_ms_range=(min(latencies), max(latencies)),
                   peak_rss_mb=result["peak_rss_mb"],
                   figures={"device_peak_mb": result["device_peak_mb"]} if result.get("device_peak_mb") else {},
                   ratios=tuple(ratios),
                   quality=(Quality(BASELINE, "scores", top_k_agreement=float(np.mean(agree)),
                                    max_abs_diff=max(diffs)),),
                   details=details)


def budget_table(budgeted: list[dict[str, Any]]) -> Table:
    rows = []
    for r in budgeted:
        plan = r["stats"]["plan"]
        parts = ", ".join(f"{name} {value:.0f}" for name, value in plan["parts_mb"].items())
        rows.append((f"{r['budget_mb']:.0f} MiB ({r['share']:.0%} of the baseline's peak)",
                     f"window {plan['window']}, chunk {plan['chunk']}", f"{plan['estimated_peak_mb']:.0f} ({parts})",
                     r["peak_rss_mb"], f"{r['peak_rss_mb'] / r['budget_mb']:.2f}×"))
    return Table("Under a memory budget (the planner's choice)", ("memory budget", "planner's choice",
                 "estimated peak (parts, MiB)", "measured peak MiB", "measured / budget"), tuple(rows))


def build_report(config: DeepBench, model: dict[str, Any], baseline: dict[str, Any], streamed: dict[str, Any],
                 budgeted: list[dict[str, Any]], command: str, fused: dict[str, Any] | None = None,
                 fusions: str | None = None, derived: list[dict[str, Any]] | None = None,
                 skipped: list[str] | None = None) -> Report:
    """The Report of one `edgekit bench select-deep` run from its children's results; `derived`:
    the edgekit-shared/-int8 children (their packages exported again from the same checkpoint),
    `skipped`: why a derived variant did not run (its export refused)."""
    derived = derived or []
    key = "select-deep" if config.provider == "cpu" else f"select-deep-{config.provider}"
    gpu = baseline.get("gpu")
    notes = [f"Random weights in the Qwen3-Reranker-0.6B shape ({model['layers']} layers, hidden {model['hidden']}, "
             f"vocabulary {model['vocab']}); package {model['package_mb']} MiB fp32, largest graph "
             f"{model['largest_graph_mb']} MiB. Every sequence is {config.tokens} tokens (prompt included), no "
             f"pruning; one warm-up run, then {config.repeat} timed runs per query (median, range over all runs).",
             f"Baseline: `{BASELINE}` (the whole model as one ONNX Runtime graph, one session opened once, all "
             "candidates in one run); scores compared with its scores. Every candidate has the same length, so no "
             "variant batches or sorts."]
    if fusions:
        notes.append(f"`onnx-monolithic-optimized`: {fusions}.")
    if derived:
        gate = (f"the int8 gate at {config.int8_min_agreement:g}" if config.int8_min_agreement is not None
                else "the int8 gate at the exporter's default")
        names = "; ".join(describe(r["variant"]) for r in derived)
        notes.append(f"{names}: the same checkpoint exported again ({gate} on these queries), run as `edgekit`.")
    notes.extend(skipped or [])
    if gpu:
        notes.append(f"GPU {gpu}; device peak = the process's peak device memory (nvidia-smi).")
    return Report(
        workload=Workload(
            title=f"Deep model: Qwen3-0.6B-shaped reranker, streamed vs one graph ({config.provider})", key=key,
            command=command, machine=Machine.here(), subject=f"random {SHAPE}-shaped reranker",
            data="demo corpus queries",
            sizes={"queries": config.queries, "candidates": config.candidates, "tokens": config.tokens,
                   "top_k": config.top_k},
            provider=config.provider, threads=config.threads,
            settings={"repeat": config.repeat, "budget_shares": list(config.budget_shares)}),
        baseline=BASELINE, reference=BASELINE,
        variants=tuple(_variant(r, baseline, config.top_k, fused)
                       for r in (baseline, *([fused] if fused else []), streamed, *derived, *budgeted)),
        notes=tuple(notes),
        tables=(budget_table(budgeted),) if budgeted else (),
        details={"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                 "model": model},
    )


def run_deep_bench(config: DeepBench, progress: Progress = lambda message: None,
                   command: str = "edgekit bench select-deep") -> Report:
    checkpoint, package, graph = prepare(config, progress)
    record = optimized(checkpoint, graph, progress) if config.optimized else None
    data = config.work / f"queries-{config.queries}x{config.candidates}.jsonl"
    data.write_text("".join(json.dumps({"query": e.query, "candidates": e.candidates}) + "\n"
                            for e in examples(config)), encoding="utf-8")
    common = ["--package", str(package), "--data", str(data), "--top-k", str(config.top_k),
              "--repeat", str(config.repeat), "--provider", config.provider]
    progress("onnx-monolithic")
    baseline = run_variant(VARIANT_MODULE, ["--variant", "onnx-monolithic", *common, "--graph", str(graph)],
                           config.threads)
    fused = None
    if record is not None:
        progress("onnx-monolithic-optimized")
        fused = run_variant(VARIANT_MODULE, ["--variant", "onnx-monolithic-optimized", *common, "--graph", record.path],
                            config.threads)
    progress("edgekit")
    streamed = run_variant(VARIANT_MODULE, ["--variant", "edgekit", *common], config.threads)
    from edgekit.manifest import Manifest

    manifest = Manifest.load(package)
    derived, skipped = [], []
    for name in config.derived:
        path, why = derived_package(manifest, name, package.parent, data, config.int8_min_agreement,
                                    progress)
        if path is None:
            progress(why)
            skipped.append(why)
            continue
        progress(name)
        args = [arg if arg != str(package) else str(path) for arg in common]
        derived.append(run_variant(VARIANT_MODULE, ["--variant", name, *args], config.threads))
    budgeted = []
    for share in config.budget_shares:
        budget = round(share * baseline["peak_rss_mb"], 1)
        progress(f"edgekit-budget ({budget} MiB)")
        result = run_variant(VARIANT_MODULE, ["--variant", "edgekit-budget", *common, "--memory-budget", str(budget)],
                             config.threads)
        budgeted.append({**result, "variant": f"edgekit-budget-{share:g}", "budget_mb": budget, "share": share})
    model = {"shape": SHAPE, "layers": manifest.ranking.num_layers, "hidden": manifest.ranking.hidden_size,
             "vocab": manifest.ranking.embedding_table.shape[0] if manifest.ranking.embedding_table else None,
             "package_mb": round(manifest.total_bytes / 2**20, 1),
             "largest_graph_mb": round(max(g.bytes for g in manifest.graphs) / 2**20, 1)}
    return build_report(config, model, baseline, streamed, budgeted, command, fused,
                        record.describe() if record else None, derived, skipped)
