"""Chunked execution of one graph over a subset of sequences (the rows still being computed).

Hidden states are kept per sequence, trimmed to its own length ([n_i, H]); a chunk is padded
only to its own longest sequence. Padding positions are masked out as attention keys, so any
regrouping of sequences into chunks gives the same values at real positions — which is what
lets pruning shrink and regroup the alive set between layers without changing any score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgekit.runtimes.backend import OrtSession
from edgekit.runtimes.text import EncodedText


@dataclass
class ChunkRunner:
    """Runs graphs chunk by chunk over rows of `encoded`, sorted by length to cut padding."""

    encoded: Sequence[EncodedText]
    chunk: int
    pad_token_id: int
    use_type_ids: bool
    embedding_table: np.ndarray | None = None  # memory-mapped [vocab, E]; rows gathered per chunk
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

    def _mask(self, rows: np.ndarray, length: int) -> np.ndarray:
        return (np.arange(length)[None, :] < self._lengths[rows][:, None]).astype(np.int64)

    def _token_feeds(self, rows: np.ndarray, length: int) -> dict[str, np.ndarray]:
        input_ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)
        type_ids = np.zeros((len(rows), length), dtype=np.int64)
        for slot, row in enumerate(rows):
            item = self.encoded[row]
            input_ids[slot, : len(item.ids)] = item.ids
            if self.use_type_ids:
                type_ids[slot, : len(item.type_ids)] = item.type_ids
        feeds = {"input_ids": input_ids, "token_type_ids": type_ids}
        if self.embedding_table is not None:
            feeds["inputs_embeds"] = np.asarray(self.embedding_table[input_ids])  # the table's dtype
        return feeds

    def _hidden_feed(self, rows: np.ndarray, length: int, hidden: dict[int, np.ndarray]) -> np.ndarray:
        first = hidden[int(rows[0])]
        batch = np.zeros((len(rows), length, first.shape[-1]), dtype=first.dtype)
        for slot, row in enumerate(rows):
            state = hidden[int(row)]
            batch[slot, : len(state)] = state
        return batch

    def run(self, session: OrtSession, rows: Sequence[int], hidden: dict[int, np.ndarray] | None,
            per_token: bool) -> dict[int, np.ndarray]:
        """Run `session` over `rows`; returns each row's output.

        hidden: per-row states fed as `hidden_states` (None for the embeddings graph, which
        takes token ids). per_token: the output is [B,S,...] and is trimmed to each row's length;
        otherwise it is per sequence ([B] or [B,H]).
        """
        outputs: dict[int, np.ndarray] = {}
        for group in self.groups(rows):
            length = int(self._lengths[group].max())
            feeds = {"attention_mask": self._mask(group, length)}
            if hidden is None:
                feeds.update(self._token_feeds(group, length))
            else:
                feeds["hidden_states"] = self._hidden_feed(group, length, hidden)
            result = session.run(feeds)[0]
            if hidden is None:  # count the padded batch once per pass, at the embeddings
                self.padded_tokens += len(group) * length
            self.runs += 1
            for slot, row in enumerate(group):
                outputs[int(row)] = result[slot, : self._lengths[row]].copy() if per_token else result[slot]
        return outputs
