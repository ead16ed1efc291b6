"""Operator fusion of one exported graph with onnxruntime's transformer optimizer (`edgekit
export --fuse`; off by default, see "Measured" below).

`fuse_graph` runs `onnxruntime.transformers.optimizer.optimize_model` (pure graph rewrites,
`opt_level=0`: onnxruntime's own session-time optimisations still run when the package is
loaded) on a graph `onnx_writer.export_graph` wrote, and keeps the result only when a fusion
fired (an op type the optimizer produces occurs more often than before, e.g. `Attention`,
`SkipLayerNormalization`, `BiasGelu`, `SimplifiedLayerNormalization`) and the graph's inputs and
outputs are unchanged. The fused graph replaces the file in place with its weights in the same
external-data file (`<name>.onnx.data`, every tensor of 1 KiB or more), and the returned
GraphSpec lists the final files with their hashes. A graph where nothing fired is left byte for
byte as it was. Attention keeps the raw [B,S] 0/1 mask (the optimizer's "bert" default reduces
it to lengths, exact only for right padding), so a fused layer honours the graph IO contract of
docs/FORMAT.md for any mask.

Fused graphs may hold onnxruntime contrib ops (domain `com.microsoft`): onnxruntime runs them on
every execution provider edgekit uses; they are not standard ONNX. The caller checks the fused
graph against its torch module exactly as an unfused one (exporters/package_parts.py), then the
chained package against the whole model.

What fires, with onnxruntime 1.32:
- BERT-like layers (model type "bert"): `Attention`, `SkipLayerNormalization` x2, `BiasGelu`,
  provided the layer builds its additive mask the way the attention fusion recognises
  (`encoder.fusable_mask`, used only when fusing: the plain `(1 - mask) * min` is not matched
  when the scores are scaled by a Mul, as transformers 5 does, because the fusion then takes
  the scaling Mul for the mask's);
- Qwen3 decoder layers (model type "qwen3"): `SimplifiedLayerNormalization` x3 (input norm, q/k
  norms) and `SkipSimplifiedLayerNormalization` x1; attention and rotary are not fused (the
  layer takes cos/sin and the bias as inputs); fp16 Qwen3 graphs: nothing fires;
- heads: the Qwen3 head's final norm; BERT heads and embeddings: nothing.

Measured (2-core x86 CPU shared with other work, load average 1.8-3.5; edgekit's session
options: 2 threads, pre-packing off; scripts/measure_fusion.py, rounds interleaved): onnxruntime's
own session-time optimiser already fuses most of this (BiasGelu, LayerNorm, FusedMatMul), and its
CPU `Attention` kernel is slower than the unfused MatMul/Softmax path at these sizes.
- MiniLM-L6 streamed, 50 candidates, 3 runs of 9 rounds: fused/plain ratio of medians 1.06, 1.15,
  1.11 (e.g. 361 vs 340 ms on the quietest run); one layer [16,100,384]: 1.06-1.17x;
- Qwen3-0.6B-shaped streamed, 8 candidates, 2 runs of 4 rounds: 0.91 and 1.11 (paired rounds
  within noise of each other); one layer [8,128,1024]: 288 vs 284 ms median;
- parity unchanged: MiniLM graphs <= 5.7e-6 (plain <= 5.6e-6), chained 8e-8 (1e-8); Qwen3 graphs
  <= 2.4e-6 (1.9e-6), chained 3.9e-7 (2.1e-7); top-K identical;
- export: MiniLM 10.3-11.3 s vs 9.6-9.8 s, peak 0.73 vs 0.69 GB; Qwen3-0.6B 92-99 s (plain took
  123 s on a busier machine), peak 3.52 vs 3.50 GB.
Hence opt-in. It is where to start on CUDA, where the fused Attention kernels are what the
optimizer targets (not measured: no GPU here).

Example::

    spec, fired = fuse_graph(root, spec, FusionPlan("bert", num_heads=12, hidden_size=384))
    fired  # {"Attention": 1, "BiasGelu": 1, "SkipLayerNormalization": 2}
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from edgekit.exporters.onnx_writer import tensor_specs
from edgekit.manifest import FileEntry, GraphSpec

OPT_LEVEL = 0  # graph rewrites only; onnxruntime optimises the session itself at load time


@dataclass(frozen=True)
class FusionPlan:
    """What the optimizer needs: its model type ("bert", "qwen3") and the attention shape
    (0 lets the optimizer read it from the graph)."""

    model_type: str
    num_heads: int = 0
    hidden_size: int = 0

    def record(self, fired: dict[str, dict[str, int]]) -> dict[str, object]:
        """The manifest's `exporter.fusions`: how graphs were fused and, per graph name, the
        fused op types and their counts (graphs where nothing fired are not listed)."""
        return {"optimizer": "onnxruntime.transformers", "model_type": self.model_type, "opt_level": OPT_LEVEL,
                "graphs": {name: dict(ops) for name, ops in sorted(fired.items())}}


def plan_for(config: object, model_type: str) -> FusionPlan:
    """The plan for a transformers config (heads and width under their BERT, DistilBERT or
    Qwen3 names; 0 when absent: the optimizer reads them from the graph)."""
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None) or 0
    hidden = getattr(config, "hidden_size", None) or getattr(config, "dim", None) or 0
    return FusionPlan(model_type, num_heads=int(heads), hidden_size=int(hidden))


def describe(fused: dict[str, int]) -> str:
    """"Attention 1, SkipLayerNormalization 2" for progress lines."""
    return ", ".join(f"{op} {count}" for op, count in fused.items())


def _op_counts(graph_nodes: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph_nodes:  # type: ignore[attr-defined]
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def run_optimizer(path: Path, plan: FusionPlan, options: object = None) -> object:
    """onnxruntime's transformer optimizer on the graph at `path` (graph rewrites only, OPT_LEVEL),
    its per-pattern logging and warnings silenced; returns the optimizer's model object (the
    graph under `.model`, what fired under `.get_fused_operator_statistics()`). Used per layer
    here and on the whole model by the bench's optimized baseline (exporters/optimized_graph.py)."""
    from onnxruntime.transformers.optimizer import optimize_model

    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optimize_model(str(path), model_type=plan.model_type, num_heads=plan.num_heads,
                                  hidden_size=plan.hidden_size, opt_level=OPT_LEVEL, optimization_options=options)
    finally:
        quiet.setLevel(level)


