"""The edge package contract (format v2): `manifest.json` and the one `Manifest` type every task
is read into.

The manifest is the only thing the export side and the runtime side share. Its header says what
the package is (format, version, task, family, dtype, the exporter's versions); `graphs` lists
every graph with its role (and index where a role repeats), format, load path, IO specs and every
file it needs with size and sha256; one section per task holds what only that task needs
(`ranking` for rerank/select, `video` for video), and a family's own details sit under its family
key inside that section. docs/FORMAT.md documents it.

A package may hold its graphs in several formats (ONNX and their Core ML twins, over one set of
shared files): `graph_formats` names them, and `for_format(fmt)` is the view one backend runs.
Role lookups (`graph`, `graphs_by_role`, `stream_graphs`, ...) need a one-format manifest or view.

Example::

    manifest = Manifest.load("pkg")          # checks format, version, roles, files present
    for graph in manifest.graphs: print(graph.role, graph.index, graph.format, graph.path, graph.bytes)
    onnx = manifest.for_format("onnx")       # a mixed package's ONNX graphs (the package itself if only ONNX)
    layer_3 = onnx.graph("layer", 3)         # graphs are found by role and index, never position
    manifest.verify()                        # re-hashes every file of every format; raises IntegrityError
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.containment import check_contained, check_inside, package_root
from edgekit.errors import (
    FormatVersionError,
    InvalidArgumentError,
    NotAPackageError,
    PackageNotFoundError,
    ParityError,
)
from edgekit.manifest_fields import (
    MAX_GRAPHS,
    MAX_NAME_CHARS,
    ManifestError,
    choice,
    items,
    number,
    obj,
    optional,
    required,
    shown,
    text,
)
from edgekit.package_digest import MANIFEST_FILE, check_digest, write_manifest
from edgekit.package_files import (
    GRAPH_FORMATS,
    FileEntry,
    GraphSpec,
    TensorSpec,
    sha256_file,
    verify_entries,
)
from edgekit.ranking_manifest import RANKING_ROLES, RANKING_TASKS, RankingSection
from edgekit.video_manifest import VIDEO_ROLES, VideoSection

FORMAT_NAME = "edgekit-package"
FORMAT_VERSION = 2

VIDEO_TASK = "video"
TASKS = (*RANKING_TASKS, VIDEO_TASK)
DTYPES = ("fp32", "fp16", "int8", "mixed")
# int8: every layer graph holds int8 MatMul weights; mixed: some layers stay fp32 (exporters/quantize.py)
QUANTIZED_DTYPES = ("int8", "mixed")
SECTION_KEYS = {"rerank": "ranking", "select": "ranking", VIDEO_TASK: "video"}
# roles that occur more than once carry an index; every other role's index is null (graph() finds them so)
INDEXED_ROLES = ("layer", "depth_head", "down_block", "up_block", "unet_group", "dit_block")
# Features a package may `require` of its runtime (docs/FORMAT.md, "Versions"): a runtime refuses a
# package that requires one it does not know, instead of ignoring a field it would misread.
SHARED_LAYERS = "shared-layers"  # layer graphs share one graph and feed their own weights (`weights`)
FEATURES = (SHARED_LAYERS,)
MAX_REQUIRES = 64

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "MANIFEST_FILE", "TASKS", "VIDEO_TASK", "FileEntry", "GraphSpec",
           "Manifest", "TensorSpec", "sha256_file"]


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest of an edge package rooted at `root` (not serialised).

    Exactly one of `ranking` (tasks rerank and select) and `video` (task video) is set.
    """

    task: str
    family: str
    dtype: str
    graphs: tuple[GraphSpec, ...]
    ranking: RankingSection | None = None
    video: VideoSection | None = None
    source: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    quantization: dict[str, Any] | None = None  # int8/mixed packages: how, and the agreement gate's result
    root: Path = Path(".")
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    requires: tuple[str, ...] = ()  # features the runtime must implement (FEATURES)

    # --- reading -------------------------------------------------------------------------
    @staticmethod
    def load(directory: str | Path) -> Manifest:
        """Read and check a package of any task: format, version, the package digest (manifest.sha256),
        graph entries, the task's section, that every listed file exists with its recorded size,
        and containment (no symlinks; every graph reads only its listed files: edgekit/containment.py),
        all before any session exists. Hashes are checked by `verify()` (a full read) or, cached per
        file identity, by `edgekit.load` (edgekit/hash_cache.py)."""
        root = package_root(directory)
        raw = read_manifest_bytes(root)
        data = parse_manifest(raw, root)
        check_format(data, root)  # first: a version-1 package is named as one, not as a digest failure
        check_digest(root, raw)
        manifest = Manifest.from_dict(data, root)
        check_contained(manifest)
        return manifest

    @staticmethod
    def from_dict(data: Any, root: Path) -> Manifest:
        """Parse and check a manifest object read from an untrusted package. Returns a Manifest
        or raises NotAPackageError / FormatVersionError (one line naming the field); every field
        is type- and range-checked by the readers of edgekit/manifest_fields.py, so no other
        exception escapes (tests/test_manifest_fuzz.py holds it to that)."""
        check_format(data, root)
        requires = check_requires(data, root)
        try:
            task = choice(required(data, "task", ""), "task", TASKS)
            key = SECTION_KEYS[task]
            section = obj(required(data, key, ""), f"the {task} package's {key!r} section")
            graphs = items(required(data, "graphs", ""), "graphs", 0, MAX_GRAPHS)
            if not graphs:
                raise ManifestError("graphs must be a non-empty list")
            exporter = obj(required(data, "exporter", ""), "exporter")
            text(exporter.get("edgekit"), "exporter.edgekit (the edgekit version that wrote the package)")
            manifest = Manifest(
                task=task,
                family=text(required(data, "family", ""), "family"),
                dtype=choice(required(data, "dtype", ""), "dtype", DTYPES),
                graphs=tuple(_graph(entry, position) for position, entry in enumerate(graphs)),
                ranking=RankingSection.from_dict(section) if key == "ranking" else None,
                video=VideoSection.from_dict(section) if key == "video" else None,
                source=obj(data.get("source", {}), "source"),
                exporter=exporter,
                parity=obj(data.get("parity", {}), "parity"),
                quantization=optional(data.get("quantization"), _quantization, "quantization"),
                root=root,
                requires=requires,
            )
            manifest.check_consistency()
            return manifest
        except ManifestError as error:
            raise NotAPackageError(f"{root / MANIFEST_FILE} is malformed ({error}); re-export the package") from None

    def check_consistency(self) -> None:
        """Raise ManifestError (a ValueError) when fields contradict each other or what this
        runtime can execute. Also run by exporters on the Manifest they built."""
        if self.dtype not in DTYPES:
            raise ManifestError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        if (self.quantization is not None) != (self.dtype in QUANTIZED_DTYPES):
            raise ManifestError(f"a {self.dtype} package " + ("has no `quantization` record" if self.dtype in
                                QUANTIZED_DTYPES else "has a `quantization` record (only int8 and mixed packages do)"))
        if not isinstance(self.exporter.get("edgekit"), str):
            raise ManifestError("exporter must name the edgekit version that wrote the package")
        roles = RANKING_ROLES if self.ranking is not None else VIDEO_ROLES
        _check_graph_entries(self.graphs, roles)
        _check_shared_graphs(self.graphs, self.requires)
        for graph_format in self.graph_formats:  # each format's graphs make a whole package on their own
            view = self.for_format(graph_format)
            if view.ranking is not None:
                view.ranking.check(view.task, view.graphs_by_role)
                view.ranking.check_dtype(view.dtype)
            elif view.video is not None:
                if view.dtype != "fp32":
                    raise ManifestError(f"video packages are fp32, not {view.dtype!r}")
                view.video.check(view.family, view.graphs_by_role, view.unet_graphs)

    # --- writing -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON object: header first, then graphs, the task's section, parity. Section keys
        whose value is None (e.g. another family's details) are left out."""
        key = SECTION_KEYS[self.task]
        section = dataclasses.asdict(self.ranking if key == "ranking" else self.video)
        if isinstance(section.get("embedding_table"), dict) and section["embedding_table"].get("scales") is None:
            section["embedding_table"].pop("scales", None)  # float tables: as before int8 tables existed
        data = {
            "format": self.format,
            "format_version": self.format_version,
            **({"requires": list(self.requires)} if self.requires else {}),
            "task": self.task,
            "family": self.family,
            "dtype": self.dtype,
            "exporter": self.exporter,
            "source": self.source,
            "graphs": [graph.to_dict() for graph in self.graphs],
            key: {name: value for name, value in section.items() if value is not None},
            "parity": self.parity,
        }
        if self.quantization is not None:
            data["quantization"] = self.quantization
        return data

    def save(self, directory: Path) -> Path:
        """Write manifest.json and its digest, manifest.sha256 (edgekit/package_digest.py). The JSON
        is strict: a non-finite number (a parity figure measured on a model that produces NaN) is a
        ParityError, never a bare `NaN` that other JSON readers refuse."""
        try:
            text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        except ValueError:
            raise ParityError("the package would record a non-finite number (NaN or inf) in manifest.json: the "
                              "exported graphs produce non-numbers; check the source model's weights and dtype") from None
        return write_manifest(directory, text)

    # --- integrity -----------------------------------------------------------------------
    def files(self) -> list[FileEntry]:
        """Every file the package lists, once: each graph's files (a shared layer graph, listed by
        every layer, once), then the task section's own."""
        section = self.ranking if self.ranking is not None else self.video
        extra = section.files() if section is not None else []
        once: dict[str, FileEntry] = {}
        for entry in [entry for graph in self.graphs for entry in graph.files] + extra:
            once.setdefault(entry.file, entry)
        return list(once.values())

    def verify(self) -> None:
        """Re-hash every listed file; raise IntegrityError naming each file that fails."""
        verify_entries(self.root, self.files())

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files())

    # --- graph formats (docs/FORMAT.md, "Core ML graphs and mixed packages") ------------------
    @property
    def graph_formats(self) -> tuple[str, ...]:
        """The formats of the package's graphs, sorted: ("onnx",), or ("mlpackage", "onnx") for a
        mixed package (every format holds the same (role, index) slots: the manifest check)."""
        return tuple(sorted({graph.format for graph in self.graphs}))

    def for_format(self, graph_format: str) -> Manifest:
        """This manifest with only the graphs of `graph_format` (everything else, the shared
        embedding table and tokenizer included, unchanged): what one backend runs. The view is for
        reading and running; save the package's own manifest, not a view. KeyError for a format
        the package does not hold."""
        if graph_format not in self.graph_formats:
            raise KeyError(f"the package has no {graph_format!r} graphs (it has: {', '.join(self.graph_formats)})")
        if self.graph_formats == (graph_format,):
            return self
        return dataclasses.replace(self, graphs=tuple(g for g in self.graphs if g.format == graph_format))

    def _runnable_graphs(self) -> tuple[GraphSpec, ...]:
        """The graphs the lookups below search: all of them, in a one-format manifest. A mixed
        package's lookups would find twins, so they must go through `for_format` (a caller bug,
        told in one line)."""
        if len({graph.format for graph in self.graphs}) > 1:
            raise InvalidArgumentError(f"package {self.root} holds {' and '.join(self.graph_formats)} graphs; look "
                                       "graphs up on manifest.for_format(FORMAT), the graphs one backend runs")
        return self.graphs

    # --- graphs by role --------------------------------------------------------------------
    def graphs_by_role(self, role: str) -> list[GraphSpec]:
        """The graphs of `role`, ordered by index (a one-format manifest or view: `for_format`)."""
        found = [graph for graph in self._runnable_graphs() if graph.role == role]
        return sorted(found, key=lambda graph: -1 if graph.index is None else graph.index)

    def graph(self, role: str, index: int | None = None) -> GraphSpec:
        """The graph of `role` (with `index` where the role repeats); KeyError when absent."""
        for graph in self._runnable_graphs():
            if graph.role == role and graph.index == index:
                return graph
        raise KeyError(f"no {role} graph" + (f" with index {index}" if index is not None else ""))

    @property
    def stream_graphs(self) -> tuple[GraphSpec, ...]:
        """Ranking: embeddings, layers and the final head: what one exact pass runs, in order."""
        return (self.graph("embeddings"), *self.graphs_by_role("layer"), self.graph("head"))

    def head_for_depth(self, depth: int) -> GraphSpec:
        """Ranking: the head that scores layer `depth`'s output: its own depth head, else the final head."""
        for graph in self.graphs_by_role("depth_head"):
            if graph.index == depth:
                return graph
        return self.graph("head")

    @property
    def unet_graphs(self) -> tuple[GraphSpec, ...]:
        """Video: time_embedding, then the UNet's blocks (down, mid, up) or its groups: what one
        denoising step runs, in order."""
        blocks = (*self.graphs_by_role("down_block"), *self.graphs_by_role("mid_block"),
                  *self.graphs_by_role("up_block"))
        # by role, not graph(): the manifest check calls this before it has checked that the one
        # time_embedding graph exists (and then refuses the package in one line if not)
        return (*self.graphs_by_role("time_embedding"), *(blocks or self.graphs_by_role("unet_group")))


