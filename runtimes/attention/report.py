"""Plots and the markdown summary of a sweep (matplotlib with the Agg backend: no display).

Plot: TFLOP/s against sequence length, one panel per mask, one line per kernel and pass;
`oom` cells are drawn as red crosses and `unsupported` cells as grey circles at 0, `wrong`
cells (which are timed) on their line and again as black triangles at 0, each with its own
legend entry, so none of them reads as a slow kernel.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.runtimes.attention.measure import Row

if TYPE_CHECKING:
    from edgekit.bench.report import Report

# Cells without a time are drawn at 0 TFLOP/s with a marker per status.
STATUS_MARKERS: dict[str, tuple[str, str]] = {"oom": ("x", "red"), "unsupported": ("o", "darkgrey"),
                                              "wrong": ("^", "black")}


def plot_tflops(rows: list[Row], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    masks = list(dict.fromkeys(r.mask for r in rows))
    cols = min(4, max(1, len(masks)))
    nrows = math.ceil(len(masks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, mask in zip(axes.flat, masks, strict=False):
        series: dict[str, list[Row]] = defaultdict(list)
        for r in rows:
            if r.mask == mask:
                series[f"{r.kernel} {r.pass_}"].append(r)
        for label, cells in series.items():
            ok = sorted((c.seqlen, c.tflops) for c in cells if c.status in ("ok", "wrong") and c.tflops)
            if ok:
                ax.plot(*zip(*ok, strict=True), marker="o", ms=3, label=label)
            for status, (marker, color) in STATUS_MARKERS.items():
                xs = [c.seqlen for c in cells if c.status == status]
                if xs:
                    ax.scatter(xs, [0] * len(xs), marker=marker, color=color,
                               zorder=3 if status == "unsupported" else 4)
        ax.set_title(mask, fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length", fontsize=8)
        ax.set_ylabel("TFLOP/s", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(masks):]:
        ax.axis("off")
    from matplotlib.lines import Line2D

    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    for status, (marker, color) in STATUS_MARKERS.items():  # one legend entry per status marker
        if any(r.status == status for r in rows):
            lab = f"{status} (drawn at 0)"
            handles[lab] = Line2D([], [], marker=marker, color=color, linestyle="")
            labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", fontsize=7,
               ncol=min(4, max(1, len(labels))), bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(title or "attention TFLOP/s", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * math.ceil(len(labels) / 4), 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def markdown_summary(rows: list[Row], heading: str = "Attention sweep") -> str:
    """One table row per cell: median ms (p20–p80), TFLOP/s, peak MB, status, max error."""
    lines = [f"## {heading}", "",
             "| mask | S | kernel | pass | status | ms median (p20–p80) | TFLOP/s | peak MB | max err |",
             "|---|---:|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        ms = "—" if r.ms_median is None else f"{r.ms_median:.2f} ({r.ms_p20:.2f}–{r.ms_p80:.2f})"
        lines.append(f"| {r.mask} | {r.seqlen} | {r.kernel} | {r.pass_} | {r.status} | {ms} | "
                     f"{_fmt(r.tflops, '.3f')} | {_fmt(r.peak_mem_mb, '.1f')} | {_fmt(r.max_err, '.1e')} |")
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r.status] += 1
    lines += ["", "Cells: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), ""]
    notes = sorted({f"{r.kernel} {r.pass_}: {r.note}" for r in rows if r.status == "unsupported" and r.note})
    if notes:
        lines += ["Unsupported, and why:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def markdown_cp_summary(rows: list[dict[str, object]]) -> str:
    """Context-parallel rows: method, layout, mask, pass, slowest-rank time, status, max error, and
    the per-rank work imbalance (max/mean of the rank areas; critical path/mean, see cp.Work)."""
    lines = ["## Context-parallel attention", "",
             "| method | world (ulysses × ring) | sharding | mask | S | pass | ms median (p20–p80) | TFLOP/s "
             "| peak MB | status | max err | imbalance | critical/mean |",
             "|---|---|---|---|---:|---|---|---:|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['world']} ({r['ulysses_degree']} × {r['ring_degree']}) | {r['sharding']} | "
            f"{r['mask']} | {r['seqlen']} | {r.get('pass', 'fwd')} | {r['ms_median']:.2f} ({r['ms_p20']:.2f}–"
            f"{r['ms_p80']:.2f}) | {r['tflops']:.4f} | {r['peak_mem_mb']:.1f} | {r['status']} | {r['max_err']:.1e} | "
            f"{_fmt(r.get('imbalance'), '.3f')} | {_fmt(r.get('critical_imbalance'), '.3f')} |")  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"


# --- The typed benchmark report (edgekit/bench/report.py) of a sweep and of a context-parallel run ---

BASELINE_KERNEL = "sdpa-math"


def _geomean(values: list[float]) -> float | None:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _reference_name(dtype: str) -> str:
    """The high-precision math reference `max_err` is taken against (reference.high_precision)."""
    return "math-float64" if dtype in ("float32", "float64") else "math-float32"


def sweep_baseline(kernels: list[str] | tuple[str, ...]) -> str:
    """The kernel every ratio is against: SDPA's math backend (plain eager attention: no capability
    check rejects it, on CPU or CUDA, for any mask, dtype or pass), else the first kernel swept."""
    return BASELINE_KERNEL if BASELINE_KERNEL in kernels else kernels[0]


def sweep_report(rows: list[Row], *, command: str, where: str, settings: dict[str, object] | None = None,
                 threads: int | None = None) -> Report:
    """One Variant per (kernel, pass): cell counts by status, median ms over its ok cells, the
    geometric mean of its per-cell time ratio against the baseline kernel's same pass over the
    cells where both ran ok, and its largest max abs diff against the high-precision reference;
    one Table per mask (rows: length; columns: kernel-pass TFLOP/s, or the status)."""
    from edgekit.bench.report import Machine, Quality, Ratio, Table, Variant, Workload
    from edgekit.bench.report import Report as BenchReport

    kernels = list(dict.fromkeys(r.kernel for r in rows))
    passes = list(dict.fromkeys(r.pass_ for r in rows))
    masks = list(dict.fromkeys(r.mask for r in rows))
    seqlens = sorted({r.seqlen for r in rows})
    base_kernel = sweep_baseline(kernels)
    names = [f"{k} {p}" for k in kernels for p in passes]
    cells = {(f"{r.kernel} {r.pass_}", r.mask, r.seqlen): r for r in rows}
    dtype = rows[0].dtype if rows else ""
    reference = _reference_name(dtype)
    variants = []
    for kernel in kernels:
        for pass_ in passes:
            name, base = f"{kernel} {pass_}", f"{base_kernel} {pass_}"
            mine = [r for r in rows if r.kernel == kernel and r.pass_ == pass_]
            ok = [r for r in mine if r.status == "ok" and r.ms_median is not None]
            figures: dict[str, float | None] = {s: sum(r.status == s for r in mine)
                                                for s in ("ok", "unsupported", "oom", "wrong")}
            per_cell = []
            for r in ok:
                b = cells.get((base, r.mask, r.seqlen))
                if b is not None and b.status == "ok" and b.ms_median:
                    per_cell.append(r.ms_median / b.ms_median)
            figures["cells_compared"] = len(per_cell)
            peaks = [r.peak_mem_mb for r in mine if r.peak_mem_mb is not None]
            figures["max_peak_mem_mb"] = max(peaks) if peaks else None
            errs = [r.max_err for r in mine if r.max_err is not None]
            ratios = (Ratio("latency", _geomean(per_cell), base,
                            (min(per_cell), max(per_cell)) if per_cell else None),)
            quality = (Quality(reference, output="out" if pass_ == "fwd" else "out+grads",
                               max_abs_diff=max(errs) if errs else None),) if errs else ()
            reasons = sorted({r.note for r in mine if r.status in ("unsupported", "oom") and r.note})
            variants.append(Variant(
                name, description=f"{kernel}, {pass_} pass, {len(mine)} cells",
                latency_ms=statistics.median(r.ms_median for r in ok) if ok else None,  # type: ignore[type-var]
                figures=figures, ratios=ratios, quality=quality, details={"not run": reasons} if reasons else {}))
    tables = []
    for mask in masks:
        table_rows = []
        for s in seqlens:
            row: list[object] = [s]
            for name in names:
                r = cells.get((name, mask, s))
                if r is None:
                    row.append("—")
                elif r.status == "ok":
                    row.append(r.tflops)
                elif r.status == "wrong" and r.tflops is not None:
                    row.append(f"wrong ({r.tflops:.3g})")
                else:
                    row.append(r.status)
            table_rows.append(tuple(row))
        tables.append(Table(f"{mask}: TFLOP/s from the exact mask area (or the cell's status)",
                            ("seqlen", *names), tuple(table_rows)))
    notes = (
        f"Baseline `{base_kernel}`: PyTorch SDPA pinned to its math backend (plain eager attention over a "
        "dense mask). It is the one kernel no capability check rejects on any device, mask, dtype or pass, so "
        "it has every cell the others are compared on" if base_kernel == BASELINE_KERNEL else
        f"Baseline `{base_kernel}`: the first kernel swept ({BASELINE_KERNEL} was not among --kernels).",
        "Latency ratio: geometric mean over the (mask, length) cells where both this variant and the baseline "
        "kernel's same pass ran `ok` of (this cell's median ms / the baseline's); the bracket is the lowest and "
        "highest per-cell ratio, not a spread over rounds; `cells compared` counts those cells. "
        "Backward variants are compared with the baseline's backward.",
        "Median ms: the median over the variant's `ok` cells of each cell's median, so it mixes lengths and "
        "masks; read the ratios and the per-mask tables.",
        f"Max abs diff: the largest over the variant's cells that ran (`ok` or `wrong`) against the "
        f"{reference.replace('math-', 'math reference in ')} (out, and dq, dk, dv for bwd); "
        "`wrong` means a cell failed the FlashAttention-3 criterion (docs/ATTENTION.md).",
        "Per-cell rows (p20/p80, peak memory, error, tolerance, why a cell is unsupported) are in "
        "attention.jsonl / attention.csv; the TFLOP/s panels in attention.png.",
    )
    first = rows[0] if rows else None
    workload = Workload(
        title=f"Attention kernels on {where} ({dtype})", key="attention", command=command,
        subject=f"kernels {', '.join(kernels)}", data=f"masks {', '.join(masks)}",
        sizes={"cells": len(rows), "masks": len(masks), "lengths": len(seqlens), "kernels": len(kernels),
               "batch": first.batch if first else 0, "heads": first.heads if first else 0,
               "kv_heads": first.kv_heads if first else 0, "head_dim": first.head_dim if first else 0},
        provider=first.device if first else "cpu", threads=threads,
        settings={"device": where, "dtype": dtype, "masks": masks, "seqlens": seqlens, "kernels": kernels,
                  "passes": passes, **(settings or {})},
        machine=Machine.here(), isolation="every kernel in this one process, cell after cell")
    return BenchReport(workload=workload, baseline=f"{base_kernel} {passes[0] if passes else 'fwd'}",
                       variants=tuple(variants), reference=reference, notes=notes, tables=tuple(tables),
                       details={"status_counts": {s: sum(r.status == s for r in rows)
                                                  for s in ("ok", "unsupported", "oom", "wrong")}})


CP_BASELINE = "single-process"


def cp_report(rows: list[dict[str, object]], *, command: str, settings: dict[str, object] | None = None) -> Report:
    """One Variant per (method, mask) and one per mask for the baseline (method `single`: the same
    tiled attention over the whole sequence in one process, timed on rank 0 alone): median ms
    (slowest rank), its latency ratio against the same mask's baseline, and its max abs diff
    against the high-precision reference."""
    from edgekit.bench.report import Machine, Quality, Ratio, Variant, Workload
    from edgekit.bench.report import Report as BenchReport

    passes = {r.get("pass", "fwd") for r in rows}
    lengths = {r["seqlen"] for r in rows}
    worlds = {r["world"] for r in rows if r["method"] != "single"}

    def cell(r: dict[str, object]) -> str:  # pass and length join the name only when rows vary in them
        return " ".join([str(r["mask"]), *([str(r.get("pass", "fwd"))] if len(passes) > 1 else []),
                         *([f"S={r['seqlen']}"] if len(lengths) > 1 else [])])

    def name(r: dict[str, object]) -> str:
        if r["method"] == "single":
            return f"{CP_BASELINE} {cell(r)}"
        world = f" ×{r['world']}" if len(worlds) > 1 else ""
        return f"{r['method']}{world} {cell(r)}"

    ordered = sorted(rows, key=lambda r: r["method"] != "single")  # baselines first, each group in run order
    base_ms = {cell(r): r["ms_median"] for r in rows if r["method"] == "single" and r["status"] == "ok"}
    dtype = str(rows[0]["dtype"]) if rows else ""
    reference = _reference_name(dtype)
    variants = []
    for r in ordered:
        ms = r.get("ms_median")
        base = f"{CP_BASELINE} {cell(r)}"
        value = ms / base_ms[cell(r)] if r["status"] == "ok" and cell(r) in base_ms and ms else None  # type: ignore[operator]
        layout = f"world {r['world']} (ulysses {r['ulysses_degree']} × ring {r['ring_degree']}), {r['sharding']} sharding"
        variants.append(Variant(
            name(r), description=f"{r['kernel']} on {r['mask']}: {layout}; status {r['status']}",
            latency_ms=ms,  # type: ignore[arg-type]
            figures={"p20_ms": r.get("ms_p20"), "p80_ms": r.get("ms_p80"), "tflops": r.get("tflops"),  # type: ignore[dict-item]
                     "peak_mem_mb": r.get("peak_mem_mb"), "world": r["world"],  # type: ignore[dict-item]
                     "imbalance": r.get("imbalance"), "critical_imbalance": r.get("critical_imbalance")},  # type: ignore[dict-item]
            ratios=(Ratio("latency", value, base),),
            quality=(Quality(reference, output="out" if r.get("pass", "fwd") == "fwd" else "out+grads",
                             max_abs_diff=r.get("max_err")),),  # type: ignore[arg-type]
            details={"status": r["status"], "ulysses_degree": r["ulysses_degree"], "ring_degree": r["ring_degree"],
                     "sharding": r["sharding"], "backend": r.get("backend"), "tol": r.get("tol")}))
    masks = list(dict.fromkeys(str(r["mask"]) for r in rows))
    methods = list(dict.fromkeys(str(r["method"]) for r in rows if r["method"] != "single"))
    first = rows[0] if rows else {}
    world = max((int(r["world"]) for r in rows), default=0)  # type: ignore[call-overload]
    notes = (
        f"Baseline `{CP_BASELINE} <mask>`: full (non-parallel) attention, the same tiled online-softmax "
        "attention the ring runs per shard pair, over the whole sequence in one process (rank 0, while the "
        "other ranks wait), so a ratio is what splitting the sequence across the world buys.",
        "Latency: median over repetitions of the slowest rank's time per repetition (the baseline: its one "
        "process); ratio = this variant's median ms / its mask's baseline median ms (below 1: faster).",
        "Max abs diff: the output (bwd rows: and dQ, dK, dV) gathered on rank 0 against the "
        f"{reference.replace('math-', 'math reference in ')}; "
        "each row's status (ok / wrong by the FlashAttention-3 criterion) is in its description.",
        "Per-row p20/p80, peak memory and tolerance are also in attention_cp.jsonl / attention_cp.csv.",
        "bwd rows time the distributed backward alone, after an untimed forward; their FLOPs are 2.5× the "
        "forward's exact-area FLOPs. Figures imbalance / critical_imbalance: the per-rank work of the layout "
        "from the mask's rectangles (busiest rank / mean; critical path / mean), not a measurement.",
    )
    workload = Workload(
        title=f"Context-parallel attention ({', '.join(methods)}) on {', '.join(str(w) for w in sorted(worlds))} "
              "processes",
        key="attention-cp", command=command, subject=f"methods {', '.join(methods)}", data=f"masks {', '.join(masks)}",
        sizes={"seqlen": max(int(x) for x in lengths), "batch": first.get("batch"),  # type: ignore[call-overload] "heads": first.get("heads"),
               "head_dim": first.get("head_dim"), "world": world},
        provider=str(first.get("device", "cpu")),
        settings={"dtype": dtype, "backend": next((r.get("backend") for r in rows if r["method"] != "single"), None),
                  "masks": masks, "methods": methods, "seqlens": sorted(int(x) for x in lengths),  # type: ignore[call-overload]
                  "passes": sorted(str(p) for p in passes), **(settings or {})},
        machine=Machine.here(), isolation="every method under one torchrun launch per (processes, length), "
                                          "one after another")
    first_base = next((name(r) for r in ordered if r["method"] == "single"), None)
    return BenchReport(workload=workload, baseline=first_base or (f"{CP_BASELINE} {masks[0]}" if masks else CP_BASELINE),
                       variants=tuple(variants), reference=reference, notes=notes)
