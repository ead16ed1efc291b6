"""GPU check: the kernel sweep the issue asks for on an H100/H200-class GPU, written into
docs/BENCHMARKS.md with the device named. Needs no network; about 3–6 minutes on an H100.

    python -m edgekit.runtimes.attention.gpu_check --out gpu-attention --benchmarks docs/BENCHMARKS.md

Sweep: full, causal, document, sliding-window-causal × 4K–32K tokens × 16 heads × head_dim 128
× bfloat16, forward and backward, every registered kernel (compiled Flex, not eager).
Published H100 bf16 full-mask forward points to compare with: FlashAttention-3 ≈ 670–700 TFLOP/s,
cuDNN ≈ 505–585, FlashAttention-2 ≈ 360–375, FlexAttention ≈ 350–390.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import torch

from edgekit.runtimes.attention.kernels import default_kernels
from edgekit.runtimes.attention.report import markdown_summary, plot_tflops
from edgekit.runtimes.attention.sweep import SweepConfig, run_sweep, write_csv, write_jsonl

MARK_BEGIN, MARK_END = "<!-- attention-gpu-check:begin -->", "<!-- attention-gpu-check:end -->"


def replace_section(doc: str, section: str) -> str:
    """Put `section` between the markers, replacing what was there (or append it)."""
    block = f"{MARK_BEGIN}\n{section}\n{MARK_END}"
    pattern = re.compile(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), re.DOTALL)
    return pattern.sub(lambda _: block, doc) if pattern.search(doc) else doc.rstrip() + "\n\n" + block + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("gpu-attention"))
    ap.add_argument("--benchmarks", type=Path, default=Path("docs/BENCHMARKS.md"))
    ap.add_argument("--seqlens", default="4096,8192,16384,32768")
    ap.add_argument("--kv-heads", type=int, default=16, help="key/value heads (16 = no GQA, comparable with "
                    "the published points)")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA device; this check runs on a GPU machine", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    config = SweepConfig(kernels=tuple(default_kernels(device)),
                         masks=("full", "causal", "document", "sliding-window-causal"),
                         seqlens=tuple(int(s) for s in args.seqlens.split(",")), batch=1, heads=16,
                         kv_heads=args.kv_heads, head_dim=128, dtype=torch.bfloat16, device=device, backward=True,
                         reps=args.reps, warmup=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rows = run_sweep(config, on_row=lambda r: print(f"{r.mask} {r.seqlen} {r.kernel} {r.pass_} {r.status} "
                                                        f"{r.tflops or 0:.1f} TFLOP/s", flush=True))
    name = torch.cuda.get_device_name(device)
    write_jsonl(rows, args.out / "attention.jsonl")
    write_csv(rows, args.out / "attention.csv")
    plot_tflops(rows, args.out / "attention.png", title=f"attention TFLOP/s on {name} (bf16)")
    section = markdown_summary(rows, heading=f"Attention kernels on {name} (torch {torch.__version__}, "
                                             f"bf16, B=1, H=16, H_kv={args.kv_heads}, D=128)")
    (args.out / "attention.md").write_text(section)
    doc = args.benchmarks.read_text() if args.benchmarks.exists() else "# Benchmarks\n"
    args.benchmarks.parent.mkdir(parents=True, exist_ok=True)
    args.benchmarks.write_text(replace_section(doc, section))
    return 0


if __name__ == "__main__":
    sys.exit(main())
