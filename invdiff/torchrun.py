"""The process's place in a torchrun launch, read from the environment torchrun sets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

from invdiff.errors import InvdiffError

T = TypeVar("T")


def ranks() -> tuple[int, int, int]:
    """Return (RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them, (0, 1, 0) without it; values
    that are not integers with 0 <= RANK, LOCAL_RANK < WORLD_SIZE are a one-line error."""
    names = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    texts = {name: os.environ.get(name, default) for name, default in names.items()}
    try:
        rank, world, local = (int(text) for text in texts.values())
    except ValueError:
        rank = world = local = -1
    if not (0 <= rank < world and 0 <= local < world):
        found = ", ".join(f"{name}={text!r}" for name, text in texts.items())
        raise InvdiffError(
            f"the environment sets {found}; torchrun sets integers 0 <= RANK, LOCAL_RANK < "
            "WORLD_SIZE: unset them or start the command with torchrun"
        )
    return rank, world, local


def share(items: Sequence[T], rank: int, world: int) -> list[T]:
    """Return the items process ``rank`` of ``world`` handles: rank, rank + world, ..."""
    return list(items[rank::world])
