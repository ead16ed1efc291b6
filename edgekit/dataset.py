"""Query sets for calibration and benchmarks: JSONL, one example per line.

Each line: {"query": str, "candidates": [str, ...], "relevant": [int, ...]} ("relevant",
indices into "candidates", is optional). Errors name the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import CandidatesError


@dataclass(frozen=True)
class Example:
    query: str
    candidates: list[str]
    relevant: list[int] = field(default_factory=list)


def read_examples(path: str | Path) -> list[Example]:
    """Parse a JSONL query set; raises CandidatesError naming the first bad line."""
    path = Path(path)
    try:
        raw_lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise CandidatesError(f"data file {path} does not exist") from None
    examples = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise CandidatesError(f"{path}:{number}: line is not UTF-8") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CandidatesError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        query, candidates = record.get("query") if isinstance(record, dict) else None, None
        if isinstance(record, dict):
            candidates = record.get("candidates")
        if not isinstance(query, str) or not query.strip():
            raise CandidatesError(f"{path}:{number}: expected a non-empty string \"query\"")
        if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
            raise CandidatesError(f"{path}:{number}: expected \"candidates\": a non-empty list of strings")
        relevant = record.get("relevant", [])
        if not isinstance(relevant, list) or not all(isinstance(i, int) and 0 <= i < len(candidates) for i in relevant):
            raise CandidatesError(f"{path}:{number}: \"relevant\" must list indices into \"candidates\"")
        examples.append(Example(query, candidates, relevant))
    if not examples:
        raise CandidatesError(f"{path} holds no examples; one JSON object per line")
    return examples
