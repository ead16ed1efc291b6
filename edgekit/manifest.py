"""The edge package contract: `manifest.json` and the types it is read into.

The manifest is the only thing the export side and the runtime side share. It lists every
graph in execution order with its role, file, sha256, byte size and IO specs, the tokenizer
files, the scoring head, and the parity measured at export. docs/FORMAT.md documents it.

Example::

    manifest = Manifest.load("pkg")          # checks format, version, files present
    for graph in manifest.graphs: print(graph.role, graph.file, graph.bytes)
    manifest.verify()                        # re-hashes every file; raises IntegrityError
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import FormatVersionError, IntegrityError, NotAPackageError, PackageNotFoundError

FORMAT_NAME = "edgekit-package"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

TASKS = ("rerank", "select")
VIDEO_TASK = "video"  # image-to-video diffusion packages: VideoManifest (docs/VIDEO.md)
PADDING_SIDES = ("right", "left")
DTYPES = ("fp32", "fp16")


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


def _file_entry(data: dict[str, Any]) -> FileEntry:
    entry = FileEntry(**known(FileEntry, data))
    if not isinstance(entry.file, str) or not isinstance(entry.bytes, int) or not isinstance(entry.sha256, str):
        raise TypeError(f"file entry {data!r} needs a string file, string sha256 and integer bytes")
    if entry.file.startswith("/") or ".." in Path(entry.file).parts:
        raise ValueError(f"file entry {entry.file!r} must be a path inside the package")
    return entry


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output. Dims are ints or symbolic names ("batch", "sequence")."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TensorSpec:
        return TensorSpec(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


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


@dataclass(frozen=True)
class GraphSpec:
    """One graph of the package. `files` holds the .onnx file first, then any external data."""

    name: str
    role: str
    files: tuple[FileEntry, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    index: int | None = None

    @property
    def file(self) -> str:
        return self.files[0].file

    @property
    def bytes(self) -> int:
        return sum(entry.bytes for entry in self.files)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> GraphSpec:
        return GraphSpec(
            name=data["name"],
            role=data["role"],
            index=data.get("index"),
            files=tuple(_file_entry(entry) for entry in data["files"]),
            inputs=tuple(TensorSpec.from_dict(spec) for spec in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(spec) for spec in data["outputs"]),
        )


@dataclass(frozen=True)
class EmbeddingTable:
    """The token-embedding table as a raw `.npy` array [vocab, E] (float32, little-endian).

    The runtime memory-maps it and gathers only the rows of the tokens in a batch, feeding
    them to the embeddings graph as `inputs_embeds`.
    """

    entry: FileEntry
    shape: tuple[int, int]
    dtype: str = "float32"

    @staticmethod
    def from_dict(data: dict[str, Any]) -> EmbeddingTable:
        return EmbeddingTable(_file_entry(data["entry"]), (int(data["shape"][0]), int(data["shape"][1])),
                              data.get("dtype", "float32"))


@dataclass(frozen=True)
class Scoring:
    """How the head's output becomes a candidate score.

    kind "logit": the head graph outputs one relevance score per (query, candidate) pair.
    kind "probability": the head outputs P(relevant) in [0, 1] per pair (decoder rerankers:
      sigmoid(logit_yes - logit_no) at the last token; `label_tokens` names the token ids).
    kind "cosine": the head outputs an embedding per text; score = cosine(query, candidate).
    """

    kind: str
    pooling: str | None = None
    normalize: bool = False
    num_labels: int | None = None
    label_tokens: dict[str, int] | None = None


@dataclass(frozen=True)
class PromptSpec:
    """Decoder rerankers: each (query, document) pair becomes the token sequence
    prefix + template.format(instruction=, query=, document=) + suffix, where only the middle
    part is truncated (from its end) to fit `max_length`. `instruction` is the default; the
    runtime can be given another one per call."""

    prefix: str
    template: str
    suffix: str
    instruction: str


@dataclass(frozen=True)
class RotarySpec:
    """Rotary position embeddings the runtime computes and feeds to decoder layers as `cos`/`sin`
    [B, S, dim]: inv_freq = theta^(-2i/dim), angle = position * inv_freq, both halves repeated,
    times `scaling`. Positions are 0..S-1 of the padded chunk (left padding), as transformers uses."""

    theta: float
    dim: int
    scaling: float = 1.0


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer files (tokenizer.json first) and how the runtime must use them."""

    files: tuple[FileEntry, ...]
    pad_token_id: int
    pair: bool
    truncation: str = "longest_first"
    type_ids: bool = True  # feed the tokenizer's type ids; False: zeros, as transformers does then


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest of an edge package rooted at `root` (not serialised)."""

    task: str
    family: str
    max_length: int
    hidden_size: int
    num_layers: int
    dtype: str
    graphs: tuple[GraphSpec, ...]
    tokenizer: TokenizerSpec
    scoring: Scoring
    source: dict[str, Any] = field(default_factory=dict)
    exporter: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # written by `edgekit calibrate`
    embedding_table: EmbeddingTable | None = None
    padding_side: str = "right"
    prompt: PromptSpec | None = None  # decoder rerankers
    rotary: RotarySpec | None = None  # decoder rerankers
    dims: dict[str, int] = field(default_factory=dict)  # heads, intermediate size...: for the planner
    root: Path = Path(".")
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    # --- reading -------------------------------------------------------------------------
    @staticmethod
    def load(directory: str | Path) -> Manifest:
        """Read and check a package: format, version, and that every listed file exists with
        its recorded size. Hashes are checked by `verify()` (they cost a full read)."""
        root = Path(directory)
        manifest = Manifest.from_dict(read_manifest_data(root), root)
        check_present(root, manifest.files())
        return manifest

    @staticmethod
    def from_dict(data: dict[str, Any], root: Path) -> Manifest:
        check_format(data, root)
        if data.get("task") == VIDEO_TASK:
            raise NotAPackageError(f"{root} is a video package, not a ranking one; open it with edgekit.load() "
                                   "or `edgekit run PKG --image ...`")
        try:
            tokenizer = known(TokenizerSpec, data["tokenizer"])
            tokenizer["files"] = tuple(_file_entry(entry) for entry in tokenizer["files"])
            manifest = Manifest(
                task=data["task"],
                family=data["family"],
                max_length=int(data["max_length"]),
                hidden_size=int(data["hidden_size"]),
                num_layers=int(data["num_layers"]),
                dtype=data["dtype"],
                graphs=tuple(GraphSpec.from_dict(graph) for graph in data["graphs"]),
                tokenizer=TokenizerSpec(**tokenizer),
                scoring=Scoring(**known(Scoring, data["scoring"])),
                source=data.get("source", {}),
                exporter=data.get("exporter", {}),
                parity=data.get("parity", {}),
                calibration=data.get("calibration"),
                embedding_table=EmbeddingTable.from_dict(data["embedding_table"]) if data.get("embedding_table") else None,
                padding_side=data.get("padding_side", "right"),
                prompt=PromptSpec(**known(PromptSpec, data["prompt"])) if data.get("prompt") else None,
                rotary=RotarySpec(**known(RotarySpec, data["rotary"])) if data.get("rotary") else None,
                dims={str(k): int(v) for k, v in data.get("dims", {}).items()},
                root=root,
            )
            manifest.check_consistency()
            return manifest
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise NotAPackageError(f"{root / MANIFEST_FILE} is malformed ({error}); re-export the package") from None

    def check_consistency(self) -> None:
        """Raise ValueError when fields contradict each other or what a v1 runtime can execute."""
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not one of {TASKS}")
        kinds = ("logit", "probability") if self.task == "rerank" else ("cosine",)
        if self.scoring.kind not in kinds:
            raise ValueError(f"task {self.task!r} needs scoring kind {' or '.join(kinds)}, not {self.scoring.kind!r}")
        pairs_tokenized = self.tokenizer.pair or self.prompt is not None
        if pairs_tokenized != (self.task == "rerank") or (self.tokenizer.pair and self.prompt is not None):
            raise ValueError(f"task {self.task!r}: rerank packages need pair tokenization or a prompt (one of them), "
                             "select packages neither")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side {self.padding_side!r} is not one of {PADDING_SIDES}")
        needs_rotary = any(spec.name == "cos" for graph in self.graphs for spec in graph.inputs)
        if needs_rotary != (self.rotary is not None):
            raise ValueError("layer graphs take cos/sin exactly when the manifest has a rotary section")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {DTYPES}")
        roles = [graph.role for graph in self.graphs]
        depth_heads = self.graphs_by_role("depth_head")
        if roles != ["embeddings", *["layer"] * self.num_layers, "head", *["depth_head"] * len(depth_heads)]:
            raise ValueError(f"graph roles {roles} are not embeddings, {self.num_layers} layers, head, depth heads")
        depths = [graph.index for graph in depth_heads]
        if any(not isinstance(d, int) or not 1 <= d < self.num_layers for d in depths) or depths != sorted(set(depths)):
            raise ValueError(f"depth_head indices {depths} must be increasing depths in 1..{self.num_layers - 1}")
        if depth_heads and self.task != "rerank":
            raise ValueError("depth_head graphs are for rerank packages")
        if [graph.index for graph in self.graphs_by_role("layer")] != list(range(self.num_layers)):
            raise ValueError("layer graphs are not in order")
        if self.embedding_table is None:
            raise ValueError("embedding_table is missing (version 1 embeddings graphs take gathered rows)")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ValueError("calibration must be an object")
        if not self.tokenizer.files:
            raise ValueError("tokenizer lists no files")

    # --- writing -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return manifest_dict(self)

    def save(self, directory: Path) -> Path:
        return save_manifest(self, directory)

    # --- integrity -----------------------------------------------------------------------
    def files(self) -> list[FileEntry]:
        """Every file the package lists: graph files (and external data) and tokenizer files."""
        entries = [entry for graph in self.graphs for entry in graph.files]
        if self.embedding_table is not None:
            entries.append(self.embedding_table.entry)
        return entries + list(self.tokenizer.files)

    def verify(self) -> None:
        """Re-hash every listed file; raise IntegrityError naming each file that fails."""
        verify_entries(self.root, self.files())

    # --- convenience ---------------------------------------------------------------------
    def graphs_by_role(self, role: str) -> list[GraphSpec]:
        return [graph for graph in self.graphs if graph.role == role]

    @property
    def stream_graphs(self) -> tuple[GraphSpec, ...]:
        """Embeddings, layers and the final head: what one exact pass runs, in order."""
        return self.graphs[: self.num_layers + 2]

    def head_for_depth(self, depth: int) -> GraphSpec:
        """The head that scores layer `depth`'s output: its own depth head, else the final head."""
        for graph in self.graphs_by_role("depth_head"):
            if graph.index == depth:
                return graph
        return self.graphs[self.num_layers + 1]

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.files())


