"""Packages the bench derives from a package's own source for the `edgekit-shared` and
`edgekit-int8` variants (issue 14): the same checkpoint exported again with `--shared-layers`,
`--dtype int8`, both, or `--dtype mixed`, with the package's own max length (and instruction, for decoder
rerankers), cached by the source package's file hashes and the options.

The int8 export runs its agreement gate (exporters/quantize.py) on `gate_data`: the bench passes
its own queries, so the gate measures the data the bench measures. When the gate refuses, the
variant is skipped and the refusal (which names the layers that cost the most) becomes a note of
the report: a bench never runs a package its export would not write.

Example::

    path, note = derived_package(Manifest.load("pkg"), "edgekit-int8", Path("work"), gate_data=Path("q.jsonl"))
    note  # "" or why the variant was skipped
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.manifest import MANIFEST_FILE, Manifest

# variant -> the export options that make its package (the run itself is edgekit-exact's)
DERIVED: dict[str, dict[str, Any]] = {
    "edgekit-shared": {"shared_layers": True},
    "edgekit-int8": {"dtype": "int8"},
    "edgekit-shared-int8": {"shared_layers": True, "dtype": "int8"},
    "edgekit-mixed": {"dtype": "mixed"},  # the gate holds: the costliest layers stay fp32
}


def describe(variant: str) -> str:
    """'`edgekit-int8` (--dtype int8)': the variant and the export flags that make its package."""
    flags = " ".join(f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}")
                     for name, value in DERIVED[variant].items())
    return f"`{variant}` ({flags})"


def export_options(manifest: Manifest, variant: str, gate_data: Path | None,
                   min_agreement: float | None) -> dict[str, Any]:
    """The keyword options `export_source` gets for `variant` of `manifest`'s source."""
    options: dict[str, Any] = {**DERIVED[variant], "max_length": manifest.ranking.max_length, "overwrite": True}
    if manifest.ranking.prompt is not None:
        options["instruction"] = manifest.ranking.prompt.instruction
    if options.get("dtype") in ("int8", "mixed"):
        if gate_data is not None:
            options["gate_data"] = gate_data
        if min_agreement is not None:
            options["min_agreement"] = min_agreement
    return options


def derived_package(manifest: Manifest, variant: str, work: Path, gate_data: Path | None = None,
                    min_agreement: float | None = None,
                    progress: Callable[[str], None] = lambda message: None) -> tuple[Path | None, str]:
    """(package, "") for `variant`, exported once under `work` and reused; (None, reason) when the
    export refused (the int8 gate, or layers that cannot share a graph)."""
    from edgekit.exporters.families import export_source

    options = export_options(manifest, variant, gate_data, min_agreement)
    gate = gate_data.read_bytes() if "gate_data" in options and gate_data is not None else b""
    key = hashlib.sha256(json.dumps({
        "files": [entry.sha256 for entry in manifest.files()],
        "options": {name: str(value) for name, value in sorted(options.items()) if name != "gate_data"},
        "gate": hashlib.sha256(gate).hexdigest(),
    }, sort_keys=True).encode()).hexdigest()[:16]
    out = work / f"{variant}-{key}"
    if (out / MANIFEST_FILE).is_file():
        return out, ""
    progress(f"{describe(variant)}: exporting {manifest.source['path']} to {out}")
    try:
        export_source(manifest.source["path"], out, task=manifest.task, **options)
    except EdgekitError as error:
        return None, f"`{variant}` skipped: its export refused ({error})"
    return out, ""
