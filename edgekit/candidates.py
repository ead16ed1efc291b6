"""Read candidate texts from a file: `.txt` (one per line) or `.jsonl` (`{"text": ...}` per line).

Blank lines are skipped; a result's `index` is the candidate's position among those read.
Every problem names the file and line: not found, not UTF-8, malformed JSON, no "text".
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import CandidatesError

SUFFIXES = (".txt", ".jsonl")


def _decode(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CandidatesError(f"{path}:{number}: line is not UTF-8; re-save the file as UTF-8") from None


def read_candidates(path: str | Path) -> list[str]:
    """The candidate texts in `path`, in file order; raises CandidatesError on any problem."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise CandidatesError(f"{path}: candidates file must end in .txt (one per line) or .jsonl ({{\"text\": ...}})")
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise CandidatesError(f"candidates file {path} does not exist") from None
    except OSError as error:
        raise CandidatesError(f"cannot read candidates file {path}: {error.strerror}") from None
    texts: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = _decode(path, number, raw).lstrip("\ufeff")
        if not line.strip():
            continue
        if path.suffix == ".txt":
            texts.append(line.rstrip("\r"))
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CandidatesError(f"{path}:{number}: not valid JSON ({error.msg}); expected {{\"text\": ...}}") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CandidatesError(f"{path}:{number}: expected an object with a string \"text\" field")
        texts.append(record["text"])
    if not texts:
        raise CandidatesError(f"{path} holds no candidates; put one candidate per line")
    return texts
