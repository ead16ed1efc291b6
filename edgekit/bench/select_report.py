"""`edgekit bench select`'s measurements as a `Report` (rendered by edgekit/bench/render.py).

Baselines: latency against `onnx-monolithic-batched` (what an app that batches does: candidates
sorted longest-first, then batched, like sentence-transformers' `encode`), peak RSS
against both `onnx-monolithic` (all candidates in one run) and the batched one. Outputs: top-K
set agreement with `torch` (transformers eager, the full model) and, where the data has labels,
Precision@K and recall@K. Calibration and the held-out check become notes (and stay whole in
`details`); the memory sweep becomes a plotted table.
"""

from __future__ import annotations

import re
from typing import Any

from edgekit.bench.report import Machine, Quality, Ratio, Report, Table, Variant, Workload, ratio

BASELINE_LATENCY = "onnx-monolithic-batched"
BASELINE_MEMORY = "onnx-monolithic"
REFERENCE = "torch"


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]


def calibration_note(policy: str, calibration: dict[str, Any]) -> str:
    params = calibration.get("params")
    if params is None and calibration.get("threshold") is not None:  # the first calibration shape
        params = {"threshold": calibration["threshold"], "min_depth": calibration.get("min_depth")}
    target = calibration.get("target_agreement")
    if not params:
        return (f"Calibration, {policy}: no setting certified for target {target} from "
                f"{calibration.get('samples', calibration.get('queries'))} queries (it runs exact).")
    setting = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in params.items())
    bound = calibration.get("lower_bound")
    guarantee = (f"top-K kept whole on >= {bound:.4f} of new queries with probability >= {1 - calibration['delta']:g} "
                 f"(from {calibration.get('samples')} queries)" if bound is not None and "delta" in calibration
                 else "no bound (calibrated before bounds were stored)")
    agreement = calibration.get("agreement")
    shown = "—" if agreement is None else f"{agreement:.4f}"
    return f"Calibration, {policy}: {setting}; {guarantee}; agreement {shown} on the calibration half (target {target})."


def held_out_note(row: dict[str, Any]) -> str:
    return (f"Held out ({row['queries']} queries the calibration never saw), `{row['variant']}`: top-K set kept whole "
            f"on {row['exact_share']:.1%} (target {row['target']:.1%}: {'met' if row['meets_target'] else 'NOT met'}), "
            f"agreement {row['agreement']:.4f} with `{row['reference']}`.")


