"""The export family contract: what `edgekit export` needs to know about one kind of source.

A family owns one kind of checkpoint directory (a BERT-like cross-encoder, a sentence-transformers
bi-encoder, a Qwen3 decoder reranker, a diffusers SVD pipeline). It is a declarative spec, not a
class to subclass: its name and task, what it recognises from the source's JSON files alone (no
weights, no torch), the graph roles its packages hold, the options it takes, the exporter it wraps
(imported only inside `export`, so the registry and the CLI start without torch), the tiny random
source its tests export, and the one line `edgekit export` prints about its package.

Example::

    family = family_for_source(Path("ckpt"))       # exporters/families/__init__.py: exactly one
    family.name, family.task, family.stages, family.options
    manifest = family.export(Path("ckpt"), Path("pkg"), max_length=128)   # wrong option: one line
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from edgekit.errors import InvalidArgumentError, MissingDependencyError
from edgekit.exporters.coreml.library import import_coremltools
from edgekit.exporters.coreml.options import CoreMLOptions
from edgekit.exporters.source import architectures
from edgekit.manifest import Manifest

Progress = Callable[[str, int, int], None]
# Options every family takes: replacing an existing package is not a property of the source.
COMMON_OPTIONS = ("overwrite",)
# Graph formats: the families whose exporters convert Core ML twins take these (exporters/coreml/).
FORMAT_OPTIONS = ("format", "compute_units", "precision", "palettize")


@dataclass(frozen=True)
class ExportFamily:
    """One kind of export source, and how it becomes a package.

    recognise(path, task): True when the family exports the directory at `path`, read from its
    JSON files only. `task` is None (claim it unasked: no other family may claim the same source,
    tests/test_export_families.py checks it) or this family's own task, named by the user; then a
    family may also take sources that need the task spelled out (a plain encoder as a bi-encoder).
    exporter(source, out, progress, **options): the existing exporter, imported inside; `options`
    are already checked against `options` (None values dropped) and `overwrite` is always there.
    """

    name: str
    task: str  # rerank | select | video
    description: str  # what a source of this family is, for one-line errors
    stages: tuple[str, ...]  # graph roles of its packages (edgekit/manifest.py checks them)
    options: tuple[str, ...]  # keyword names; the CLI flag is --name-with-dashes
    recognise: Callable[[Path, str | None], bool]
    exporter: Callable[..., Manifest]
    build_tiny: Callable[[Path], Path]  # the tiny random source its tests build; returns the directory
    summary: Callable[[Manifest], str]  # what `edgekit export` prints after "wrote OUT"
    extra: str = "export"  # the pip extra its exporter needs

    def recognises(self, path: Path, task: str | None = None) -> bool:
        return self.recognise(Path(path), task)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options given (None means "not given"), or InvalidArgumentError naming the first
        one this family does not take."""
        given = {name: value for name, value in options.items() if value is not None}
        for name in given:
            if name not in self.options and name not in COMMON_OPTIONS:
                takes = ", ".join(flag(option) for option in self.options) or "no options"
                raise InvalidArgumentError(f"{flag(name)} does not apply to {self.name} (--task {self.task}), "
                                           f"which takes {takes}")
        return given

    def export(self, source: Path, out: Path, progress: Progress | None = None, **options: Any) -> Manifest:
        """Export `source` (a local directory) to a package at `out`; returns its manifest."""
        given = self.check_options(options)
        given.setdefault("overwrite", False)
        return self.exporter(Path(source), Path(out), progress, **given)


def flag(option: str) -> str:
    """The CLI flag of a keyword option: max_length -> --max-length."""
    return "--" + option.replace("_", "-")


