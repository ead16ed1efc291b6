"""The package digest: `manifest.sha256` beside `manifest.json` holds the sha256 of the manifest's
exact bytes, so an edit made after export (swapping two layers' entries, changing a hash, a shape
or a setting) is refused before anything is loaded.

The manifest lists every other file with its sha256, so the digest closes the chain: manifest
bytes -> digest, every listed file -> its hash in the manifest. It vouches that the package is
the one its exporter wrote; it is not a signature (anyone who can edit the manifest can rewrite
the digest), which is what signed packages are for.

Format: one line, `<64 hex digits>  manifest.json` (what `sha256sum manifest.json` prints, so
`sha256sum -c manifest.sha256` checks a package by hand). `write_manifest` is the one writer:
`Manifest.save` (every exporter) and `edgekit calibrate` (which rewrites a manifest in place) both
use it. `Manifest.load` calls `check_digest` after the format check (a version-1 package is
named as one, not as a digest failure) and before parsing the rest.

Example::

    write_manifest(Path("pkg"), json.dumps(data))     # manifest.json, then manifest.sha256
    check_digest(Path("pkg"), (Path("pkg") / MANIFEST_FILE).read_bytes())   # IntegrityError if edited
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from edgekit.atomic import write_text_atomic
from edgekit.containment import check_inside
from edgekit.errors import IntegrityError

MANIFEST_FILE = "manifest.json"
DIGEST_FILE = "manifest.sha256"
_DIGEST_LINE = re.compile(r"([0-9a-fA-F]{64})(?:[ \t]+\*?manifest\.json)?")
_MAX_DIGEST_BYTES = 1024


def digest_line(manifest_bytes: bytes) -> str:
    """The digest file's content for these manifest bytes."""
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST_FILE}\n"


def write_manifest(directory: Path, text: str) -> Path:
    """Write `text` as `directory/manifest.json`, then its digest (each file atomically: a
    temporary file renamed into place). The digest is computed from the bytes on disk, whatever
    the platform did to line endings. Returns the manifest's path."""
    path = directory / MANIFEST_FILE
    write_text_atomic(path, text)
    write_text_atomic(directory / DIGEST_FILE, digest_line(path.read_bytes()))
    return path


def check_digest(root: Path, manifest_bytes: bytes) -> None:
    """Raise IntegrityError (one line) unless `root/manifest.sha256` is a regular file (no symlink)
    holding the sha256 of `manifest_bytes`."""
    check_inside(root, DIGEST_FILE, "package file")
    path = root / DIGEST_FILE
    try:
        with open(path, "rb") as handle:
            text = handle.read(_MAX_DIGEST_BYTES + 1).decode("ascii")
    except FileNotFoundError:
        raise IntegrityError(f"package {root} has no {DIGEST_FILE} (the sha256 of {MANIFEST_FILE} written at export; "
                             "packages exported before it existed lack it); re-export the package with this edgekit",
                             [DIGEST_FILE]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise IntegrityError(f"package {root}: {DIGEST_FILE} is unreadable ({error}); re-export the package",
                             [DIGEST_FILE]) from None
    match = _DIGEST_LINE.fullmatch(text.strip())
    if len(text) > _MAX_DIGEST_BYTES or match is None:
        raise IntegrityError(f"package {root}: {DIGEST_FILE} is not one line '<sha256>  {MANIFEST_FILE}'; "
                             "re-export the package", [DIGEST_FILE])
    if match.group(1).lower() != hashlib.sha256(manifest_bytes).hexdigest():
        raise IntegrityError(f"package {root}: {MANIFEST_FILE} was edited after export (its sha256 does not match "
                             f"{DIGEST_FILE}); re-export the package, or after an edit you made on purpose run "
                             f"`sha256sum {MANIFEST_FILE} > {DIGEST_FILE}` in it", [MANIFEST_FILE])
