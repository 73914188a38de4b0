"""The `invdiff` console script: Ctrl-C while the command line is still importing (torch takes a
few seconds) or parsing its options ends like Ctrl-C later, "Interrupted." and exit code 130, not
a traceback or a silent exit. Nothing has been opened or written yet at that point, so the
process ends at once; the command itself puts Python's handler back when it starts
(:func:`invdiff.cli._common.user_errors`)."""

from __future__ import annotations

import os
import signal


def interrupted_while_starting(signum, frame) -> None:
    """SIGINT handler from start-up until a command's body starts: one line, exit 130."""
    os.write(2, b"Interrupted.\n")
    os._exit(130)


def main() -> None:
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:  # a background job's ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, interrupted_while_starting)
    from invdiff.cli import main as cli_main

    cli_main()
