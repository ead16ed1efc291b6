"""Atomic writes that never destroy: a package (or a file) appears complete or not at all, and
only what edgekit wrote is ever replaced or removed.

Contract of `staged_directory(destination, overwrite, replaceable)`:

- Checked before any work (`check_destination`, also called by `edgekit export` and the
  exporters before they load a model): the path is not too long for the filesystem (with the
  staging name's suffix), no part of it is a file, its nearest existing folder is writable
  (edgekit/output_paths.py), and it is not the source or an ancestor of it. Each failure is one
  `OutputPathError` / `OutputExistsError` line.
- An existing destination is replaced only with `overwrite` and only when it is an empty folder
  or `replaceable(destination)` says it is ours (default: an edgekit package, i.e. a
  manifest.json whose "format" is "edgekit-package"). A file, or a folder holding anything
  else, is refused and nothing is touched.
- The new tree is built in `.NAME.partial-XXXXXXXX` beside the destination, holding a marker
  file (`MARKER`: the writer's pid and host) from its first moment. On success the marker goes,
  every file gets the permissions a plain open() would give (0666 and 0777 for folders, less the
  umask: libraries write some files 0600 through mkstemp-like calls), every file and folder is
  fsynced, the tree is moved into place and the parent folder is fsynced.
- On any exception, and on SIGTERM/SIGHUP (turned into `ExportInterrupted`, a KeyboardInterrupt,
  while the staging folder exists; main thread only) the staging folder is removed and the
  destination is left as it was.
- Crash safety of the replace (`--force`): on Linux the new tree and the old package are swapped
  in one step with renameat2(RENAME_EXCHANGE) (glibc >= 2.28, through ctypes), so the
  destination always names a complete package; the old one then sits in the staging name and
  is removed. Where the exchange is not available (other systems, filesystems without it) the
  old package is first renamed to `.NAME.old-XXXXXXXX`, then the new one into place; a kill
  between the two renames leaves the old package under that name, and the next export of the
  same destination renames it back (recovery) before anything else. Signals are held during
  the renames.
- Leftovers of killed runs (`kill -9`): the next export of the same destination removes
  `.NAME.partial-XXXXXXXX` and `.NAME.old-XXXXXXXX` siblings, and only those that look like
  ours: a marker whose process is gone (a live writer's folder is left alone), an empty folder,
  a folder `replaceable` accepts, or one holding only package names (graphs/, tokenizer/,
  manifest.json). Nothing else is ever deleted.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputExistsError, OutputPathError
from edgekit.output_paths import check_output_path, shown

MARKER = ".edgekit-staging"
PACKAGE_NAMES = frozenset({"graphs", "tokenizer", "manifest.json", MARKER})
TOKEN_LENGTH = 8
SUFFIX_BYTES = len(".partial-") + TOKEN_LENGTH + 1  # the longest name added to --out: ".NAME.partial-XXXXXXXX"
_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
_HELD = (*_TERMINATING, signal.SIGINT)

Replaceable = Callable[[Path], bool]


class ExportInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP arrived while a staged directory existed: handled like Ctrl-C (SIGINT)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def is_edgekit_package(path: Path) -> bool:
    """A folder holding manifest.json whose JSON object has "format": "edgekit-package"."""
    from edgekit.manifest import FORMAT_NAME, MANIFEST_FILE

    try:
        with open(path / MANIFEST_FILE, encoding="utf-8") as file:
            manifest = json.load(file)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME


def check_destination(destination: Path, source: Path | None = None, overwrite: bool = False,
                      replaceable: Replaceable = is_edgekit_package) -> Path:
    """Everything `staged_directory` will need of `destination`, checked before any work; returns it
    resolved. Also recovers an interrupted replace and removes stale leftovers (module docstring)."""
    check_output_path(destination, suffix_bytes=SUFFIX_BYTES)
    destination = Path(destination).resolve()
    if source is not None:
        source = Path(source).resolve()
        if destination == source or destination in source.parents or destination == Path.home():
            raise OutputExistsError(f"--out {shown(destination)} would replace the source checkpoint "
                                    f"{shown(source)}; choose another --out")
    restored = tidy_leftovers(destination, replaceable)
    if not os.path.lexists(destination):
        return destination
    note = f" (restored from {restored.name}, left by an interrupted --force export)" if restored else ""
    if not overwrite:
        raise OutputExistsError(f"{shown(destination)} already exists{note}; choose another --out or pass --force "
                                "to replace it")
    _check_replaceable(destination, replaceable)
    return destination


def _check_replaceable(destination: Path, replaceable: Replaceable) -> None:
    """--force replaces an empty folder or one `replaceable` accepts; anything else is refused."""
    if not destination.is_dir():
        raise OutputExistsError(f"--force replaces only an edgekit package or an empty folder, and "
                                f"{shown(destination)} is a file; move it or choose another --out")
    if any(destination.iterdir()) and not replaceable(destination):
        raise OutputExistsError(f"--force replaces only an edgekit package or an empty folder, and "
                                f"{shown(destination)} holds other files (no edgekit manifest.json); nothing was "
                                "deleted; move them or choose another --out")


# --- leftovers of interrupted runs -----------------------------------------------------------
def _siblings(destination: Path, kind: str) -> list[Path]:
    pattern = re.compile(rf"\.{re.escape(destination.name)}\.{kind}-[0-9a-f]{{{TOKEN_LENGTH}}}")
    try:
        names = os.listdir(destination.parent)
    except OSError:
        return []
    return [destination.parent / name for name in names if pattern.fullmatch(name)]


def _writer_alive(folder: Path) -> bool:
    """True when `folder`'s marker names a process of this host that still runs."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        pid, host = int(marker["pid"]), str(marker["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return True  # another machine's writer (a shared filesystem): not ours to judge
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _looks_ours(folder: Path, replaceable: Replaceable) -> bool:
    """A real folder that edgekit left: marked, empty, accepted by `replaceable`, or package names only."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        names = set(os.listdir(folder))
    except OSError:
        return False
    if MARKER in names:
        return not _writer_alive(folder)
    return not names or names <= PACKAGE_NAMES or replaceable(folder)


def tidy_leftovers(destination: Path, replaceable: Replaceable = is_edgekit_package) -> Path | None:
    """Recover and clean what killed runs left beside `destination` (resolved).

    When `destination` is absent and a `.NAME.old-*` folder holds what `replaceable` accepts,
    the newest is renamed back to `destination` and returned. Then stale `.NAME.partial-*` and
    `.NAME.old-*` folders that look like ours are removed. Returns the restored folder or None."""
    restored = None
    if not os.path.lexists(destination):
        olds = [old for old in _siblings(destination, "old") if not old.is_symlink() and old.is_dir()
                and replaceable(old)]
        if olds:
            newest = max(olds, key=lambda old: old.stat().st_mtime)
            try:
                os.rename(newest, destination)
                restored = newest
            except OSError:
                pass
    for leftover in _siblings(destination, "partial") + _siblings(destination, "old"):
        if _looks_ours(leftover, replaceable):
            _remove_tree(leftover)
    return restored


def _remove_tree(folder: Path) -> None:
    """Remove `folder`, its marker last, so a folder cut short by a kill still reads as ours."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name == MARKER:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except OSError:
                pass
    for remove in (os.unlink, os.rmdir):
        try:
            remove(folder / MARKER if remove is os.unlink else folder)
        except OSError:
            pass