def fuse_graph(root: Path, spec: GraphSpec, plan: FusionPlan) -> tuple[GraphSpec, dict[str, int]]:
    """Fuse `root/spec.path` in place when the optimizer recognises a pattern; returns the spec
    of the final files and {fused op type: count in the final graph} ({} and `spec` unchanged
    when nothing fired)."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(plan.model_type)
    # the 2-D 0/1 mask as given (the default for "bert" reduces it to lengths, exact only for
    # right padding; for "qwen3" it drops the mask): the graph keeps its documented IO semantics
    options.use_raw_attention_mask(True)
    path = root / spec.path
    before = _op_counts(onnx.load(str(path), load_external_data=False).graph.node)
    optimized = run_optimizer(path, plan, options)
    stats = optimized.get_fused_operator_statistics()
    fired = {op: int(count) for op, count in sorted(stats.items()) if count > before.get(op, 0)}
    graph = optimized.model.graph
    keep = bool(fired) and (tensor_specs(list(graph.input)), tensor_specs(list(graph.output))) == (spec.inputs,
                                                                                                   spec.outputs)
    if keep:
        optimized.save_model_to_file(str(path), use_external_data_format=True)  # replaces both files
    del optimized, graph
    gc.collect()  # the optimizer's model objects hold the weights in reference cycles (~0.3 GiB per Qwen3-0.6B layer)
    if not keep:
        return spec, {}  # nothing fired, or the IO the runtime feeds would change: keep the plain graph
    files = [FileEntry.of(root, spec.path)]
    data = f"{spec.path}.data"
    if (root / data).is_file():
        files.append(FileEntry.of(root, data))
    return dataclasses.replace(spec, files=tuple(files)), fired
