"""Output paths checked before any work: an export or a video run fails in one line, at once,
when its output cannot be written, not after minutes of work (and never with a traceback).

`check_output_path(path, what, suffix_bytes)` refuses (OutputPathError): a path or a name too
long for the filesystem (counting the writer's temporary suffix), a path inside a file, a
nearest existing folder this process cannot create anything in (probed with a real mkdir and
rmdir: mode bits say nothing to root, nor about read-only mounts). It creates nothing that
stays. Whether `path` itself exists is the caller's question (edgekit/atomic.py for packages,
runtimes/video/images.py for videos).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path

from edgekit.errors import OutputPathError


def shown(path: Path | str, limit: int = 120) -> str:
    """`path` for a one-line message: a 5,000-character path is cut in the middle."""
    text = str(path)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-(limit // 2):]}"


def _limits(folder: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) of the filesystem holding `folder` (255, 4096 when unknown)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 255, 4096


def _nearest_existing(path: Path, what: str) -> Path:
    """The nearest ancestor of `path` that exists; OutputPathError when that is not a folder.
    (Ancestors too long to look at are skipped: the length check names them.)"""
    for ancestor in path.parents:
        try:
            mode = os.stat(ancestor).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as error:
            if error.errno == errno.ENAMETOOLONG:
                continue
            raise OutputPathError(f"{what} {shown(path)}: cannot read {shown(ancestor)} ({error.strerror}); "
                                  "choose another path") from None
        if not stat.S_ISDIR(mode):
            raise OutputPathError(f"{what} {shown(path)} is inside {shown(ancestor)}, which is a file, not a "
                                  "folder; choose another path")
        return ancestor
    raise OutputPathError(f"{what} {shown(path)}: no part of it exists; choose another path")  # pragma: no cover


def _probe_writable(folder: Path, what: str, path: Path) -> None:
    """Create and remove a folder in `folder`: the only check that holds for root and read-only mounts."""
    probe = folder / f".edgekit-probe-{uuid.uuid4().hex[:8]}"
    try:
        os.mkdir(probe)
    except OSError as error:
        raise OutputPathError(f"{what} {shown(path)}: cannot write in {shown(folder)} ({error.strerror}); "
                              "choose a folder you can write to") from None
    os.rmdir(probe)


def check_output_path(path: Path | str, what: str = "--out", suffix_bytes: int = 0) -> Path:
    """The absolute form of `path` once it is known to be writable (see the module docstring).

    `suffix_bytes`: how much longer than the last name the writer's temporary names are.
    Raises OutputPathError in one line: too long, inside a file, not writable. Whether `path`
    itself exists is the caller's question."""
    absolute = Path(os.path.abspath(os.fspath(path)))
    folder = _nearest_existing(absolute, what)
    name_max, path_max = _limits(folder)
    encoded = os.fsencode(str(absolute))
    if len(encoded) + suffix_bytes >= path_max:
        raise OutputPathError(f"{what} {shown(path)} is {len(encoded)} bytes long; paths here must stay under "
                              f"{path_max - suffix_bytes} bytes; choose a shorter path")
    for part in absolute.parts[1:]:
        extra = suffix_bytes if part == absolute.name else 0
        if len(os.fsencode(part)) + extra > name_max:
            raise OutputPathError(f"{what} {shown(path)}: the name {shown(part, 40)!r} is {len(os.fsencode(part))} "
                                  f"bytes; names here are at most {name_max - extra} bytes; choose a shorter name")
    _probe_writable(folder, what, absolute)
    return absolute
