"""The building blocks every manifest section shares: files with their hashes, tensor specs, and
graph entries (format v2, docs/FORMAT.md).

A graph entry names its role (and index where a role repeats), its format ("onnx"; "mlpackage" is
reserved for Core ML), the path a backend loads (a file, or a directory for an .mlpackage), its
inputs and outputs, and every file it needs with byte size and sha256 (external data included;
for a directory graph, each file inside it).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edgekit.errors import IntegrityError

GRAPH_FORMATS = ("onnx", "mlpackage")  # mlpackage: reserved for Core ML (a directory graph)


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks so large graphs do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """The keys of `data` that dataclass `cls` has: fields added by a later minor release are
    ignored, not fatal (FORMAT.md: additive optional fields do not bump the version)."""
    if not isinstance(data, dict):
        raise TypeError(f"expected an object for {cls.__name__}, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def inside_package(relative: Any) -> str:
    """`relative` if it is a non-empty relative path that stays inside the package, else ValueError."""
    if not isinstance(relative, str) or not relative:
        raise TypeError(f"a package path must be a non-empty string, got {relative!r}")
    parts = PurePosixPath(relative).parts
    if relative.startswith("/") or ".." in parts or "\\" in relative:
        raise ValueError(f"path {relative!r} must be a relative path inside the package")
    return relative


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Dims are ints or symbolic names ("batch", "sequence")."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TensorSpec:
        return TensorSpec(name=str(data["name"]), dtype=str(data["dtype"]), shape=tuple(data["shape"]))


@dataclass(frozen=True)
class FileEntry:
    """A file of the package (relative path), with the hash and size recorded at export."""

    file: str
    sha256: str
    bytes: int

    @staticmethod
    def of(root: Path, relative: str) -> FileEntry:
        path = root / relative
        return FileEntry(file=relative, sha256=sha256_file(path), bytes=path.stat().st_size)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FileEntry:
        entry = FileEntry(**known(FileEntry, data))
        if not isinstance(entry.sha256, str) or type(entry.bytes) is not int or entry.bytes < 0:
            raise TypeError(f"file entry {data!r} needs a string sha256 and a non-negative integer byte size")
        inside_package(entry.file)
        return entry


def files_under(root: Path, relative: str) -> tuple[FileEntry, ...]:
    """Entries for `relative`: the file itself, or every file below it when it is a directory
    (sorted, so a directory graph's entry is reproducible)."""
    path = root / relative
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file())
        return tuple(FileEntry.of(root, p.relative_to(root).as_posix()) for p in found)
    return (FileEntry.of(root, relative),)


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the package (docs/FORMAT.md, "Graph entries").

    `path` is what a backend loads: the .onnx file, or an .mlpackage directory. `files` lists
    every file the graph needs: the path itself when it is a file, then external data; for a
    directory graph, every file inside it.
    """

    name: str
    role: str
    format: str
    path: str
    files: tuple[FileEntry, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    index: int | None = None

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> GraphSpec:
        """Parse one entry; KeyError/TypeError/ValueError say which field is wrong."""
        if not isinstance(data, dict):
            raise TypeError(f"a graph entry must be an object, got {type(data).__name__}")
        for key in ("name", "role", "format", "path", "files", "inputs", "outputs"):
            if key not in data:
                raise KeyError(key)
        index = data.get("index")
        if index is not None and type(index) is not int:
            raise TypeError(f"index must be an integer or null, got {index!r}")
        if not isinstance(data["files"], list) or not isinstance(data["inputs"], list) \
                or not isinstance(data["outputs"], list):
            raise TypeError("files, inputs and outputs must be lists")
        return GraphSpec(
            name=str(data["name"]),
            role=str(data["role"]),
            index=index,
            format=str(data["format"]),
            path=inside_package(data["path"]),
            files=tuple(FileEntry.from_dict(entry) for entry in data["files"]),
            inputs=tuple(TensorSpec.from_dict(spec) for spec in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(spec) for spec in data["outputs"]),
        )


def check_present(root: Path, entries: list[FileEntry]) -> None:
    """Every listed file exists with its recorded size (hashes: `verify_entries`)."""
    missing = [entry.file for entry in entries if not (root / entry.file).is_file()]
    if missing:
        raise IntegrityError(f"package {root} is missing {', '.join(missing)}; re-export it", missing)
    resized = [entry.file for entry in entries if (root / entry.file).stat().st_size != entry.bytes]
    if resized:
        raise IntegrityError(f"package {root}: size changed for {', '.join(resized)}; re-export it", resized)


def verify_entries(root: Path, entries: list[FileEntry]) -> None:
    """Re-hash every entry; IntegrityError names each file that is missing, resized or changed."""
    bad = [entry.file for entry in entries
           if not (root / entry.file).is_file() or (root / entry.file).stat().st_size != entry.bytes
           or sha256_file(root / entry.file) != entry.sha256]
    if bad:
        raise IntegrityError(f"package {root}: hash mismatch for {', '.join(bad)}; re-export it", bad)
