"""The `ranking` section of a v2 manifest: what only rerank and select packages need (tokenizer,
scoring, sizes, prompt and rotary for decoders, calibration). docs/FORMAT.md documents it.

Graph roles of a ranking package: `embeddings`, `layer` (index 0..num_layers-1), `head`, and
optionally `depth_head` (index = the depth whose output it scores). Graphs are found by role and
index, never by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.package_files import FileEntry, GraphSpec, known

RANKING_TASKS = ("rerank", "select")
RANKING_ROLES = ("embeddings", "layer", "head", "depth_head")
PADDING_SIDES = ("right", "left")
TRUNCATIONS = ("longest_first", "only_second", "only_first")


@dataclass(frozen=True)
class EmbeddingTable:
    """The token-embedding table as a raw `.npy` array [vocab, E] (float32 or float16, little-endian).

    The runtime memory-maps it and gathers only the rows of the tokens in a batch, feeding
    them to the embeddings graph as `inputs_embeds`.
    """

    entry: FileEntry
    shape: tuple[int, int]
    dtype: str = "float32"

    @staticmethod
    def from_dict(data: dict[str, Any]) -> EmbeddingTable:
        shape = data["shape"]
        if not isinstance(shape, list) or len(shape) != 2 or any(type(v) is not int or v < 1 for v in shape):
            raise ValueError(f"embedding_table shape must be two positive integers, got {shape!r}")
        return EmbeddingTable(FileEntry.from_dict(data["entry"]), (shape[0], shape[1]),
                              str(data.get("dtype", "float32")))


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

    @staticmethod
    def from_dict(data: dict[str, Any]) -> TokenizerSpec:
        values = known(TokenizerSpec, data)
        files = values["files"]
        if not isinstance(files, list) or not files:
            raise ValueError("tokenizer must list its files (tokenizer.json first)")
        values["files"] = tuple(FileEntry.from_dict(entry) for entry in files)
        return TokenizerSpec(**values)


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
    def from_dict(data: dict[str, Any]) -> RankingSection:
        values = known(RankingSection, data)
        for key in ("max_length", "hidden_size", "num_layers"):
            if type(values.get(key)) is not int or not 1 <= values[key] <= 1 << 20:
                raise ValueError(f"{key} must be an integer in 1..{1 << 20}, got {values.get(key)!r}")
        dims = values.get("dims", {})
        if not isinstance(dims, dict) or any(type(v) is not int for v in dims.values()):
            raise TypeError(f"dims must map names to integers, got {dims!r}")
        values["tokenizer"] = TokenizerSpec.from_dict(values["tokenizer"])
        values["scoring"] = Scoring(**known(Scoring, values["scoring"]))
        values["embedding_table"] = EmbeddingTable.from_dict(values["embedding_table"])
        values["prompt"] = PromptSpec(**known(PromptSpec, values["prompt"])) if values.get("prompt") else None
        values["rotary"] = RotarySpec(**known(RotarySpec, values["rotary"])) if values.get("rotary") else None
        values["dims"] = dict(dims)
        return RankingSection(**values)

    def files(self) -> list[FileEntry]:
        """The files besides graphs: the embedding table, then the tokenizer's."""
        return [self.embedding_table.entry, *self.tokenizer.files]

    def check(self, task: str, graphs_by_role: Callable[[str], list[GraphSpec]]) -> None:
        """Raise ValueError when fields contradict each other or what this runtime can execute."""
        kinds = ("logit", "probability") if task == "rerank" else ("cosine",)
        if self.scoring.kind not in kinds:
            raise ValueError(f"task {task!r} needs scoring kind {' or '.join(kinds)}, not {self.scoring.kind!r}")
        pairs_tokenized = self.tokenizer.pair or self.prompt is not None
        if pairs_tokenized != (task == "rerank") or (self.tokenizer.pair and self.prompt is not None):
            raise ValueError(f"task {task!r}: rerank packages need pair tokenization or a prompt (one of them), "
                             "select packages neither")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side {self.padding_side!r} is not one of {PADDING_SIDES}")
        if self.tokenizer.truncation not in TRUNCATIONS:
            raise ValueError(f"tokenizer truncation {self.tokenizer.truncation!r} is not one of {TRUNCATIONS}")
        if type(self.tokenizer.pad_token_id) is not int or not 0 <= self.tokenizer.pad_token_id < \
                self.embedding_table.shape[0]:
            raise ValueError(f"pad_token_id {self.tokenizer.pad_token_id!r} is not a row of the embedding table")
        for role in ("embeddings", "head"):
            if len(graphs_by_role(role)) != 1:
                raise ValueError(f"a ranking package has exactly one {role!r} graph")
        layers = graphs_by_role("layer")
        if [graph.index for graph in layers] != list(range(self.num_layers)):
            raise ValueError(f"layer graphs must have indices 0..{self.num_layers - 1}, got "
                             f"{[graph.index for graph in layers]}")
        needs_rotary = any(spec.name == "cos" for graph in layers for spec in graph.inputs)
        if needs_rotary != (self.rotary is not None):
            raise ValueError("layer graphs take cos/sin exactly when the ranking section has `rotary`")
        depths = [graph.index for graph in graphs_by_role("depth_head")]
        if any(not isinstance(d, int) or not 1 <= d < self.num_layers for d in depths):
            raise ValueError(f"depth_head indices {depths} must be depths in 1..{self.num_layers - 1}")
        if depths and task != "rerank":
            raise ValueError("depth_head graphs are for rerank packages")
        if self.calibration is not None and not isinstance(self.calibration, dict):
            raise ValueError("calibration must be an object")
