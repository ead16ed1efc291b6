"""Hand edits to an exported package that keep its manifest digest valid, so a test reaches the
check it means to provoke (the digest itself is tested in tests/test_containment.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.package_digest import DIGEST_FILE, MANIFEST_FILE, digest_line


def rewrite_manifest(package: Path, mutate: Callable[[Any], Any]) -> Any:
    """Apply `mutate` to the package's parsed manifest (in place; its return value is ignored),
    write it back and rewrite manifest.sha256 for the new bytes. Returns the written data."""
    path = package / MANIFEST_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    mutate(data)
    path.write_text(json.dumps(data), encoding="utf-8")
    resign(package)
    return data


def resign(package: Path) -> None:
    """Rewrite manifest.sha256 for manifest.json as it is now (after an intended edit)."""
    (package / DIGEST_FILE).write_text(digest_line((package / MANIFEST_FILE).read_bytes()), encoding="utf-8")
