"""User-facing errors: one line naming the problem and the fix."""

from __future__ import annotations


class InvdiffError(ValueError):
    """Raise for bad user input; the CLI prints the message on one line and exits 2."""
