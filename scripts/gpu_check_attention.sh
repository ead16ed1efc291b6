#!/usr/bin/env bash
# GPU check for the attention benchmark (issues 7 and 19): run on an H100/H200-class machine, no network.
# 1. Kernel sweep: full / causal / document / sliding-window-causal x 4K-32K tokens x 16 heads x head_dim 128
#    x bf16, forward and backward (--pass fwd,bwd), written into docs/BENCHMARKS.md with the device named.
#    Extra arguments go to this stage (e.g. --kv-heads 4 for grouped-query heads, --seqlens 4096,8192).
# 2. Context parallelism over NCCL, one rank per GPU (NCCL refuses two ranks on one GPU, so a one-GPU
#    machine runs world 1: the methods' code paths, backward and GQA on CUDA, not their communication):
#    ring, ulysses, usp, allgather x full / causal / document / document-causal, S 8192, 16 query heads over
#    4 KV heads, bf16, fwd,bwd, tiles of 1024 tokens. Output in $OUT/gpu-attention-cp/attention_cp.{md,...}.
# Bounded to 8 minutes in all (5.5 + 2.5); whatever finished is still written.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-out}"
timeout 330 python -m edgekit.runtimes.attention.gpu_check --out "$OUT_DIR/gpu-attention" \
    --benchmarks docs/BENCHMARKS.md "$@" || echo "kernel sweep: stopped with status $? (continuing)"
NPROC=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
timeout 150 python -c "import sys; from edgekit.cli import app; sys.argv[0] = 'edgekit'; app()" \
    bench attention-cp --nproc "$NPROC" --methods ring,ulysses,usp,allgather \
    --masks full,causal,document,document-causal --seqlen 8192 --heads 16 --kv-heads 4 --head-dim 128 \
    --dtype bfloat16 --pass fwd,bwd --tile 1024 --reps 3 --warmup 1 --timeout 140 \
    --out "$OUT_DIR/gpu-attention-cp" || echo "context parallelism: stopped with status $?"
cat "$OUT_DIR/gpu-attention-cp/attention_cp.md" 2>/dev/null || true
