"""The export families, in order, and how `edgekit export` picks one for a source.

A source is recognised from its files (config.json, modules.json, model_index.json), never from
its name or path; exactly one family may claim a source unasked (tests/test_export_families.py
builds every family's tiny source and checks it). `--task` is an optional constraint: the family
must be of that task, and a family may take more sources when its task is named (a plain encoder
with --task select). This module imports no torch: each family imports its exporter inside
`export`, and a missing extra is a one-line MissingDependencyError.

Example::

    exported = export_source("path/or/hub-id", Path("pkg"), max_length=256)
    exported.family.name, exported.manifest.task, exported.summary()
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.atomic import check_destination
from edgekit.errors import InvalidArgumentError, SourceModelError
from edgekit.exporters.families.base import ExportFamily, Progress, describe_source, flag
from edgekit.exporters.families.bi_encoder import BI_ENCODER
from edgekit.exporters.families.cross_encoder import CROSS_ENCODER
from edgekit.exporters.families.qwen3_reranker import QWEN3_RERANKER
from edgekit.exporters.families.svd import SVD
from edgekit.exporters.families.wan import WAN
from edgekit.exporters.source import resolve_source
from edgekit.manifest import Manifest

FAMILIES: tuple[ExportFamily, ...] = (CROSS_ENCODER, BI_ENCODER, QWEN3_RERANKER, SVD, WAN)
TASKS: tuple[str, ...] = tuple(dict.fromkeys(family.task for family in FAMILIES))

__all__ = ["FAMILIES", "TASKS", "ExportFamily", "Exported", "export_source", "family_for_source", "family_named"]


@dataclass(frozen=True)
class Exported:
    """What `export_source` returns: the family that exported and the package's manifest."""

    family: ExportFamily
    manifest: Manifest

    def summary(self) -> str:
        return self.family.summary(self.manifest)


def family_named(name: str) -> ExportFamily:
    for family in FAMILIES:
        if family.name == name:
            return family
    raise InvalidArgumentError(f"unknown export family {name!r}; known: {', '.join(f.name for f in FAMILIES)}")


def _known() -> str:
    return "; ".join(f"{family.name} (--task {family.task}: {family.description})" for family in FAMILIES)


def _option_owners(options: Iterable[str]) -> str:
    """'; --op-groups is for --task video (svd)' for each option only some families take."""
    hints = []
    for option in options:
        owners = [family for family in FAMILIES if option in family.options]
        if owners and len(owners) < len(FAMILIES):
            tasks = "/".join(dict.fromkeys(family.task for family in owners))
            hints.append(f"{flag(option)} is for --task {tasks} ({', '.join(family.name for family in owners)})")
    return "".join(f"; {hint}" for hint in hints)


def _one_at_most(path: Path, claimed: list[ExportFamily]) -> None:
    """Two families claiming one source is a bug in the families (the meta-test guards against it)."""
    if len(claimed) > 1:
        raise SourceModelError(f"{path} is claimed by several export families ({', '.join(f.name for f in claimed)}); "
                               "pass --task to choose")


def family_for_source(path: Path, task: str | None = None, options: Iterable[str] = ()) -> ExportFamily:
    """The one family that exports the directory at `path` (as `task` when given).

    Raises SourceModelError in one line: no family recognises it (naming what it holds and the
    known families; `options`, the option names given, add which families take them), or `task`
    does not fit the family that does. An unknown `task` is an InvalidArgumentError.
    """
    path = Path(path)
    if task is not None and task not in TASKS:
        raise InvalidArgumentError(f"unknown task {task!r}; use {', '.join(TASKS)}")
    if task is not None:
        claimed_for_task = [family for family in FAMILIES if family.task == task and family.recognises(path, task)]
        _one_at_most(path, claimed_for_task)
        if claimed_for_task:
            return claimed_for_task[0]
    claimed = [family for family in FAMILIES if family.recognises(path)]
    _one_at_most(path, claimed)
    if claimed:
        if task is not None:
            family = claimed[0]
            raise SourceModelError(f"--task {task} does not fit {path}: it looks like {family.description}, which "
                                   f"edgekit exports as --task {family.task} ({family.name})")
        return claimed[0]
    raise SourceModelError(f"no export family recognises {path} ({describe_source(path)}); known families: "
                           f"{_known()}{_option_owners(options)}")


def export_source(source: str | Path, out: Path, task: str | None = None, progress: Progress | None = None,
                  **options: Any) -> Exported:
    """`edgekit export`: resolve `source` (a directory or hub id), pick its family, check the
    options against it (None means "not given"), export. Every user mistake is one typed line.
    `out` is checked first (edgekit/atomic.py: writable, not a non-package with --force), before
    a hub download or a model load."""
    local = Path(source) if os.path.isdir(source) else None  # a hub id is checked after the download
    check_destination(Path(out), local, overwrite=bool(options.get("overwrite")))
    path = resolve_source(str(source))
    given = [name for name, value in options.items() if value is not None]
    family = family_for_source(path, task, given)
    return Exported(family, family.export(path, Path(out), progress, **options))
