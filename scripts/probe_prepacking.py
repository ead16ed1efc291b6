"""Where does a streamed layer lose time against the one graph? (issue 14, the shared-session reading)

    python scripts/probe_prepacking.py PACKAGE SHARED_PACKAGE [--layer 5] [--batch 8] [--seq 128] [--runs 7] [--rounds 2]

PACKAGE is a per-layer ranking package, SHARED_PACKAGE the same model exported with --shared-layers
(e.g. the bench's ~/.cache/edgekit/bench/deep/qwen3-0.6b/package-128 and edgekit-shared-*). One
layer's graph runs on random hidden states [batch, seq, hidden] (zero attention bias, random
cos/sin where the layer takes them), in one process, each configuration warmed up once and then
timed `--runs` times (median), `--rounds` times interleaved:

  per-layer      edgekit's backend (backend_for("onnx", "cpu", 2)): pre-packing off, spinning off
  shared         the same options, the shared graph with that layer's weights mapped and fed as inputs
  prepack-on     edgekit's options with MatMul pre-packing switched back on
  ort-defaults   onnxruntime's default session options, 2 intra-op threads

It also prints how long creating each session took and the max abs difference between the
per-layer and the shared outputs. It imports onnxruntime itself (to change session options the
backend does not expose): tests/test_backend_contract.py lists it in PROBES_OF_ORT.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.manifest import Manifest
from edgekit.runtimes.backends import backend_for
from edgekit.runtimes.backends.onnxruntime_backend import OrtBackend
from edgekit.runtimes.shared_weights import MappedWeights, SharedLayerSession


def _feeds(manifest: Manifest, layer: int, batch: int, seq: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for spec in manifest.graph("layer", layer).inputs:
        if spec.name == "hidden_states":
            feeds[spec.name] = rng.standard_normal((batch, seq, manifest.ranking.hidden_size)).astype(np.float32)
        elif spec.name == "attention_bias":
            feeds[spec.name] = np.zeros((batch, 1, seq, seq), np.float32)
        elif spec.name == "attention_mask":
            feeds[spec.name] = np.ones((batch, seq), np.int64)
        elif spec.name in ("cos", "sin"):
            feeds[spec.name] = rng.standard_normal((batch, seq, int(spec.shape[-1]))).astype(np.float32)
    return feeds


def _ort_session(path: Path, prepack: bool, defaults: bool) -> Any:
    import onnxruntime

    if defaults:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.log_severity_level = 2, 3
    else:
        options = OrtBackend("cpu", 2).session_options()
        options.add_session_config_entry("session.disable_prepacking", "0" if prepack else "1")
    session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def _median_ms(run: Any, feeds: dict[str, np.ndarray], runs: int) -> float:
    run(feeds)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("package")
    parser.add_argument("shared_package")
    parser.add_argument("--layer", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    plain, shared = Manifest.load(args.package), Manifest.load(args.shared_package)
    graph, shared_graph = plain.graph("layer", args.layer), shared.graph("layer", args.layer)
    feeds = _feeds(plain, args.layer, args.batch, args.seq)
    backend = backend_for("onnx", "cpu", 2)
    started = time.perf_counter()
    per_layer = backend.load(plain.root / graph.path)
    created_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    shared_session = backend.load(shared.root / shared_graph.path)
    shared_created_ms = (time.perf_counter() - started) * 1000
    layer = SharedLayerSession(shared_session, shared_graph, MappedWeights(shared.root, shared_graph))
    diff = float(np.max(np.abs(per_layer.run(feeds)[0] - layer.run(feeds)[0])))
    print(f"session creation: per-layer {created_ms:.0f} ms, shared {shared_created_ms:.0f} ms; "
          f"per-layer vs shared max abs diff {diff:.3g}")
    variants = {"per-layer": per_layer.run, "shared": layer.run,
                "prepack-on": _ort_session(plain.root / graph.path, prepack=True, defaults=False),
                "ort-defaults": _ort_session(plain.root / graph.path, prepack=True, defaults=True)}
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {_median_ms(run, feeds, args.runs):.1f} ms"
                                                  for name, run in variants.items()))


if __name__ == "__main__":
    main()
