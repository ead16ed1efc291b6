"""The `ranking` section of a v2 manifest: what only rerank and select packages need (tokenizer,
scoring, sizes, prompt and rotary for decoders, calibration). docs/FORMAT.md documents it.

Graph roles of a ranking package: `embeddings`, `layer` (index 0..num_layers-1), `head`, and
optionally `depth_head` (index = the depth whose output it scores). Graphs are found by role and
index, never by position.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.manifest_fields import (
    MAX_HIDDEN,
    MAX_LAYERS,
    MAX_LENGTH,
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    MAX_VOCAB,
    ManifestError,
    choice,
    flag,
    integer,
    items,
    number,
    obj,
    optional,
    required,
    shown,
    text,
)
from edgekit.package_files import FileEntry, GraphSpec

RANKING_TASKS = ("rerank", "select")
RANKING_ROLES = ("embeddings", "layer", "head", "depth_head")
PADDING_SIDES = ("right", "left")
TRUNCATIONS = ("longest_first", "only_second", "only_first")
SCORING_KINDS = ("logit", "probability", "cosine")
POOLINGS = ("mean", "cls")
# the package dtype -> its embedding table's (int8/mixed: int8 rows with a float32 scale per row)
TABLE_DTYPES = {"fp32": "float32", "fp16": "float16", "int8": "int8", "mixed": "int8"}
PROMPT_FIELDS = ("instruction", "query", "document")  # what a prompt template may name
MAX_TOKENIZER_FILES = 64
MAX_DIMS = 64
# What the runtime (runtimes/chunks.py) can feed each role, by name: a graph asking for anything
# else would fail at run with a KeyError, so the manifest check refuses it up front.
EMBEDDINGS_FEEDS = frozenset({"inputs_embeds", "input_ids", "token_type_ids", "attention_mask", "attention_bias",
                              "cos", "sin"})
HIDDEN_FEEDS = frozenset({"hidden_states", "attention_mask", "attention_bias", "cos", "sin"})


@dataclass(frozen=True)
class EmbeddingTable:
    """The token-embedding table as a raw `.npy` array [vocab, E] (float32, float16 or int8,
    little-endian).

    The runtime memory-maps it and gathers only the rows of the tokens in a batch, feeding
    them to the embeddings graph as `inputs_embeds`. An int8 table (packages of dtype int8 or
    mixed) has `scales`, a float32 `.npy` [vocab]: row r is `values[r] * scales[r]` in float32,
    computed for the gathered rows only (runtimes/quantized_table.py).
    """

    entry: FileEntry
    shape: tuple[int, int]
    dtype: str = "float32"
    scales: FileEntry | None = None  # int8 tables only

    @staticmethod
    def from_dict(data: Any, where: str = "ranking.embedding_table") -> EmbeddingTable:
        """An int8 table has a `scales` entry and no other table has one."""
        data = obj(data, where)
        shape = items(required(data, "shape", where), f"{where}.shape", 2, 2)
        dtype = choice(data.get("dtype", "float32"), f"{where}.dtype", tuple(dict.fromkeys(TABLE_DTYPES.values())))
        scales = optional(data.get("scales"), FileEntry.from_dict, f"{where}.scales")
        if (dtype == "int8") != (scales is not None):
            raise ManifestError(f"{where}: an int8 table has a `scales` file and no other table has one "
                                f"(dtype {dtype}, scales {'present' if scales else 'absent'})")
        return EmbeddingTable(FileEntry.from_dict(required(data, "entry", where), f"{where}.entry"),
                              (integer(shape[0], f"{where}.shape[0] (vocabulary)", 1, MAX_VOCAB),
                               integer(shape[1], f"{where}.shape[1] (width)", 1, MAX_HIDDEN)),
                              dtype, scales)

    def files(self) -> list[FileEntry]:
        """The table's files: the values, then the scales of an int8 table."""
        return [self.entry, *([self.scales] if self.scales is not None else [])]


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

    @staticmethod
    def from_dict(data: Any, where: str = "ranking.scoring") -> Scoring:
        """Token ids in `label_tokens` are bounded here by MAX_VOCAB and checked against the
        embedding table by RankingSection.check."""
        data = obj(data, where)
        labels = optional(data.get("label_tokens"), obj, f"{where}.label_tokens")
        if labels is not None:
            items(list(labels), f"{where}.label_tokens", 1, 16)
            labels = {text(name, f"{where}.label_tokens key"): integer(value, f"{where}.label_tokens.{name}", 0,
                                                                       MAX_VOCAB) for name, value in labels.items()}
        return Scoring(kind=choice(required(data, "kind", where), f"{where} kind", SCORING_KINDS),
                       pooling=optional(data.get("pooling"), choice, f"{where}.pooling", POOLINGS),
                       normalize=flag(data.get("normalize", False), f"{where}.normalize"),
                       num_labels=optional(data.get("num_labels"), integer, f"{where}.num_labels", 1, 1 << 16),
                       label_tokens=labels)


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

    @staticmethod
    def from_dict(data: Any, where: str = "ranking.prompt") -> PromptSpec:
        """Strings of at most MAX_TEXT_CHARS; the template names only {instruction}, {query} and
        {document}, with no conversion or format spec (`{query:>99999999}` would allocate at
        run, `{query.__class__}` would read attributes)."""
        data = obj(data, where)
        values = {key: text(required(data, key, where), f"{where}.{key}", MAX_TEXT_CHARS, empty=True, lines=True)
                  for key in ("prefix", "template", "suffix", "instruction")}
        _check_template(values["template"], f"{where}.template")
        return PromptSpec(**values)