# --- signals -----------------------------------------------------------------------------------
@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ExportInterrupted (as SIGINT raises
    KeyboardInterrupt), so cleanup runs. Only the main thread can set handlers; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise ExportInterrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in _TERMINATING}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM/SIGHUP over a few renames; one that came is raised after the block
    (as ExportInterrupted, or KeyboardInterrupt for SIGINT). Handlers, not a signal mask: a mask
    holds only this thread, and the kernel may hand the signal to an onnxruntime or torch thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: arrived.append(signum)) for signum in _HELD}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if arrived:
        raise KeyboardInterrupt() if arrived[0] == signal.SIGINT else ExportInterrupted(arrived[0])


# --- the staged directory ------------------------------------------------------------------
@contextmanager
def staged_directory(destination: Path, overwrite: bool = False,
                     replaceable: Replaceable = is_edgekit_package) -> Iterator[Path]:
    """Yield an empty staging directory beside `destination`; on success move it into place.

    On any exception (SIGTERM and SIGHUP included) the staging directory is removed and
    `destination` is left untouched. With `overwrite`, an existing destination that is an empty
    folder or `replaceable` is swapped out only after staging succeeded. See the module docstring."""
    destination = check_destination(Path(destination), overwrite=overwrite, replaceable=replaceable)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:TOKEN_LENGTH]}"
        staging.mkdir()
    except OSError as error:
        raise OutputPathError(f"--out {shown(destination)}: cannot create it ({error.strerror}); "
                              "choose another --out") from None
    with terminate_as_interrupt():
        try:
            (staging / MARKER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}),
                                          encoding="utf-8")
            yield staging
            (staging / MARKER).unlink()
            settle(staging)
            with _signals_held():
                if os.path.lexists(destination):
                    if not overwrite:  # appeared while we were staging
                        raise OutputExistsError(f"{shown(destination)} appeared during the export; pass --force "
                                                "to replace it")
                    _check_replaceable(destination, replaceable)
                _swap_in(staging, destination)
        except BaseException:
            with _signals_held():
                _remove_tree(staging)
            raise


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it the only other way (briefly sets it)
    os.umask(mask)
    return mask


def settle(root: Path) -> None:
    """Give every file and folder under `root` plain permissions (0666/0777 less the umask) and
    fsync them, folders after their contents, `root` last. Symlinks are left alone."""
    mask = _umask()
    file_mode, folder_mode = 0o666 & ~mask, 0o777 & ~mask
    os.chmod(root, folder_mode)
    for folder, folders, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            os.chmod(path, file_mode)
            _fsync(path, os.O_RDONLY)
        for name in folders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, folder_mode)
        _fsync(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: str | Path, flags: int) -> None:
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    except OSError as error:  # some filesystems cannot fsync a folder; the files still were
        if error.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(descriptor)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2(_AT_FDCWD, os.fsencode(str(first)), _AT_FDCWD, os.fsencode(str(second)), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in(staging: Path, destination: Path) -> None:
    """Put `staging` at `destination` (see the module docstring for the crash-safe replace)."""
    parent = destination.parent
    if not os.path.lexists(destination):
        os.rename(staging, destination)
    elif _exchange(staging, destination):
        _remove_tree(staging)  # now the old package
    else:
        retired = parent / f".{destination.name}.old-{staging.name[-TOKEN_LENGTH:]}"
        os.rename(destination, retired)
        try:
            os.rename(staging, destination)
        except OSError:
            os.rename(retired, destination)
            raise
        _remove_tree(retired)
    _fsync(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    temporary = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:TOKEN_LENGTH]}"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
