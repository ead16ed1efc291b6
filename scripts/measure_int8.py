"""Measure how much top-K agreement each int8 choice of exporters/quantize.py costs: per-tensor
against per-channel scales, with the int8 or the fp32 embedding table, on a staged fp32 package.

    python scripts/measure_int8.py FP32_PKG [--data q.jsonl] [--top-k 10]

FP32_PKG is an fp32 ranking package (`edgekit export SRC --out FP32_PKG`); it is left as it was
(int8 candidates are written under FP32_PKG/.int8 and removed). The gate data defaults to the
bundled dev set. Prints, per setting, the agreement with fp32 (mean over queries of the top-K
set overlap, the gate's statistic: exporters/quant_gate.py), the worst query and the largest
score difference, and the bytes of the int8 layer graphs against the fp32 ones.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from edgekit.dataset import read_examples
from edgekit.exporters.quant_gate import DEV_SET, Gate, variant
from edgekit.exporters.quantize import CANDIDATES, quantize_graph, quantize_table
from edgekit.manifest import Manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--data", type=Path, default=DEV_SET)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()
    manifest = Manifest.load(args.package)
    gate = Gate(manifest, read_examples(args.data), args.top_k)
    fp32_bytes = sum(graph.bytes for graph in manifest.graphs_by_role("layer"))
    try:
        for per_channel in (False, True):
            shutil.rmtree(args.package / CANDIDATES, ignore_errors=True)
            layers = {graph.index: quantize_graph(args.package, graph, per_channel)
                      for graph in manifest.graphs_by_role("layer")}
            table = quantize_table(args.package, manifest.ranking.embedding_table)
            for name, chosen in (("int8 table", table), ("fp32 table", None)):
                result = gate.measure(variant(manifest, layers, set(layers), chosen))
                print(f"per_channel={per_channel} {name}: agreement {result.agreement:.4f} worst query "
                      f"{result.worst_query:.2f} score max abs diff {result.score_max_abs_diff:.3g}", flush=True)
            int8_bytes = sum(graph.bytes for graph in layers.values())
            print(f"per_channel={per_channel}: layer graphs {int8_bytes} bytes, fp32 {fp32_bytes} "
                  f"({int8_bytes / fp32_bytes:.3f}x)", flush=True)
    finally:
        shutil.rmtree(args.package / CANDIDATES, ignore_errors=True)


if __name__ == "__main__":
    main()
