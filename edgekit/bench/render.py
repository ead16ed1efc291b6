"""Render a `Report` (edgekit/bench/report.py): a markdown section for docs/BENCHMARKS.md, a PNG,
and the section written into a markdown file (replaced on rerun). JSON is `Report.to_json`.

Every command renders through here, so every table has the same shape: one row per variant (the
baseline's marked), its raw measurements, a column per ratio ("latency × onnx-monolithic") and a
column per output comparison ("top-K agree vs torch"). matplotlib is imported only by `plot`
(the bench extra).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgekit.bench.report import Quality, Report, Variant

QUALITY_LABELS = {"top_k_agreement": "top-K agree", "same_order": "same order", "max_abs_diff": "max abs diff",
                  "psnr_db": "PSNR dB", "precision_at_k": "P@K", "recall_at_k": "R@K"}
MEASURE_LABELS = {"latency": "latency", "peak_rss": "peak RSS"}
MAX_INLINE_QUALITY = 5  # more output comparisons than this go to their own table


def number(value: Any) -> str:
    """A table cell: — for missing, inf, integers as such, then 3 significant digits or whole units."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


def label(key: str) -> str:
    """A figure's key as a column header: `rss_above_imports_mb` -> `rss above imports MiB`."""
    for suffix, unit in (("_mb", " MiB"), ("_ms", " ms"), ("_db", " dB")):
        if key.endswith(suffix):
            key = key[: -len(suffix)] + unit
    return key.replace("_", " ")


def _times(value: float | None, spread: tuple[float, float] | None = None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}×" + (f" ({spread[0]:.2f}–{spread[1]:.2f})" if spread else "")


def _quality_cell(metric: str, value: Any) -> str:
    if value is None or isinstance(value, bool):
        return number(value)
    if metric == "psnr_db":
        return "inf" if math.isinf(value) else f"{value:.1f}"
    if metric == "max_abs_diff":
        return f"{value:.2g}"
    return f"{value:.4f}" if metric == "top_k_agreement" else f"{value:.3f}"


def _quality_columns(variants: tuple[Variant, ...]) -> list[tuple[str, str, str]]:
    """(reference, output, metric) for every comparison some variant reports, in first-seen order."""
    found: dict[tuple[str, str, str], None] = {}
    for v in variants:
        for q in v.quality:
            for metric in QUALITY_LABELS:
                if getattr(q, metric) is not None:
                    found[(q.reference, q.output, metric)] = None
    return list(found)


def _quality_header(reference: str, output: str, metric: str) -> str:
    shown = "" if output in ("scores", "top-k") or metric in ("precision_at_k", "recall_at_k") else f"{output} "
    return f"{shown}{QUALITY_LABELS[metric]} vs {reference}"


def _quality_value(v: Variant, reference: str, output: str, metric: str) -> str:
    q: Quality | None = v.compared_with(reference, output)
    return _quality_cell(metric, getattr(q, metric) if q else None)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _table(columns: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(columns), "|" + "---|" * len(columns), *(_row(r) for r in rows)]


def variant_table(report: Report) -> list[str]:
    """One row per variant: raw measurements, then a column per ratio, then (few) quality columns."""
    variants = report.variants
    figures = list(dict.fromkeys(key for v in variants for key in v.figures))
    ratios = list(dict.fromkeys((r.measure, r.baseline) for v in variants for r in v.ratios))
    quality = _quality_columns(variants)
    inline = quality if len(quality) <= MAX_INLINE_QUALITY else []
    spread = "p90 ms" if any(v.latency_ms_p90 is not None for v in variants) else "range ms"
    has_spread = any(v.latency_ms_p90 is not None or v.latency_ms_range for v in variants)
    columns = ["variant", "median ms", *([spread] if has_spread else []), "peak RSS MiB",
               *(label(key) for key in figures),
               *(f"{MEASURE_LABELS.get(m, m.replace('_', ' '))} × {b}" for m, b in ratios),
               *(_quality_header(*c) for c in inline)]
    rows = []
    for v in variants:
        name = f"{v.name} (baseline)" if v.name == report.baseline else v.name
        low_high = (number(v.latency_ms_p90) if spread == "p90 ms" else
                    (f"{number(v.latency_ms_range[0])}–{number(v.latency_ms_range[1])}" if v.latency_ms_range else "—"))
        cells = [name, number(v.latency_ms), *([low_high] if has_spread else []), number(v.peak_rss_mb),
                 *(number(v.figures.get(key)) for key in figures)]
        for measure, baseline in ratios:
            found = v.ratio(measure, baseline)
            cells.append(_times(found.value, found.range) if found else "—")
        cells += [_quality_value(v, *c) for c in inline]
        rows.append(cells)
    lines = _table(columns, rows)
    if quality and not inline:
        lines += ["", "Outputs compared:", "",
                  *_table(["variant", *(_quality_header(*c) for c in quality)],
                          [[v.name, *(_quality_value(v, *c) for c in quality)] for v in variants])]
    return lines