def _check_template(template: str, where: str) -> None:
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as error:  # an unmatched brace
        raise ManifestError(f"{where} is not a format string ({error})") from None
    for _, name, spec, conversion in fields:
        if name is not None and (name not in PROMPT_FIELDS or spec or conversion):
            raise ManifestError(f"{where} may only hold {{instruction}}, {{query}} and {{document}}, got "
                                f"{shown('{' + name + '}')}")


@dataclass(frozen=True)
class RotarySpec:
    """Rotary position embeddings the runtime computes and feeds to decoder layers as `cos`/`sin`
    [B, S, dim]: inv_freq = theta^(-2i/dim), angle = position * inv_freq, both halves repeated,
    times `scaling`. Positions are 0..S-1 of the padded chunk (left padding), as transformers uses."""

    theta: float
    dim: int
    scaling: float = 1.0

    @staticmethod
    def from_dict(data: Any, where: str = "ranking.rotary") -> RotarySpec:
        data = obj(data, where)
        dim = integer(required(data, "dim", where), f"{where}.dim", 2, MAX_HIDDEN)
        if dim % 2:
            raise ManifestError(f"{where}.dim must be even (cos and sin repeat both halves), got {dim}")
        return RotarySpec(theta=number(required(data, "theta", where), f"{where}.theta", 1.0, 1e12),
                          dim=dim, scaling=number(data.get("scaling", 1.0), f"{where}.scaling", 0.0, 1e6,
                                                  low_open=True))


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer files (tokenizer.json first) and how the runtime must use them."""

    files: tuple[FileEntry, ...]
    pad_token_id: int
    pair: bool
    truncation: str = "longest_first"
    type_ids: bool = True  # feed the tokenizer's type ids; False: zeros, as transformers does then

    @staticmethod
    def from_dict(data: Any, where: str = "ranking.tokenizer") -> TokenizerSpec:
        """`pad_token_id` is bounded by MAX_VOCAB here and by the embedding table in
        RankingSection.check."""
        data = obj(data, where)
        files = items(required(data, "files", where), f"{where}.files", 0, MAX_TOKENIZER_FILES)
        if not files:
            raise ManifestError("tokenizer must list its files (tokenizer.json first)")
        return TokenizerSpec(
            files=tuple(FileEntry.from_dict(entry, f"{where}.files[{i}]") for i, entry in enumerate(files)),
            pad_token_id=integer(required(data, "pad_token_id", where), f"{where}.pad_token_id", 0, MAX_VOCAB),
            pair=flag(required(data, "pair", where), f"{where}.pair"),
            truncation=choice(data.get("truncation", "longest_first"), f"{where}.truncation", TRUNCATIONS),
            type_ids=flag(data.get("type_ids", True), f"{where}.type_ids"),
        )


@dataclass(frozen=True)
class RankingSection:
    """Everything a rerank or select package needs beyond its graphs (docs/FORMAT.md, "ranking")."""

    max_length: int
    hidden_size: int
    num_layers: int
    tokenizer: TokenizerSpec
    scoring: Scoring
    embedding_table: EmbeddingTable
    padding_side: str = "right"
    prompt: PromptSpec | None = None  # decoder rerankers
    rotary: RotarySpec | None = None  # decoder rerankers
    dims: dict[str, int] = field(default_factory=dict)  # heads, intermediate size...: for the planner
    calibration: dict[str, Any] | None = None  # written by `edgekit calibrate`

    @staticmethod
    def from_dict(data: Any, where: str = "ranking") -> RankingSection:
        """Every field typed and bounded (manifest_fields); cross-field checks are `check`."""
        data = obj(data, where)
        dims = obj(data.get("dims", {}), f"{where}.dims")
        items(list(dims), f"{where}.dims", 0, MAX_DIMS)
        for name, value in dims.items():
            text(name, f"{where}.dims key", MAX_NAME_CHARS)
            if type(value) is not int:
                raise ManifestError(f"dims must map names to integers, got {shown(name)}: {shown(value)}")
            integer(value, f"{where}.dims.{name}", 1, MAX_VOCAB)
        calibration = optional(data.get("calibration"), _calibration, f"{where}.calibration")
        return RankingSection(
            max_length=integer(required(data, "max_length", where), f"{where}.max_length", 1, MAX_LENGTH),
            hidden_size=integer(required(data, "hidden_size", where), f"{where}.hidden_size", 1, MAX_HIDDEN),
            num_layers=integer(required(data, "num_layers", where), f"{where}.num_layers", 1, MAX_LAYERS),
            tokenizer=TokenizerSpec.from_dict(required(data, "tokenizer", where)),
            scoring=Scoring.from_dict(required(data, "scoring", where)),
            embedding_table=EmbeddingTable.from_dict(required(data, "embedding_table", where)),
            padding_side=choice(data.get("padding_side", "right"), f"{where}.padding_side", PADDING_SIDES),
            prompt=optional(data.get("prompt"), PromptSpec.from_dict),
            rotary=optional(data.get("rotary"), RotarySpec.from_dict),
            dims=dict(dims),
            calibration=calibration,
        )

    def files(self) -> list[FileEntry]:
        """The files besides graphs: the embedding table, then the tokenizer's."""
        return [*self.embedding_table.files(), *self.tokenizer.files]

    def check(self, task: str, graphs_by_role: Callable[[str], list[GraphSpec]]) -> None:
        """Raise ManifestError (a ValueError) when fields contradict each other or what this
        runtime can execute: token ids are rows of the embedding table, one layer graph per
        layer, and each graph asks only for inputs the runtime feeds its role."""
        kinds = ("logit", "probability") if task == "rerank" else ("cosine",)
        if self.scoring.kind not in kinds:
            raise ManifestError(f"task {task!r} needs scoring kind {' or '.join(kinds)}, not {self.scoring.kind!r}")
        pairs_tokenized = self.tokenizer.pair or self.prompt is not None
        if pairs_tokenized != (task == "rerank") or (self.tokenizer.pair and self.prompt is not None):
            raise ManifestError(f"task {task!r}: rerank packages need pair tokenization or a prompt (one of them), "
                                "select packages neither")
        if self.padding_side not in PADDING_SIDES:
            raise ManifestError(f"padding_side {self.padding_side!r} is not one of {PADDING_SIDES}")
        if self.tokenizer.truncation not in TRUNCATIONS:
            raise ManifestError(f"tokenizer truncation {self.tokenizer.truncation!r} is not one of {TRUNCATIONS}")
        vocabulary = self.embedding_table.shape[0]
        if type(self.tokenizer.pad_token_id) is not int or not 0 <= self.tokenizer.pad_token_id < vocabulary:
            raise ManifestError(f"pad_token_id {self.tokenizer.pad_token_id!r} is not a row of the embedding table "
                                f"(vocabulary {vocabulary})")
        outside = [(name, token) for name, token in (self.scoring.label_tokens or {}).items() if token >= vocabulary]
        if outside:
            raise ManifestError(f"scoring.label_tokens.{outside[0][0]} = {outside[0][1]} is not a row of the embedding "
                                f"table (vocabulary {vocabulary})")
        for role in ("embeddings", "head"):
            if len(graphs_by_role(role)) != 1:
                raise ManifestError(f"a ranking package has exactly one {role!r} graph")
        layers = graphs_by_role("layer")
        if [graph.index for graph in layers] != list(range(self.num_layers)):
            raise ManifestError(f"layer graphs must have indices 0..{self.num_layers - 1}, got "
                                f"{shown([graph.index for graph in layers])} ({len(layers)} graphs)")
        needs_rotary = any(spec.name == "cos" for graph in layers for spec in graph.inputs)
        if needs_rotary != (self.rotary is not None):
            raise ManifestError("layer graphs take cos/sin exactly when the ranking section has `rotary`")
        depths = [graph.index for graph in graphs_by_role("depth_head")]
        if any(not isinstance(d, int) or not 1 <= d < self.num_layers for d in depths):
            raise ManifestError(f"depth_head indices {shown(depths)} must be depths in 1..{self.num_layers - 1}")
        if depths and task != "rerank":
            raise ManifestError("depth_head graphs are for rerank packages")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ManifestError("calibration must be an object")
        for role in RANKING_ROLES:
            for graph in graphs_by_role(role):
                _check_feeds(graph, self.hidden_size)

    def check_dtype(self, dtype: str) -> None:
        """The embedding table holds the package's type (fp16 packages: float16; int8 and mixed: int8)."""
        if self.embedding_table.dtype != TABLE_DTYPES.get(dtype):
            raise ManifestError(f"a {dtype} package has a {TABLE_DTYPES.get(dtype)} embedding table, not "
                                f"{self.embedding_table.dtype}")