def _quantization(value: Any, where: str) -> dict[str, Any]:
    """The `quantization` record (informational: the runtime runs the graphs as they are). Its
    gate figures are bounded; the rest is kept as written (docs/FORMAT.md, "quantization")."""
    data = obj(value, where)
    text(required(data, "method", where), f"{where}.method")
    for key in ("agreement", "min_agreement"):
        number(required(data, key, where), f"{where}.{key}", 0.0, 1.0)
    return data


def _graph(entry: Any, position: int) -> GraphSpec:
    """One graph entry; errors name the graph (its name when it is a short string, else its
    position)."""
    name = entry.get("name") if isinstance(entry, dict) else None
    label = repr(name) if isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name.isprintable() \
        else f"#{position}"
    try:
        return GraphSpec.from_dict(entry)
    except ManifestError as error:
        raise ManifestError(f"graph {label}: {error}") from None


def _check_graph_entries(graphs: tuple[GraphSpec, ...], roles: tuple[str, ...]) -> None:
    """Names unique; role known; an index exactly for the roles that repeat; format known; at
    least one file; the load path among the files (a file graph) or holding them (a directory
    graph); no (role, index) twice within a format, and every format of a mixed package holding
    the same (role, index) slots; no file listed twice, except a shared layer graph: the load path
    of every graph with `weights`, listed by each with the same size and hash."""
    names: set[str] = set()
    slots_by_format: dict[str, set[tuple[str, int | None]]] = {}
    files: set[str] = set()
    shared: dict[str, FileEntry] = {}
    for graph in graphs:
        label = f"graph {graph.name!r}"
        if graph.name in names:
            raise ManifestError(f"{label} is listed twice (graph names are unique)")
        names.add(graph.name)
        if graph.role not in roles:
            raise ManifestError(f"{label}: role {shown(graph.role)} is not one of {roles}")
        if (graph.index is None) == (graph.role in INDEXED_ROLES):
            raise ManifestError(f"{label}: a {graph.role!r} graph has " +
                                ("an integer index" if graph.role in INDEXED_ROLES else "index null"))
        if graph.format not in GRAPH_FORMATS:
            raise ManifestError(f"{label}: format {shown(graph.format)} is not one of {GRAPH_FORMATS}")
        if not graph.files:
            raise ManifestError(f"{label} lists no files")
        listed = [entry.file for entry in graph.files]
        inside = all(name.startswith(graph.path.rstrip("/") + "/") for name in listed)
        if graph.format == "mlpackage" and not (inside and graph.path.endswith(".mlpackage")):
            raise ManifestError(f"{label}: an mlpackage graph's path is a directory ending with .mlpackage and it "
                                f"lists the files inside it, not {graph.path!r}")
        if graph.format == "onnx" and listed[0] != graph.path:
            raise ManifestError(f"{label}: an onnx graph lists its .onnx file {graph.path!r} first")
        slots = slots_by_format.setdefault(graph.format, set())
        if (graph.role, graph.index) in slots:
            raise ManifestError(f"{label}: role {graph.role!r} with index {graph.index} is taken by another "
                                f"{graph.format} graph")
        slots.add((graph.role, graph.index))
        for entry in graph.files:
            is_shared = graph.weights is not None and entry.file == graph.path
            if entry.file in files and not (is_shared and shared.get(entry.file) == entry):
                raise ManifestError(f"{label}: file {entry.file!r} is listed twice")
            files.add(entry.file)
            if is_shared:
                shared[entry.file] = entry
    _check_same_slots(slots_by_format)


