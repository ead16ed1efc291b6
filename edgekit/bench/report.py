"""One report type for every benchmark command: what ran, against which baseline, what came out.

DESIGN.md §6 asks every speed or memory claim to be a ratio against a named baseline measured in
the same command, with outputs compared every time. A `Report` holds exactly that, typed, so
that every command (`edgekit bench select`, `select-deep`, `video`, `spine`, `attention`,
`attention-cp`) renders the same JSON, markdown and PNG through `edgekit.bench.render` instead of
each writing its own:

- `Workload`: what was run (subject model/package, data, sizes, machine, provider, threads, the
  command line and any settings);
- `baseline`: the variant every `Ratio` is taken against unless the ratio names another one;
- `Variant`s: raw measurements (median latency with its p90 or min–max range, peak RSS, other
  figures, per-stage time and peak), `Ratio`s against a baseline and `Quality` figures (top-K
  agreement, max abs diff, PSNR, Precision@K) against a reference's outputs;
- `Verdict`s (targets checked on the ratios), free-form `notes` and extra `Table`s (a memory
  sweep, a planner's budgets).

The JSON round-trips: `Report.from_json(report.to_json()) == report`. Numbers are floats or
None; `math.inf` (PSNR of identical frames) is written as JSON's `Infinity`, as Python's json does.

Example::

    report = Report(
        workload=Workload(title="Spine", key="spine", command="edgekit bench spine",
                          subject="all-MiniLM-L6-v2", threads=2),
        baseline="onnx-monolithic",
        variants=(Variant("onnx-monolithic", latency_ms=1115.0, peak_rss_mb=506.0,
                          ratios=(Ratio("latency", 1.0, "onnx-monolithic"),)),
                  Variant("edgekit", latency_ms=970.0, peak_rss_mb=231.0,
                          ratios=(Ratio("latency", 0.87, "onnx-monolithic"),),
                          quality=(Quality("onnx-monolithic", top_k_agreement=1.0, max_abs_diff=3.8e-8),))),
    )
    assert Report.from_json(report.to_json()) == report
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "edgekit-bench-report/1"


def _as_json(obj: Any, *names: str) -> None:
    """Free-form fields hold JSON data: stored as JSON would give them back (tuples as lists,
    paths as strings), so a report equals its own round trip."""
    for name in names:
        object.__setattr__(obj, name, json.loads(json.dumps(getattr(obj, name), default=str)))


@dataclass(frozen=True)
class Machine:
    """Where it ran: load average before/after is there because the CPU may be shared."""

    cpu: str = ""
    cores: int | None = None
    memory_gib: float | None = None
    os: str = ""
    load_average: tuple[float, ...] = ()

    @staticmethod
    def here() -> Machine:
        cpu, memory = platform.processor() or platform.machine(), None
        try:
            cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
            meminfo = Path("/proc/meminfo").read_text().split()
            memory = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024, 1)
        except (OSError, StopIteration, ValueError):
            pass
        load = tuple(os.getloadavg()) if hasattr(os, "getloadavg") else ()
        return Machine(cpu=cpu, cores=os.cpu_count(), memory_gib=memory, os=platform.platform(), load_average=load)


@dataclass(frozen=True)
class Workload:
    """What was run. `key` names the markdown section (`<!-- bench:{key}:start -->`), so a
    rerun of the same benchmark replaces its section; `sizes` are the workload's counts
    (queries, candidates, tokens, frames…); `settings` everything else a reader needs to
    reproduce it (batch, chunk, steps, versions…)."""

    title: str
    key: str
    command: str
    subject: str = ""  # the model or package measured
    data: str = ""
    sizes: Mapping[str, Any] = field(default_factory=dict)
    provider: str = "cpu"
    threads: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    machine: Machine = field(default_factory=Machine)
    isolation: str = "each variant in its own process"  # how variants were kept apart, as the markdown says it
    date: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))

    def __post_init__(self) -> None:
        _as_json(self, "sizes", "settings")


@dataclass(frozen=True)
class Stage:
    """One stage of a variant's run (encode / denoise / decode): wall time and peak RSS during it."""

    name: str
    ms: float | None = None
    peak_rss_mb: float | None = None