# --- shared helpers (ranking and video manifests) ------------------------------------------
def manifest_dict(manifest: Any) -> dict[str, Any]:
    """A manifest dataclass as the JSON object: format and version first, `root` left out."""
    data = dataclasses.asdict(manifest)
    data.pop("root")
    ordered = {"format": data.pop("format"), "format_version": data.pop("format_version")}
    ordered.update(data)
    return ordered


def save_manifest(manifest: Any, directory: Path) -> Path:
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest_dict(manifest), indent=2) + "\n", encoding="utf-8")
    return path

def read_manifest_data(root: Path) -> Any:
    """The parsed JSON of `root/manifest.json`; typed errors for a missing or unreadable one."""
    if not root.exists():
        raise PackageNotFoundError(f"package directory {root} does not exist; export one with `edgekit export`")
    path = root / MANIFEST_FILE
    if not root.is_dir() or not path.is_file():
        raise NotAPackageError(
            f"{root} is not an edgekit package (no {MANIFEST_FILE}); point at a directory written by `edgekit export`"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NotAPackageError(f"{path} is not readable JSON ({error}); re-export the package") from None


def check_format(data: Any, root: Path) -> None:
    """Raise unless `data` is an edgekit manifest of the version this runtime reads."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise NotAPackageError(f"{root / MANIFEST_FILE} is not an {FORMAT_NAME} manifest; re-export the package")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatVersionError(
            f"package format version {version!r} is not supported (this edgekit reads version {FORMAT_VERSION}); "
            "re-export the package with this edgekit or install the matching edgekit release"
        )


def check_present(root: Path, entries: list[FileEntry]) -> None:
    """Every listed file exists with its recorded size (hashes: `verify`)."""
    missing = [entry.file for entry in entries if not (root / entry.file).is_file()]
    if missing:
        raise IntegrityError(f"package {root} is missing {', '.join(missing)}; re-export it", missing)
    resized = [entry.file for entry in entries if (root / entry.file).stat().st_size != entry.bytes]
    if resized:
        raise IntegrityError(f"package {root}: size changed for {', '.join(resized)}; re-export it", resized)


def verify_entries(root: Path, entries: list[FileEntry]) -> None:
    bad = [entry.file for entry in entries
           if not (root / entry.file).is_file() or (root / entry.file).stat().st_size != entry.bytes
           or sha256_file(root / entry.file) != entry.sha256]
    if bad:
        raise IntegrityError(f"package {root}: hash mismatch for {', '.join(bad)}; re-export it", bad)
