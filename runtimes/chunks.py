"""Chunked execution of one graph over a subset of sequences (the rows still being computed).

Hidden states are kept per sequence, trimmed to its own length ([n_i, H]); a chunk is padded
only to its own longest sequence. Padding positions are masked out as attention keys, so any
regrouping of sequences into chunks gives the same values at real positions — which is what
lets pruning shrink and regroup the alive set between layers without changing any score.

Feeds follow each graph's declared inputs: `attention_mask` [B,S] 0/1 (encoders), or for
decoder layers `attention_bias` [B,1,S,S] (0 where a query position may attend to a key: causal
and key not padding; dtype-min elsewhere, never -inf, so fully masked padding rows stay finite)
and rotary `cos`/`sin` [B,S,D] for positions 0..S-1 of the chunk. Decoder packages pad on the
left (the last position is every sequence's last token); rotary attention depends only on
position differences, so left padding does not change real positions' values either.

Every output is checked to be finite where it is kept (real positions; padding is never read)
before anyone reads it, so a NaN or inf is a `NonFiniteOutputError` naming the graph that first
produced it (a layer, the embeddings or a head), before any score exists or pruning decides on
it. The check reads each output once (O(tokens x H) against the graph's O(tokens x H^2) work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgekit.errors import NonFiniteOutputError, NotAPackageError
from edgekit.package_files import GraphSpec
from edgekit.ranking_manifest import RotarySpec
from edgekit.runtimes.backends import Session
from edgekit.runtimes.text import EncodedText

_FLOAT_DTYPES = {"float32": np.float32, "float16": np.float16}


def rotary_tables(rotary: RotarySpec, length: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [length, dim] for positions 0..length-1 (computed in float32, then cast)."""
    inv_freq = 1.0 / (rotary.theta ** (np.arange(0, rotary.dim, 2, dtype=np.int64).astype(np.float32) / rotary.dim))
    angles = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :].astype(np.float32)
    both = np.concatenate([angles, angles], axis=-1)
    return ((np.cos(both) * rotary.scaling).astype(dtype), (np.sin(both) * rotary.scaling).astype(dtype))