# the calibration parameters a policy is rebuilt from (runtimes/policies.py), and their bounds
CALIBRATION_COUNTS = ("min_depth", "clusters", "patience")  # integers in 1..MAX_LAYERS
CALIBRATION_LEGACY = ("threshold", "min_depth", "clusters")  # the first shape: at the top level


def _calibration(value: Any, where: str) -> dict[str, Any]:
    """`edgekit calibrate`'s record. What `--prune auto` rebuilds a policy from is bounded here
    (a 1e400 patience or a 1e12-cluster k-means would fail or allocate at run); the rest (the
    statistics of the calibration run) is informational and kept as written."""
    data = obj(value, where)
    optional(data.get("policy"), text, f"{where}.policy")
    optional(data.get("top_k"), integer, f"{where}.top_k", 1, MAX_LENGTH)
    params = data.get("params") if "params" in data else {key: data[key] for key in CALIBRATION_LEGACY
                                                              if key in data and data[key] is not None}
    inside = f"{where}.params" if "params" in data else where
    for key, setting in (optional(params, obj, inside) or {}).items():
        if key in CALIBRATION_COUNTS:
            integer(setting, f"{inside}.{key}", 1, MAX_LAYERS)
        else:
            number(setting, f"{inside}.{key}", -1e6, 1e6)
    return data


