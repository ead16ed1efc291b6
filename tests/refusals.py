"""The one shape every refusal of a user mistake takes in the CLI: exit code 2 and a single
`error: ...` line on stderr, no traceback."""

from __future__ import annotations

from typing import Any


def assert_refused(result: Any, *needles: str) -> str:
    """`result` (a typer CliRunner result) exited 2 with one `error:` line holding every needle;
    returns that line."""
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in result.output, message
    for needle in needles:
        assert needle in message, message
    return message