def causal_bias(mask: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """[B,S] 0/1 key mask -> additive [B,1,S,S]: 0 where key <= query and the key is real."""
    length = mask.shape[1]
    causal = np.tril(np.ones((length, length), dtype=bool))
    allowed = causal[None, :, :] & (mask[:, None, :] > 0)
    return np.where(allowed, 0.0, np.finfo(dtype).min).astype(dtype)[:, None, :, :]


@dataclass
class ChunkRunner:
    """Runs graphs chunk by chunk over rows of `encoded`, sorted by length to cut padding."""

    encoded: Sequence[EncodedText]
    chunk: int
    pad_token_id: int
    use_type_ids: bool
    embedding_table: np.ndarray | None = None  # memory-mapped [vocab, E]; rows gathered per chunk
    padding_side: str = "right"
    rotary: RotarySpec | None = None
    padded_tokens: int = 0  # tokens fed to the embeddings graph, padding included
    runs: int = 0  # session runs over all graphs
    _lengths: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self._lengths = np.array([len(item.ids) for item in self.encoded], dtype=np.int64)

    def groups(self, rows: Sequence[int]) -> list[np.ndarray]:
        """Rows split into chunks of at most `chunk`, grouped by length (ties by row)."""
        rows = np.asarray(rows, dtype=np.int64)
        order = rows[np.lexsort((rows, self._lengths[rows]))]
        return [order[start : start + self.chunk] for start in range(0, len(order), self.chunk)]

    def _span(self, row: int, length: int) -> slice:
        """Where row's real tokens sit in a chunk padded to `length`."""
        size = int(self._lengths[row])
        return slice(length - size, length) if self.padding_side == "left" else slice(0, size)

    def _mask(self, rows: np.ndarray, length: int) -> np.ndarray:
        positions = np.arange(length)[None, :]
        if self.padding_side == "left":
            return (positions >= length - self._lengths[rows][:, None]).astype(np.int64)
        return (positions < self._lengths[rows][:, None]).astype(np.int64)

    def _token_feeds(self, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
        input_ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)
        type_ids = np.zeros((len(rows), length), dtype=np.int64)
        for slot, row in enumerate(rows):
            item = self.encoded[row]
            input_ids[slot, self._span(int(row), length)] = item.ids
            if self.use_type_ids:
                type_ids[slot, self._span(int(row), length)] = item.type_ids
        feeds = {"input_ids": input_ids, "token_type_ids": type_ids}
        if self.embedding_table is not None:
            if input_ids.size and int(input_ids.max()) >= self.embedding_table.shape[0]:  # a crafted tokenizer.json
                raise NotAPackageError(f"token id {int(input_ids.max())} is past the embedding table's "
                                       f"{self.embedding_table.shape[0]} rows; re-export the package")
            feeds["inputs_embeds"] = np.asarray(self.embedding_table[input_ids])  # the table's dtype
        return feeds

    def _hidden_feed(self, rows: np.ndarray, length: int, hidden: dict[int, np.ndarray]) -> np.ndarray:
        first = hidden[int(rows[0])]
        batch = np.zeros((len(rows), length, first.shape[-1]), dtype=first.dtype)
        for slot, row in enumerate(rows):
            batch[slot, self._span(int(row), length)] = hidden[int(row)]
        return batch

    def _position_feeds(self, names: set[str], mask: np.ndarray, dtype: np.dtype) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {}
        if "attention_bias" in names:
            feeds["attention_bias"] = causal_bias(mask, dtype)
        if "cos" in names:
            if self.rotary is None:
                raise ValueError("a graph takes cos/sin but the package has no rotary section")
            cos, sin = rotary_tables(self.rotary, mask.shape[1], dtype)
            feeds["cos"] = np.ascontiguousarray(np.broadcast_to(cos, (mask.shape[0], *cos.shape)))
            feeds["sin"] = np.ascontiguousarray(np.broadcast_to(sin, (mask.shape[0], *sin.shape)))
        return feeds

    def run(self, session: Session, rows: Sequence[int], hidden: dict[int, np.ndarray] | None,
            per_token: bool, graph: GraphSpec) -> dict[int, np.ndarray]:
        """Run `session` (the graph `graph`) over `rows`; returns each row's output.

        hidden: per-row states fed as `hidden_states` (None for the embeddings graph, which
        takes token ids). per_token: the output is [B,S,...] and is trimmed to each row's length;
        otherwise it is per sequence ([B] or [B,H]). NonFiniteOutputError naming `graph` when a
        kept output value is NaN or inf.
        """
        outputs: dict[int, np.ndarray] = {}
        names = set(session.input_names)
        for group in self.groups(rows):
            length = int(self._lengths[group].max())
            feeds = {"attention_mask": self._mask(group, length)}
            if hidden is None:
                feeds.update(self._token_feeds(group, length))
                dtype = feeds["inputs_embeds"].dtype if "inputs_embeds" in feeds else np.dtype(np.float32)
            else:
                feeds["hidden_states"] = self._hidden_feed(group, length, hidden)
                dtype = feeds["hidden_states"].dtype
            feeds.update(self._position_feeds(names, feeds["attention_mask"], dtype))
            result = session.run(feeds)[0]
            if hidden is None:  # count the padded batch once per pass, at the embeddings
                self.padded_tokens += len(group) * length
            self.runs += 1
            for slot, row in enumerate(group):
                outputs[int(row)] = result[slot, self._span(int(row), length)].copy() if per_token else result[slot]
            if not np.isfinite(result).all():  # whole chunk first (cheap); then only the kept values count
                _check_finite(graph, {int(row): outputs[int(row)] for row in group})
        return outputs


def _check_finite(graph: GraphSpec, outputs: dict[int, np.ndarray]) -> None:
    """NonFiniteOutputError naming `graph` and the first row whose kept output is NaN or inf."""
    for row, value in outputs.items():
        if not np.isfinite(value).all():
            kind = "NaN" if np.isnan(value).any() else "inf"
            raise NonFiniteOutputError(
                f"graph {graph.name} ({graph.path}) produced {kind} for input sequence {row}: its weights are "
                "corrupt or its values overflow the package's dtype; re-export the package (`edgekit verify PKG` "
                "says whether its files changed since the export)",
                [item.file for item in graph.files])
