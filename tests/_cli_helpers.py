"""CLI test helpers shared by the command tests: invoke, and the one-line user-error check."""

from __future__ import annotations

from typer.testing import CliRunner

from invdiff.cli import app

runner = CliRunner()


def invoke(*args):
    """Run ``invdiff ARGS`` in-process (arguments stringified)."""
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *words, ignore_case: bool = False):
    """Exit code 2, no traceback, exactly one 'Error: ...' line, on stderr, containing every
    word."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert result.stderr.strip() == lines[0], result.output
    line = lines[0].lower() if ignore_case else lines[0]
    for w in words:
        assert (w.lower() if ignore_case else w) in line, lines[0]
