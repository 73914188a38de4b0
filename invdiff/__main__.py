"""Allow `python -m invdiff` (and `torchrun -m invdiff`)."""

from invdiff.cli import main

main()