def stage_table(report: Report) -> list[str]:
    names = list(dict.fromkeys(s.name for v in report.variants for s in v.stages))
    if not names:
        return []
    columns = ["variant", *(f"{n} ms" for n in names), *(f"{n} peak RSS MiB" for n in names)]
    rows = [[v.name, *(number(s.ms) if (s := v.stage(n)) else "—" for n in names),
             *(number(s.peak_rss_mb) if (s := v.stage(n)) else "—" for n in names)] for v in report.variants]
    return ["", "Per stage (wall time; peak RSS during the stage):", "", *_table(columns, rows)]


def _workload_lines(report: Report) -> list[str]:
    w, m = report.workload, report.workload.machine
    machine = ", ".join(part for part in (m.cpu, f"{m.cores} cores" if m.cores else "",
                                          f"{m.memory_gib} GiB" if m.memory_gib else "", m.os) if part)
    load = f"; load average {', '.join(f'{x:.2f}' for x in m.load_average)}" if m.load_average else ""
    threads = f"{w.threads} threads per variant, " if w.threads else ""
    lines = [f"- Machine: {machine}; provider {w.provider}; {threads}{w.isolation}{load}."]
    if w.subject or w.data:
        lines.append("- Subject: " + "; ".join(p for p in (w.subject, f"data {w.data}" if w.data else "") if p) + ".")
    if w.sizes:
        lines.append("- Sizes: " + ", ".join(f"{k.replace('_', ' ')} {number(v)}" for k, v in w.sizes.items()) + ".")
    if w.settings:
        lines.append("- Settings: " + ", ".join(f"{k.replace('_', ' ')} {number(v) if not isinstance(v, (dict, list)) else v}"
                                              for k, v in w.settings.items()) + ".")
    reference = f"; outputs compared with `{report.reference}`" if report.reference else ""
    if report.variant(report.baseline) is None:
        lines.append(f"- Baseline: `{report.baseline}`, not run in this command (no ratios against it){reference}.")
    else:
        lines.append(f"- Baseline: `{report.baseline}` (every ratio is against it unless its column names another "
                     f"variant){reference}.")
    return lines + [f"- {note}" for note in report.notes]


def markdown(report: Report) -> str:
    """A self-contained section fenced by `<!-- bench:{key}:start/end -->`, so a rerun replaces it."""
    w = report.workload
    lines = [f"<!-- bench:{w.key}:start -->", f"## {w.title}", "", f"Command: `{w.command}` ({w.date})", "",
             *_workload_lines(report), "", *variant_table(report), *stage_table(report)]
    for table in report.tables:
        lines += ["", f"{table.title}:", "", *_table(list(table.columns), [[number(c) for c in r] for r in table.rows])]
    if report.verdicts:
        lines += ["", "Targets:", ""]
        for v in report.verdicts:
            outcome = {True: "met", False: "not met", None: "not checked"}[v.met]
            value = f" {_times(v.value)}" if v.value is not None else ""
            target = f" (target {v.target:g}×)" if v.target is not None else ""
            detail = f"; {v.detail}" if v.detail else ""
            lines.append(f"- {v.claim}: {v.variant}{value}{target}{detail} — **{outcome}**")
    lines += [f"<!-- bench:{w.key}:end -->", ""]
    return "\n".join(lines)


INTRO = "# Benchmarks\n\n"


