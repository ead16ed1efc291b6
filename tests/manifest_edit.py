"""Tests that edit a package's manifest.json write it through `write_manifest`, so a package digest
sidecar (`manifest.sha256`, when the package has one) keeps matching the manifest's bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def write_manifest(pkg: Path, data: dict[str, Any]) -> None:
    """Write `data` as pkg/manifest.json (indent 2, newline); refresh pkg/manifest.sha256 if present."""
    raw = (json.dumps(data, indent=2) + "\n").encode("utf-8")
    (pkg / "manifest.json").write_bytes(raw)
    digest = pkg / "manifest.sha256"
    if digest.exists():
        digest.write_text(hashlib.sha256(raw).hexdigest() + "\n", encoding="utf-8")
