"""Render an `edgekit bench select` report: a markdown section and a matplotlib figure."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path
from typing import Any

BASELINE_LATENCY = "onnx-monolithic-batched"
BASELINE_MEMORY = "onnx-monolithic"


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variant["name"]: variant for variant in report["variants"]}


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}×" if value is not None and base else "—"


def _fmt(value: Any, pattern: str = "{:.3f}") -> str:
    return "—" if value is None else pattern.format(value)


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(report: dict[str, Any], command: str, title: str) -> str:
    """A self-contained section, fenced by markers so a rerun replaces it."""
    work, variants = report["workload"], _by_name(report)
    base_latency = variants.get(BASELINE_LATENCY, {}).get("latency_ms_median")
    base_memory = variants.get(BASELINE_MEMORY, {}).get("peak_rss_mb")
    base_batched_memory = variants.get(BASELINE_LATENCY, {}).get("peak_rss_mb")
    lines = [
        f"<!-- bench:select:{_slug(title)}:start -->",
        f"## {title}",
        "",
        f"Command: `{command}` ({_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC)",
        "",
        f"- Machine: {_cpu()}, {os.cpu_count()} cores; {work['threads']} threads per variant, each variant in its "
        f"own process; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.",
        f"- Workload: {work['queries_measured']} queries × {work['candidates_per_query']:.0f} candidates, top-{work['top_k']}"
        f" ({work['family']} {work['task']}, {work['layers']} layers); "
        f"{'calibrated on the other ' + str(work['queries_calibration']) + ' queries' if work['queries_calibration'] else 'no split'}."
        f" Monolithic batch {work['batch']}; edgekit window {work['window']}, chunk {work['chunk']}.",
        f"- Agreement = mean top-{work['top_k']} set overlap with `{work['reference']}` (transformers eager, the full "
        "model). Latency per query includes tokenisation and, for edgekit, loading every graph again.",
    ]
    lines += [_calibration_line(policy, calibration) for policy, calibration in (report.get("calibration") or {}).items()]
    for row in report.get("held_out") or []:
        lines.append(f"- Held out ({row['queries']} queries the calibration never saw), `{row['variant']}`: top-K set "
                     f"kept whole on {row['exact_share']:.1%} (target {row['target']:.1%}: "
                     f"{'met' if row['meets_target'] else 'NOT met'}), agreement {row['agreement']:.4f} with "
                     f"`{row['reference']}`.")
    lines += [
        "",
        "| variant | median ms | p90 ms | peak RSS MiB | latency × batched | RSS × monolithic | RSS × batched | "
        "agreement | P@K | cand.×layers |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in variants.items():
        lines.append(
            f"| {name} | {v['latency_ms_median']:.0f} | {v['latency_ms_p90']:.0f} | {_fmt(v['peak_rss_mb'], '{:.0f}')} | "
            f"{_ratio(v['latency_ms_median'], base_latency)} | {_ratio(v['peak_rss_mb'], base_memory)} | "
            f"{_ratio(v['peak_rss_mb'], base_batched_memory)} | {_fmt(v.get('agreement'), '{:.4f}')} | "
            f"{_fmt(v.get('precision_at_k'), '{:.3f}')} | {v['candidate_layers_fraction']:.1%} |"
        )
    if report.get("sweep"):
        lines += ["", "Peak RSS (MiB) as the candidate count grows, one query:", "",
                  "| candidates | " + " | ".join(sorted({r["variant"] for r in report["sweep"]})) + " |",
                  "|---|" + "---|" * len({r["variant"] for r in report["sweep"]})]
        for count in sorted({r["candidates"] for r in report["sweep"]}):
            cells = {r["variant"]: r["peak_rss_mb"] for r in report["sweep"] if r["candidates"] == count}
            lines.append(f"| {count} | " + " | ".join(_fmt(cells.get(n), "{:.0f}") for n in sorted(cells)) + " |")
    lines += ["", f"<!-- bench:select:{_slug(title)}:end -->", ""]
    return "\n".join(lines)


def _calibration_line(policy: str, calibration: dict[str, Any]) -> str:
    params = calibration.get("params")
    if params is None and calibration.get("threshold") is not None:  # the first calibration shape
        params = {"threshold": calibration["threshold"], "min_depth": calibration.get("min_depth")}
    target = calibration.get("target_agreement")
    if not params:
        return (f"- Calibration, {policy}: no setting certified for target {target} from "
                f"{calibration.get('samples', calibration.get('queries'))} queries (it runs exact).")
    setting = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in params.items())
    bound = calibration.get("lower_bound")
    guarantee = (f"top-K kept whole on >= {bound:.4f} of new queries with probability >= {1 - calibration['delta']:g} "
                 f"(from {calibration.get('samples')} queries)" if bound is not None and "delta" in calibration
                 else "no bound (calibrated before bounds were stored)")
    return (f"- Calibration, {policy}: {setting}; {guarantee}; agreement "
            f"{_fmt(calibration.get('agreement'), '{:.4f}')} on the calibration half (target {target}).")


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]


def append_markdown(path: Path, section: str) -> None:
    """Replace the section with the same markers in `path`, or append it."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n\n"
    start = section.splitlines()[0]
    end = start.replace(":start", ":end")
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section.rstrip("\n") + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency vs agreement, and peak RSS per variant (and the sweep when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = report["variants"]
    panels = 3 if report.get("sweep") else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2))
    markers = "osD^vP*X"
    for number, v in enumerate(variants):
        axes[0].scatter(v["latency_ms_median"], v.get("agreement", 1.0), s=60, marker=markers[number % len(markers)],
                        label=v["name"])
    axes[0].set(xlabel="median latency per query (ms)", ylabel="top-K agreement with torch",
                title="latency vs agreement")
    axes[0].legend(fontsize=7)
    names = [v["name"] for v in variants]
    axes[1].barh(names, [v["peak_rss_mb"] or 0 for v in variants], color="tab:orange")
    axes[1].set(xlabel="peak RSS (MiB)", title="peak memory per variant")
    if panels == 3:
        for name in sorted({r["variant"] for r in report["sweep"]}):
            rows = sorted((r for r in report["sweep"] if r["variant"] == name), key=lambda r: r["candidates"])
            axes[2].plot([r["candidates"] for r in rows], [r["peak_rss_mb"] for r in rows], marker="o", label=name)
        axes[2].set(xlabel="candidates (one query)", ylabel="peak RSS (MiB)", title="memory as N grows")
        axes[2].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
