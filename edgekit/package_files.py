"""The building blocks every manifest section shares: files with their hashes, tensor specs, and
graph entries (format v2, docs/FORMAT.md).

A graph entry names its role (and index where a role repeats), its format ("onnx", or "mlpackage":
Core ML), the path a backend loads (a file, or a directory for an .mlpackage), its
inputs and outputs, and every file it needs with byte size and sha256 (external data included;
for a directory graph, each file inside it).

A layer of a shared-layers package (`edgekit export --shared-layers`) points its `path` at the one
shared graph every layer runs and carries `weights`: where each of its tensors sits in its own
weights file, which the runtime memory-maps and feeds as the shared graph's weight inputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import IntegrityError
from edgekit.manifest_fields import (
    MAX_BYTES,
    MAX_DIM,
    MAX_FILES,
    MAX_NAME_CHARS,
    MAX_RANK,
    MAX_TENSORS,
    MAX_WEIGHTS,
    ManifestError,
    choice,
    integer,
    items,
    obj,
    optional,
    package_path,
    required,
    sha256_hex,
    shown,
    text,
)

GRAPH_FORMATS = ("onnx", "mlpackage")  # mlpackage: a Core ML program (a directory graph)
# what a TensorSpec's dtype may say (ONNX element types by numpy name)
TENSOR_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
MAX_INDEX = 1 << 16  # a graph's index (layer, block or group number)
# bytes per element of each TENSOR_DTYPES entry (weights tensors: bytes == elements x itemsize)
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
            "uint8": 1, "bool": 1}


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in blocks so large graphs do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def known(cls: type, data: Any, where: str = "") -> dict[str, Any]:
    """The keys of `data` that dataclass `cls` has: fields added by a later minor release are
    ignored, not fatal (FORMAT.md: additive optional fields do not bump the version)."""
    data = obj(data, where or cls.__name__)
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in data.items() if key in names}


def inside_package(relative: Any, where: str = "path") -> str:
    """`relative` if it is a canonical relative path that stays inside the package, else
    ManifestError (manifest_fields.package_path: checked before any filesystem call)."""
    return package_path(relative, where)


def _dim(value: Any, where: str) -> int | str:
    """One dim of a TensorSpec: a size in 0..MAX_DIM or a symbolic name ("batch")."""
    return text(value, where) if isinstance(value, str) else integer(value, where, 0, MAX_DIM)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Dims are ints or symbolic names ("batch", "sequence")."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @staticmethod
    def from_dict(data: Any, where: str = "tensor") -> TensorSpec:
        """Name and dtype checked; each dim an int in 0..MAX_DIM or a symbolic name."""
        data = obj(data, where)
        shape = items(required(data, "shape", where), f"{where}.shape", 0, MAX_RANK)
        dims = tuple(_dim(dim, f"{where}.shape[{i}]") for i, dim in enumerate(shape))
        return TensorSpec(name=text(required(data, "name", where), f"{where}.name"),
                          dtype=choice(required(data, "dtype", where), f"{where}.dtype", TENSOR_DTYPES), shape=dims)


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
    def from_dict(data: Any, where: str = "file entry") -> FileEntry:
        """A canonical package path, a 64-hex-digit sha256 and a byte size in 0..MAX_BYTES."""
        data = obj(data, where)
        return FileEntry(file=package_path(required(data, "file", where), f"{where}.file"),
                         sha256=sha256_hex(required(data, "sha256", where), f"{where}.sha256"),
                         bytes=integer(required(data, "bytes", where), f"{where}.bytes", 0, MAX_BYTES))


def files_under(root: Path, relative: str) -> tuple[FileEntry, ...]:
    """Entries for `relative`: the file itself, or every file below it when it is a directory
    (sorted, so a directory graph's entry is reproducible)."""
    path = root / relative
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.is_file())
        return tuple(FileEntry.of(root, p.relative_to(root).as_posix()) for p in found)
    return (FileEntry.of(root, relative),)


