"""Which onnxruntime mechanism lets one session serve every layer of a stack (issue 14, item 1)?

    python scripts/probe_shared_sessions.py PACKAGE [--rounds 5] [--batch 16] [--seq 128] [--passes 3] [--chunks 1]

PACKAGE is an edgekit package whose layer graphs (graphs/layer_NNN.onnx, weights as external data
in graphs/layer_NNN.onnx.data, docs/FORMAT.md) are identical up to weights (a BERT-like stack).
One pass = every layer over one chunk of BATCH candidates x SEQ tokens (all tokens real, mask all
ones); the hidden states are real: random token ids (seed 0) through the package's embeddings
graph. Each layer's input is the previous layer's output (a real stack pass). --chunks N runs each
layer's session over N such chunks before the next layer (as edgekit's selector does: one session
per layer per query, every chunk of the query through it; 50 candidates = 16+16+16+2).

Variants, each in its own process (peak RSS = that process's VmHWM, imports included), run
interleaved for ROUNDS rounds; each process runs PASSES passes, the first reported as "cold":

  a-per-layer   today: a session per layer with edgekit's options (backend_for("onnx","cpu",2)),
                created, run, released, one after the other (no prefetch thread: creation is
                fully exposed here; the streamed runtime hides part of it behind the previous run)
  a-prepack     as a-per-layer with MatMul pre-packing back on (edgekit turns it off): what
                pre-packing, which weights-as-inputs cannot have, buys the run itself
  b-ext-init    a NEW session per layer from layer 0's graph, with that layer's weights supplied
                by SessionOptions.add_external_initializers (OrtValues over memory-mapped arrays)
  c-inputs-all  layer 0's graph rewritten so its external initializers are graph inputs; ONE
                session (edgekit's options, ORT_ENABLE_ALL) for all layers; each layer's weights
                fed as numpy arrays memory-mapped from its .onnx.data (offsets from external_data)
  c-inputs-ext  as c-inputs-all, graph_optimization_level ORT_ENABLE_EXTENDED
  c-bind        as c-inputs-all, weights bound once as OrtValues (ortvalue_from_numpy over the
                maps) and fed through IOBinding; hidden states bound per layer

Parity (d): every variant's per-layer outputs of its first pass are compared with a-per-layer's
(max abs diff per layer). Prints a markdown table of medians (and min-max over rounds).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

VARIANTS = ("a-per-layer", "a-prepack", "b-ext-init", "c-inputs-all", "c-inputs-ext", "c-bind", "c-window", "c-prefetch")


def _onnxruntime() -> Any:
    """The onnxruntime module. This probe measures onnxruntime's own mechanisms, which are not part
    of the backend contract, so it imports onnxruntime itself: the one script
    tests/test_backend_contract.py allows to (PROBES_OF_ORT)."""
    import onnxruntime

    return onnxruntime


def _vm_field(field: str) -> float:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def _layer_graphs(package: Path) -> list[Path]:
    return sorted((package / "graphs").glob("layer_[0-9][0-9][0-9].onnx"))


def _mapped_weights(graph: Path) -> dict[str, np.ndarray]:
    """name -> read-only array memory-mapped from the graph's external data file (no copy)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(graph), load_external_data=False)
    weights: dict[str, np.ndarray] = {}
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {entry.key: entry.value for entry in tensor.external_data}
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        count = int(np.prod(tensor.dims)) if tensor.dims else 1
        assert int(entries["length"]) == count * np.dtype(dtype).itemsize, tensor.name
        weights[tensor.name] = np.memmap(graph.parent / entries["location"], dtype=dtype, mode="r",
                                         offset=int(entries.get("offset", "0")), shape=tuple(tensor.dims))
    return weights


def _weight_specs(graph: Path) -> list[tuple[str, Path, int, np.dtype, tuple[int, ...]]]:
    """(name, data file, offset, dtype, shape) per external initializer: what a manifest would record."""
    return [(name, Path(array.filename), array.offset, array.dtype, array.shape)
            for name, array in _mapped_weights(graph).items()]


def _populated_layer(specs: list[tuple[str, Path, int, np.dtype, tuple[int, ...]]]
                     ) -> tuple[list[mmap.mmap], dict[str, np.ndarray]]:
    """Map each data file of one layer with its pages faulted in; arrays are read-only views."""
    maps: dict[Path, mmap.mmap] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, path, offset, dtype, shape in specs:
        if path not in maps:
            with open(path, "rb") as handle:
                maps[path] = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                       prot=mmap.PROT_READ)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(maps[path], dtype=dtype, count=count, offset=offset).reshape(shape)
    return list(maps.values()), arrays


