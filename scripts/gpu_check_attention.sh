#!/usr/bin/env bash
# GPU check for the attention benchmark (issue 7): run on an H100/H200-class machine, no network.
# Sweeps full / causal / document / sliding-window-causal x 4K-32K tokens x 16 heads x head_dim 128
# x bf16, forward and backward, and writes its table into docs/BENCHMARKS.md with the device named.
# Bounded to 8 minutes; whatever finished is still written.
set -euo pipefail
cd "$(dirname "$0")/.."
timeout 480 python -m edgekit.runtimes.attention.gpu_check --out "${OUT:-out}/gpu-attention" \
    --benchmarks docs/BENCHMARKS.md "$@"
