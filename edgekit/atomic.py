"""Atomic writes: a package (or a file) appears complete or not at all."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgekit.errors import OutputExistsError


@contextmanager
def staged_directory(destination: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory beside `destination`; on success move it into place.

    On any exception the staging directory is removed and `destination` is left untouched.
    With `overwrite`, an existing destination is swapped out only after staging succeeded.
    """
    destination = destination.resolve()
    if destination.exists() and not overwrite:
        raise OutputExistsError(f"{destination} already exists; choose another --out or pass --force to replace it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = destination.parent / f".{destination.name}.partial-{token}"
    staging.mkdir()
    try:
        yield staging
        if destination.exists() and not overwrite:  # appeared while we were staging
            raise OutputExistsError(f"{destination} appeared during the export; pass --force to replace it")
        _swap_in(staging, destination, destination.parent / f".{destination.name}.old-{token}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, destination: Path, retired: Path) -> None:
    """Move `staging` to `destination`; an existing destination is restored if that fails."""
    if not destination.exists():
        os.replace(staging, destination)
        return
    os.replace(destination, retired)
    try:
        os.replace(staging, destination)
    except OSError:
        os.replace(retired, destination)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def check_destination(destination: Path, source: Path, overwrite: bool) -> None:
    """Refuse an output that exists (without overwrite) or that would replace the source itself."""
    destination, source = destination.resolve(), source.resolve()
    if destination == source or destination in source.parents or destination == Path.home():
        raise OutputExistsError(f"--out {destination} would replace the source checkpoint {source}; choose another --out")
    if destination.exists() and not overwrite:
        raise OutputExistsError(f"{destination} already exists; choose another --out or pass --force to replace it")


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    temporary = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