@dataclass(frozen=True)
class Ratio:
    """`measure` of this variant over the same measure of `baseline` (1.0 for the baseline);
    `range` is [lowest, highest] over rounds when the command ran several."""

    measure: str  # "latency", "peak_rss", "decode_peak", …
    value: float | None
    baseline: str
    range: tuple[float, float] | None = None


@dataclass(frozen=True)
class Quality:
    """This variant's `output` compared with `reference`'s (a variant name, or "labels" for
    Precision@K / recall against relevance labels). Figures that do not apply stay None."""

    reference: str
    output: str = "scores"  # "top-k", "scores", "frames", "latents"
    top_k_agreement: float | None = None
    same_order: bool | None = None
    max_abs_diff: float | None = None
    psnr_db: float | None = None
    precision_at_k: float | None = None
    recall_at_k: float | None = None


@dataclass(frozen=True)
class Variant:
    """One variant's raw measurements, its ratios and its output comparisons. `figures` holds the
    other raw numbers a command measures (load ms, cold ms, device peak…), `details` free-form
    JSON (runtime stats, switches, files written)."""

    name: str
    description: str = ""
    latency_ms: float | None = None  # median
    latency_ms_p90: float | None = None
    latency_ms_range: tuple[float, float] | None = None  # [min, max] over runs
    peak_rss_mb: float | None = None
    figures: Mapping[str, float | None] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()
    ratios: tuple[Ratio, ...] = ()
    quality: tuple[Quality, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _as_json(self, "figures", "details")

    def ratio(self, measure: str, baseline: str | None = None) -> Ratio | None:
        return next((r for r in self.ratios if r.measure == measure and baseline in (None, r.baseline)), None)

    def compared_with(self, reference: str, output: str | None = None) -> Quality | None:
        return next((q for q in self.quality if q.reference == reference and output in (None, q.output)), None)

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)


@dataclass(frozen=True)
class Verdict:
    """A target checked on a measured ratio: `claim` in words, `met` None when not checkable."""

    claim: str
    variant: str
    value: float | None = None
    target: float | None = None
    met: bool | None = None
    detail: str = ""


@dataclass(frozen=True)
class Table:
    """An extra table (a memory sweep, a planner's budgets). With `plot`, the first column is the
    x axis and every other column a line in the PNG."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    plot: bool = False


@dataclass(frozen=True)
class Report:
    workload: Workload
    baseline: str
    variants: tuple[Variant, ...]
    reference: str | None = None  # the variant whose outputs are the reference, when not the baseline
    verdicts: tuple[Verdict, ...] = ()
    notes: tuple[str, ...] = ()
    tables: tuple[Table, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)  # command-specific JSON (calibration, held-out rows)

    def __post_init__(self) -> None:
        _as_json(self, "details")

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self)}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Report:
        if data.get("format") != FORMAT:
            raise ValueError(f"not an edgekit benchmark report (format {data.get('format')!r}, expected {FORMAT!r})")
        work = dict(data["workload"])
        machine = dict(work.pop("machine"))
        machine["load_average"] = tuple(machine.get("load_average") or ())
        return Report(
            workload=Workload(**work, machine=Machine(**machine)),
            baseline=data["baseline"],
            variants=tuple(_variant(v) for v in data["variants"]),
            reference=data.get("reference"),
            verdicts=tuple(Verdict(**v) for v in data.get("verdicts", ())),
            notes=tuple(data.get("notes", ())),
            tables=tuple(Table(t["title"], tuple(t["columns"]), tuple(tuple(row) for row in t["rows"]), t["plot"])
                         for t in data.get("tables", ())),
            details=data.get("details", {}),
        )

    @staticmethod
    def from_json(text: str) -> Report:
        return Report.from_dict(json.loads(text))

    @staticmethod
    def load(path: Path) -> Report:
        return Report.from_json(Path(path).read_text(encoding="utf-8"))


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (value[0], value[1])


def _variant(data: Mapping[str, Any]) -> Variant:
    fields = dict(data)
    fields["latency_ms_range"] = _pair(fields.get("latency_ms_range"))
    fields["stages"] = tuple(Stage(**s) for s in fields.get("stages", ()))
    fields["ratios"] = tuple(Ratio(**{**r, "range": _pair(r.get("range"))}) for r in fields.get("ratios", ()))
    fields["quality"] = tuple(Quality(**q) for q in fields.get("quality", ()))
    return Variant(**fields)


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, None when either is missing or the base is 0."""
    return None if value is None or not base else value / base
