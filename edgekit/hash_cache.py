"""Integrity on load, cheaply: the sha256 of every listed file, remembered per file identity.

`edgekit.load` (and `edgekit run`) check the hash of every file a package lists before the first
session, so one flipped weight byte is refused instead of shifting scores. Hashing a 2 GiB
package costs seconds, so a hash is remembered under the file's identity: its resolved path plus
`(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`. Any write to a file changes its ctime (the
kernel sets it; no user call can set it back), so a remembered hash is never used for content it
was not computed from. `edgekit verify` always re-hashes (`Manifest.verify`), without this cache.

Two levels: a dict in this process, and a JSON file shared by processes, `hashes.json` in the
edgekit cache directory (`$EDGEKIT_CACHE`, else `$XDG_CACHE_HOME/edgekit`, else
`~/.cache/edgekit`). The file is written atomically (a temporary file renamed into place), keeps
one entry per path and at most `MAX_ENTRIES` (the least recently used go first), and is only an
accelerator: a missing, corrupt, oversized or unwritable cache is ignored, never an error.

Racy files: timestamps have a granularity (a few ms for ctime on Linux, 2 s on FAT), so a file
written again within one tick after it was hashed could keep its identity. A hash is therefore
remembered only when the file's last change (mtime and ctime) lies more than `RACY_NS` before
the hashing started, and only when the identity did not change while it was read; a file that
changed recently is simply hashed again on the next load (git's "racily clean" rule).

Trust: the cache file is trusted as much as the user's own home directory; whoever can write it
can already change edgekit itself.

Example::

    verify_cached(manifest.root, manifest.files())   # IntegrityError naming each file that fails
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edgekit.errors import IntegrityError
from edgekit.package_files import FileEntry, sha256_file

CACHE_FILE = "hashes.json"
CACHE_FORMAT = "edgekit-hash-cache-1"
MAX_ENTRIES = 4096  # about 250 bytes each: the file stays under ~1 MiB
MAX_CACHE_BYTES = 4 << 20  # a larger file is not read (it cannot be ours)
TOUCH_NS = 3600 * 1_000_000_000  # a cache hit refreshes its entry's last use at most hourly
RACY_NS = 2_000_000_000  # a change closer than this to the hashing is not trusted to change the identity

Identity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns

_memory: dict[tuple[str, Identity], str] = {}
_lock = threading.Lock()


def cache_file() -> Path:
    """Where the shared cache lives (the edgekit cache directory; see edgekit.demo.cache_dir)."""
    from edgekit.demo import cache_dir

    return cache_dir() / CACHE_FILE


def identity(path: Path) -> Identity:
    """The identity of `path` (not following a symlink: containment already refused them)."""
    info = os.stat(path, follow_symlinks=False)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def verify_cached(root: Path, entries: list[FileEntry], store: Path | None = None) -> None:
    """Check that every entry's file under `root` has its recorded size and sha256, hashing only
    files whose identity has no remembered hash. Raises IntegrityError (one line) naming each file
    that is missing, resized or changed. `store`: the shared cache file (None: `cache_file()`)."""
    store = cache_file() if store is None else store
    disk = _read(store)
    changed = False
    bad = []
    for entry in entries:
        path = root / entry.file
        try:
            size, digest, written = _sha256(path, disk)
        except OSError:
            bad.append(entry.file)
            continue
        changed |= written
        if digest != entry.sha256 or size != entry.bytes:
            bad.append(entry.file)
    if changed:
        _write(store, disk)
    if bad:
        raise IntegrityError(f"package {root}: {', '.join(bad)} changed since export (sha256 mismatch), so scores "
                             "would shift silently; restore the file from the published package or re-export it", bad)


def _sha256(path: Path, disk: dict[str, Any]) -> tuple[int, str, bool]:
    """(size, sha256 of `path`, whether the shared cache's entries changed)."""
    key = str(path)
    before = identity(path)
    with _lock:
        known = _memory.get((key, before))
    if known is not None:
        return before[2], known, False
    entry = disk.get(key)
    if isinstance(entry, dict) and entry.get("id") == list(before) and isinstance(entry.get("sha256"), str):
        _remember(key, before, entry["sha256"])
        stale = not isinstance(entry.get("used"), int) or entry["used"] < time.time_ns() - TOUCH_NS
        if stale:  # keeps the least-recently-used order roughly right without a write per load
            entry["used"] = time.time_ns()
        return before[2], entry["sha256"], stale
    started = _now_ns()
    digest = sha256_file(path)
    if identity(path) != before or max(before[3], before[4]) > started - RACY_NS:
        return before[2], digest, False  # changed while read, or too recently to trust its identity
    _remember(key, before, digest)
    disk[key] = {"id": list(before), "sha256": digest, "used": time.time_ns()}
    return before[2], digest, True


def _remember(key: str, file: Identity, digest: str) -> None:
    with _lock:
        if len(_memory) >= MAX_ENTRIES:
            _memory.clear()
        _memory[(key, file)] = digest


def _now_ns() -> int:
    return time.time_ns()


def _read(store: Path) -> dict[str, Any]:
    """The shared cache's entries; empty when it is missing, unreadable, oversized or not ours."""
    try:
        if store.stat().st_size > MAX_CACHE_BYTES:
            return {}
        data = json.loads(store.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def _write(store: Path, entries: dict[str, Any]) -> None:
    """Write the newest `MAX_ENTRIES` entries atomically; any failure leaves the cache as it was."""
    def used(item: tuple[str, Any]) -> int:
        value = item[1].get("used") if isinstance(item[1], dict) else None
        return value if isinstance(value, int) else 0

    kept = dict(sorted(entries.items(), key=used, reverse=True)[:MAX_ENTRIES])
    temporary = store.parent / f".{store.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"format": CACHE_FORMAT, "entries": kept}), encoding="utf-8")
        os.replace(temporary, store)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