def _variant(summary: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> Variant:
    batched, mono = baselines.get(BASELINE_LATENCY, {}), baselines.get(BASELINE_MEMORY, {})
    ratios = []
    if batched:
        ratios.append(Ratio("latency", ratio(summary["latency_ms_median"], batched["latency_ms_median"]),
                            BASELINE_LATENCY))
    if mono:
        ratios.append(Ratio("peak_rss", ratio(summary["peak_rss_mb"], mono["peak_rss_mb"]), BASELINE_MEMORY))
    if batched:
        ratios.append(Ratio("peak_rss", ratio(summary["peak_rss_mb"], batched["peak_rss_mb"]), BASELINE_LATENCY))
    quality = []
    if summary.get("agreement") is not None:
        quality.append(Quality(REFERENCE, "top-k", top_k_agreement=summary["agreement"]))
    if summary.get("agreement_package") is not None:
        quality.append(Quality("edgekit-exact", "top-k", top_k_agreement=summary["agreement_package"]))
    if summary.get("precision_at_k") is not None:
        quality.append(Quality("labels", "top-k", precision_at_k=summary["precision_at_k"],
                               recall_at_k=summary["recall_at_k"]))
    return Variant(summary["name"], latency_ms=summary["latency_ms_median"], latency_ms_p90=summary["latency_ms_p90"],
                   peak_rss_mb=summary["peak_rss_mb"],
                   figures={"setup_ms": summary["setup_ms"],
                            "candidate_layers_share": summary["candidate_layers_fraction"]},
                   ratios=tuple(ratios), quality=tuple(quality),
                   details={"candidate_layers": summary["candidate_layers"]})


def sweep_table(sweep: list[dict[str, Any]]) -> Table:
    names = sorted({r["variant"] for r in sweep})
    rows = []
    for count in sorted({r["candidates"] for r in sweep}):
        cells = {r["variant"]: r["peak_rss_mb"] for r in sweep if r["candidates"] == count}
        rows.append((count, *(cells.get(name) for name in names)))
    return Table("Peak RSS (MiB) as the candidate count grows, one query", ("candidates", *names), tuple(rows),
                 plot=True)


def build_report(*, workload: dict[str, Any], summaries: list[dict[str, Any]], calibration: dict[str, Any],
                 held_out: list[dict[str, Any]], sweep: list[dict[str, Any]], command: str, title: str,
                 machine: Machine, optimized: str | None = None, skipped: list[str] | None = None) -> Report:
    """The Report of one `edgekit bench select` run (`summaries`: one per variant, see select.summarise)."""
    w = workload
    title = title or f"Selection: {w['family']} {w['task']} package"
    baselines = {s["name"]: s for s in summaries if s["name"] in (BASELINE_LATENCY, BASELINE_MEMORY)}
    split = (f"calibrated on the other {w['queries_calibration']} queries" if w["queries_calibration"] else "no split")
    notes = [
        f"Agreement = mean top-{w['top_k']} set overlap with `{REFERENCE}` (transformers eager, the full model); "
        "P@K and R@K against the data's relevance labels. Latency per query includes tokenisation and, for "
        f"edgekit, loading every graph again. {split.capitalize()}.",
        "candidate layers share = candidates × layers computed, as a share of running every candidate through every "
        "layer.",
        f"Batched variants (`torch` in 32s, `onnx-monolithic-batched`, `-optimized` in {w['batch']}s) sort the "
        "candidates longest-first by tokenized length (`torch`: by text length, sentence-transformers' `encode` key) "
        "before batching and restore the input order; `onnx-monolithic-batched-inorder` batches in the given order (the baseline "
        "before issue 14). edgekit groups its chunks by length too (runtimes/chunks.py).",
        *([f"`onnx-monolithic-optimized`: {optimized}."] if optimized else []),
        *(["`onnx-monolithic-int8`: the one graph after onnxruntime's `quantize_dynamic` (int8 MatMul weights, "
           "per channel, as `--dtype int8` quantizes each layer), batched longest-first: the baseline a user who "
           "ships an int8 model runs."] if any(s["name"] == "onnx-monolithic-int8" for s in summaries) else []),
        *(calibration_note(policy, c) for policy, c in calibration.items()),
        *(held_out_note(row) for row in held_out),
        *(skipped or []),
    ]
    derived = [s["name"] for s in summaries if s.get("agreement_package") is not None]
    if derived:
        from edgekit.bench.derived import describe

        notes.append(f"{'; '.join(describe(name) for name in derived)}: the package's source exported again "
                     "(edgekit/bench/derived.py) and run as `edgekit-exact`; top-K agreement also against "
                     "`edgekit-exact` (the fp32 per-layer package).")
    return Report(
        workload=Workload(
            title=title, key=f"select:{slug(title)}", command=command, machine=machine,
            subject=f"{w['package']} ({w['family']} {w['task']}, {w['layers']} layers)", data=w["data"],
            sizes={"queries_measured": w["queries_measured"], "queries_calibration": w["queries_calibration"],
                   "candidates_per_query": w["candidates_per_query"], "top_k": w["top_k"]},
            threads=w["threads"],
            settings={"batch": w["batch"], "chunk": w["chunk"], "window": w["window"], "delta": w["delta"],
                      "split": bool(w["queries_calibration"])}),
        baseline=BASELINE_LATENCY,
        reference=w["reference"],
        variants=tuple(_variant(s, baselines) for s in summaries),
        notes=tuple(notes),
        tables=(sweep_table(sweep),) if sweep else (),
        details={"workload": w, "calibration": calibration, "held_out": held_out, "sweep": sweep},
    )