def _weights_as_inputs(graph: Path, out_dir: Path) -> Path:
    """Layer graph with its external initializers turned into graph inputs (inline constants stay)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(graph), load_external_data=False)
    keep = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            model.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            keep.append(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    path = out_dir / "layer_shared.onnx"
    onnx.save(model, str(path))
    return path


def _hidden_states(package: Path, batch: int, seq: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    ort = _onnxruntime()

    rng = np.random.default_rng(0)
    table = np.load(package / "graphs" / "word_embeddings.npy", mmap_mode="r")
    ids = rng.integers(1000, table.shape[0], size=(batch, seq))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(package / "graphs" / "embeddings.onnx"), options, providers=["CPUExecutionProvider"])
    hidden = session.run(None, {"inputs_embeds": np.ascontiguousarray(table[ids], dtype=np.float32),
                                "token_type_ids": np.zeros((batch, seq), dtype=np.int64)})[0]
    return hidden, np.ones((batch, seq), dtype=np.int64)


def _worker(variant: str, package: Path, inputs: Path, passes: int, threads: int, chunks: int, out: Path) -> None:
    """One variant in this process: `passes` passes; writes timings, RSS and first-pass outputs."""
    import onnx  # noqa: F401  (imported by every variant, so its RSS is in every baseline)

    ort = _onnxruntime()

    from edgekit.runtimes.backends import backend_for

    data = np.load(inputs)
    hidden0, mask = np.split(data["hidden"], chunks), data["mask"]
    graphs = _layer_graphs(package)
    backend = backend_for("onnx", "cpu", threads)
    tmp = Path(tempfile.mkdtemp(prefix="probe-shared-"))
    rss_before = _vm_field("VmRSS")
    report: dict[str, object] = {"variant": variant, "rss_before_mb": rss_before, "passes": []}
    first_outputs: list[np.ndarray] = []

    shared = None
    bound: list[dict[str, Any]] = []
    setup = 0.0
    if variant.startswith("c-"):
        start = time.perf_counter()
        shared_graph = _weights_as_inputs(graphs[0], tmp)
        options = backend.session_options()
        if variant == "c-inputs-ext":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        rewritten = time.perf_counter()
        shared = ort.InferenceSession(str(shared_graph), options, providers=["CPUExecutionProvider"])
        assert shared.get_session_options().get_session_config_entry("session.disable_prepacking") == "1"
        report["session_s"] = time.perf_counter() - rewritten
        if variant in ("c-window", "c-prefetch"):
            specs = [_weight_specs(graph) for graph in graphs]
        else:
            mapped = [_mapped_weights(graph) for graph in graphs]
        if variant == "c-bind":
            bound = [{name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in layer.items()} for layer in mapped]
        setup = time.perf_counter() - start
    report["setup_s"] = setup

    prefetcher = ThreadPoolExecutor(1)
    for index in range(passes):
        hidden = hidden0
        upcoming: Future | None = None
        create_s = run_s = 0.0
        per_layer = []
        pass_start = time.perf_counter()
        for layer, graph in enumerate(graphs):
            t0 = time.perf_counter()
            if variant in ("a-per-layer", "a-prepack"):
                if variant == "a-prepack":
                    options = backend.session_options()
                    options.add_session_config_entry("session.disable_prepacking", "0")
                    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
                    run = session.run
                    session.run = lambda feeds, run=run: run(None, feeds)  # type: ignore[method-assign]
                    session.release = lambda: None  # type: ignore[attr-defined]
                else:
                    session = backend.load(graph)
                t1 = time.perf_counter()
                hidden = [session.run({"hidden_states": part, "attention_mask": mask})[0] for part in hidden]
                session.release()
                del session
            elif variant == "b-ext-init":
                weights = _mapped_weights(graph)
                values = {name: ort.OrtValue.ortvalue_from_numpy(array) for name, array in weights.items()}
                options = backend.session_options()
                options.add_external_initializers(list(values), list(values.values()))
                raw = ort.InferenceSession(str(graphs[0]), options, providers=["CPUExecutionProvider"])
                t1 = time.perf_counter()
                hidden = [raw.run(None, {"hidden_states": part, "attention_mask": mask})[0] for part in hidden]
                del raw, values, options
            elif variant == "c-bind":
                t1 = t0
                binding = shared.io_binding()
                binding.bind_cpu_input("attention_mask", mask)
                for name, value in bound[layer].items():
                    binding.bind_ortvalue_input(name, value)
                outputs = []
                for part in hidden:
                    binding.bind_cpu_input("hidden_states", np.ascontiguousarray(part))
                    binding.bind_output("hidden_states_out", "cpu")
                    shared.run_with_iobinding(binding)
                    outputs.append(binding.copy_outputs_to_cpu()[0])
                hidden = outputs
            elif variant == "c-window":
                weights = {name: np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
                           for name, path, offset, dtype, shape in specs[layer]}
                t1 = time.perf_counter()
                hidden = [shared.run(None, {"hidden_states": part, "attention_mask": mask, **weights})[0]
                          for part in hidden]
                del weights
            elif variant == "c-prefetch":
                if upcoming is None:
                    upcoming = prefetcher.submit(_populated_layer, specs[layer])
                maps, weights = upcoming.result()
                upcoming = prefetcher.submit(_populated_layer, specs[layer + 1]) if layer + 1 < len(graphs) else None
                t1 = time.perf_counter()
                hidden = [shared.run(None, {"hidden_states": part, "attention_mask": mask, **weights})[0]
                          for part in hidden]
                del weights
                for handle in maps:
                    handle.close()
            else:
                t1 = t0
                hidden = [shared.run(None, {"hidden_states": part, "attention_mask": mask, **mapped[layer]})[0]
                          for part in hidden]
            t2 = time.perf_counter()
            create_s += t1 - t0
            run_s += t2 - t1
            per_layer.append(round((t2 - t0) * 1000, 2))
            if index == 0:
                first_outputs.append(np.concatenate(hidden))
        report["passes"].append({"total_ms": (time.perf_counter() - pass_start) * 1000, "create_ms": create_s * 1000,
                                 "run_ms": run_s * 1000, "per_layer_ms": per_layer})
    report["peak_rss_mb"] = _vm_field("VmHWM")
    report["rss_end_mb"] = _vm_field("VmRSS")
    np.savez(out.with_suffix(".npz"), *first_outputs)
    out.write_text(json.dumps(report), encoding="utf-8")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunks", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.package, args.inputs, args.passes, args.threads, args.chunks, args.out)
        return

    variants = args.variants.split(",")
    work = Path(tempfile.mkdtemp(prefix="probe-shared-"))
    hidden, mask = _hidden_states(args.package, args.batch * args.chunks, args.seq, args.threads)
    mask = mask[:args.batch]
    np.savez(work / "inputs.npz", hidden=hidden, mask=mask)
    results: dict[str, list[dict]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name in variants:
            out = work / f"{name}-{round_index}.json"
            subprocess.run([sys.executable, __file__, str(args.package), "--worker", name, "--inputs",
                            str(work / "inputs.npz"), "--out", str(out), "--passes", str(args.passes),
                            "--threads", str(args.threads), "--chunks", str(args.chunks)], check=True, env=dict(os.environ))
            results[name].append(json.loads(out.read_text(encoding="utf-8")))

    reference = np.load(work / "a-per-layer-0.npz") if "a-per-layer" in variants else None
    print(f"{args.rounds} rounds x {args.passes} passes; {args.chunks} chunk(s) of {args.batch}x{args.seq}; threads {args.threads}; "
          f"{len(_layer_graphs(args.package))} layers; medians (min–max over rounds); warm = passes 2..{args.passes}")
    print()
    print("| variant | setup ms (of which shared session) | cold pass ms | warm pass ms | warm create ms | warm run ms | "
          "warm per-layer ms (median) | peak RSS MiB | peak over pre-session RSS MiB | max abs diff vs a (per layer) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in variants:
        rows = results[name]
        warm = [p for row in rows for p in row["passes"][1:]] or [p for row in rows for p in row["passes"]]
        layers = len(warm[0]["per_layer_ms"])
        per_layer = [statistics.median(p["per_layer_ms"][i] for p in warm) for i in range(layers)]
        diffs = "n/a"
        if reference is not None:
            mine = np.load(work / f"{name}-0.npz")
            diffs = ", ".join(f"{float(np.max(np.abs(mine[key] - reference[key]))):.1e}" for key in reference.files)
        print(f"| {name} | {_spread([r['setup_s'] * 1000 for r in rows])} "
              f"({statistics.median(r.get('session_s', 0.0) * 1000 for r in rows):.1f}) "
              f"| {_spread([r['passes'][0]['total_ms'] for r in rows])} "
              f"| {_spread([p['total_ms'] for p in warm])} | {_spread([p['create_ms'] for p in warm])} "
              f"| {_spread([p['run_ms'] for p in warm])} | {', '.join(f'{v:.1f}' for v in per_layer)} "
              f"| {_spread([r['peak_rss_mb'] for r in rows])} "
              f"| {_spread([r['peak_rss_mb'] - r['rss_before_mb'] for r in rows])} | {diffs} |")
    print(f"\nbaseline RSS before any session (median): "
          f"{statistics.median(r['rss_before_mb'] for rows in results.values() for r in rows):.1f} MiB; work dir {work}")


if __name__ == "__main__":
    main()
