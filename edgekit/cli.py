"""The `edgekit` command: thin typer wrappers over the Python API.

User mistakes (every `EdgekitError`) print one line on stderr and exit with code 2. Heavy,
torch-side modules are imported inside the commands that need them, so `edgekit run` starts
without torch. Shared pieces (consoles, one-line errors, progress bars) live in
`edgekit.cli_common`; the `bench` commands in `edgekit.cli_bench`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from edgekit.cli_bench import bench_app
from edgekit.cli_common import progress_bar, stderr, stdout, user_errors
from edgekit.cli_video import TextOptions, calibrate_video, run_video
from edgekit.runtimes.policies import PRUNE_HELP

PUBLIC_KEY_HELP = "Refuse the package unless it is signed by this public key's private half (PEM; the sign extra)."

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Export rerankers as streamed per-layer ONNX packages and run them on edge devices.")


def _export(source: str, out: Path, show: bool, task: str | None, **options: Any) -> Any:
    """Export through the family registry (exporters/families/) with a rich progress bar on stderr
    (when `show`); returns what `export_source` returns (the family and the manifest). Options a
    family does not take (None means not given), a source no family recognises and a missing extra
    are one-line errors."""
    from edgekit.exporters.families import export_source

    with progress_bar(show and stderr.is_terminal) as bar:
        progress = bar.add_task("exporting", total=None)

        def report(message: str, done: int, total: int) -> None:
            bar.update(progress, description=message, completed=done, total=total)

        return export_source(source, out, task=task, progress=report, **options)


@app.command()
@user_errors
def export(
    source: str = typer.Argument(..., help="Checkpoint directory or hub id."),
    out: Path = typer.Option(..., "--out", help="Package directory to write."),
    task: str = typer.Option(None, "--task", help="rerank (cross-encoder), select (bi-encoder) or video "
                             "(a diffusers Stable Video Diffusion directory); inferred if omitted."),
    dtype: str = typer.Option(None, "--dtype", help="fp32 (default), fp16 (half-size graphs and table; "
                                                    "parity vs fp32 torch ≤ 2e-2), int8 (int8 MatMul weights and "
                                                    "table, behind an agreement gate) or mixed (int8, the layers "
                                                    "that fail the gate kept fp32). Ranking models."),
    max_length: int = typer.Option(None, "--max-length", help="Token limit per sequence; longer input is truncated."),
    force: bool = typer.Option(False, "--force", help="Replace an existing edgekit package (or an empty folder) at "
                                                      "--out; anything else there is refused, never deleted."),
    instruction: str = typer.Option(None, "--instruction",
                                    help="Decoder rerankers: the default instruction stored in the package."),
    op_groups: bool = typer.Option(False, "--op-groups",
                                   help="Video: export the UNet as operator groups that `edgekit run --slices N` "
                                        "slices exactly (more, smaller graphs)."),
    fuse: bool = typer.Option(False, "--fuse", help="Ranking models: apply onnxruntime's transformer fusions to each "
                              "graph (parity-checked; onnxruntime-only ops; not faster on CPU, docs/FORMAT.md)."),
    shared_layers: bool = typer.Option(False, "--shared-layers", help="Ranking models: one graph for every layer, "
                                       "each layer's weights memory-mapped and fed as inputs (no session per layer; "
                                       "docs/FORMAT.md, \"Shared layers\")."),
    gate_data: Path = typer.Option(None, "--gate-data", help="--dtype int8/mixed: JSONL query set the int8 package "
                                   "must agree with fp32 on (default: the bundled dev set)."),
    gate_top_k: int = typer.Option(None, "--gate-top-k", help="--dtype int8/mixed: the K of top-K agreement "
                                   "(default 10)."),
    min_agreement: float = typer.Option(None, "--min-agreement", help="--dtype int8/mixed: refuse to write the "
                                        "package below this top-K agreement with fp32, in (0, 1] (default 0.99)."),
    graph_format: str = typer.Option(None, "--format", help="Graph formats: onnx (default), coreml (Core ML "
                                     "mlprograms for Apple devices; the coreml extra) or onnx,coreml (both in one "
                                     "package). Rerankers, bi-encoders, svd."),
    compute_units: str = typer.Option(None, "--compute-units", help="Core ML: the compute units a runtime loads "
                                      "the graphs with by default: all (default), cpu_and_ne, cpu_and_gpu, cpu_only."),
    precision: str = typer.Option(None, "--precision", help="Core ML: compute precision fp16 (default) or fp32 "
                                  "(inputs and outputs stay float32)."),
    palettize: int = typer.Option(None, "--palettize", help="Core ML: k-means palettize weights to 4, 6 or 8 bits "
                                  "(lookup tables; smaller packages, not parity-gated)."),
) -> None:
    """Split a model into per-layer ONNX graphs and write an edge package (the family is read
    from the source's files; an option the family does not take is an error). Ctrl-C, SIGTERM
    and SIGHUP remove the unfinished package and exit 128 + the signal number, in one line."""
    from edgekit.atomic import terminate_as_interrupt

    try:
        with terminate_as_interrupt():  # while loading the model too, not only once files are staged
            exported = _export(source, out, True, task, dtype=dtype, max_length=max_length, overwrite=force,
                               instruction=instruction, op_groups=op_groups or None, fuse=fuse or None,
                               shared_layers=shared_layers or None, gate_data=gate_data, gate_top_k=gate_top_k,
                               min_agreement=min_agreement, format=graph_format, compute_units=compute_units,
                               precision=precision, palettize=palettize)
    except KeyboardInterrupt as stop:  # edgekit.atomic.ExportInterrupted for SIGTERM/SIGHUP
        signum = getattr(stop, "signum", 2)
        typer.echo(f"error: export interrupted ({'SIGINT' if signum == 2 else stop}); no partial package was "
                   f"left beside {out}", err=True)
        raise typer.Exit(code=128 + signum) from None
    stdout.print(f"wrote {out} ({exported.summary()})")


@app.command()
@user_errors
def run(
    package: Path = typer.Argument(..., help="Package directory."),
    query: str = typer.Option(None, "--query", help="Ranking packages: the query text."),
    candidates: Path = typer.Option(None, "--candidates",
                                    help="Ranking packages: .txt (one per line) or .jsonl ({\"text\": ...})."),
    top_k: int = typer.Option(10, "--top-k", help="How many candidates to return."),
    window: int = typer.Option(None, "--window", help="Graphs resident at once (>= 1; default 2)."),
    chunk: int = typer.Option(None, "--chunk", help="Candidates per run inside a graph (default 16)."),
    provider: str = typer.Option("cpu", "--provider", help="cpu, cuda or coreml (macOS: a package's Core ML graphs "
                                 "when it has them, else its ONNX graphs through onnxruntime's CoreML provider)."),
    compute_units: str = typer.Option(None, "--compute-units", help="Core ML graphs: all, cpu_and_ne, cpu_only or "
                                      "cpu_and_gpu (default: the package's, else all)."),
    threads: int = typer.Option(None, "--threads", help="onnxruntime intra-op threads."),
    prune: str = typer.Option("exact", "--prune", help=PRUNE_HELP),
    order: str = typer.Option("default", "--order", help="default, or exact: finish accepted candidates."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    instruction: str = typer.Option(None, "--instruction",
                                    help="Decoder rerankers: replaces the package's instruction for this run."),
    memory_budget: float = typer.Option(None, "--memory-budget",
                                        help="MiB the process may peak at; the planner picks window and chunk."),
    show_plan: bool = typer.Option(False, "--plan", help="With --memory-budget: print the plan, don't run."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check of the package's files "
                                   "before loading (hashes are remembered per file, so repeated runs are cheap)."),
    image: Path = typer.Option(None, "--image", help="Image-to-video packages (svd): the input image (RGB PNG/JPEG)."),
    prompt: str = typer.Option(None, "--prompt", help="Text-to-video packages (wan): what the video shows."),
    prompt_file: Path = typer.Option(None, "--prompt-file", help="Text-to-video packages: read the prompt from a "
                                                                 "UTF-8 text file."),
    negative_prompt: str = typer.Option(None, "--negative-prompt",
                                        help="Text-to-video packages: what to steer away from (default: the "
                                             "package's)."),
    guidance_scale: float = typer.Option(None, "--guidance-scale",
                                         help="Text-to-video packages: classifier-free guidance (default: the "
                                              "package's; <= 1 turns it off)."),
    frames: int = typer.Option(None, "--frames", help="Video packages: frames to generate (default: the package's)."),
    steps: int = typer.Option(None, "--steps", help="Video packages: denoising steps (default: the package's)."),
    out: Path = typer.Option(None, "--out", help="Video packages: the animated GIF to write (PNG frames beside it)."),
    height: int = typer.Option(None, "--height", help="Video packages: output height (default: the package's)."),
    width: int = typer.Option(None, "--width", help="Video packages: output width (default: the package's)."),
    decode_chunk: int = typer.Option(None, "--decode-chunk",
                                     help="Video packages: frames per VAE decoder call (default: all; "
                                          "smaller saves memory, approximate)."),
    decode_tile: int = typer.Option(None, "--decode-tile",
                                    help="Video packages: decode in spatial tiles of N latent pixels "
                                         "(x the VAE scale in output pixels; saves memory, approximate)."),
    decode_tile_overlap: int = typer.Option(None, "--decode-tile-overlap",
                                            help="Video packages: latent pixels neighbouring tiles share "
                                                 "(default N/4; 0 <= M < N/2)."),
    seed: int = typer.Option(0, "--seed", help="Video packages: random seed."),
    slices: int = typer.Option(None, "--slices",
                               help="Video packages exported with --op-groups: run each UNet operator group over "
                                    "N slices of its axis (exact; saves memory)."),
    step_cache: str = typer.Option(None, "--step-cache",
                                   help="Video packages: reuse the UNet's deep features across steps: none, "
                                        "interval:N or adaptive:T, then optionally ,depth:D ,max-skip:M ,warmup:W "
                                        "(faster, approximate; docs/VIDEO.md); auto: what `edgekit calibrate "
                                        "--target-psnr` stored."),
    cache_swap: str = typer.Option(None, "--cache-swap",
                                   help="Video packages with --step-cache: where the cached feature waits between "
                                        "steps: off (default), host (a separate buffer) or disk (a file in --work)."),
    work: Path = typer.Option(None, "--work", help="Video packages: the folder --cache-swap disk writes its file in "
                                                   "(default: the system's temporary folder)."),
    public_key: Path = typer.Option(None, "--public-key", help=PUBLIC_KEY_HELP),
) -> None:
    """Rank candidates against a query, or (video packages) generate a video from an image."""
    import edgekit
    from edgekit.errors import InvalidArgumentError
    from edgekit.manifest import Manifest

    if public_key is not None:  # before anything reads the package
        from edgekit.signing import verify_signature

        verify_signature(package, public_key)

    video_options = {"--image": image, "--prompt": prompt, "--prompt-file": prompt_file,
                     "--negative-prompt": negative_prompt, "--guidance-scale": guidance_scale, "--frames": frames, "--steps": steps, "--out": out, "--height": height,
                     "--width": width, "--decode-chunk": decode_chunk, "--decode-tile": decode_tile,
                     "--decode-tile-overlap": decode_tile_overlap, "--slices": slices, "--step-cache": step_cache,
                     "--cache-swap": cache_swap, "--work": work}
    manifest = Manifest.load(package)
    if manifest.task == "video":
        ranking_options = {"--query": query, "--candidates": candidates, "--chunk": chunk,
                           "--memory-budget": memory_budget, "--instruction": instruction}
        given = [name for name, value in ranking_options.items() if value is not None]
        if given or show_plan or prune != "exact" or order != "default" or top_k != 10:
            raise InvalidArgumentError(f"{package} is a video package; ranking options "
                                       f"({', '.join(given) or '--plan/--prune/--order/--top-k'}) do not apply")
        run_video(package, image=image, frames=frames, steps=steps, out=out, height=height, width=width,
                  decode_chunk=decode_chunk, seed=seed, window=window, provider=provider, threads=threads,
                  as_json=as_json, decode_tile=decode_tile, decode_tile_overlap=decode_tile_overlap, slices=slices,
                  verify=not no_verify, step_cache=step_cache, cache_swap=cache_swap, work=work,
                  text=TextOptions(prompt, prompt_file, negative_prompt, guidance_scale),
                  text_to_video=manifest.video.wan is not None, compute_units=compute_units)
        return
    given = [name for name, value in video_options.items() if value is not None]
    if given:
        raise InvalidArgumentError(f"{package} is a ranking package; {', '.join(given)} are for video packages")
    if query is None or candidates is None:
        raise InvalidArgumentError("ranking needs --query and --candidates (see `edgekit run --help`)")
    from edgekit.candidates import read_candidates

    if show_plan and memory_budget is None:
        raise InvalidArgumentError("--plan shows what --memory-budget would choose; pass --memory-budget MB too")
    texts = read_candidates(candidates)
    selector = edgekit.load(str(package), window=window, chunk=chunk, provider=provider, threads=threads,
                            memory_budget_mb=memory_budget, verify=not no_verify, compute_units=compute_units)
    if show_plan:
        chosen = selector.plan(query, texts, instruction=instruction, prune=prune)
        typer.echo(json.dumps(chosen.to_dict(), allow_nan=False) if as_json else chosen.describe())
        return
    ranking = selector.rank(query, texts, top_k=top_k, prune=prune, order=order, instruction=instruction)
    print_ranking(ranking, as_json)


def print_ranking(ranking: Any, as_json: bool) -> None:
    stats = ranking.stats
    if as_json:
        payload = {"top_k": [{"index": r.index, "score": r.score, "text": r.text,
                              "decided_at_layer": r.decided_at_layer} for r in ranking],
                   "stats": stats.to_dict()}
        typer.echo(json.dumps(payload, allow_nan=False))  # strict JSON: scores are finite (checked)
        return
    if stats.top_k_returned < stats.top_k_requested:
        stderr.print(f"note: top-k {stats.top_k_requested} > {stats.candidates} candidates; returning all of them")
    table = Table(title=f"top {len(ranking)} of {stats.candidates}")
    for column in ("rank", "index", "score", "text"):
        table.add_column(column, overflow="fold")
    for rank, result in enumerate(ranking, start=1):
        table.add_row(str(rank), str(result.index), f"{result.score:.4f}", result.text)
    stdout.print(table)
    rss = f"{stats.peak_rss_mb:.0f} MiB" if stats.peak_rss_mb is not None else "n/a"
    if stats.plan is not None:
        rss += (f" (budget {stats.memory_budget_mb:.0f} MiB, planned window {stats.window}, chunk {stats.chunk}, "
                f"estimate {stats.plan['estimated_peak_mb']:.0f} MiB)")
    mapped = f" · layer weights mapped {stats.layer_weights_mapped}" if stats.layer_weights_mapped else ""
    stdout.print(f"latency {stats.latency_ms:.0f} ms · peak RSS {rss} · graphs loaded {stats.graphs_loaded}{mapped} · "
                 f"max resident {stats.max_resident_graphs} · truncated {stats.truncated} · prune {stats.prune} · "
                 f"candidate-layers {stats.candidate_layers}/{stats.candidate_layers_exact}")


@app.command()
@user_errors
def calibrate(
    package: Path = typer.Argument(..., help="Package directory (its manifest gets the calibration)."),
    data: Path = typer.Option(None, "--data", help='Ranking: JSONL {"query", "candidates": [...], "relevant"?} '
                                                   "per line."),
    target_agreement: float = typer.Option(
        0.995, "--target-agreement",
        help="Share of new queries whose top-K set must stay whole (so mean agreement is at least this)."),
    delta: float = typer.Option(0.1, "--delta", help="Allowed probability that the guarantee fails (0 < δ < 1)."),
    policy: str = typer.Option("cluster", "--policy", help="Policy to calibrate: cluster or rank-stability."),
    top_k: int = typer.Option(10, "--top-k"),
    chunk: int = typer.Option(None, "--chunk"),
    threads: int = typer.Option(None, "--threads"),
    as_json: bool = typer.Option(False, "--json"),
    target_psnr: float = typer.Option(None, "--target-psnr",
                                      help="Video: the lowest frame PSNR (dB) against the uncached run to keep."),
    seeds: int = typer.Option(2, "--seeds", help="Video: seeds 0..N-1 to measure on."),
    image: Path = typer.Option(None, "--image", help="Video: the input image (default: a smooth test image)."),
    frames: int = typer.Option(None, "--frames", help="Video: frames per run (default: the package's)."),
    steps: int = typer.Option(None, "--steps", help="Video: denoising steps (default: the package's)."),
) -> None:
    """Ranking: find the cheapest pruning setting certified (at 1 - δ) to meet the target on new queries.
    Video: find the most aggressive step cache keeping --target-psnr on a few seeds. Either is stored."""
    import edgekit
    from edgekit.dataset import read_examples
    from edgekit.errors import InvalidArgumentError
    from edgekit.manifest import Manifest

    manifest = Manifest.load(package)
    if manifest.task == "video":
        if data is not None:
            raise InvalidArgumentError(f"{package} is a video package; --data is for ranking packages")
        if manifest.video.wan is not None:
            raise InvalidArgumentError(f"{package} is a wan package; `edgekit calibrate` calibrates the SVD step "
                                       "cache only so far; give the block cache a setting (--step-cache adaptive:T)")
        calibrate_video(package, target_psnr, seeds, image, frames, steps, threads, as_json)
        return
    if target_psnr is not None or image is not None or frames is not None or steps is not None:
        raise InvalidArgumentError(f"{package} is a ranking package; --target-psnr, --image, --frames and --steps "
                                   "are for video packages")
    if data is None:
        raise InvalidArgumentError("ranking calibration needs --data QUERIES.jsonl")
    from edgekit.runtimes.calibration import check_search_args, record_traces, search, write_calibration
    from edgekit.runtimes.confidence import queries_needed
    from edgekit.runtimes.policies import policy_class

    check_search_args(target_agreement, delta)
    if top_k <= 0:
        raise InvalidArgumentError(f"--top-k must be a positive integer, got {top_k}")
    policy_class(policy)  # an unknown name fails before the exact runs
    examples = read_examples(data)
    selector = edgekit.load(str(package), chunk=chunk, threads=threads)
    with progress_bar(not as_json and stderr.is_terminal) as bar:
        task = bar.add_task("exact runs (recording layer scores)", total=len(examples))
        traces = record_traces(selector.rank, examples, top_k,
                               progress=lambda done, total: bar.update(task, completed=done))
    manifest = selector.manifest
    result = search(traces, top_k, target_agreement, manifest.ranking.scoring.kind, manifest.ranking.num_layers, policy, delta)
    updated = write_calibration(manifest, result, top_k, target_agreement, data)
    if as_json:
        typer.echo(json.dumps({"calibration": updated.ranking.calibration}, allow_nan=False))
        return
    if result.setting is None:
        needed = queries_needed(target_agreement, result.delta_per_test)
        why = (f"a perfect record needs >= {needed}" if target_agreement < 1.0
               else "a target of 1 is never certified from finite data")
        stdout.print(f"no {policy} setting is certified to keep the top-{top_k} on {target_agreement:.1%} of new "
                     f"queries (δ {delta}) from {len(examples)} queries ({why}); `--prune auto` will run exact")
    else:
        stdout.print(f"{result.setting.describe()}: top-{top_k} kept whole on >= {result.lower_bound:.4f} of new "
                     f"queries with probability >= {1 - delta:g} (target {target_agreement}; measured: "
                     f"{result.exact_share:.1%} whole, agreement {result.agreement:.4f}, "
                     f"{result.candidate_layers_fraction:.1%} of candidate-layers on {len(examples)} queries); "
                     f"stored in {package}")


@app.command()
@user_errors
def inspect(package: Path = typer.Argument(..., help="Package directory.")) -> None:
    """Show what is in a package: graphs, sizes and a memory estimate."""
    from edgekit.inspection import describe

    stdout.print(describe(package))


@app.command()
@user_errors
def verify(package: Path = typer.Argument(..., help="Package directory."),
           public_key: Path = typer.Option(None, "--public-key", help=PUBLIC_KEY_HELP)) -> None:
    """Re-hash every file of a package (no cache) after the containment and digest checks; exit 2
    naming each file that fails. With --public-key, check the package's signature first."""
    from edgekit.manifest import Manifest

    signed = ""
    if public_key is not None:
        from edgekit.signing import verify_signature

        signed = f"signature by {public_key} covers {verify_signature(package, public_key)} files; "
    manifest = Manifest.load(package)
    manifest.verify()
    stdout.print(f"ok: {signed}{len(manifest.files())} files verified in {package}")


@app.command()
@user_errors
def sign(
    package: Path = typer.Argument(..., help="Package directory (it must pass `edgekit verify`)."),
    private_key: Path = typer.Option(..., "--private-key", help="EC private key (PEM; P-256, P-384 or P-521)."),
    key_password: str = typer.Option(None, "--key-password", envvar="EDGEKIT_KEY_PASSWORD",
                                     help="Password of an encrypted key (better: the EDGEKIT_KEY_PASSWORD variable)."),
) -> None:
    """Sign every file of a package with a private key (writes PKG/package.sig; the `sign` extra)."""
    from edgekit.signing import sign_package

    written = sign_package(package, private_key, password=key_password)
    stdout.print(f"signed: wrote {written}; check it with `edgekit verify {package} --public-key PUB.pem`")


@app.command()
@user_errors
def demo(
    query: str = typer.Option("how do I sort a list in python", "--query", help="Query over the built-in corpus."),
    top_k: int = typer.Option(5, "--top-k"),
    model: str = typer.Option("minilm", "--model", help="minilm (bundled bi-encoder) or cross-encoder (once built)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Export the bundled all-MiniLM-L6-v2 (first use) and rank a small built-in corpus."""
    import edgekit
    from edgekit.demo import demo_corpus, demo_package

    exported: list[Path] = []

    def export(source: str, out: Path) -> Any:
        exported.append(out)
        return _export(source, out, not as_json, None, overwrite=True).manifest

    package = demo_package(export, model=model)
    if not as_json:
        stdout.print(f"package: {package}")
    selector = edgekit.load(str(package))
    print_ranking(selector.rank(query, demo_corpus(), top_k=top_k), as_json)
    if exported and not as_json:
        stdout.print("(first run: the peak RSS includes the one-time export with torch; "
                     "run `edgekit demo` again to see the runtime alone)")


app.add_typer(bench_app, name="bench")
models_app = typer.Typer(no_args_is_help=True, help="Build models from recipes (offline).")
app.add_typer(models_app, name="models")


@models_app.command("build")
@user_errors
def models_build(
    recipe: str = typer.Argument(..., help="Recipe name: minilm-cross-encoder."),
    out: Path = typer.Option(None, "--out", help="Checkpoint directory (default: the edgekit cache)."),
    steps: int = typer.Option(None, "--steps", help="Optimiser steps (default: the full recipe)."),
    seed: int = typer.Option(0, "--seed"),
    heads: str = typer.Option("shared", "--heads",
                              help="Intermediate-depth heads: shared (the model's own) or per-layer."),
) -> None:
    """Build a model from a recipe into a standard transformers checkpoint directory."""
    from edgekit.errors import InvalidArgumentError, MissingDependencyError

    if recipe != "minilm-cross-encoder":
        raise InvalidArgumentError(f"unknown recipe {recipe!r}; available: minilm-cross-encoder")
    try:
        from edgekit.models.recipes import minilm_cross_encoder as recipe_module
    except ImportError as error:
        raise MissingDependencyError(f"recipes need the export extra ({error.name} is missing); "
                                     "pip install 'edgekit[export,demo]'") from None
    target = out or recipe_module.default_model_dir()
    options = {"steps": steps} if steps is not None else {}
    with progress_bar(stderr.is_terminal) as bar:
        task = bar.add_task("training", total=None)
        path = recipe_module.build_minilm_cross_encoder(
            target, seed=seed, heads=heads, **options,
            progress=lambda message, done, total: bar.update(task, description=message, completed=done, total=total))
    stdout.print(f"wrote {path}; export it with `edgekit export {path} --out PKG`")


def _usage_error_types() -> tuple[type[BaseException], ...]:
    """Click's UsageError, wherever this typer keeps it (typer >= 0.16 vendors click)."""
    usage_error = typer.BadParameter.__mro__[1]  # BadParameter's parent: UsageError
    return (usage_error,)


def main() -> None:
    """Entry point: usage errors (bad option values, missing arguments) become one line too."""
    try:
        result = app(prog_name="edgekit", standalone_mode=False)
    except _usage_error_types() as error:
        where = getattr(getattr(error, "ctx", None), "command_path", "edgekit")
        if error.format_message():  # empty when help was shown for a bare group
            typer.echo(f"error: {error.format_message()} (see `{where} --help`)", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
