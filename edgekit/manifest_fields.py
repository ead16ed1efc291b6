"""Readers for the fields of an untrusted manifest: the one place a JSON value becomes a typed,
range-checked Python value.

A package is something users download, so every field is read as if an attacker wrote it: each
reader returns the value with its type checked exactly (an int is an int, not a bool, not a
float, not 1e400 read as inf) and its range bounded by a sane maximum, or raises
`ManifestError` naming the field by its dotted path (`ranking.tokenizer.pad_token_id`) and what
it must be. Messages are one line and quote at most a short, escaped prefix of the bad value,
so a 5,000-character or control-character value cannot flood or forge the terminal.
`Manifest.from_dict` turns ManifestError into `NotAPackageError`; nothing else is caught there,
so any other exception escaping a parser is a bug (tests/test_manifest_fuzz.py looks for them).

Example::

    max_length = integer(required(section, "max_length", "ranking"), "ranking.max_length", 1, MAX_LENGTH)
    path = package_path(entry["file"], "graph 'layer_000': files[0].file")
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

# Sane maxima: far above any model edgekit exports, far below what exhausts memory when a runtime
# allocates per unit (a layer list, a position table, a vocabulary row).
MAX_LAYERS = 1024
MAX_LENGTH = 1 << 20  # tokens per sequence
MAX_HIDDEN = 1 << 16  # hidden size, embedding width, rotary dim
MAX_VOCAB = 1 << 24  # rows of the embedding table
MAX_BYTES = 1 << 44  # 16 TiB: one file of a package
MAX_PATH_CHARS = 1024  # a package path; each of its parts at most MAX_PART_CHARS (NAME_MAX)
MAX_PART_CHARS = 255
MAX_NAME_CHARS = 256  # graph, tensor, family and dims names
MAX_TEXT_CHARS = 1 << 16  # free text: prompt parts
MAX_GRAPHS = 4096
MAX_FILES = 4096  # files of one graph (a directory graph lists each file inside it)
MAX_TENSORS = 256  # inputs or outputs of one graph
MAX_WEIGHTS = 4096  # tensors of one layer's weights file (shared layers; int8 adds scales and zero points)
MAX_RANK = 16  # dims of one tensor
MAX_DIM = 1 << 40

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """A manifest field is missing, of the wrong type, out of range or contradicts another field.
    `str(error)` is one line naming the field."""


def shown(value: Any, limit: int = 40) -> str:
    """A short, escaped rendering of an untrusted value for an error message."""
    if isinstance(value, (dict, list)):
        text = f"{type(value).__name__} of {len(value)}"
    elif isinstance(value, float) and not math.isfinite(value):
        text = repr(value)
    else:
        try:
            text = repr(value)
        except (ValueError, RecursionError):  # an int of more than 4300 digits will not print
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def required(data: dict[str, Any], key: str, where: str) -> Any:
    """`data[key]`; ManifestError "where: missing field 'key'" when absent."""
    if key not in data:
        raise ManifestError(f"{where}: missing field {key!r}" if where else f"missing field {key!r}")
    return data[key]


def obj(value: Any, where: str) -> dict[str, Any]:
    """A JSON object (a dict with string keys)."""
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ManifestError(f"{where} must be an object, got {type(value).__name__}")
    return value


def items(value: Any, where: str, low: int, high: int) -> list[Any]:
    """A JSON array of `low`..`high` elements."""
    if not isinstance(value, list):
        raise ManifestError(f"{where} must be a list, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise ManifestError(f"{where} must have {low}..{high} elements, got {len(value)}")
    return value


def integer(value: Any, where: str, low: int, high: int) -> int:
    """An int in low..high (not a bool, not a float)."""
    if type(value) is not int or not low <= value <= high:
        raise ManifestError(f"{where} must be an integer in {low}..{high}, got {shown(value)}")
    return value


def number(value: Any, where: str, low: float, high: float, low_open: bool = False) -> float:
    """A finite int or float in [low, high] ((low, high] with low_open), as a float."""
    if type(value) not in (int, float) or (type(value) is int and abs(value) > 1 << 1000):
        raise ManifestError(f"{where} must be a number, got {shown(value)}")
    result = float(value)
    if not math.isfinite(result) or not (low < result if low_open else low <= result) or result > high:
        bracket = "(" if low_open else "["
        raise ManifestError(f"{where} must be a finite number in {bracket}{low}, {high}], got {shown(value)}")
    return result


def flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where} must be true or false, got {shown(value)}")
    return value


def text(value: Any, where: str, limit: int = MAX_NAME_CHARS, empty: bool = False, lines: bool = False) -> str:
    """A string of at most `limit` characters; non-empty unless `empty`; no control characters
    unless `lines` (then tabs and newlines are allowed, for prompt text)."""
    if not isinstance(value, str) or (not value and not empty):
        raise ManifestError(f"{where} must be a {'' if empty else 'non-empty '}string, got {shown(value)}")
    if len(value) > limit:
        raise ManifestError(f"{where} is {len(value)} characters long; at most {limit} are allowed")
    if _CONTROL.search(value.replace("\n", "").replace("\t", "") if lines else value):
        raise ManifestError(f"{where} holds a control character: {shown(value)}")
    return value


def choice(value: Any, where: str, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ManifestError(f"{where} {shown(value)} is not one of {tuple(options)}")
    return value


def optional(value: Any, read: Any, *args: Any) -> Any:
    """None stays None; anything else goes through `read(value, *args)`."""
    return None if value is None else read(value, *args)


def package_path(value: Any, where: str) -> str:
    """A canonical relative path inside the package, checked before any filesystem call: at most
    MAX_PATH_CHARS characters and MAX_PART_CHARS per part, `/`-separated, no `..`, `.` or empty
    parts (so one file has one spelling), no backslash, no control character."""
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where} must be a non-empty string (a path), got {shown(value)}")
    if len(value) > MAX_PATH_CHARS:
        raise ManifestError(f"{where} is a path of {len(value)} characters; at most {MAX_PATH_CHARS} are allowed")
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or any(part in ("", ".", "..") for part in parts) \
            or _CONTROL.search(value):
        raise ManifestError(f"{where} {shown(value)} must be a relative path inside the package "
                            "('/'-separated, no '..', '.' or empty parts, no control characters)")
    if max(len(part) for part in parts) > MAX_PART_CHARS:
        raise ManifestError(f"{where} has a path part longer than {MAX_PART_CHARS} characters")
    return PurePosixPath(value).as_posix()


def sha256_hex(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        raise ManifestError(f"{where} must be 64 lowercase hex digits, got {shown(value)}")
    return value
