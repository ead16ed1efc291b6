"""`edgekit bench …`: benchmarks against named baselines (JSON, markdown, PNG), each variant in
its own process. Heavy modules are imported inside the commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgekit.bench.derived import DERIVED
from edgekit.bench.select_variant import VARIANTS as BENCH_SELECT_VARIANTS
from edgekit.bench.video_variant import DEFAULT_VARIANTS as VIDEO_DEFAULT_VARIANTS
from edgekit.bench.video_variant import VARIANTS as VIDEO_VARIANTS
from edgekit.bench.video_wan_variant import DEFAULT_ADAPTIVE as WAN_DEFAULT_ADAPTIVE
from edgekit.bench.video_wan_variant import VARIANTS as WAN_VARIANTS
from edgekit.cli_common import stderr, stdout, user_errors

if TYPE_CHECKING:
    from edgekit.bench.report import Report

bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks against named baselines (JSON, markdown, PNG).")


def deep_defaults() -> tuple[str, ...]:
    from edgekit.bench.deep import DeepBench

    return DeepBench.derived


def _publish(report: Report, json_out: Path | None, markdown_file: Path | None, plot: Path | None) -> None:
    """Every bench command's outputs, from its one Report: the markdown section on stdout, and
    as asked the JSON, the section written into `markdown_file` and the PNG."""
    from edgekit.bench.render import publish

    stdout.print(publish(report, json_out, markdown_file, plot), markup=False, highlight=False)


@bench_app.command("select")
@user_errors
def bench_select(
    package: Path = typer.Argument(..., help="Package directory."),
    data: Path = typer.Option(..., "--data", help='JSONL: {"query", "candidates", "relevant"?} per line.'),
    top_k: int = typer.Option(10, "--top-k"),
    threads: int = typer.Option(2, "--threads", help="Threads per variant (each runs in its own process)."),
    batch: int = typer.Option(16, "--batch", help="Candidates per run for the batched onnx-monolithic variants."),
    chunk: int = typer.Option(16, "--chunk", help="edgekit chunk size."),
    queries: int = typer.Option(0, "--queries", help="Use only the first N queries (0: all)."),
    split: bool = typer.Option(True, "--split/--no-split", help="Calibrate on the first half, measure on the rest."),
    target_agreement: float = typer.Option(0.995, "--target-agreement",
                                           help="Share of queries whose top-K set calibration must keep whole."),
    delta: float = typer.Option(0.1, "--delta", help="Calibration: allowed probability the guarantee fails."),
    variants: str = typer.Option(",".join(BENCH_SELECT_VARIANTS), "--variants"),
    sweep: str = typer.Option("", "--memory-sweep", help="Candidate counts for a peak-RSS sweep, e.g. 20,50,100,200."),
    int8_min_agreement: float = typer.Option(None, "--int8-min-agreement",
                                             help="edgekit-int8/-mixed: the export's agreement gate (default: the "
                                                  "exporter's), checked on the calibration half (or all queries)."),
    json_out: Path = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Add/replace the table in docs/BENCHMARKS.md."),
    markdown_file: Path = typer.Option(Path("docs/BENCHMARKS.md"), "--markdown-file"),
    title: str = typer.Option("", "--title", help="Section title in the markdown (default: from the package)."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: latency vs agreement, peak RSS."),
) -> None:
    """Run torch, monolithic ONNX (all at once / batched longest-first / in order / optimized) and edgekit
    (exact / cluster-pruned / rank-stable) on the same queries; pruned variants are calibrated on the first half
    and checked on the second."""
    from edgekit.bench.select import SelectBench, run_select_bench
    from edgekit.errors import InvalidArgumentError

    try:
        counts = tuple(int(x) for x in sweep.split(",") if x.strip())
    except ValueError:
        raise InvalidArgumentError(f"--memory-sweep {sweep!r}: expected comma-separated integers") from None
    config = SelectBench(package=package, data=data, top_k=top_k, threads=threads, batch=batch, chunk=chunk,
                         split=split, target_agreement=target_agreement, delta=delta, queries=queries,
                         variants=tuple(v.strip() for v in variants.split(",") if v.strip()), sweep=counts,
                         command="edgekit " + " ".join(sys.argv[1:]), title=title,
                         int8_min_agreement=int8_min_agreement)
    report = run_select_bench(config, progress=lambda message: stderr.print(f"[bench] {message}"))
    _publish(report, json_out, markdown_file if markdown else None, plot)


@bench_app.command("select-deep")
@user_errors
def bench_select_deep(
    candidates: int = typer.Option(8, "--candidates"),
    tokens: int = typer.Option(128, "--tokens", help="Sequence length of every candidate (prompt included)."),
    top_k: int = typer.Option(5, "--top-k"),
    queries: int = typer.Option(2, "--queries"),
    repeat: int = typer.Option(2, "--repeat", help="Timed runs per query (after one warm-up)."),
    threads: int = typer.Option(2, "--threads", help="Threads per variant (each runs in its own process)."),
    budget_shares: str = typer.Option("0.25,0.09", "--budget-shares",
                                      help="edgekit-budget runs: budgets as shares of the baseline's peak."),
    work: Path = typer.Option(None, "--work", help="Where the model, package and graph are cached."),
    provider: str = typer.Option("cpu", "--provider", help="cpu or cuda (every variant)."),
    optimized: bool = typer.Option(True, "--optimized/--no-optimized",
                                   help="Also run the one graph after onnxruntime's transformer optimizer."),
    derived: str = typer.Option(",".join(deep_defaults()), "--derived",
                                help="Packages exported again from the same checkpoint and run as edgekit "
                                     "(comma-separated; '' for none)."),
    int8_min_agreement: float = typer.Option(None, "--int8-min-agreement",
                                             help="The int8 export's agreement gate (default: the exporter's)."),
    json_out: Path = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Add/replace the section in docs/BENCHMARKS.md."),
    markdown_file: Path = typer.Option(Path("docs/BENCHMARKS.md"), "--markdown-file"),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: latency, peak RSS and ratios per variant."),
) -> None:
    """A Qwen3-0.6B-shaped reranker: edgekit streamed (and under a memory budget), with shared layer sessions and
    int8, vs one ONNX graph."""
    from edgekit.bench import deep
    from edgekit.errors import InvalidArgumentError

    chosen = tuple(name.strip() for name in derived.split(",") if name.strip())
    unknown = [name for name in chosen if name not in DERIVED]
    if unknown:
        raise InvalidArgumentError(f"--derived: unknown {', '.join(unknown)}; choose from {', '.join(DERIVED)}")

    try:
        shares = tuple(float(x) for x in budget_shares.split(",") if x.strip())
    except ValueError:
        raise InvalidArgumentError(f"--budget-shares {budget_shares!r}: expected comma-separated numbers") from None
    if min(candidates, tokens, top_k, queries, repeat, threads) < 1 or not all(0 < x <= 1 for x in shares):
        raise InvalidArgumentError("counts must be >= 1 and every budget share in (0, 1]")
    if provider not in ("cpu", "cuda"):
        raise InvalidArgumentError(f"--provider {provider!r}: use cpu or cuda")
    from edgekit.runtimes.backends import backend_for

    backend_for("onnx", provider)  # an unavailable provider is a one-line error here, not a failed child
    options = {"work": work} if work is not None else {}
    config = deep.DeepBench(provider=provider, candidates=candidates, tokens=tokens, top_k=top_k, queries=queries, repeat=repeat,
                            threads=threads, budget_shares=shares, optimized=optimized, derived=chosen,
                            int8_min_agreement=int8_min_agreement, **options)
    report = deep.run_deep_bench(config, progress=lambda message: stderr.print(f"[bench] {message}"),
                                 command="edgekit " + " ".join(sys.argv[1:]))
    _publish(report, json_out, markdown_file if markdown else None, plot)


@bench_app.command("video")
@user_errors
def bench_video(
    package: Path = typer.Argument(None, help="Video package (default: the family's mid-size random model, built "
                                              "and cached)."),
    family: str = typer.Option("svd", "--family", help="svd (image to video) or wan (text to video)."),
    frames: int = typer.Option(None, "--frames", help="Frames (default: svd 8, wan 9)."),
    size: tuple[int, int] = typer.Option(None, "--size", help="Height and width in pixels (default: svd 256 256, "
                                                              "wan 128 128)."),
    steps: int = typer.Option(10, "--steps"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", help="Threads per variant (each runs in its own process)."),
    variants: str = typer.Option(None, "--variants",
                                 help=f"svd: any of {', '.join(VIDEO_VARIANTS)} (default "
                                      f"{','.join(VIDEO_DEFAULT_VARIANTS)}); wan: any of {', '.join(WAN_VARIANTS)} "
                                      "(default all)."),
    slices: int = typer.Option(None, "--slices", help="svd only: slices per operator group for edgekit-sliced, "
                                                      "-lean, -streamlined (default 4)."),
    step_cache: str = typer.Option(None, "--step-cache",
                                   help="svd only: edgekit-cached, -cached-noswap, -streamlined's step cache "
                                        "(default interval:3)."),
    adaptive: str = typer.Option(None, "--adaptive",
                                 help="svd: edgekit-adaptive's step cache (default adaptive:0.05); wan: "
                                      "edgekit-cached's First-Block-Cache, its threshold also diffusers-fbc's "
                                      f"(default {WAN_DEFAULT_ADAPTIVE})."),
    repeat: int = typer.Option(1, "--repeat", help="Rounds (every variant once per round); medians and ranges."),
    work: Path = typer.Option(None, "--work", help="Where the model, package, baseline graphs and runs are cached."),
    json_out: Path = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Add/replace the section in docs/BENCHMARKS.md."),
    markdown_file: Path = typer.Option(Path("docs/BENCHMARKS.md"), "--markdown-file"),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: peak RSS and latency per stage per variant."),
) -> None:
    """Video: diffusers, one ONNX graph per model and edgekit, per stage. --family svd (image to video: also
    diffusers' memory switches, operator groups, slices, step caches) or wan (text to video: First-Block-Cache
    against diffusers', chunked exact decoding)."""
    from edgekit.errors import InvalidArgumentError

    if family not in ("svd", "wan"):
        raise InvalidArgumentError(f"--family {family!r}: choose svd or wan")
    if family == "wan" and (slices is not None or step_cache is not None):
        raise InvalidArgumentError("--slices and --step-cache are svd options; the wan bench's cache is --adaptive")
    size = size if size and None not in size else ((256, 256) if family == "svd" else (128, 128))
    frames = frames if frames is not None else (8 if family == "svd" else 9)
    names = VIDEO_VARIANTS if family == "svd" else WAN_VARIANTS
    chosen = (tuple(v.strip() for v in variants.split(",") if v.strip()) if variants is not None
              else VIDEO_DEFAULT_VARIANTS if family == "svd" else WAN_VARIANTS)
    unknown = [v for v in chosen if v not in names]
    if unknown or not chosen:
        raise InvalidArgumentError(f"--variants: unknown for --family {family}: {', '.join(unknown) or '(none given)'};"
                                   f" choose from {', '.join(names)}")
    if min(frames, steps, threads, repeat, *size) < 1 or seed < 0 or (slices is not None and slices < 1):
        raise InvalidArgumentError("--frames, --steps, --threads, --slices, --repeat and --size must be >= 1 "
                                   "and --seed >= 0")
    options = {"work": work} if work is not None else {}
    progress = lambda message: stderr.print(f"[bench] {message}")  # noqa: E731
    command = "edgekit " + " ".join(sys.argv[1:])
    if family == "wan":
        from edgekit.bench import video_wan

        config = video_wan.WanVideoBench(package=package, frames=frames, height=size[0], width=size[1], steps=steps,
                                         seed=seed, threads=threads, variants=chosen, repeat=repeat,
                                         adaptive=adaptive or WAN_DEFAULT_ADAPTIVE, **options)
        report = video_wan.run_wan_bench(config, progress=progress, command=command)
    else:
        from edgekit.bench import video
        from edgekit.runtimes.video.step_cache import parse_step_cache

        step_cache, adaptive = step_cache or "interval:3", adaptive or "adaptive:0.05"
        for setting in (step_cache, adaptive):  # a bad setting is one line now, not a failed child later
            parse_step_cache(setting)
        config = video.VideoBench(package=package, frames=frames, height=size[0], width=size[1], steps=steps,
                                  seed=seed, threads=threads, variants=chosen, slices=slices or 4, repeat=repeat,
                                  step_cache=step_cache, adaptive=adaptive, **options)
        report = video.run_video_bench(config, progress=progress, command=command)
    _publish(report, json_out, markdown_file if markdown else None, plot)


@bench_app.command("spine")
@user_errors
def bench_spine(
    candidates: int = typer.Option(100, "--candidates"),
    tokens: int = typer.Option(128, "--tokens", help="Tokens per candidate (at most; specials included)."),
    repeats: int = typer.Option(5, "--repeats", help="Timed calls after one warm-up."),
    threads: int = typer.Option(2, "--threads", help="Threads per variant (each runs in its own process)."),
    batch: int = typer.Option(16, "--batch", help="Candidates per run: the batched baseline, edgekit's chunk."),
    default_options: bool = typer.Option(True, "--default-options/--no-default-options",
                                         help="Also run the monolithic variants with onnxruntime's default options."),
    source: Path = typer.Option(None, "--source", help="sentence-transformers dir (default: bundled all-MiniLM-L6-v2)."),
    cache: Path = typer.Option(Path("out/bench_cache/minilm"), "--cache", help="Where the package is exported."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Export again even if the cache holds the package."),
    json_out: Path = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Add/replace the section in docs/BENCHMARKS.md."),
    markdown_file: Path = typer.Option(Path("docs/BENCHMARKS.md"), "--markdown-file"),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: latency, peak RSS and ratios per variant."),
) -> None:
    """The spine: edgekit streamed vs one monolithic ONNX Runtime graph (all candidates at once and batched)."""
    from edgekit.bench.spine import SpineBench, run_spine_bench

    config = SpineBench(candidates=candidates, tokens=tokens, repeats=repeats, threads=threads, batch=batch,
                        default_options=default_options, source=source, cache=cache, rebuild=rebuild,
                        command="edgekit " + " ".join(sys.argv[1:]))
    report = run_spine_bench(config, progress=lambda message: stderr.print(f"[bench] {message}"))
    _publish(report, json_out, markdown_file if markdown else None, plot)


@bench_app.command("native")
@user_errors
def bench_native(
    candidates: int = typer.Option(100, "--candidates"),
    tokens: int = typer.Option(128, "--tokens", help="Tokens per candidate (at most; specials included)."),
    repeats: int = typer.Option(5, "--repeats", help="Timed calls after one warm-up."),
    threads: int = typer.Option(2, "--threads", help="Threads per variant (each runs in its own process)."),
    chunk: int = typer.Option(16, "--chunk", help="Sequences per graph run, both runtimes."),
    top_k: int = typer.Option(10, "--top-k", help="K of the top-K agreement."),
    resident: bool = typer.Option(True, "--resident/--no-resident",
                                  help="Also run both runtimes with every graph resident."),
    native_bin: Path = typer.Option(None, "--native-bin", help="edgekit-rank (default: build/native/edgekit-rank)."),
    source: Path = typer.Option(None, "--source", help="sentence-transformers dir (default: bundled all-MiniLM-L6-v2)."),
    cache: Path = typer.Option(Path("out/bench_cache/minilm"), "--cache", help="Where the package is exported."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Export again even if the cache holds the package."),
    json_out: Path = typer.Option(None, "--json", help="Write the report as JSON here."),
    markdown: bool = typer.Option(False, "--markdown", help="Add/replace the section in docs/BENCHMARKS.md."),
    markdown_file: Path = typer.Option(Path("docs/BENCHMARKS.md"), "--markdown-file"),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: latency, peak RSS and ratios per variant."),
) -> None:
    """The native C runtime (edgekit-rank, `make native`) vs the Python runtime: same package, query and candidates."""
    from edgekit.bench.native import NativeBench, run_native_bench

    config = NativeBench(candidates=candidates, tokens=tokens, repeats=repeats, threads=threads, chunk=chunk,
                         top_k=top_k, resident=resident, native_bin=native_bin, source=source, cache=cache,
                         rebuild=rebuild, command="edgekit " + " ".join(sys.argv[1:]))
    report = run_native_bench(config, progress=lambda message: stderr.print(f"[bench] {message}"))
    _publish(report, json_out, markdown_file if markdown else None, plot)


def _mount_attention() -> None:
    """The attention benchmark's commands (their module imports torch only when a command runs)."""
    from edgekit.runtimes.attention.cli import attention, attention_cp

    bench_app.command("attention")(user_errors(attention))
    bench_app.command("attention-cp")(user_errors(attention_cp))


_mount_attention()


