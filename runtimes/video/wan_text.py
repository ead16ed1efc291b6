"""Wan's prompt encoding without transformers: clean the text as diffusers' WanPipeline does,
tokenize with the package's tokenizer.json (the `tokenizers` library), run the UMT5 text encoder
graph, and keep only the prompt's own positions (the rest zero), padded to the package's
`max_sequence_length`, as `WanPipeline._get_t5_prompt_embeds` does.

The cleaning is diffusers' `prompt_clean` without ftfy: HTML entities unescaped twice, runs of
whitespace collapsed to one space, ends stripped. diffusers also runs `ftfy.fix_text` when ftfy
is installed (it repairs mojibake); edgekit does not depend on it, so a prompt with mis-decoded
text can tokenize differently from a diffusers run that has ftfy.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from edgekit.errors import IntegrityError, InvalidArgumentError

_WHITESPACE = re.compile(r"\s+")


def clean_prompt(text: str) -> str:
    """diffusers' Wan prompt cleaning (without ftfy, see the module docstring)."""
    return _WHITESPACE.sub(" ", html.unescape(html.unescape(text)).strip()).strip()


def check_prompt(prompt: object, name: str = "prompt") -> str:
    """`prompt` when it is a string with text in it; InvalidArgumentError (one line) otherwise."""
    if not isinstance(prompt, str):
        raise InvalidArgumentError(f"{name} must be a string, got {type(prompt).__name__}")
    if name == "prompt" and not clean_prompt(prompt):
        raise InvalidArgumentError("the prompt is empty; pass --prompt TEXT (or a --prompt-file with text in it)")
    return prompt


class PromptTokenizer:
    """The package's tokenizer, truncating and padding to `max_length` like diffusers' call
    (`padding="max_length", truncation=True, add_special_tokens=True`)."""

    def __init__(self, path: Path, max_length: int, pad_id: int = 0) -> None:
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for unreadable files
            raise IntegrityError(f"cannot read {path.name} ({error}); run `edgekit verify` and re-export the package",
                                 [path.name]) from None
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(length=max_length, pad_id=pad_id)
        self.max_length = max_length

    def __call__(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), int64 [len(prompts), max_length], of the cleaned prompts."""
        encodings = self.tokenizer.encode_batch([clean_prompt(prompt) for prompt in prompts])
        ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
        mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
        return ids, mask


def keep_prompt_positions(embeddings: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero every position past each prompt's length (its count of attended tokens)."""
    lengths = mask.sum(axis=1)
    keep = np.arange(embeddings.shape[1])[None, :] < lengths[:, None]
    return np.where(keep[..., None], embeddings, np.float32(0)).astype(np.float32)
