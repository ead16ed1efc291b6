"""Add Core ML twins of a staged package's graphs (`edgekit export --format coreml|onnx,coreml`).

The exporters stage the ONNX package first (every graph checked against its torch module, the
chained package against the whole model): that is what proves the split. Then each stage's
torch module is converted to an mlprogram (convert.py), saved as graphs/<name>_coreml.mlpackage,
its spec checked (spec_check.py) and its numbers checked by the MIL evaluator (mil_eval.py)
against the torch module on the export example: fp32 programs within the package's tolerance,
fp16 within FP16_TOLERANCE; an op without value inference is recorded as "skipped: ..." by name,
and palettized programs are measured but not gated (their weights differ from the module's by
design). With `--format coreml` alone, the ONNX graphs are then removed from the package.

Example::

    stages = [TorchStage(graph_spec, module, example_args), ...]   # collected while exporting ONNX
    manifest = add_core_ml_graphs(root, manifest, stages, CoreMLOptions(("onnx", "coreml")), {"sequence": 128})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.errors import ParityError, SourceModelError
from edgekit.exporters.coreml.convert import convert_stage
from edgekit.exporters.coreml.library import import_coremltools, quiet
from edgekit.exporters.coreml.options import DEPLOYMENT_TARGET, CoreMLOptions
from edgekit.exporters.coreml.spec_check import check_spec, read_spec
from edgekit.exporters.package_parts import max_diff
from edgekit.manifest import FileEntry, GraphSpec, Manifest, TensorSpec

FP16_TOLERANCE = 2e-2  # relative to max(1, max |reference|), as the fp16 ONNX packages
SUFFIX = "_coreml"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TorchStage:
    """One staged graph's torch side: its ONNX GraphSpec (names, role, symbolic dims), the fp32
    module it was exported from, the example inputs it was traced with (fp32 / int64) and their
    names. The ONNX exporter drops inputs a graph does not use (a BERT embeddings stage ignores
    its attention mask): the Core ML twin takes exactly the ONNX graph's inputs."""

    graph: GraphSpec
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    argument_names: tuple[str, ...]

    def graph_arguments(self) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
        """The module taking only the graph's inputs (dropped ones fixed to their unused example
        values) and the example restricted to them."""
        kept = [spec.name for spec in self.graph.inputs]
        if list(self.argument_names) == kept:
            return self.module, self.example
        missing = set(kept) - set(self.argument_names)
        if missing:
            raise ValueError(f"{self.graph.name}: graph inputs {sorted(missing)} are not arguments of its module")
        by_name = dict(zip(self.argument_names, self.example))
        return _GraphInputs(self.module, self.argument_names, kept, by_name), tuple(by_name[name] for name in kept)


