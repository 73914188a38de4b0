"""Shared CLI plumbing: one-line errors with exit code 2, device and thread selection."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from invdiff.errors import InvdiffError


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that InvdiffError (and friends) become one line on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InvdiffError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(code=130) from None

    return wrapper


def resolve_device(name: str | None) -> str:
    """Return 'cuda' when present and no device was asked for, else the requested device."""
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvdiffError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return name


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def eprint(msg: str) -> None:
    print(msg, file=sys.stderr)


def clip_option() -> Any:
    """The ``--clip/--no-clip`` option of the sampling commands (``invdiff.score.ClippedScore``)."""
    return typer.Option(
        True,
        "--clip/--no-clip",
        help="Clip the prior's denoised estimate to the data range every step.",
    )


def seeded_build(build: Any, config: dict, seed: int) -> Any:
    """Return ``build(config)`` with torch's global RNG seeded by ``seed`` for the call only, so
    that initial weights depend on ``--seed`` alone and the caller's RNG state is untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(config)
