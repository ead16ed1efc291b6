"""Tokenisation with the package's tokenizer.json (the `tokenizers` library, no transformers).

Cross-encoders encode (query, candidate) pairs; bi-encoders encode each text alone. Texts
longer than the package's max length are truncated ("longest_first", as transformers does
with truncation=True) and counted, never rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from edgekit.errors import IntegrityError
from edgekit.manifest import Manifest


@dataclass(frozen=True)
class EncodedText:
    """One tokenised sequence before padding."""

    ids: tuple[int, ...]
    type_ids: tuple[int, ...]
    truncated: bool


class TextEncoder:
    """Wraps the package tokenizer with the package's truncation and padding rules."""

    def __init__(self, manifest: Manifest) -> None:
        path = manifest.root / manifest.tokenizer.files[0].file
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for unreadable files
            raise IntegrityError(f"cannot read {path.name} ({error}); run `edgekit verify` and re-export the package",
                                 [path.name]) from None
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
