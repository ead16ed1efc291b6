"""`edgekit bench select-deep`: a Qwen3-0.6B-shaped reranker (random weights, the real layer
count, width and vocabulary) streamed by edgekit against the whole model in one ONNX Runtime
graph, each variant in its own process, the same prompts and candidates for all.

Variants: onnx-monolithic (the baseline), edgekit (window 2, no pruning), edgekit-budget (the
planner under --memory-budget = each of `budget_shares` x the baseline's measured peak). Reported per
variant: median latency and peak RSS as ratios of the baseline's, and the max abs score
difference and top-K agreement against the baseline's scores.

The checkpoint, package and baseline graph are built once under `work` (minutes, ~5 GB of
disk) and reused. Needs the export extra (torch, transformers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench.select import run_variant
from edgekit.dataset import Example
from edgekit.demo import cache_dir
from edgekit.manifest import MANIFEST_FILE
from edgekit.runtimes.ranking import top_k_order

Progress = Callable[[str], None]
VARIANT_MODULE = "edgekit.bench.deep_variant"
SHAPE = "qwen3-0.6b"


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
    work: Path = cache_dir() / "bench" / "deep"


def prepare(config: DeepBench, progress: Progress) -> tuple[Path, Path, Path]:
    """(checkpoint, package, monolithic graph), built when missing."""
    from edgekit.exporters.encoder_export import export_model
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
        export_model(str(checkpoint), package, max_length=config.tokens, overwrite=True)
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


def _summary(result: dict[str, Any], baseline: dict[str, Any], top_k: int) -> dict[str, Any]:
    diffs = [float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(result["scores"], baseline["scores"])]
    agree = [len(set(top_k_order(np.array(a), top_k).tolist()) & set(top_k_order(np.array(b), top_k).tolist())) / top_k
             for a, b in zip(result["scores"], baseline["scores"])]
    return {
        "name": result["variant"],
        "latency_ms": result["latency_ms"],
        "peak_rss_mb": result["peak_rss_mb"],
        "latency_ratio": result["latency_ms"] / baseline["latency_ms"],
        "peak_ratio": result["peak_rss_mb"] / baseline["peak_rss_mb"],
        "max_abs_diff": max(diffs),
        "top_k_agreement": float(np.mean(agree)),
        "stats": result.get("stats"),
        "device_peak_mb": result.get("device_peak_mb"),
        "gpu": result.get("gpu"),
    }


def run_deep_bench(config: DeepBench, progress: Progress = lambda message: None) -> dict[str, Any]:
    _, package, graph = prepare(config, progress)
    data = config.work / f"queries-{config.queries}x{config.candidates}.jsonl"
    data.write_text("".join(json.dumps({"query": e.query, "candidates": e.candidates}) + "\n"
                            for e in examples(config)), encoding="utf-8")
    common = ["--package", str(package), "--data", str(data), "--top-k", str(config.top_k),
              "--repeat", str(config.repeat), "--provider", config.provider]
    progress("onnx-monolithic")
    baseline = run_variant(VARIANT_MODULE, ["--variant", "onnx-monolithic", *common, "--graph", str(graph)],
                           config.threads)
    progress("edgekit")
    streamed = run_variant(VARIANT_MODULE, ["--variant", "edgekit", *common], config.threads)
    budgeted = []
    for share in config.budget_shares:
        budget = round(share * baseline["peak_rss_mb"], 1)
        progress(f"edgekit-budget ({budget} MiB)")
        result = run_variant(VARIANT_MODULE, ["--variant", "edgekit-budget", *common, "--memory-budget", str(budget)],
                             config.threads)
        budgeted.append({**result, "variant": f"edgekit-budget-{share:g}", "budget_mb": budget, "share": share})
    from edgekit.manifest import Manifest

    manifest = Manifest.load(package)
    return {
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in asdict(config).items()},
        "model": {"shape": SHAPE, "layers": manifest.ranking.num_layers, "hidden": manifest.ranking.hidden_size,
                  "vocab": manifest.ranking.embedding_table.shape[0] if manifest.ranking.embedding_table else None,
                  "package_mb": round(manifest.total_bytes / 2**20, 1),
                  "largest_graph_mb": round(max(g.bytes for g in manifest.graphs) / 2**20, 1)},
        "variants": [_summary(r, baseline, config.top_k) for r in (baseline, streamed, *budgeted)],
        "budgets": [{"share": r["share"], "budget_mb": r["budget_mb"], "peak_rss_mb": r["peak_rss_mb"],
                     "plan": r["stats"]["plan"]} for r in budgeted],
    }


def markdown(report: dict[str, Any], command: str) -> str:
    """A section for docs/BENCHMARKS.md (fenced so a rerun replaces it)."""
    from edgekit.bench.select_report import _cpu

    cfg, model = report["config"], report["model"]
    marker = "select-deep" if cfg["provider"] == "cpu" else f"select-deep-{cfg['provider']}"
    lines = [f"<!-- bench:{marker}:start -->",
             f"## Deep model: Qwen3-0.6B-shaped reranker, streamed vs one graph ({cfg['provider']})", "",
             f"`{command}` · {_cpu()} · provider {cfg['provider']}"
             + (f" ({report['variants'][0]['gpu']})" if report["variants"][0].get("gpu") else "")
             + f" · {cfg['threads']} threads per variant, each variant in its own process",
             "",
             (f"Random weights in the Qwen3-Reranker-0.6B shape ({model['layers']} layers, hidden {model['hidden']}, "
              f"vocabulary {model['vocab']}); package {model['package_mb']} MiB fp32, largest graph "
              f"{model['largest_graph_mb']} MiB. {cfg['queries']} queries x {cfg['candidates']} candidates x "
              f"{cfg['tokens']} tokens (prompt included), top-{cfg['top_k']}, no pruning; one warm-up run, then "
              f"{cfg['repeat']} timed runs per query (median). Baseline: `onnx-monolithic` (the whole model as one "
              "ONNX Runtime graph, one session opened once, all candidates in one run)."), "",
             "| variant | median latency | vs baseline | peak RSS | vs baseline | max abs score diff | top-K agreement |",
             "|---|---|---|---|---|---|---|"]
    for v in report["variants"]:
        lines.append(f"| {v['name']} | {v['latency_ms']:.0f} ms | {v['latency_ratio']:.2f}x | {v['peak_rss_mb']:.0f} MiB | "
                     f"{v['peak_ratio']:.3f}x | {v['max_abs_diff']:.2g} | {v['top_k_agreement']:.3f} |")
    base_device = report["variants"][0].get("device_peak_mb")
    if base_device:
        lines += ["", "Peak device memory (nvidia-smi, per process): " + "; ".join(
            f"{v['name']} {v['device_peak_mb']:.0f} MiB ({v['device_peak_mb'] / base_device:.2f}x)"
            for v in report["variants"] if v.get("device_peak_mb"))]
    lines += ["", "| memory budget | planner's choice | estimated peak (parts, MiB) | measured peak | measured / budget |",
              "|---|---|---|---|---|"]
    for row in report["budgets"]:
        plan = row["plan"]
        parts = ", ".join(f"{name} {value:.0f}" for name, value in plan["parts_mb"].items())
        lines.append(f"| {row['budget_mb']:.0f} MiB ({row['share']:.0%} of the baseline's peak) | window {plan['window']}, "
                     f"chunk {plan['chunk']} | {plan['estimated_peak_mb']:.0f} ({parts}) | {row['peak_rss_mb']:.0f} MiB | "
                     f"{row['peak_rss_mb'] / row['budget_mb']:.2f}x |")
    lines += [f"<!-- bench:{marker}:end -->", ""]
    return "\n".join(lines)
