"""The one way tests write an edited manifest into a package copy.

`write_manifest` writes `manifest.json` and, when the package has a digest sidecar
(`manifest.sha256`, the sha256 hex of manifest.json's bytes), rewrites it for the new bytes, so
tests that attack the parser keep reaching the parser once manifests are digest-checked on load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DIGEST_FILE = "manifest.sha256"


def write_manifest(pkg: Path, data: Any) -> None:
    """Write `data` as pkg/manifest.json (and refresh pkg/manifest.sha256 when it exists)."""
    raw = (json.dumps(data, indent=2) + "\n").encode("utf-8")
    (pkg / "manifest.json").write_bytes(raw)
    sidecar = pkg / DIGEST_FILE
    if sidecar.exists():
        sidecar.write_text(hashlib.sha256(raw).hexdigest(), encoding="ascii")