def _check_same_slots(slots_by_format: dict[str, set[tuple[str, int | None]]]) -> None:
    """A mixed package is one package per format over shared files: every format has a graph
    for each (role, index) slot of every other (a runtime picks one format and runs it alone)."""
    every = set().union(*slots_by_format.values()) if slots_by_format else set()
    for graph_format in sorted(slots_by_format):
        missing = sorted(every - slots_by_format[graph_format], key=lambda slot: (slot[0], slot[1] or 0))
        if missing:
            role, index = missing[0]
            others = sorted(set(slots_by_format) - {graph_format})
            raise ManifestError(f"the {graph_format} graphs have no {role!r} graph" +
                                ("" if index is None else f" with index {index}") +
                                f" ({len(missing)} slot(s) missing), which the {'/'.join(others)} graphs have: every "
                                "format of a mixed package holds the same (role, index) slots")


def _check_shared_graphs(graphs: tuple[GraphSpec, ...], requires: tuple[str, ...]) -> None:
    """Shared layers (docs/FORMAT.md): only `layer` graphs carry `weights`, and only in a package
    that requires "shared-layers"; graphs loading one shared path are the same graph, so they list
    the same inputs, outputs and weight layout (the runtime checks one session against them all)."""
    first: dict[str, GraphSpec] = {}
    for graph in graphs:
        if graph.weights is None:
            continue
        if graph.role != "layer":
            raise ManifestError(f"graph {graph.name!r}: only layer graphs carry weights, not a {graph.role!r} graph")
        if SHARED_LAYERS not in requires:
            raise ManifestError(f"graph {graph.name!r} carries weights but the package does not require "
                                f"{SHARED_LAYERS!r}")
        other = first.setdefault(graph.path, graph)
        if (graph.inputs, graph.outputs, graph.weights.layout) != (other.inputs, other.outputs, other.weights.layout):
            raise ManifestError(f"graph {graph.name!r} shares {graph.path!r} with {other.name!r} but lists other "
                                "inputs, outputs or weight tensors")


