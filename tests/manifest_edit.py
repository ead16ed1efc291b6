"""Hand edits to an exported package's manifest.json that keep its digest (manifest.sha256)
matching, so a test reaches the check it means to provoke; the digest itself is tested in
tests/test_containment.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.package_digest import DIGEST_FILE, MANIFEST_FILE, digest_line


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
