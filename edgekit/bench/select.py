"""`edgekit bench select`: every selection variant on the same queries, each in its own process.

Reference = `torch` (transformers eager, the full model). For each variant: median and p90
latency per query, peak RSS, mean top-K set agreement with the reference, Precision@K where
the data has labels, and candidates × layers computed. With `split=True` each calibrated
variant (cluster pruning, rank stability) gets a temporary copy of the package calibrated for
its policy on the first half of the queries, and everything is measured on the second half:
`held_out` reports, per policy, whether the certified setting kept the top-K set whole on at
least the target share of those unseen queries (against `edgekit-exact`, the full model run
through the same package, which is what calibration certifies).
An optional memory sweep runs one query with 20 → 200 candidates to show how peak RSS grows.
Needs the export extra (torch, for the reference and the monolithic graph) and `bench`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import edgekit
from edgekit.bench.derived import DERIVED, derived_package
from edgekit.bench.report import Machine, Report
from edgekit.bench.select_report import build_report
from edgekit.bench.select_variant import CALIBRATED, VARIANTS
from edgekit.bench.subprocess_runner import run_bench_variant as run_variant
from edgekit.dataset import Example, read_examples
from edgekit.demo import cache_dir
from edgekit.errors import InvalidArgumentError
from edgekit.manifest import Manifest
from edgekit.runtimes.calibration import agreement, record_traces, search, write_calibration

if TYPE_CHECKING:
    from edgekit.exporters.optimized_graph import OptimizedGraph

VARIANT_MODULE = "edgekit.bench.select_variant"
ALL_VARIANTS = VARIANTS  # torch (the reference), onnx-monolithic(-batched, -inorder, -optimized), edgekit-*
SWEEP_VARIANTS = ("onnx-monolithic", "onnx-monolithic-batched", "edgekit-exact")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SelectBench:
    """What to run. `queries` limits the data (0: all); `sweep` lists candidate counts."""

    package: Path
    data: Path
    top_k: int = 10
    threads: int = 2
    batch: int = 16
    chunk: int = 16
    split: bool = True
    target_agreement: float = 0.995
    delta: float = 0.1
    queries: int = 0
    variants: tuple[str, ...] = ALL_VARIANTS
    sweep: tuple[int, ...] = field(default_factory=tuple)
    int8_min_agreement: float | None = None  # the int8/mixed exports' gate (None: the exporter's default)
    command: str = "edgekit bench select"  # recorded in the report
    title: str = ""  # the report's title (default: from the package)


def monolithic_graph(manifest: Manifest) -> Path:
    """The whole-model ONNX graph of the package's source, exported once and cached."""
    from edgekit.exporters.monolithic import export_monolithic

    key = hashlib.sha256("".join(e.sha256 for e in manifest.files()).encode()).hexdigest()[:16]
    path = cache_dir() / "bench" / key / "monolithic.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_monolithic(Path(manifest.source["path"]), path, manifest.ranking.max_length)
    return path


def optimized_graph(manifest: Manifest, graph: Path) -> OptimizedGraph:
    """The one graph after onnxruntime's transformer optimizer, written once beside `graph`."""
    from edgekit.exporters.optimized_graph import optimize_graph

    return optimize_graph(graph, graph.with_name("monolithic-optimized.onnx"), Path(manifest.source["path"]))


def int8_graph(graph: Path) -> Path:
    """The one graph with onnxruntime's dynamic int8 MatMul weights, quantized as `--dtype int8`
    quantizes each layer (exporters/quantize.py), written once beside `graph`."""
    from edgekit.exporters.quantize import CANDIDATES, quantize_graph
    from edgekit.manifest import GraphSpec

    out = graph.parent / CANDIDATES / graph.name
    if not out.is_file():
        quantize_graph(graph.parent, GraphSpec(name="monolithic", role="monolithic", format="onnx", path=graph.name,
                                               files=(), inputs=(), outputs=()))
    return out


