"""Measure the MiniLM cross-encoder recipe and write docs/CROSS_ENCODER.md.

Every number comes from running the exported packages through the edgekit runtime:
- quality (MRR@10, P@1) on held-out training-module queries and on the dev set, against the
  bi-encoder all-MiniLM-L6-v2 on the same candidates;
- per-layer rank stability (final top-10 inside the depth-l top-10 / top-20), from exact-mode
  traces, with and without deep supervision and with per-layer heads when those checkpoints exist;
- calibration: `search` on the dev set's first half (top-10, targets 0.995 and 0.99), then
  online pruned runs (`prune="auto"`) on the second half: agreement with the exact top-10 and
  the fraction of candidate-layers computed.
Packages and traces are cached under --work, so a rerun only recomputes what is missing.

    python scripts/report_cross_encoder.py [--model DIR] [--no-ds-model DIR] [--per-layer-model DIR]
        [--out docs/CROSS_ENCODER.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from edgekit.dataset import read_examples
from edgekit.models.recipes import rank_metrics
from edgekit.models.recipes.minilm_cross_encoder import RECIPE_FILE, default_model_dir

DEVSET = Path(__file__).resolve().parents[1] / "edgekit" / "data" / "devset_stdlib.jsonl"
TOP_K = 10
TARGETS = (0.995, 0.99)
COMMAND = "python scripts/report_cross_encoder.py"


def _package(source: Path, work: Path, name: str) -> Path:
    """Export `source` once into work/packages/name (re-exported when the checkpoint is newer)."""
    from edgekit.exporters.encoder_export import export_encoder
    from edgekit.manifest import MANIFEST_FILE, Manifest

    out = work / "packages" / name
    manifest = out / MANIFEST_FILE
    if manifest.is_file() and manifest.stat().st_mtime > (source / "model.safetensors").stat().st_mtime:
        return out
    print(f"exporting {name} from {source}", flush=True)
    export_encoder(str(source), out, overwrite=True)
    Manifest.load(out)
    return out


def _traces(package: Path, examples: list[dict[str, Any]], cache: Path) -> list[rank_metrics.Trace]:
    """Exact-mode traces of every example (cached as JSON next to the package)."""
    import edgekit

    if cache.is_file() and cache.stat().st_mtime > (package / "manifest.json").stat().st_mtime:
        raw = json.loads(cache.read_text(encoding="utf-8"))
        return [[{int(k): v for k, v in depth.items()} for depth in trace] for trace in raw]
    selector = edgekit.load(str(package))
    started, traces = time.perf_counter(), []
    for done, example in enumerate(examples, start=1):
        traces.append(selector.rank(example["query"], example["candidates"], top_k=TOP_K, trace=True).trace)
        if done % 20 == 0:
            print(f"  {cache.stem}: {done}/{len(examples)} ({time.perf_counter() - started:.0f} s)", flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(traces), encoding="utf-8")
    return traces


def _calibrate(package: Path, traces: list[rank_metrics.Trace], examples: list[dict[str, Any]]) -> list[dict]:
    """Search on the first half's traces, then measure online pruned runs on the second half."""
    from edgekit.manifest import Manifest
    from edgekit.runtimes.backends import backend_for
    from edgekit.runtimes.calibration import agreement, replay, search
    from edgekit.runtimes.selector import Selector

    manifest = Manifest.load(package)
    half = len(examples) // 2
    rows = []
    for target in TARGETS:
        found = search(traces[:half], TOP_K, target, manifest.ranking.scoring.kind, manifest.ranking.num_layers)
        setting = found.setting
        row: dict[str, Any] = {"target": target, "threshold": getattr(setting, "threshold", None),
                               "min_depth": setting.min_depth if setting is not None else None,
                               "calibration_agreement": found.agreement,
                               "calibration_fraction": found.candidate_layers_fraction}
        if setting is not None:
            calibration = {"policy": found.policy, "params": setting.params(), "top_k": TOP_K}
            selector = Selector(dataclasses.replace(manifest, ranking=dataclasses.replace(manifest.ranking,
                                                                                          calibration=calibration)),
                                backend_for("onnx", "cpu"))
            agreements, cost, exact_cost = [], 0, 0
            for example, trace in zip(examples[half:], traces[half:]):
                ranking = selector.rank(example["query"], example["candidates"], top_k=TOP_K, prune="auto")
                agreements.append(agreement([r.index for r in ranking], replay(trace, None, TOP_K).selected))
                cost += ranking.stats.candidate_layers
                exact_cost += ranking.stats.candidate_layers_exact
            row.update(measured_agreement=sum(agreements) / len(agreements),
                       min_agreement=min(agreements), measured_fraction=cost / exact_cost)
        rows.append(row)
    return rows