@dataclass(frozen=True)
class WeightTensor:
    """One weight input of a shared layer graph: `bytes` bytes at `offset` of the layer's weights
    file, little-endian, C order, `dtype` with the fixed `shape`."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    bytes: int

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @staticmethod
    def from_dict(data: Any, where: str) -> WeightTensor:
        """Name, dtype and a fixed shape; `bytes` must equal elements x itemsize."""
        data = obj(data, where)
        for key in ("name", "dtype", "shape", "offset", "bytes"):
            required(data, key, where)
        dims = items(data["shape"], f"{where}.shape", 0, MAX_RANK)
        tensor = WeightTensor(name=text(data["name"], f"{where}.name"),
                              dtype=choice(data["dtype"], f"{where}.dtype", TENSOR_DTYPES),
                              shape=tuple(integer(dim, f"{where}.shape[{i}]", 0, MAX_DIM) for i, dim in enumerate(dims)),
                              offset=integer(data["offset"], f"{where}.offset", 0, MAX_BYTES),
                              bytes=integer(data["bytes"], f"{where}.bytes", 0, MAX_BYTES))
        if tensor.bytes != tensor.elements * ITEMSIZE[tensor.dtype]:
            raise ManifestError(f"{where}: {tensor.bytes} bytes do not hold a {tensor.dtype} tensor of shape "
                                f"{list(tensor.shape)} ({tensor.elements * ITEMSIZE[tensor.dtype]} bytes)")
        return tensor


@dataclass(frozen=True)
class LayerWeights:
    """A shared layer's own weights (docs/FORMAT.md, "Shared layers"): `file` (one of the graph
    entry's files, never its .onnx) holds every tensor of `tensors`; the runtime maps the file and
    feeds each tensor to the shared graph as the input of that name."""

    file: str
    tensors: tuple[WeightTensor, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tensor.name for tensor in self.tensors)

    @property
    def layout(self) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        """(name, dtype, shape) per tensor: what must agree between layers sharing one graph."""
        return tuple((tensor.name, tensor.dtype, tensor.shape) for tensor in self.tensors)

    @staticmethod
    def from_dict(data: Any, where: str = "weights") -> LayerWeights:
        data = obj(data, where)
        listed = items(required(data, "tensors", where), f"{where}.tensors", 0, MAX_WEIGHTS)
        return LayerWeights(file=package_path(required(data, "file", where), f"{where}.file"),
                            tensors=tuple(WeightTensor.from_dict(t, f"{where}.tensors[{i}]") for i, t in enumerate(listed)))

    def check(self, files: tuple[FileEntry, ...], path: str, feeds: set[str]) -> None:
        """The file is one of `files` but not the graph itself (`path`); every tensor lies inside
        the file's recorded size; names are unique and none is also a feed or output name."""
        sizes = {entry.file: entry.bytes for entry in files}
        if self.file not in sizes or self.file == path:
            raise ManifestError(f"weights.file {shown(self.file)} must be one of the graph's files other than {path!r}")
        seen: set[str] = set()
        for i, tensor in enumerate(self.tensors):
            if tensor.name in seen or tensor.name in feeds:
                raise ManifestError(f"weights.tensors[{i}].name {shown(tensor.name)} is listed twice or is also an "
                                    "input or output of the graph")
            seen.add(tensor.name)
            if tensor.offset + tensor.bytes > sizes[self.file]:
                raise ManifestError(f"weights.tensors[{i}] ({shown(tensor.name)}) ends at byte "
                                    f"{tensor.offset + tensor.bytes}, past the end of {self.file} "
                                    f"({sizes[self.file]} bytes)")


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the package (docs/FORMAT.md, "Graph entries").

    `path` is what a backend loads: the .onnx file, or an .mlpackage directory. `files` lists
    every file the graph needs: the path itself when it is a file, then external data; for a
    directory graph, every file inside it. `weights` (shared layers only): the layer's own
    tensors, fed as inputs of the shared graph at `path`; absent for every other graph.
    """

    name: str
    role: str
    format: str
    path: str
    files: tuple[FileEntry, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    index: int | None = None
    weights: LayerWeights | None = None

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    @property
    def weights_entry(self) -> FileEntry | None:
        """The entry of `weights.file` (shared layers; the parser checked it is one of `files`)."""
        if self.weights is None:
            return None
        return next(entry for entry in self.files if entry.file == self.weights.file)

    @property
    def weight_names(self) -> tuple[str, ...]:
        """The graph's weight inputs (shared layers), fed from its weights file; () otherwise."""
        return self.weights.names if self.weights is not None else ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the entry; `weights` only where the graph has them (so a plain
        package's manifest is what an edgekit without shared layers writes)."""
        data = dataclasses.asdict(self)
        if self.weights is None:
            del data["weights"]
        return data

    @staticmethod
    def from_dict(data: Any) -> GraphSpec:
        """Parse one entry; ManifestError names the field (relative to the entry: the caller
        prefixes the graph). Tensor names are unique among the inputs and among the outputs."""
        data = obj(data, "the entry")
        for key in ("name", "role", "format", "path", "files", "inputs", "outputs"):
            required(data, key, "")
        files = items(data["files"], "files", 0, MAX_FILES)
        specs = {}
        for kind in ("inputs", "outputs"):
            listed = items(data[kind], kind, 0, MAX_TENSORS)
            specs[kind] = tuple(TensorSpec.from_dict(spec, f"{kind}[{i}]") for i, spec in enumerate(listed))
            names = [spec.name for spec in specs[kind]]
            twice = [name for name in names if names.count(name) > 1]
            if twice:
                raise ManifestError(f"{kind} name tensor {shown(twice[0])} twice")
        graph = GraphSpec(
            name=text(data["name"], "name", MAX_NAME_CHARS),
            role=text(data["role"], "role", MAX_NAME_CHARS),
            index=optional(data.get("index"), integer, "index", 0, MAX_INDEX),
            format=text(data["format"], "format", MAX_NAME_CHARS),
            path=package_path(data["path"], "path"),
            files=tuple(FileEntry.from_dict(entry, f"files[{i}]") for i, entry in enumerate(files)),
            inputs=specs["inputs"],
            outputs=specs["outputs"],
            weights=optional(data.get("weights"), LayerWeights.from_dict, "weights"),
        )
        if graph.weights is not None:
            graph.weights.check(graph.files, graph.path, {spec.name for spec in (*graph.inputs, *graph.outputs)})
        return graph


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