def import_exporter(module: str, extra: str) -> ModuleType:
    """Import an exporter module; a missing dependency is the one-line error naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = error.name or str(error)
        raise MissingDependencyError(
            f"export needs the {extra} extra ({missing} is missing); pip install 'edgekit[{extra}]'"
        ) from None


def core_ml_options(format: str | None = None, compute_units: str | None = None, precision: str | None = None,
                    palettize: int | None = None, dtype: str = "fp32", shared_layers: bool = False,
                    fuse: bool = False) -> CoreMLOptions:
    """The checked graph-format options, before any model loads: a bad value or combination is a
    one-line InvalidArgumentError, a missing coremltools the MissingDependencyError naming the extra."""
    formats = CoreMLOptions.parse(format, compute_units, precision, palettize)
    formats.check_combination(dtype, shared_layers, fuse)
    if formats.wants_coreml:
        import_coremltools()
    if palettize is not None and importlib.util.find_spec("sklearn") is None:
        raise MissingDependencyError("--palettize clusters weights with scikit-learn, which is missing; "
                                     "pip install 'edgekit[coreml]'")
    return formats


def encoder_exporter(task: str) -> Callable[..., Manifest]:
    """The BERT-like encoder exporter (exporters/encoder_export.py) for `task` ("rerank": a
    cross-encoder, "select": a bi-encoder), as an `ExportFamily.exporter`."""

    def export(source: Path, out: Path, progress: Progress | None, overwrite: bool, max_length: int | None = None,
               dtype: str = "fp32", fuse: bool = False, shared_layers: bool = False, gate_data: Path | None = None,
               gate_top_k: int | None = None, min_agreement: float | None = None, format: str | None = None,
               compute_units: str | None = None, precision: str | None = None,
               palettize: int | None = None) -> Manifest:
        formats = core_ml_options(format, compute_units, precision, palettize, dtype, shared_layers, fuse)
        encoder_export = import_exporter("edgekit.exporters.encoder_export", "export")
        gate = import_exporter("edgekit.exporters.quant_gate", "export").gate_options(  # before loading the model
            dtype, gate_data, gate_top_k, min_agreement)
        return encoder_export.export_encoder(str(source), out, task=task, max_length=max_length, dtype=dtype,
                                             overwrite=overwrite, progress=progress, fuse=fuse,
                                             shared_layers=shared_layers, gate=gate, coreml=formats)

    return export


def read_json(path: Path) -> Any:
    """The JSON at `path`, or None when it is absent or unreadable (recognition never raises: an
    unreadable file is "not recognised", and the registry's error says what the source holds)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_config(path: Path) -> dict[str, Any]:
    """config.json as a dict ({} when absent, unreadable or not an object)."""
    config = read_json(path / "config.json")
    return config if isinstance(config, dict) else {}


def describe_source(path: Path) -> str:
    """What a directory looks like to the families, in a few words, for one-line errors."""
    facts: list[str] = []
    config = read_config(path)
    if config:
        facts.append(f"model_type {config.get('model_type')!r}, architectures {list(architectures(config))}")
    elif (path / "config.json").is_file():
        facts.append("a config.json that is not a readable JSON object")
    if (path / "modules.json").is_file():
        facts.append("a modules.json")
    elif config:
        facts.append("no modules.json")
    index = read_json(path / "model_index.json")
    if isinstance(index, dict):
        facts.append(f"model_index.json names {index.get('_class_name')!r}")
    return ", ".join(facts) or "no config.json, modules.json or model_index.json"


def ranking_summary(manifest: Manifest) -> str:
    fused = manifest.exporter.get("fusions", {}).get("graphs", {})
    ops = sorted({op for counts in fused.values() for op in counts})
    fusion = f", fused {len(fused)} graphs ({', '.join(ops)})" if fused else ""
    shared = manifest.exporter.get("shared_layers")
    sharing = f", layers share {shared['graph']} ({shared['tensors']} weight inputs each)" if shared else ""
    record = manifest.quantization or {}
    kept = [name for name in record.get("fp32_graphs", []) if str(name).startswith("layer_")]
    int8 = (f", {manifest.dtype}: {len(record.get('int8_graphs', []))} layers int8"
            + (f" ({', '.join(kept)} fp32)" if kept else "")
            + f", top-{record.get('top_k')} agreement with fp32 {record.get('agreement', 0):.4f}") if record else ""
    return (f"{manifest.task}, {manifest.family}, {len(manifest.graphs)} graphs, "
            f"{manifest.total_bytes / 2**20:.1f} MiB, chained parity {manifest.parity['chained_max_abs_diff']:.2g}"
            f"{fusion}{int8}{sharing}")