class _GraphInputs(torch.nn.Module):
    """`module` called with the graph's inputs in place and its unused arguments fixed."""

    def __init__(self, module: torch.nn.Module, names: Sequence[str], kept: Sequence[str],
                 fixed: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.module, self.names, self.kept, self.fixed = module, tuple(names), tuple(kept), dict(fixed)

    def forward(self, *args: torch.Tensor) -> Any:
        given = dict(zip(self.kept, args))
        return self.module(*(given.get(name, self.fixed[name]) for name in self.names))


def twin_inputs(graph: GraphSpec) -> tuple[TensorSpec, ...]:
    """The Core ML twin's inputs: the ONNX graph's names and dims, float32 or int32."""
    return tuple(TensorSpec(spec.name, "float32" if spec.dtype.startswith("float") else "int32", spec.shape)
                 for spec in graph.inputs)


def directory_entries(root: Path, relative: str) -> tuple[FileEntry, ...]:
    """Every file inside the directory graph `relative`, sorted (the manifest lists them all)."""
    base = root / relative
    return tuple(FileEntry.of(root, path.relative_to(root).as_posix())
                 for path in sorted(base.rglob("*")) if path.is_file())


def numeric_parity(package: Path, stage: TorchStage, precision: str, tolerance: float, palettized: bool) -> Any:
    """Max abs diff of the saved program (MIL evaluator) vs the torch module on the stage's
    example, or "skipped: <reason>" when an op has no value inference. ParityError beyond the
    tolerance (fp16: FP16_TOLERANCE), unless palettized (measured, not gated)."""
    from edgekit.exporters.coreml.mil_eval import UnsupportedOpsError, evaluate

    module, example = stage.graph_arguments()
    feeds = {spec.name: value.numpy() if value.is_floating_point() else value.numpy().astype(np.int32)
             for spec, value in zip(stage.graph.inputs, example)}
    try:
        actual = evaluate(package, feeds)
    except UnsupportedOpsError as error:
        return f"skipped: {error}"
    with torch.no_grad():
        expected = module(*example)
    expected_list = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    worst = 0.0
    for spec, want in zip(stage.graph.outputs, expected_list):
        diff, scale = max_diff(actual[spec.name].astype(np.float32), want.float().numpy())
        allowed = (FP16_TOLERANCE if precision == "fp16" else tolerance) * scale
        if not np.isfinite(diff) or (diff > allowed and not palettized):
            raise ParityError(f"{stage.graph.name}{SUFFIX}: the Core ML program differs from torch by {diff:.3g} "
                              f"(allowed {allowed:.3g}); export with --precision fp32 or --format onnx")
        worst = max(worst, diff)
    return worst


def convert_twin(root: Path, stage: TorchStage, options: CoreMLOptions, bounds: Mapping[str, int],
                 tolerance: float) -> tuple[GraphSpec, dict[str, Any], Any]:
    """Convert, save, check one stage; returns its GraphSpec, its spec facts and its parity."""
    name = stage.graph.name + SUFFIX
    relative = f"graphs/{name}.mlpackage"
    inputs = twin_inputs(stage.graph)
    outputs = tuple(spec.name for spec in stage.graph.outputs)
    module, example = stage.graph_arguments()
    try:
        model = convert_stage(module, example, inputs, outputs, bounds, options.precision, options.palettize)
    except SourceModelError as error:
        raise SourceModelError(f"{stage.graph.name}: {error}") from None
    with quiet():
        model.save(str(root / relative))
    facts = read_spec(root / relative)
    flexible = {spec.name: tuple(axis for axis, dim in enumerate(spec.shape) if isinstance(dim, str))
                for spec in inputs}
    check_spec(facts, tuple(spec.name for spec in inputs), outputs, options.precision, options.palettize is not None,
               name, flexible)
    parity = numeric_parity(root / relative, stage, options.precision, tolerance, options.palettize is not None)
    graph = GraphSpec(name=name, role=stage.graph.role, format="mlpackage", path=relative,
                      files=directory_entries(root, relative), inputs=inputs,
                      outputs=tuple(TensorSpec(spec.name, "float32", spec.shape) for spec in stage.graph.outputs),
                      index=stage.graph.index)
    return graph, facts.record(), parity


def remove_graph_files(root: Path, graphs: Sequence[GraphSpec]) -> None:
    for graph in graphs:
        for entry in graph.files:
            (root / entry.file).unlink(missing_ok=True)


def add_core_ml_graphs(root: Path, manifest: Manifest, stages: Sequence[TorchStage], options: CoreMLOptions,
                       bounds: Mapping[str, int], tolerance: float, progress: Progress | None = None) -> Manifest:
    """The staged package at `root` with a Core ML twin of every stage (and without its ONNX
    graphs unless `options` keeps them); records `exporter.coreml` and saves the manifest."""
    ct = import_coremltools()
    report: Progress = progress or (lambda message, done, total: None)
    twins: list[GraphSpec] = []
    facts: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    for step, stage in enumerate(stages):
        report(f"converting {stage.graph.name} to Core ML", step, len(stages))
        graph, facts[graph.name], parity[graph.name] = convert_twin(root, stage, options, bounds, tolerance)
        twins.append(graph)
    report("Core ML graphs converted", len(stages), len(stages))
    converted = {stage.graph.name for stage in stages}
    kept = tuple(graph for graph in manifest.graphs if options.wants_onnx or graph.name not in converted)
    if not options.wants_onnx:
        remove_graph_files(root, [graph for graph in manifest.graphs if graph.name in converted])
    record = {"coremltools": ct.__version__, "precision": options.precision, "compute_units": options.compute_units,
              "palettize": options.palettize, "minimum_deployment_target": DEPLOYMENT_TARGET,
              "reference": "torch fp32 module, MIL evaluator (edgekit/exporters/coreml/mil_eval.py)",
              "graphs": facts, "parity": parity}
    updated = dataclasses.replace(manifest, graphs=(*kept, *twins),
                                  exporter={**manifest.exporter, "coreml": record})
    updated.save(root)
    return updated



ChainedCheck = Callable[[Manifest, Any, float], float]  # (Core ML view, backend, tolerance) -> max abs diff


def record_chained(root: Path, manifest: Manifest, options: CoreMLOptions, check: ChainedCheck,
                   progress: Progress | None = None) -> Manifest:
    """Run the package's Core ML graphs chained through the real runtime, each under the MIL
    evaluator (eval_backend.py), with `check` (the exporter's chained parity against the whole
    torch model, at FP16_TOLERANCE for fp16 programs); record the max abs diff as
    `exporter.coreml.chained_max_abs_diff` (or why it was skipped) and save the manifest.
    Ranking packages: the scores of the example query; video packages: the chained UNet stages.
    Palettized graphs are measured, not gated (their weights differ by design)."""
    from edgekit.exporters.coreml.eval_backend import MilEvalBackend
    from edgekit.exporters.coreml.mil_eval import UnsupportedOpsError

    allowed = FP16_TOLERANCE if options.precision == "fp16" else float(manifest.parity.get("tolerance", FP16_TOLERANCE))
    report = progress or (lambda message, done, total: None)
    report("checking the chained Core ML graphs (MIL evaluator)", 0, 1)
    view = manifest.for_format("mlpackage")
    try:
        chained: Any = check(view, MilEvalBackend(), float("inf") if options.palettize else allowed)
    except UnsupportedOpsError as error:
        chained = f"skipped: {error}"
    record = {**manifest.exporter["coreml"], "chained_max_abs_diff": chained}
    updated = dataclasses.replace(manifest, exporter={**manifest.exporter, "coreml": record})
    updated.save(root)
    return updated