def _check_feeds(graph: GraphSpec, hidden_size: int) -> None:
    """FORMAT.md "Graph IO (ranking)": the embeddings graph takes `inputs_embeds`, every other
    graph `hidden_states` (of width hidden_size where the width is fixed), none asks for a feed
    the runtime does not make, and each has one output (the next graph's hidden_states, or the
    score/embedding)."""
    first = "inputs_embeds" if graph.role == "embeddings" else "hidden_states"
    allowed = EMBEDDINGS_FEEDS if graph.role == "embeddings" else HIDDEN_FEEDS
    names = {spec.name for spec in graph.inputs}
    unknown = sorted(names - allowed)
    if first not in names or unknown:
        raise ManifestError(f"graph {graph.name!r}: a {graph.role} graph takes {first} and only "
                            f"{sorted(allowed)}" + (f", not {shown(unknown[0])}" if unknown else ""))
    if len(graph.outputs) != 1:
        raise ManifestError(f"graph {graph.name!r}: a {graph.role} graph has one output, not {len(graph.outputs)}")
    width = next(spec.shape[-1] for spec in graph.inputs if spec.name == first) \
        if any(spec.name == first and spec.shape for spec in graph.inputs) else None
    if first == "hidden_states" and isinstance(width, int) and width != hidden_size:
        raise ManifestError(f"graph {graph.name!r}: hidden_states has width {width}, the package's hidden_size is "
                            f"{hidden_size}")