def _held_out_examples(limit: int) -> list[dict[str, Any]]:
    from edgekit.models.docstrings import collect_passages, training_modules
    from edgekit.models.recipes.docstring_pairs import held_out_examples, split_pools, without_devset_text

    pools = split_pools(without_devset_text(collect_passages(training_modules())))
    return held_out_examples(pools.held_out, limit=limit)


def measure(models: dict[str, Path], work: Path, held_out: int) -> dict[str, Any]:
    """All numbers for the report, keyed by model name; models = {name: checkpoint dir}."""
    datasets = {
        "held_out": _held_out_examples(held_out),
        "devset": [{"query": e.query, "candidates": e.candidates, "relevant": e.relevant}
                   for e in read_examples(DEVSET)],
    }
    results: dict[str, Any] = {"datasets": {k: {"queries": len(v), "candidates": len(v[0]["candidates"])}
                                            for k, v in datasets.items()}, "models": {}}
    for name, source in models.items():
        package = _package(source, work, name)
        entry: dict[str, Any] = {"source": str(source)}
        for data_name, examples in datasets.items():
            traces = _traces(package, examples, work / "traces" / f"{name}-{data_name}.json")
            relevant = [e["relevant"] for e in examples]
            entry[data_name] = {
                "mrr@10": rank_metrics.mrr_at(traces, relevant, TOP_K),
                "p@1": rank_metrics.precision_at_1(traces, relevant),
                "stability": rank_metrics.rank_stability(traces, TOP_K),
            }
            if data_name == "devset":
                cached = work / "traces" / f"{name}-calibration.json"  # same traces -> same result
                if not cached.is_file() or cached.stat().st_mtime < (package / "manifest.json").stat().st_mtime:
                    cached.write_text(json.dumps(_calibrate(package, traces, examples)), encoding="utf-8")
                entry["calibration"] = json.loads(cached.read_text(encoding="utf-8"))
        recipe = source / RECIPE_FILE
        if recipe.is_file():
            entry["recipe"] = json.loads(recipe.read_text(encoding="utf-8"))
        results["models"][name] = entry
        print(f"{name}: measured", flush=True)
    return results


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def render(results: dict[str, Any]) -> str:
    """The generated part of docs/CROSS_ENCODER.md (everything before "## Reading")."""
    models = results["models"]
    sets = results["datasets"]
    lines = ["# MiniLM cross-encoder (recipe) — measured", "",
             (f"Generated by `{COMMAND}` on {time.strftime('%Y-%m-%d %H:%M')} (2 shared CPU cores); "
             "raw numbers in `report.json` under the work directory. Scores come from the exported "
             "packages run by the edgekit runtime (exact mode, traces)."), ""]
    for name, entry in models.items():
        recipe = entry.get("recipe")
        if recipe:
            cfg, data, curve = recipe["config"], recipe["data"], recipe["loss_curve"]
            lines += [(f"- **{name}**: {cfg['steps']} steps x {cfg['groups_per_step']} groups of "
                      f"{data['group_size']} (1 positive, {cfg['hard_negatives']} BM25-hard, "
                      f"{cfg['random_negatives']} random), seed {cfg['seed']}, deep supervision "
                      f"{cfg['deep_supervision']}, {recipe['head']} head; trained in {recipe['train_seconds']:.0f} s; "
                      f"train/held-out passages {data['train_passages']}/{data['held_out_passages']} "
                      f"({data['dropped_as_devset_duplicates']} dropped as dev-set duplicates); final-layer CE "
                      f"{curve['final_layer_ce'][0]:.3f} -> {curve['final_layer_ce'][-1]:.3f}; per-layer CE at the "
                      f"end {curve['per_layer_ce_last']}.")]
    lines += ["", "## Quality (final layer)", "",
              "| model | held-out MRR@10 | held-out P@1 | dev-set MRR@10 | dev-set P@1 |", "|---|---|---|---|---|"]
    for name, entry in models.items():
        h, d = entry["held_out"], entry["devset"]
        lines.append(f"| {name} | {h['mrr@10']:.3f} | {h['p@1']:.3f} | {d['mrr@10']:.3f} | {d['p@1']:.3f} |")
    lines += ["", (f"Held-out: {sets['held_out']['queries']} queries x {sets['held_out']['candidates']} BM25 candidates "
              "from held-out training modules; dev set: "
              f"{sets['devset']['queries']} queries x {sets['devset']['candidates']} candidates "
              "(`edgekit/data/devset_stdlib.jsonl`)."), "",
              "## Per-layer rank stability", "",
              "Share of the final top-10 inside the depth-l top-10 / top-20 (mean over queries).", ""]
    for data_name in ("devset", "held_out"):
        layers = len(next(iter(models.values()))[data_name]["stability"])
        lines += [f"**{data_name}**", "", "| model | " + " | ".join(f"l={d}" for d in range(1, layers + 1)) + " |",
                  "|---|" + "---|" * layers]
        for name, entry in models.items():
            cells = [f"{_pct(a)} / {_pct(b)}" for a, b in entry[data_name]["stability"]]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Calibration (dev set: search on the first half, online pruned runs on the second)", "",
              ("| model | target | threshold | min depth | calib. agreement | calib. candidate-layers | "
              "measured agreement (min) | measured candidate-layers |"), "|---|---|---|---|---|---|---|---|"]
    for name, entry in models.items():
        for row in entry["calibration"]:
            if row["threshold"] is None:
                lines.append(f"| {name} | {row['target']} | none met the target | — | — | 100% | — | 100% |")
                continue
            lines.append(f"| {name} | {row['target']} | {row['threshold']:.4g} | {row['min_depth']} | "
                         f"{row['calibration_agreement']:.4f} | {_pct(row['calibration_fraction'])} | "
                         f"{row['measured_agreement']:.4f} ({row['min_agreement']:.2f}) | "
                         f"{_pct(row['measured_fraction'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from edgekit.demo import bundled_minilm_path, cache_dir

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--no-ds-model", type=Path,
                        default=default_model_dir().parent / f"{default_model_dir().name}-no-deep-supervision")
    parser.add_argument("--per-layer-model", type=Path,
                        default=default_model_dir().parent / f"{default_model_dir().name}-per-layer-heads")
    parser.add_argument("--out", type=Path, default=Path("docs/CROSS_ENCODER.md"))
    parser.add_argument("--work", type=Path, default=cache_dir() / "reports" / "cross-encoder")
    parser.add_argument("--held-out", type=int, default=60, help="held-out queries")
    args = parser.parse_args()
    models = {"bi-encoder-minilm": bundled_minilm_path(), "cross-encoder-deep-supervision": args.model}
    if (args.no_ds_model / "model.safetensors").is_file():
        models["cross-encoder-final-layer-only"] = args.no_ds_model
    if (args.per_layer_model / "model.safetensors").is_file():
        models["cross-encoder-per-layer-heads"] = args.per_layer_model
    results = measure(models, args.work, args.held_out)
    (args.work / "report.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    kept = ""
    if args.out.is_file():
        text = args.out.read_text(encoding="utf-8")
        kept = text[text.index("## Reading"):] if "## Reading" in text else ""
    args.out.write_text(render(results) + ("\n" + kept if kept else ""), encoding="utf-8")
    print(f"wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
