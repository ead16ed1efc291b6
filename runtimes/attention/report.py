"""Plots and the markdown summary of a sweep (matplotlib with the Agg backend: no display).

Plot: TFLOP/s against sequence length, one panel per mask, one line per kernel and pass;
`oom` cells are drawn as red crosses and `unsupported` cells as grey circles at 0, `wrong`
cells (which are timed) on their line and again as black triangles at 0, each with its own
legend entry, so none of them reads as a slow kernel.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from edgekit.runtimes.attention.measure import Row

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
    """Context-parallel rows: method, layout, mask, slowest-rank time, status, max error."""
    lines = ["## Context-parallel attention", "",
             "| method | world (ulysses × ring) | sharding | mask | S | ms median (p20–p80) | TFLOP/s | peak MB "
             "| status | max err |",
             "|---|---|---|---|---:|---|---:|---:|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['world']} ({r['ulysses_degree']} × {r['ring_degree']}) | {r['sharding']} | "
            f"{r['mask']} | {r['seqlen']} | {r['ms_median']:.2f} ({r['ms_p20']:.2f}–{r['ms_p80']:.2f}) | "
            f"{r['tflops']:.4f} | {r['peak_mem_mb']:.1f} | {r['status']} | {r['max_err']:.1e} |")
    return "\n".join(lines) + "\n"
