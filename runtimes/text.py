"""Tokenisation with the package's tokenizer.json (the `tokenizers` library, no transformers).

Cross-encoders encode (query, candidate) pairs; bi-encoders encode each text alone. Texts
longer than the package's max length are truncated ("longest_first", as transformers does
with truncation=True) and counted, never rejected. Decoder rerankers (a `prompt` in the
manifest) encode prefix + template(instruction, query, document) + suffix, truncating only the
middle part from its end, as the Qwen3-Reranker reference code does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Encoding, Tokenizer

from edgekit.errors import IntegrityError, NotAPackageError
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
        path = manifest.root / manifest.ranking.tokenizer.files[0].file
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for unreadable files
            raise IntegrityError(f"cannot read {path.name} ({error}); run `edgekit verify` and re-export the package",
                                 [path.name]) from None
        rows = manifest.ranking.embedding_table.shape[0]
        size = self.tokenizer.get_vocab_size(with_added_tokens=True)  # O(1); ChunkRunner bounds each id too
        if size > rows:  # ids past the table would fail mid-run (IndexError in the row gather)
            raise NotAPackageError(f"{path.name} has {size} tokens, the embedding table has {rows} rows; "
                                   "the tokenizer is not the package's: re-export the package")
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(manifest.ranking.max_length, strategy=manifest.ranking.tokenizer.truncation)
        self.pad_token_id = manifest.ranking.tokenizer.pad_token_id
        self.use_type_ids = manifest.ranking.tokenizer.type_ids
        self.max_length = manifest.ranking.max_length
        self.prompt = manifest.ranking.prompt
        if self.prompt is not None:
            self._prefix = self._ids(self.prompt.prefix)
            self._suffix = self._ids(self.prompt.suffix)
            if len(self._prefix) + len(self._suffix) >= self.max_length:
                raise NotAPackageError(f"the prompt's prefix and suffix take {len(self._prefix) + len(self._suffix)} "
                                       f"tokens, max_length is {self.max_length}: no room for the pair; re-export "
                                       "the package")

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    @staticmethod
    def _wrap(encoding: Encoding) -> EncodedText:
        return EncodedText(tuple(encoding.ids), tuple(encoding.type_ids), bool(encoding.overflowing))

    def encode_pairs(self, query: str, candidates: Sequence[str], instruction: str | None = None) -> list[EncodedText]:
        """Pairs for a reranker: tokenizer pairs (cross-encoders) or the prompt (decoders).
        `instruction` replaces the package's default instruction (prompt packages only)."""
        if self.prompt is not None:
            return self._encode_prompts(query, candidates, instruction or self.prompt.instruction)
        encodings = self.tokenizer.encode_batch([(query, text) for text in candidates])
        return [self._wrap(encoding) for encoding in encodings]

    def encode_texts(self, texts: Sequence[str]) -> list[EncodedText]:
        return [self._wrap(encoding) for encoding in self.tokenizer.encode_batch(list(texts))]

    def _encode_prompts(self, query: str, documents: Sequence[str], instruction: str) -> list[EncodedText]:
        budget = self.max_length - len(self._prefix) - len(self._suffix)
        middles = [self.prompt.template.format(instruction=instruction, query=query, document=document)  # type: ignore[union-attr]
                   for document in documents]
        encoded = []
        for encoding in self.tokenizer.encode_batch(middles, add_special_tokens=False):
            # the tokenizer truncates at max_length; the budget is smaller, so cut here
            ids = list(encoding.ids)[:budget]
            truncated = len(encoding.ids) > budget or bool(encoding.overflowing)
            full = [*self._prefix, *ids, *self._suffix]
            encoded.append(EncodedText(tuple(full), (0,) * len(full), truncated))
        return encoded
