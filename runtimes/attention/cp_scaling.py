"""The context-parallel scaling sweep: sequence lengths × rank counts, one torchrun launch per
(rank count, length), then time vs length per method and mask (PNG) and the per-rank work
table (markdown).

`edgekit bench attention-cp --nproc 2,4 --seqlens 256,512,1024` runs it (a single rank count
and length is the one-point case). The single-process baseline runs once per length, in the
launch with the fewest ranks. Every launch is validated before the first one starts, so a user
error in any (rank count, length) stops the sweep before it spends time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from edgekit.runtimes.attention.cp_launch import CpConfig, launch_cp


def scaling_configs(base: CpConfig, nprocs: tuple[int, ...], seqlens: tuple[int, ...]) -> list[CpConfig]:
    """One config per (rank count, length), lengths inner; `baseline` only for the fewest ranks."""
    least = min(nprocs)
    return [replace(base, nproc=n, seqlen=s, baseline=base.baseline and n == least)
            for n in sorted(set(nprocs)) for s in sorted(set(seqlens))]


def run_scaling(configs: list[CpConfig], timeout_s: float) -> list[dict[str, object]]:
    """Validate every config, then launch them in order and return all rows."""
    for config in configs:
        config.validate()
    return [row for config in configs for row in launch_cp(config, timeout_s=timeout_s)]


def plot_cp_scaling(rows: list[dict[str, object]], path: Path, title: str = "") -> None:
    """Median ms (slowest rank) vs sequence length, log-log: one panel per (mask, pass), one line
    per (method, world); the single-process baseline dashed. Rows not `ok` are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((str(r["mask"]), str(r.get("pass", "fwd"))) for r in rows))
    cols = min(4, max(1, len(panels)))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, (mask, phase) in zip(axes.flat, panels, strict=False):
        series: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for r in rows:
            if r["mask"] == mask and r.get("pass", "fwd") == phase and r["status"] == "ok":
                label = "single-process" if r["method"] == "single" else f"{r['method']} ×{r['world']}"
                series[label].append((int(r["seqlen"]), float(r["ms_median"])))  # type: ignore[call-overload,arg-type]
        for label, points in sorted(series.items()):
            ax.plot(*zip(*sorted(points), strict=True), marker="o", ms=3, label=label,
                    linestyle="--" if label == "single-process" else "-")
        ax.set_title(f"{mask} {phase}", fontsize=9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length", fontsize=8)
        ax.set_ylabel("ms (slowest rank)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title or "context-parallel attention: time vs length", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def imbalance_table(rows: list[dict[str, object]]) -> str:
    """Markdown: per (method, world, mask, length) the rank areas (allowed pairs × heads, in units
    of the smallest), max/mean and critical-path/mean (cp.Work); passes folded (same work)."""
    lines = ["| method | world (ulysses × ring) | sharding | mask | S | rank areas (÷ smallest) | max/mean "
             "| critical/mean |", "|---|---|---|---|---:|---|---:|---:|"]
    seen = set()
    for r in rows:
        key = (r["method"], r["world"], r["mask"], r["seqlen"])
        if r["method"] == "single" or key in seen or "rank_area" not in r:
            continue
        seen.add(key)
        areas = [int(a) for a in r["rank_area"]]  # type: ignore[attr-defined]
        low = min(areas) or 1
        lines.append(f"| {r['method']} | {r['world']} ({r['ulysses_degree']} × {r['ring_degree']}) | "
                     f"{r['sharding']} | {r['mask']} | {r['seqlen']} | {', '.join(f'{a / low:.2f}' for a in areas)} | "
                     f"{float(r['imbalance']):.3f} | {float(r['critical_imbalance']):.3f} |")  # type: ignore[arg-type]
    return "\n".join(lines) + "\n"
