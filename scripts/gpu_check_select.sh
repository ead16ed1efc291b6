#!/usr/bin/env bash
# GPU check for the deep-model selection benchmark (issue 5): on an NVIDIA machine, no network.
# Builds (once) the random Qwen3-0.6B-shaped reranker, its package and the one-graph baseline
# (needs the export extra: torch, transformers), then runs `edgekit bench select-deep` with the
# CUDA provider: latency, peak RSS and peak device memory (nvidia-smi, per process) of every
# variant, with the GPU named, into docs/BENCHMARKS.md. When the installed onnxruntime has no
# CUDA provider (the plain `onnxruntime` wheel), it says so and measures the CPU provider.
# Bounded to 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
    echo "nvidia-smi not found: no NVIDIA driver on this machine"
fi
if "$PYTHON" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    PROVIDER=cuda
else
    echo "this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu instead of onnxruntime);" \
         "measuring the CPU provider only"
    PROVIDER=cpu
fi
mkdir -p "${OUT:-out}"
timeout 480 "$PYTHON" -m edgekit.cli bench select-deep --provider "$PROVIDER" --queries 2 --repeat 3 \
    --threads "$(nproc)" --json "${OUT:-out}/select_deep_${PROVIDER}.json" --markdown "$@"
