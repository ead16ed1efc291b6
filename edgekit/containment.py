"""Containment: a package makes edgekit read its own listed files and nothing else.

A package is untrusted input (users download it and ship it inside apps). onnxruntime resolves
the external-data `location` written inside each .onnx file by itself, and the filesystem follows
symlinks, so without these checks a package could make the runtime read `/etc/passwd`, another
package's weights or anything else the user can read. `Manifest.load` runs them before any
session exists; they are edgekit's own and do not depend on what the installed onnxruntime
refuses (older releases follow `../` and absolute locations).

The rules (docs/FORMAT.md, "Containment"):

- No symlink anywhere inside the package: not manifest.json or manifest.sha256, not a graph, its
  external data, a tokenizer file or the embedding table, and not a directory between the package
  root and any of them. The package root itself may be a symlink: it is resolved once
  (`package_root`) and every file is read below the resolved root.
- Every listed file is a regular file (no directory, FIFO or device).
- Every tensor an ONNX graph stores outside itself (initializers, sparse initializers, tensors in
  node attributes, in subgraphs, in functions and in training graphs) names a `location` that,
  taken relative to the .onnx file's directory, is one of that graph's listed files: never
  absolute, never through `..`.
- No `EPContext` node (it names a compiled blob on disk that an execution provider would load).
- A directory graph (a Core ML .mlpackage) holds no symlink and no file its entry does not list:
  Core ML reads whatever the directory holds, so every file in it must be one that is hashed.

Each violation is a ContainmentError (an IntegrityError) in one line naming the graph or file.
Not covered: hard links (a hard link is a regular file, and making one to a file outside needs
write access to this machine, not just a package), and files replaced while a package is loaded.

Example::

    root = package_root("pkg")        # "pkg" may be a symlink; nothing inside it may
    check_inside(root, "manifest.json", "package file")
    manifest = ...                    # parsed from root/manifest.json
    check_contained(manifest)         # ContainmentError: graph 'layer_001' reads ../../x/secret.data
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any

from edgekit.errors import ContainmentError, MissingDependencyError, NotAPackageError
from edgekit.package_files import GraphSpec, check_present

if TYPE_CHECKING:
    from edgekit.manifest import Manifest

FIX = "re-export the package; packages may not read files outside themselves"
SYMLINK_FIX = ("edgekit refuses symlinks inside a package (packages may not read files outside themselves): "
               "put the file itself in place of the link, or re-export the package")
COMPILED_BLOB_OP = "EPContext"  # onnxruntime's node for a provider's precompiled context, stored in a file


def package_root(directory: str | Path) -> Path:
    """`directory` resolved once: the package root may be a symlink (nothing inside it may be)."""
    try:
        return Path(directory).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # a symlink loop, an impossible name
        raise NotAPackageError(f"{str(directory)[:200]} cannot be resolved ({error}); point at a package "
                               "directory written by `edgekit export`") from None


def check_inside(root: Path, relative: str, label: str) -> None:
    """Refuse a symlink at `root/relative` or at any directory between `root` and it, and a
    `relative` that exists but is not a regular file. A missing file (or a missing directory on the
    way) passes: the presence check (`check_present`) reports it as missing."""
    parts = PurePosixPath(relative).parts
    path = root
    for depth, part in enumerate(parts, start=1):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:
            raise ContainmentError(f"{label} {relative} cannot be examined ({error.strerror}); {FIX}",
                                   [relative]) from None
        if stat.S_ISLNK(mode):
            where = relative if depth == len(parts) else f"{'/'.join(parts[:depth])} (a directory on the way to {relative})"
            raise ContainmentError(f"{label} {where} is a symlink; {SYMLINK_FIX}", [relative])
        if depth == len(parts):
            if not stat.S_ISREG(mode):
                raise ContainmentError(f"{label} {relative} is not a regular file; {FIX}", [relative])
        elif not stat.S_ISDIR(mode):
            return  # a file where a directory should be: reported as missing


def check_contained(manifest: Manifest) -> None:
    """Every file the package lists is a regular file inside it, reached without symlinks; every
    listed file is present with its size; every graph reads only its own listed files."""
    root = manifest.root
    for graph in manifest.graphs:
        for entry in graph.files:
            check_inside(root, entry.file, f"graph {graph.name!r}:")
    owned = {entry.file for graph in manifest.graphs for entry in graph.files}
    for entry in manifest.files():
        if entry.file not in owned:
            check_inside(root, entry.file, "package file")
    check_present(root, manifest.files())
    for graph in manifest.graphs:
        if graph.format == "onnx":
            check_onnx_reads(root, graph)
        else:
            check_directory_graph(root, graph)


def onnx_schema() -> ModuleType:
    """The onnx library's generated protobuf module (`onnx.onnx_ml_pb2`: ModelProto, TensorProto).

    When onnx is not imported yet, the generated file is loaded on its own, without
    `onnx/__init__`, which imports ml_dtypes and the checker: measured 0.04 s against 0.55 s
    (quiet) to 1.2 s (loaded) for `import onnx`, paid by every `edgekit run`. The classes come
    from protobuf's default pool, so a later `import onnx` in the same process gets the same ones.
    """
    global _schema
    if "onnx" in sys.modules:
        return sys.modules["onnx"].onnx_ml_pb2
    if _schema is None:
        found = importlib.util.find_spec("onnx")
        if found is None or not found.submodule_search_locations:
            raise MissingDependencyError("edgekit needs the onnx package to check a package's graphs; "
                                         "pip install 'onnx>=1.16' (a dependency of edgekit: reinstall it)")
        schema_file = Path(next(iter(found.submodule_search_locations))) / "onnx_ml_pb2.py"
        spec = importlib.util.spec_from_file_location("onnx.onnx_ml_pb2", schema_file)
        if spec is None or spec.loader is None:
            raise MissingDependencyError(f"the onnx package lacks {schema_file.name}; pip install 'onnx>=1.16'")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _schema = module
    return _schema


_schema: ModuleType | None = None


def check_onnx_reads(root: Path, graph: GraphSpec) -> None:
    """Parse the graph's .onnx file (weights not loaded) and refuse every external-data location
    that is not one of the graph's listed files, and any EPContext node."""
    from google.protobuf.message import DecodeError

    onnx = onnx_schema()

    if not graph.path.endswith(".onnx"):  # onnxruntime picks its own ORT format by a file's extension
        raise ContainmentError(f"graph {graph.name!r}: an onnx graph's file ends with .onnx, not {graph.path!r}; "
                               "re-export the package", [graph.path])
    path = root / graph.path
    try:  # read as binary protobuf whatever the extension, as onnxruntime reads it
        model = onnx.ModelProto()
        with open(path, "rb") as handle:
            model.ParseFromString(handle.read())
    except (DecodeError, OSError, ValueError, TypeError, RecursionError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise ContainmentError(f"graph {graph.name!r}: {graph.path} is not a readable ONNX model ({reason}); "
                               "re-export the package", [graph.path]) from None
    listed = {entry.file for entry in graph.files}
    base = PurePosixPath(graph.path).parent
    for node in _nodes(model):
        if node.op_type == COMPILED_BLOB_OP:
            raise ContainmentError(f"graph {graph.name!r}: {graph.path} has an {COMPILED_BLOB_OP} node (a compiled "
                                   f"blob read from disk), which edgekit packages never hold; {FIX}", [graph.path])
    for tensor in _stored_tensors(model):
        locations = [entry.value for entry in tensor.external_data if entry.key == "location"]
        if tensor.data_location == onnx.TensorProto.EXTERNAL and not locations:
            raise ContainmentError(f"graph {graph.name!r}: tensor {tensor.name[:100]!r} in {graph.path} is stored "
                                   f"externally without a location; {FIX}", [graph.path])
        for location in locations:
            if _resolve(base, location) not in listed:
                raise ContainmentError(f"graph {graph.name!r}: {graph.path} reads external data from "
                                       f"{location[:200]!r}, which is not one of the graph's listed files; {FIX}",
                                       [graph.path])


def check_directory_graph(root: Path, graph: GraphSpec) -> None:
    """A directory graph (a Core ML .mlpackage) holds no symlink and only its listed files: Core ML
    loads whatever the directory holds, so an unlisted file would be read without its hash checked."""
    listed = {entry.file for entry in graph.files}
    for directory, subdirectories, files in os.walk(root / graph.path, followlinks=False):
        for name in [*subdirectories, *files]:
            path = Path(directory) / name
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise ContainmentError(f"graph {graph.name!r}: {relative} is a symlink; {SYMLINK_FIX}", [relative])
            if name in files and relative not in listed:
                raise ContainmentError(f"graph {graph.name!r}: {relative[:200]!r} is inside the graph's directory but "
                                       "not listed in its entry (Core ML would read it unchecked); remove it or "
                                       "re-export the package", [relative])


def _resolve(base: PurePosixPath, location: str) -> str | None:
    """The package-relative path an external-data `location` names (relative to the .onnx file's
    directory), or None for one that could leave the package (absolute, `..`, a backslash, NUL)."""
    if not location or location.startswith(("/", "\\")) or "\\" in location or "\0" in location \
            or (len(location) > 1 and location[1] == ":"):
        return None
    relative = PurePosixPath(location)
    if ".." in relative.parts:
        return None
    return (base / relative).as_posix()


def _containers(model: Any) -> Iterator[Any]:
    """Every graph and function of the model, subgraphs in node attributes included (each holds
    `.node`). Iterative, so a deeply nested model cannot exhaust the recursion limit."""
    pending = [model.graph, *model.functions]
    pending += [graph for info in model.training_info for graph in (info.initialization, info.algorithm)]
    while pending:
        container = pending.pop()
        yield container
        defaults = container.attribute_proto if container.DESCRIPTOR.name == "FunctionProto" else []
        for attribute in defaults:
            pending += [attribute.g] if attribute.HasField("g") else []
            pending += list(attribute.graphs)
        for node in container.node:
            for attribute in node.attribute:
                pending += [attribute.g] if attribute.HasField("g") else []
                pending += list(attribute.graphs)


def _nodes(model: Any) -> Iterator[Any]:
    for container in _containers(model):
        yield from container.node


def _stored_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto the model holds, wherever onnxruntime could load one from: initializers,
    sparse initializers, tensors in node attributes (whatever the attribute's declared type says)
    and functions' default attributes, in every graph, subgraph and function."""
    for container in _containers(model):
        if container.DESCRIPTOR.name == "GraphProto":
            yield from container.initializer
            for sparse in container.sparse_initializer:
                yield from (sparse.values, sparse.indices)
        else:  # a FunctionProto
            for attribute in container.attribute_proto:
                yield from _attribute_tensors(attribute)
        for node in container.node:
            for attribute in node.attribute:
                yield from _attribute_tensors(attribute)


def _attribute_tensors(attribute: Any) -> Iterator[Any]:
    if attribute.HasField("t"):
        yield attribute.t
    yield from attribute.tensors
    sparse = ([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []) + list(attribute.sparse_tensors)
    for tensor in sparse:
        yield from (tensor.values, tensor.indices)
