"""Hand edits to an exported package's manifest.json that keep its digest (manifest.sha256)
matching, so a test reaches the check it means to provoke; the digest itself is tested in
tests/test_containment.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.package_digest import DIGEST_FILE, MANIFEST_FILE, digest_line
from edgekit.package_files import files_under

# an `exporter.coreml` record as docs/FORMAT.md describes it (the stand-in twins below have no ops)
COREML_RECORD = {"coremltools": "9.0", "precision": "fp32", "compute_units": "cpu_and_ne", "palettize": None,
                 "minimum_deployment_target": "iOS17", "graphs": {}, "parity": {}}


def write_manifest(pkg: Path, data: Any) -> None:
    """Write `data` as pkg/manifest.json (indent 2, newline) and rewrite manifest.sha256 for it."""
    (pkg / MANIFEST_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    resign(pkg)


def rewrite_manifest(package: Path, mutate: Callable[[Any], Any]) -> Any:
    """Apply `mutate` to the package's parsed manifest (in place; its return value is ignored),
    write it back with a matching digest. Returns the written data."""
    data = json.loads((package / MANIFEST_FILE).read_text(encoding="utf-8"))
    mutate(data)
    write_manifest(package, data)
    return data


def resign(package: Path) -> None:
    """Rewrite manifest.sha256 for manifest.json as it is now (after an intended edit)."""
    (package / DIGEST_FILE).write_text(digest_line((package / MANIFEST_FILE).read_bytes()), encoding="utf-8")


def add_coreml_twins(package: Path, skip: tuple[str, ...] = ()) -> None:
    """Give every ONNX graph of `package` (but those named in `skip`) a Core ML twin entry: same
    role, index, inputs and outputs (int64 inputs declared int32, as coremltools converts them),
    name + "_coreml", path graphs/<name>.mlpackage holding a few arbitrary files, all listed."""
    data = rewrite_manifest(package, lambda d: None)
    twins = []
    for graph in data["graphs"]:
        if graph["name"] in skip:
            continue
        name = graph["name"] + "_coreml"
        bundle = package / "graphs" / f"{name}.mlpackage"
        (bundle / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
        (bundle / "Manifest.json").write_text('{"fileFormatVersion": "1.0.0"}')
        (bundle / "Data" / "com.apple.CoreML" / "model.mlmodel").write_bytes(name.encode() * 3)
        (bundle / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"\1" * 96)
        entries = files_under(package, f"graphs/{name}.mlpackage")
        twins.append({**graph, "name": name, "format": "mlpackage", "path": f"graphs/{name}.mlpackage",
                      "files": [{"file": e.file, "sha256": e.sha256, "bytes": e.bytes} for e in entries],
                      "inputs": [{**spec, "dtype": "int32" if spec["dtype"] == "int64" else spec["dtype"]}
                                 for spec in graph["inputs"]]})

    def add(d: dict[str, Any]) -> None:
        d["graphs"] += twins
        d["exporter"]["coreml"] = COREML_RECORD

    rewrite_manifest(package, add)
