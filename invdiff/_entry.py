"""The `invdiff` console script: Ctrl-C while the command line is still importing (torch takes a
few seconds) ends like Ctrl-C later, "Interrupted." and exit code 130, not a traceback. Nothing
has been opened or written yet at that point, so the process ends at once."""

from __future__ import annotations

import os
import signal


def _interrupted_while_starting(signum, frame) -> None:
    os.write(2, b"Interrupted.\n")
    os._exit(130)


def main() -> None:
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.SIG_IGN:  # a background job's ignored SIGINT stays ignored
        signal.signal(signal.SIGINT, _interrupted_while_starting)
    from invdiff.cli import main as cli_main

    signal.signal(signal.SIGINT, previous)
    cli_main()