def _write_examples(examples: Sequence[Example], path: Path) -> Path:
    lines = [json.dumps({"query": e.query, "candidates": e.candidates, "relevant": e.relevant}) for e in examples]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def calibrated_copies(package: Path, examples: Sequence[Example], data_file: Path, top_k: int, target: float,
                      delta: float, policies: Sequence[str], workdir: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """One copy of the package per policy in `workdir`, each calibrated for it on `examples`
    (the exact traces are recorded once and searched per policy)."""
    selector = edgekit.load(str(package))
    traces = record_traces(selector.rank, examples, top_k)
    manifest = selector.manifest
    copies = {}
    for policy in policies:
        copy = workdir / f"calibrated-{policy}"
        shutil.copytree(package, copy)
        result = search(traces, top_k, target, manifest.ranking.scoring.kind, manifest.ranking.num_layers, policy, delta)
        updated = write_calibration(Manifest.load(copy), result, top_k, target, data_file)
        copies[policy] = (copy, dict(updated.ranking.calibration or {}))
    return copies


def held_out(raws: dict[str, dict[str, Any]], calibrations: dict[str, dict[str, Any]], reference: str,
             target: float) -> list[dict[str, Any]]:
    """Per calibrated variant: did the certified setting keep the whole top-K set on at least
    `target` of the unseen queries (the event calibration certifies), and its mean agreement."""
    rows = []
    for name, policy in CALIBRATED.items():
        if name not in raws or reference not in raws:
            continue
        kept = [set(mine) == set(ref) for mine, ref in zip(raws[name]["top_k"], raws[reference]["top_k"])]
        calibration = calibrations.get(policy, {})
        rows.append({
            "variant": name, "policy": policy, "params": calibration.get("params"), "reference": reference,
            "target": target, "delta": calibration.get("delta"), "lower_bound": calibration.get("lower_bound"),
            "calibration_samples": calibration.get("samples"), "queries": len(kept),
            "exact_share": float(np.mean(kept)),
            "agreement": float(np.mean([agreement(mine, ref) for mine, ref in
                                        zip(raws[name]["top_k"], raws[reference]["top_k"])])),
            "meets_target": bool(np.mean(kept) >= target),
        })
    return rows


def summarise(raw: dict[str, Any], reference: dict[str, Any] | None, examples: Sequence[Example], top_k: int,
              exact_cost: int, package_reference: dict[str, Any] | None = None) -> dict[str, Any]:
    """One variant's figures; `package_reference` (edgekit-exact's raw result, for the derived
    int8/shared packages) adds its agreement with the fp32 per-layer package."""
    latency = np.asarray(raw["latency_ms"])
    cost = raw["candidate_layers"] if raw["candidate_layers"] is not None else exact_cost  # None: not layer-wise
    summary: dict[str, Any] = {
        "name": raw["variant"],
        "latency_ms_median": float(np.median(latency)),
        "latency_ms_p90": float(np.percentile(latency, 90)),
        "peak_rss_mb": raw["peak_rss_mb"],
        "setup_ms": raw["setup_ms"],
        "candidate_layers": cost,
        "candidate_layers_fraction": cost / max(1, exact_cost),
    }
    if reference is not None:
        summary["agreement"] = float(np.mean([agreement(mine, ref) for mine, ref in
                                              zip(raw["top_k"], reference["top_k"])]))
    if package_reference is not None:
        summary["agreement_package"] = float(np.mean([agreement(mine, ref) for mine, ref in
                                                      zip(raw["top_k"], package_reference["top_k"])]))
    labelled = [(picked, e.relevant) for picked, e in zip(raw["top_k"], examples) if e.relevant]
    summary["precision_at_k"] = (float(np.mean([len(set(p) & set(r)) / top_k for p, r in labelled]))
                                 if labelled else None)
    summary["recall_at_k"] = (float(np.mean([len(set(p) & set(r)) / len(r) for p, r in labelled]))
                              if labelled else None)
    return summary


def _variant_args(name: str, package: Path, data: Path, graph: Path | None, config: SelectBench,
                  optimized: OptimizedGraph | None = None) -> list[str]:
    args = ["--variant", name, "--package", str(package), "--data", str(data), "--top-k", str(config.top_k),
            "--batch", str(config.batch), "--chunk", str(config.chunk)]
    if name == "onnx-monolithic-optimized" and optimized is not None:
        return args + ["--graph", optimized.path]
    if name == "onnx-monolithic-int8" and graph is not None:
        return args + ["--graph", str(int8_graph(graph))]
    return args + (["--graph", str(graph)] if graph is not None else [])


def _certified(calibration: dict[str, Any] | None) -> bool:
    """Whether a calibration holds a setting (params; the first shape: a threshold)."""
    calibration = calibration or {}
    return calibration.get("params") is not None or calibration.get("threshold") is not None


def run_select_bench(config: SelectBench, progress: Progress = lambda message: None) -> Report:
    """Run every variant; the Report's details keep the calibration per policy, the held-out rows
    and the raw sweep."""
    unknown = [name for name in config.variants if name not in ALL_VARIANTS]
    if unknown:
        raise InvalidArgumentError(f"unknown variants {unknown}; choose from {', '.join(ALL_VARIANTS)}")
    for option, value in (("--top-k", config.top_k), ("--threads", config.threads), ("--batch", config.batch),
                          ("--chunk", config.chunk), *(("--memory-sweep", n) for n in config.sweep)):
        if value < 1:
            raise InvalidArgumentError(f"{option} must be >= 1, got {value}")
    if not 0.0 < config.delta < 1.0:
        raise InvalidArgumentError(f"--delta must be in (0, 1), got {config.delta}")
    if config.queries < 0:
        raise InvalidArgumentError(f"--queries must be >= 0 (0: all), got {config.queries}")
    manifest = Manifest.load(config.package)
    examples = read_examples(config.data)
    if config.queries:
        examples = examples[: config.queries]
    if config.split and len(examples) < 2:
        raise InvalidArgumentError("--split needs at least 2 queries (calibrate on one half, measure on the other)")
    swept = SWEEP_VARIANTS if config.sweep else ()
    needs_graph = any(name.startswith("onnx-monolithic") for name in (*config.variants, *swept))
    progress("exporting the monolithic baseline graph (cached)") if needs_graph else None
    graph = monolithic_graph(manifest) if needs_graph else None
    optimized = None
    if graph is not None and "onnx-monolithic-optimized" in config.variants:
        progress("optimizing the monolithic graph with onnxruntime's transformer optimizer (cached)")
        optimized = optimized_graph(manifest, graph)
    calibrated = [name for name in config.variants if name in CALIBRATED]
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as work:
        workdir = Path(work)
        own = manifest.ranking.calibration or {}  # without --split: the package's own calibration, for its policy
        packages = {name: config.package for name in config.variants if name not in DERIVED}
        calibrations = {str(own.get("policy", "cluster")): dict(own)} if own else {}
        measured = examples
        if config.split and calibrated:
            half = len(examples) // 2
            progress(f"calibrating {', '.join(CALIBRATED[n] for n in calibrated)} on the first {half} queries")
            calib_file = _write_examples(examples[:half], workdir / "calibration.jsonl")
            copies = calibrated_copies(config.package, examples[:half], calib_file, config.top_k,
                                       config.target_agreement, config.delta, [CALIBRATED[n] for n in calibrated],
                                       workdir)
            calibrations = {policy: calibration for policy, (_, calibration) in copies.items()}
            packages.update({name: copies[CALIBRATED[name]][0] for name in calibrated})
            measured = examples[half:]
        data = _write_examples(measured, workdir / "measure.jsonl")
        # the int8 gate checks the calibration half when there is one, else the measured queries
        gate_data = calib_file if config.split and calibrated else data
        skipped = []
        for name in [name for name in config.variants if name in DERIVED]:
            path, why = derived_package(manifest, name, cache_dir() / "bench" / "derived", gate_data,
                                        config.int8_min_agreement, progress)
            if path is None:
                progress(why)
                skipped.append(why)
            else:
                packages[name] = path
        raws: dict[str, dict[str, Any]] = {}
        for name in [name for name in config.variants if name in packages]:
            if name in CALIBRATED and not _certified(calibrations.get(CALIBRATED[name])):
                progress(f"{name}: no {CALIBRATED[name]} setting was certified for the target; it would run exact "
                         "(skipped)")
                continue
            progress(f"running {name} on {len(measured)} queries")
            raws[name] = run_variant(VARIANT_MODULE, _variant_args(name, packages[name], data, graph, config,
                                                                   optimized), threads=config.threads)
        sweep = _memory_sweep(config, examples, config.package, graph, workdir, progress) if config.sweep else []
    exact_cost = sum(len(e.candidates) for e in measured) * manifest.ranking.num_layers
    reference = raws.get("torch")
    variants = [summarise(raw, reference, measured, config.top_k, exact_cost,
                          raws.get("edgekit-exact") if raw["variant"] in DERIVED else None) for raw in raws.values()]
    full_model = "edgekit-exact" if "edgekit-exact" in raws else "torch"
    workload = {
        "package": str(config.package), "family": manifest.family, "task": manifest.task,
        "layers": manifest.ranking.num_layers, "data": str(config.data), "queries_measured": len(measured),
        "queries_calibration": len(examples) - len(measured),
        "candidates_per_query": float(np.mean([len(e.candidates) for e in measured])),
        "top_k": config.top_k, "delta": config.delta, "threads": config.threads, "batch": config.batch,
        "chunk": config.chunk, "window": 2, "reference": "torch" if reference else None,
    }
    return build_report(workload=workload, summaries=variants, calibration=calibrations,
                        held_out=held_out(raws, calibrations, full_model, config.target_agreement), sweep=sweep,
                        command=config.command, title=config.title, machine=Machine.here(),
                        optimized=optimized.describe() if optimized else None, skipped=skipped)


def _memory_sweep(config: SelectBench, examples: Sequence[Example], package: Path, graph: Path | None,
                  workdir: Path, progress: Progress) -> list[dict[str, Any]]:
    """One query with N candidates (pooled from the data, cycled when short) for each N."""
    pool = list(dict.fromkeys(text for e in examples for text in e.candidates))
    rows = []
    for count in config.sweep:
        candidates = [pool[i % len(pool)] for i in range(count)]
        data = _write_examples([Example(examples[0].query, candidates)], workdir / f"sweep-{count}.jsonl")
        for name in SWEEP_VARIANTS:
            progress(f"memory sweep: {name} with {count} candidates")
            raw = run_variant(VARIANT_MODULE, _variant_args(name, package, data, graph, config),
                              threads=config.threads)
            rows.append({"variant": name, "candidates": count, "peak_rss_mb": raw["peak_rss_mb"],
                         "latency_ms": raw["latency_ms"][0]})
    return rows