def write_section(path: Path, section: str) -> None:
    """Replace the section with the same markers in `path`, or append it (creating the file)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else INTRO
    start = section.splitlines()[0]
    end = start.replace(":start -->", ":end -->")
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def plot(report: Report, path: Path) -> Path:
    """Latency (stacked by stage when there are stages), peak RSS (per stage when there are stages),
    every ratio against its baseline, latency vs top-K agreement when measured, and a panel per
    plottable table. The baseline's bars are drawn darker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    variants = report.variants
    names = [v.name for v in variants]
    agreements = [(v.latency_ms, q.top_k_agreement) for v in variants for q in v.quality[:1]
                  if q.top_k_agreement is not None and v.latency_ms is not None]
    extra = [t for t in report.tables if t.plot]
    panels = 3 + bool(agreements) + len(extra)
    figure, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.4), squeeze=False)
    axes = list(axes[0])
    y = np.arange(len(names))
    stages = list(dict.fromkeys(s.name for v in variants for s in v.stages))
    colors = ["tab:gray" if n == report.baseline else "tab:blue" for n in names]
    if stages and all(v.stage(s) and v.stage(s).ms is not None for v in variants for s in stages):
        left = np.zeros(len(names))
        for stage in stages:
            values = np.array([v.stage(stage).ms for v in variants])
            axes[0].barh(y, values, left=left, label=stage)
            left += values
        axes[0].legend(fontsize=7)
    else:
        axes[0].barh(y, [v.latency_ms or 0 for v in variants], color=colors)
    axes[0].set(yticks=y, yticklabels=names, xlabel="median latency (ms)", title="latency")
    height = 0.8 / max(1, len(stages))
    for k, stage in enumerate(stages):
        axes[1].barh(y + (k - (len(stages) - 1) / 2) * height,
                     [(v.stage(stage).peak_rss_mb or 0) if v.stage(stage) else 0 for v in variants], height, label=stage)
    if stages:
        axes[1].legend(fontsize=7)
    else:
        axes[1].barh(y, [v.peak_rss_mb or 0 for v in variants], color=colors)
    axes[1].set(yticks=y, yticklabels=names, xlabel="peak RSS (MiB)", title="peak memory")
    measures = list(dict.fromkeys((r.measure, r.baseline) for v in variants for r in v.ratios))
    height = 0.8 / max(1, len(measures))
    for k, (measure, baseline) in enumerate(measures):
        values = [(v.ratio(measure, baseline).value or 0) if v.ratio(measure, baseline) else 0 for v in variants]
        axes[2].barh(y + (k - (len(measures) - 1) / 2) * height, values, height, label=f"{measure} × {baseline}")
    axes[2].axvline(1.0, color="black", linewidth=0.8)
    axes[2].set(yticks=y, yticklabels=names, xlabel="ratio (1 = baseline)", title=f"against {report.baseline}")
    if measures:
        axes[2].legend(fontsize=7)
    for axis in axes[:3]:
        axis.invert_yaxis()  # the first variant on top, as in the table
    next_axis = 3
    if agreements:
        axis = axes[next_axis]
        for v in variants:
            q = v.quality[0] if v.quality else None
            if q is not None and q.top_k_agreement is not None and v.latency_ms is not None:
                axis.scatter(v.latency_ms, q.top_k_agreement, s=50, label=v.name)
        reference = variants[0].quality[0].reference if variants[0].quality else report.reference
        axis.set(xlabel="median latency (ms)", ylabel=f"top-K agreement with {reference}", title="latency vs agreement")
        axis.legend(fontsize=7)
        next_axis += 1
    for table, axis in zip(extra, axes[next_axis:]):
        xs = [row[0] for row in table.rows]
        for column, name in enumerate(table.columns[1:], start=1):
            points = [(x, row[column]) for x, row in zip(xs, table.rows) if row[column] is not None]
            if points:
                axis.plot(*zip(*points), marker="o", label=name)
        axis.set(xlabel=table.columns[0], title=table.title)
        axis.legend(fontsize=7)
    figure.suptitle(report.workload.title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def publish(report: Report, json_path: Path | None = None, markdown_path: Path | None = None,
            plot_path: Path | None = None) -> str:
    """Every bench command's outputs from its one Report: the JSON (`Report.load` reads it back),
    its section written into `markdown_path` (replacing an earlier run's), the PNG. Returns the
    markdown section."""
    section = markdown(report)
    if json_path is not None:
        report.save(json_path)
    if markdown_path is not None:
        write_section(markdown_path, section)
    if plot_path is not None:
        plot(report, plot_path)
    return section
