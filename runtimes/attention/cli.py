"""Typer-compatible commands: `attention` (the kernel sweep) and `attention_cp` (context
parallelism under torchrun). Plain functions with `typer.Option` defaults, mounted by the
project CLI as `edgekit bench attention` / `edgekit bench attention-cp`:

    app.command("attention")(attention)
    app.command("attention-cp")(attention_cp)

User mistakes raise `InvalidArgumentError` (one line; the project CLI prints it and exits 2).
Outputs in `--out`: `<name>.jsonl`, `<name>.csv`, `<name>.md`, `attention.png`, and the typed bench
report `<name>.report.{json,md,png}` (edgekit/bench/report.py, rendered by edgekit/bench/render.py).
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from edgekit.errors import InvalidArgumentError

if TYPE_CHECKING:
    import torch

    from edgekit.bench.report import Report

MASKS_HELP = ("comma-separated masks: full, causal, sliding-window, sliding-window-causal, document, "
              "document-causal, shared-question, causal-blockwise, prefix-lm, prefix-lm-document, "
              "global-sliding-window, block-causal-document, block-sparse (default: all)")


DEFAULT_OUT = "attention-bench"


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _ints(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _names(text))
    except ValueError:
        raise InvalidArgumentError(f"{option} takes comma-separated integers, got {text!r}") from None


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise InvalidArgumentError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidArgumentError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def attention(
    kernels: str = typer.Option("", "--kernels", help="comma-separated kernel names (default: all registered; "
                                "flex-compiled only on GPU or with --compile-flex)"),
    masks: str = typer.Option("", "--masks", help=MASKS_HELP),
    seqlens: str = typer.Option("", "--seqlens", help="comma-separated lengths (default CPU 256,512,1024,2048; "
                                "GPU 4096,8192,16384,32768)"),
    batch: int = typer.Option(1, "--batch"),
    heads: int = typer.Option(0, "--heads", help="query heads (default CPU 4, GPU 16)"),
    kv_heads: int | None = typer.Option(None, "--kv-heads", help="key/value heads, a divisor of --heads; "
                                        "GQA when fewer (default: --heads)"),
    head_dim: int = typer.Option(0, "--head-dim", help="default CPU 64, GPU 128"),
    dtype: str = typer.Option("auto", "--dtype", help="float32|float16|bfloat16 (auto: float32 CPU, bfloat16 GPU)"),
    passes: str = typer.Option("fwd", "--pass", help="fwd, bwd or fwd,bwd: the passes measured per cell "
                               "(bwd: dQ, dK, dV from a fixed random upstream gradient)"),
    backward: bool = typer.Option(False, "--backward", help="same as --pass fwd,bwd"),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda[:N]"),
    reps: int = typer.Option(5, "--reps", help="timed repetitions per cell"),
    warmup: int = typer.Option(0, "--warmup", help="untimed repetitions per cell, after the checked run "
                               "(which already warms up)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random masks and inputs"),
    compile_flex: bool = typer.Option(False, "--compile-flex", help="add flex-compiled on CPU (5-30 s compile per shape)"),
    threads: int = typer.Option(0, "--threads", help="torch intra-op threads (0: torch's default)"),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="output directory"),
) -> None:
    """Sweep attention kernels × masks × lengths; write JSONL, CSV, PNG plot and markdown."""
    import torch

    from edgekit.runtimes.attention.generators import MASK_NAMES
    from edgekit.runtimes.attention.kernels import default_kernels
    from edgekit.runtimes.attention.problem import dtype_name, parse_dtype, parse_passes
    from edgekit.runtimes.attention.report import markdown_summary, plot_tflops, sweep_report
    from edgekit.runtimes.attention.sweep import (
        DEFAULT_CPU_SEQLENS,
        SweepConfig,
        run_sweep,
        write_csv,
        write_jsonl,
    )

    dev, out_dir = _device(device), Path(out)
    gpu = dev.type == "cuda"
    if threads < 0:
        raise InvalidArgumentError(f"--threads must be 0 or more, got {threads}")
    if threads:
        torch.set_num_threads(threads)
    names = _names(kernels) or tuple(default_kernels(dev)) + (("flex-compiled",) if compile_flex and not gpu else ())
    heads = heads or (16 if gpu else 4)
    config = SweepConfig(
        kernels=names, masks=_names(masks) or MASK_NAMES,
        seqlens=_ints(seqlens, "--seqlens") or ((4096, 8192, 16384, 32768) if gpu else DEFAULT_CPU_SEQLENS),
        batch=batch, heads=heads, kv_heads=heads if kv_heads is None else kv_heads, head_dim=head_dim or (128 if gpu else 64),
        dtype=parse_dtype(dtype if dtype != "auto" else ("bfloat16" if gpu else "float32")), device=dev,
        passes=parse_passes(passes), backward=backward, reps=reps, warmup=warmup, seed=seed)
    config.validate()
    rows = []
    with _progress(config.cell_count()) as advance, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # flex's "eager materialises scores" notice
        rows = run_sweep(config, on_row=advance)
    write_jsonl(rows, out_dir / "attention.jsonl")
    write_csv(rows, out_dir / "attention.csv")
    where = torch.cuda.get_device_name(dev) if gpu else f"CPU, {torch.get_num_threads()} threads"
    plot_tflops(rows, out_dir / "attention.png", title=f"attention TFLOP/s on {where} ({dtype_name(config.dtype)})")
    (out_dir / "attention.md").write_text(markdown_summary(rows, heading=f"Attention sweep on {where}"))
    report = sweep_report(rows, command=_command_line(), where=where,
                          threads=None if gpu else torch.get_num_threads(),
                          settings={"reps": reps, "warmup": warmup, "seed": seed})
    _publish(report, out_dir / "attention")
    counts = {s: sum(r.status == s for r in rows) for s in ("ok", "unsupported", "oom", "wrong")}
    typer.echo(f"{len(rows)} cells ({', '.join(f'{k} {v}' for k, v in counts.items())}) → {out_dir}/attention."
               "{jsonl,csv,png,md,report.json,report.md,report.png}")


def attention_cp(
    nproc: str = typer.Option("2", "--nproc", help="processes (ranks) torchrun starts; a comma-separated list "
                              "sweeps rank counts (one launch each)"),
    methods: str = typer.Option("ring,ulysses,usp,allgather", "--methods",
                                help="comma-separated: ring, ulysses, usp, allgather"),
    masks: str = typer.Option("full,causal,document", "--masks", help=MASKS_HELP),
    seqlen: str = typer.Option("4096", "--seqlen", "--seqlens", help="sequence length; a comma-separated list "
                               "sweeps lengths (one launch each)"),
    batch: int = typer.Option(1, "--batch"),
    heads: int = typer.Option(8, "--heads"),
    kv_heads: int | None = typer.Option(None, "--kv-heads", help="key/value heads, a divisor of --heads; GQA when "
                                        "fewer (default: --heads). Ulysses/USP: a multiple of the Ulysses degree"),
    head_dim: int = typer.Option(64, "--head-dim"),
    dtype: str = typer.Option("float32", "--dtype"),
    passes: str = typer.Option("fwd", "--pass", help="fwd, bwd or fwd,bwd (bwd: the distributed backward, "
                               "timed alone; dQ, dK, dV checked)"),
    ulysses_degree: int = typer.Option(0, "--ulysses-degree", help="USP's Ulysses degree (0: automatic)"),
    tile: int = typer.Option(256, "--tile", help="tokens per side of the compute tiles (larger: fewer, bigger "
                             "matmuls; 1024 suits GPUs)"),
    reps: int = typer.Option(5, "--reps"),
    warmup: int = typer.Option(1, "--warmup"),
    seed: int = typer.Option(0, "--seed"),
    timeout: float = typer.Option(900.0, "--timeout", help="seconds before each torchrun launch is stopped"),
    out: str = typer.Option(DEFAULT_OUT, "--out", help="output directory"),
) -> None:
    """Context-parallel attention under torchrun: one row per (processes, length, method, mask, pass) with the
    slowest rank's time and the per-rank work (rank_area, imbalance), and one per (length, mask, pass) for the
    single-process baseline (method `single`); time vs length (PNG) and the work table (markdown)."""
    from edgekit.runtimes.attention.cp_launch import CpConfig
    from edgekit.runtimes.attention.cp_scaling import (
        imbalance_table,
        plot_cp_scaling,
        run_scaling,
        scaling_configs,
    )
    from edgekit.runtimes.attention.problem import parse_passes
    from edgekit.runtimes.attention.report import cp_report, markdown_cp_summary

    out_dir = Path(out)
    nprocs, seqlens = _ints(nproc, "--nproc"), _ints(seqlen, "--seqlen")
    if not nprocs or not seqlens:
        raise InvalidArgumentError("--nproc and --seqlen must each name at least one integer")
    base = CpConfig(methods=_names(methods), masks=_names(masks), batch=batch, heads=heads, kv_heads=kv_heads,
                    head_dim=head_dim, dtype=dtype, passes=",".join(p.value for p in parse_passes(passes)),
                    ulysses_degree=ulysses_degree, tile=tile, reps=reps, warmup=warmup, seed=seed, baseline=True)
    rows = run_scaling(scaling_configs(base, nprocs, seqlens), timeout_s=timeout)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "attention_cp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with (out_dir / "attention_cp.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    (out_dir / "attention_cp.md").write_text(markdown_cp_summary(rows))
    (out_dir / "attention_cp_imbalance.md").write_text(imbalance_table(rows))
    where = str(rows[0]["device"]) if rows else "cpu"
    plot_cp_scaling(rows, out_dir / "attention_cp_scaling.png",
                    title=f"context-parallel attention on {where} ({dtype}, {heads} heads): time vs length")
    _publish(cp_report(rows, command=_command_line(),
                       settings={"reps": reps, "warmup": warmup, "seed": seed, "ulysses_degree": ulysses_degree,
                                 "tile": tile}),
             out_dir / "attention_cp")
    ok = sum(r["status"] == "ok" for r in rows)
    typer.echo(f"{len(rows)} rows ({ok} ok) on {','.join(map(str, nprocs))} processes → {out_dir}/attention_cp."
               "{jsonl,csv,md,report.json,report.md,report.png} + attention_cp_scaling.png, "
               "attention_cp_imbalance.md")


def _command_line() -> str:
    return "edgekit " + " ".join(sys.argv[1:])


def _publish(report: Report, stem: Path) -> None:
    """The typed report through the bench renderer: `<stem>.report.json` (`Report.load` reads it
    back), `<stem>.report.md` (its markdown section) and `<stem>.report.png`."""
    from edgekit.bench.render import publish

    publish(report, *(stem.with_name(f"{stem.name}.report.{suffix}") for suffix in ("json", "md", "png")))


@contextlib.contextmanager
def _progress(total: int) -> Iterator[Callable[[object], None]]:
    """A rich progress bar on stderr over the sweep's cells; silent when stderr is not a TTY."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), disable=not sys.stderr.isatty(), transient=True)
    with bar:
        task = bar.add_task("attention", total=total)

        def advance(row: object) -> None:
            bar.update(task, advance=1, description=f"{getattr(row, 'mask', '')} {getattr(row, 'seqlen', '')}")

        yield advance
