"""Tokenisation with the package's tokenizer.json (the `tokenizers` library, no transformers).

Cross-encoders encode (query, candidate) pairs; bi-encoders encode each text alone. Texts
longer than the package's max length are truncated ("longest_first", as transformers does
with truncation=True) and counted, never rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Encoding, Tokenizer

from edgekit.manifest import Manifest


@dataclass(frozen=True)
class EncodedText:
    """One tokenised sequence before padding."""

    ids: tuple[int, ...]
    type_ids: tuple[int, ...]
    truncated: bool


@dataclass(frozen=True)
class Batch:
    """Padded arrays for one chunk of sequences; `rows` are positions in the encoded list."""

    rows: np.ndarray  # [C] int64
    input_ids: np.ndarray  # [C, L] int64
    token_type_ids: np.ndarray  # [C, L] int64
    attention_mask: np.ndarray  # [C, L] int64

    def feeds(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "token_type_ids": self.token_type_ids,
            "attention_mask": self.attention_mask,
        }


class TextEncoder:
    """Wraps the package tokenizer with the package's truncation and padding rules."""

    def __init__(self, manifest: Manifest) -> None:
        self.tokenizer = Tokenizer.from_file(str(manifest.root / manifest.tokenizer.files[0].file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(manifest.max_length, strategy=manifest.tokenizer.truncation)
        self.pad_token_id = manifest.tokenizer.pad_token_id
        self.use_type_ids = manifest.tokenizer.type_ids

    @staticmethod
    def _wrap(encoding: Encoding) -> EncodedText:
        return EncodedText(tuple(encoding.ids), tuple(encoding.type_ids), bool(encoding.overflowing))

    def encode_pairs(self, query: str, candidates: Sequence[str]) -> list[EncodedText]:
        encodings = self.tokenizer.encode_batch([(query, text) for text in candidates])
        return [self._wrap(encoding) for encoding in encodings]

    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        return [self._wrap(encoding) for encoding in self.tokenizer.encode_batch(list(texts))]

    def batches(self, encoded: Sequence[EncodedText], chunk: int) -> list[Batch]:
        """Chunks of at most `chunk` sequences, grouped by length so padding stays small."""
        order = sorted(range(len(encoded)), key=lambda row: (len(encoded[row].ids), row))
        batches = []
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            length = max(len(encoded[row].ids) for row in rows)
            input_ids = np.full((len(rows), length), self.pad_token_id, dtype=np.int64)
            type_ids = np.zeros((len(rows), length), dtype=np.int64)
            mask = np.zeros((len(rows), length), dtype=np.int64)
            for slot, row in enumerate(rows):
                item = encoded[row]
                input_ids[slot, : len(item.ids)] = item.ids
                if self.use_type_ids:
                    type_ids[slot, : len(item.type_ids)] = item.type_ids
                mask[slot, : len(item.ids)] = 1
            batches.append(Batch(np.asarray(rows, dtype=np.int64), input_ids, type_ids, mask))
        return batches
