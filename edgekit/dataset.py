"""Query sets for calibration and benchmarks: JSONL, one example per line.

Each line: {"query": str, "candidates": [str, ...], "relevant": [int, ...]} ("relevant",
indices into "candidates", is optional). Errors name the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.candidates import read_text_lines
from edgekit.errors import CandidatesError


@dataclass(frozen=True)
class Example:
    query: str
    candidates: list[str]
    relevant: list[int] = field(default_factory=list)


def read_examples(path: str | Path) -> list[Example]:
    """Parse a JSONL query set; raises CandidatesError naming the first bad line."""
    path = Path(path)
    examples = []
    for number, line in read_text_lines(path, what="data file"):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CandidatesError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise CandidatesError(f"{path}:{number}: expected an object with \"query\" and \"candidates\"")
        query, candidates = record.get("query"), record.get("candidates")
        if not isinstance(query, str) or not query.strip():
            raise CandidatesError(f"{path}:{number}: expected a non-empty string \"query\"")
        if not isinstance(candidates, list) or not candidates or not all(isinstance(c, str) for c in candidates):
            raise CandidatesError(f"{path}:{number}: expected \"candidates\": a non-empty list of strings")
        relevant = record.get("relevant", [])
        if not isinstance(relevant, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(candidates) for i in relevant):
            raise CandidatesError(f"{path}:{number}: \"relevant\" must list indices into \"candidates\"")
        examples.append(Example(query, candidates, relevant))
    if not examples:
        raise CandidatesError(f"{path} holds no examples; one JSON object per line")
    return examples
