"""Read candidate texts from a file: `.txt` (one per line) or `.jsonl` (`{"text": ...}` per line).

Blank lines are skipped; a result's `index` is the candidate's position among those read.
Every problem names the file and line: not found, not UTF-8, malformed JSON, no "text".
"""

from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import CandidatesError

SUFFIXES = (".txt", ".jsonl")


def read_text_lines(path: Path, what: str = "candidates file") -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a UTF-8 file (a leading BOM is dropped).

    Raises CandidatesError naming the file (and line) when it is missing, unreadable or not UTF-8.
    """
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise CandidatesError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise CandidatesError(f"cannot read {what} {path}: {error.strerror or error}") from None
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CandidatesError(f"{path}:{number}: line is not UTF-8; re-save the file as UTF-8") from None
        if number == 1:
            line = line.lstrip("\ufeff")
        if line.strip():
            lines.append((number, line))
    return lines


def read_candidates(path: str | Path) -> list[str]:
    """The candidate texts in `path`, in file order; raises CandidatesError on any problem."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise CandidatesError(f"{path}: candidates file must end in .txt (one per line) or .jsonl ({{\"text\": ...}})")
    texts: list[str] = []
    for number, line in read_text_lines(path):
        if path.suffix == ".txt":
            texts.append(line)
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
