"""Pieces every exporter writes the same way: parity checks, the embedding table, the
tokenizer files and the version record."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit import __version__
from edgekit.errors import ParityError, SourceModelError
from edgekit.exporters.fusion import FusionPlan, fuse_graph
from edgekit.exporters.onnx_writer import OPSET, export_graph
from edgekit.manifest import FileEntry, GraphSpec
from edgekit.ranking_manifest import EmbeddingTable


def max_diff(actual: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max abs diff, scale) where scale = max(1, max |expected|) for a relative tolerance."""
    return float(np.max(np.abs(actual - expected))), float(max(1.0, np.max(np.abs(expected))))


def check_parity(name: str, diff: float, scale: float, tolerance: float, what: str = "ONNX") -> None:
    """Raise ParityError when `diff` exceeds `tolerance * scale` or is not finite (a NaN or inf
    output; `tolerance` may be inf: then only that is checked). what: whose output, for the message."""
    if not math.isfinite(diff) or diff > tolerance * scale:
        raise ParityError(
            f"{name}: {what} output differs from torch by {diff:.3g} (allowed {tolerance * scale:.3g}); "
            "the model uses an op edgekit cannot export faithfully; please report it"
        )


def graph_vs_module(module: torch.nn.Module, graph: GraphSpec, root: Path, backend: Any,
                    examples: list[tuple[torch.Tensor, ...]], input_names: list[str], tolerance: float) -> float:
    """Max abs diff of `graph` (loaded from `root` by `backend`) against `module` over every example
    (fed by `input_names`; outputs compared in the graph's order); SourceModelError when an output's
    shape differs (a shape was baked into the graph), ParityError beyond `tolerance` (relative to
    max(1, max |reference|)). The session is released either way."""
    session = backend.load(root / graph.path)
    worst = 0.0
    try:
        for example in examples:
            with torch.no_grad():
                expected = module(*example)
            expected_list = list(expected) if isinstance(expected, (tuple, list)) else [expected]
            actual = session.run({name: value.numpy() for name, value in zip(input_names, example)})
            for spec, got, want in zip(graph.outputs, actual, expected_list):
                if tuple(got.shape) != tuple(want.shape):
                    raise SourceModelError(f"{graph.name}: output {spec.name} has shape {tuple(got.shape)} in ONNX, "
                                           f"{tuple(want.shape)} in torch; a shape was baked into the graph")
                diff, scale = max_diff(got, want.numpy())
                check_parity(f"{graph.name}.{spec.name} at shape {tuple(example[0].shape)}", diff, scale, tolerance)
                worst = max(worst, diff)
    finally:
        session.release()
    return worst


@dataclass
class StagePlan:
    """One graph a video exporter writes: its module, IO names, dynamic axes and one example
    input set per checked shape (the first is the export example). dynamo: torch.onnx's dynamo
    exporter (exporters/onnx_writer.py); False: the TorchScript one."""

    name: str
    role: str
    index: int | None
    module: torch.nn.Module
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    examples: list[tuple[torch.Tensor, ...]]
    dynamo: bool = False

    def export(self, root: Path, relative_file: str | None = None) -> GraphSpec:
        """Write the graph (default root/graphs/<name>.onnx) and return its GraphSpec."""
        return export_graph(self.module, self.examples[0], root, relative_file or f"graphs/{self.name}.onnx",
                            self.input_names, self.output_names, self.dynamic_axes, self.name, self.role, self.index,
                            dynamo=self.dynamo)

    def check(self, graph: GraphSpec, root: Path, backend: Any, tolerance: float) -> float:
        """graph_vs_module over every example input set."""
        return graph_vs_module(self.module, graph, root, backend, self.examples, self.input_names, tolerance)


def export_checked(module: torch.nn.Module, args: tuple[torch.Tensor, ...], exported: torch.nn.Module,
                   exported_args: tuple[torch.Tensor, ...], root: Path, name: str, role: str, index: int | None,
                   input_names: list[str], output: str, axes: dict[str, dict[int, str]],
                   tolerance: float, fusion: FusionPlan | None = None,
                   fired: dict[str, dict[str, int]] | None = None) -> tuple[GraphSpec, float]:
    """Export `exported` (the module itself, or its fp16 copy) on `exported_args` to
    graphs/<name>.onnx, fuse it with `fusion` when given (exporters/fusion.py; what fired goes
    into `fired[name]`), run it in onnxruntime and check it against `module(*args)` (fp32 torch);
    returns the GraphSpec and the max abs diff. Raises SourceModelError / ParityError."""
    from edgekit.runtimes.backends import backend_for

    try:
        spec = export_graph(exported, exported_args, root, f"graphs/{name}.onnx", input_names, [output], axes,
                            name=name, role=role, index=index)
    except (RuntimeError, TypeError, ValueError) as error:
        raise SourceModelError(f"exporting {name} failed: {str(error).splitlines()[0]}") from None
    if fusion is not None:
        spec, fused = fuse_graph(root, spec, fusion)
        if fused and fired is not None:
            fired[name] = fused
    session = backend_for("onnx", "cpu").load(root / spec.path)
    actual = session.run({n: a.numpy() for n, a in zip(input_names, exported_args)})[0]
    session.release()
    diff, scale = max_diff(actual.astype(np.float32), module(*args).numpy())
    check_parity(name, diff, scale, tolerance)
    return spec, diff


def save_embedding_table(weight: torch.Tensor, root: Path, half: bool) -> EmbeddingTable:
    """The token-embedding table as graphs/word_embeddings.npy (the runtime memory-maps it)."""
    table = weight.detach().float().numpy().astype("<f2" if half else "<f4")
    relative = "graphs/word_embeddings.npy"
    np.save(root / relative, table, allow_pickle=False)
    return EmbeddingTable(FileEntry.of(root, relative), (int(table.shape[0]), int(table.shape[1])),
                          "float16" if half else "float32")


def save_tokenizer(tokenizer: Any, root: Path, source: Path) -> tuple[FileEntry, ...]:
    """Save the fast tokenizer under root/tokenizer; entries with tokenizer.json first."""
    tokenizer.save_pretrained(root / "tokenizer")
    names = sorted(p.relative_to(root).as_posix() for p in (root / "tokenizer").iterdir())
    names.sort(key=lambda name: not name.endswith("tokenizer.json"))
    if not names or not names[0].endswith("tokenizer.json"):
        raise SourceModelError(f"{source}: the tokenizer did not save a tokenizer.json")
    return tuple(FileEntry.of(root, name) for name in names)


def versions() -> dict[str, Any]:
    """What wrote the package (recorded in the manifest's `exporter`)."""
    import onnx
    import onnxruntime
    import transformers

    return {"edgekit": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "opset": OPSET}