MAX_MANIFEST_BYTES = 64 << 20  # read no more of an untrusted manifest.json than this


def read_manifest_data(root: Path) -> Any:
    """The parsed JSON of `root/manifest.json`; typed errors for a missing or unreadable one."""
    return parse_manifest(read_manifest_bytes(root), root)


def read_manifest_bytes(root: Path) -> bytes:
    """The exact bytes of `root/manifest.json` (what the package digest covers); typed errors for a
    missing, unreadable or symlinked one (a symlink is refused before it is followed)."""
    try:
        exists = root.exists()
    except OSError as error:  # a name too long for the filesystem, a permission denied on the way
        raise NotAPackageError(f"package directory {str(root)[:200]} cannot be examined ({error.strerror}); "
                               "point at a directory written by `edgekit export`") from None
    if not exists:
        raise PackageNotFoundError(f"package directory {root} does not exist; export one with `edgekit export`")
    path = root / MANIFEST_FILE
    check_inside(root, MANIFEST_FILE, "package file")
    if not root.is_dir() or not path.is_file():
        raise NotAPackageError(
            f"{root} is not an edgekit package (no {MANIFEST_FILE}); point at a directory written by `edgekit export`"
        )
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise NotAPackageError(f"{path} is not readable ({error}); re-export the package") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise NotAPackageError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB (a manifest of thousands of "
                               "graphs stays under 10 MiB); re-export the package")
    return raw


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_manifest(raw: bytes, root: Path) -> Any:
    """`raw` (manifest.json's bytes) parsed as JSON; NotAPackageError when it is not."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)  # strict: no NaN/Infinity
    except (UnicodeDecodeError, ValueError, RecursionError) as error:  # JSONDecodeError is a ValueError
        raise NotAPackageError(f"{root / MANIFEST_FILE} is not readable JSON ({error}); re-export the package") from None


def check_requires(data: dict[str, Any], root: Path) -> tuple[str, ...]:
    """The features the package requires (`requires`, optional). A feature this runtime does not
    know is a FormatVersionError: the package relies on something this edgekit would misread."""
    try:
        listed = items(data.get("requires", []), "requires", 0, MAX_REQUIRES)
        names = tuple(text(name, f"requires[{i}]") for i, name in enumerate(listed))
    except ManifestError as error:
        raise NotAPackageError(f"{root / MANIFEST_FILE} is malformed ({error}); re-export the package") from None
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise FormatVersionError(f"package requires {shown(unknown[0])}, which this edgekit does not implement "
                                 f"(it knows: {', '.join(FEATURES)}); install the edgekit release that exported it, "
                                 "or re-export the package with this one")
    return names


def check_format(data: Any, root: Path) -> None:
    """Raise unless `data` is an edgekit manifest of the version this runtime reads. Version 1
    packages are refused, not converted (docs/FORMAT.md, "Versions")."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise NotAPackageError(f"{root / MANIFEST_FILE} is not an {FORMAT_NAME} manifest; re-export the package")
    version = data.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise FormatVersionError(
            f"package format version {shown(version)} is not supported (this edgekit reads version {FORMAT_VERSION}); "
            "re-export the package with `edgekit export` from this edgekit, or install the matching edgekit release"
        )
