"""Allow `python -m invdiff` (and `torchrun -m invdiff`)."""

from invdiff._entry import main

main()
