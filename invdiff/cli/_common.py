"""Shared CLI plumbing: one-line errors with exit code 2, device and thread selection, checks of
the options several commands share, and the image size a model works at."""

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
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise InvdiffError(
            f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvdiffError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return name


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when given (0 or None: torch's default)."""
    if threads is not None and threads < 0:
        raise InvdiffError(f"--threads must be >= 0 (0: torch's default), got {threads}")
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


def require(checks: dict[str, tuple[bool, str]]) -> None:
    """Raise one InvdiffError naming the first option whose check failed.

    ``checks`` maps an option (``--lr``) to (ok, what it must be), e.g.
    ``{"--lr": (lr > 0, "a positive number")}``; NaN fails every comparison, so it is refused.
    """
    for option, (ok, must) in checks.items():
        if not ok:
            raise InvdiffError(f"{option} must be {must}")


def check_output(out: Any, inputs: list[Any], force: bool, resume: bool | None = None) -> None:
    """Refuse an output that is one of the inputs, or that exists (unless --force, or --resume
    for commands that have it: ``resume`` not None), or whose folder is missing: before any
    long computation."""
    from pathlib import Path

    out = Path(out)
    for src in inputs:
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise InvdiffError(f"--out {out} is an input file; choose another --out")
    if not out.parent.exists():
        raise InvdiffError(f"folder {out.parent} does not exist; create it or choose another --out")
    if out.exists() and not (force or resume):
        other = "choose another --out" if resume is None else "--resume to continue"
        raise InvdiffError(f"{out} exists; pass --force to overwrite it or {other}")


def check_optimiser(steps: int, batch_size: int, lr: float, ema_decay: float, ckpt_every: int):
    """Refuse impossible optimisation options (shared by train and train-classifier)."""
    require(
        {
            "--steps": (1 <= steps <= 10**9, "an integer in [1, 1e9]"),
            "--batch-size": (1 <= batch_size <= 65536, "an integer in [1, 65536]"),
            "--lr": (0 < lr < 1, "a number in (0, 1)"),
            "--ema-decay": (0 <= ema_decay < 1, "in [0, 1)"),
            "--ckpt-every": (ckpt_every >= 1, ">= 1"),
        }
    )


def check_sampling(
    steps: int | None = None,
    seed: int | None = None,
    snr: float | None = None,
    lam: float | None = None,
    zeta: float | None = None,
) -> None:
    """Refuse impossible sampling knobs (shared by solve and sample) before any work."""
    import math

    def finite(v: float | None) -> bool:
        return v is None or math.isfinite(v)

    require(
        {
            "--steps": (steps is None or 1 <= steps <= 100_000, "an integer in [1, 100000]"),
            "--seed": (seed is None or 0 <= seed < 2**62, "an integer >= 0"),
            "--snr": (finite(snr) and (snr is None or snr >= 0), "a finite number >= 0"),
            "--lambda": (finite(lam) and (lam is None or lam > 0), "a finite number > 0"),
            "--zeta": (finite(zeta) and (zeta is None or zeta >= 0), "a finite number >= 0"),
        }
    )


def check_image_size(image_size: int | None, largest: int) -> None:
    """Refuse an ``--image-size`` outside [8, largest] before any work."""
    if image_size is not None and not 8 <= image_size <= largest:
        raise InvdiffError(f"--image-size must lie in [8, {largest}], got {image_size}")


def image_shape(
    image: dict, image_size: int | None, found: tuple[int, int] | None = None, source: Any = None
) -> tuple[int, int, int]:
    """Return (C, H, W) of the images a model makes or reconstructs (``image``: the "image" entry
    of its config; shared by sample and solve).

    A fixed-size model: its own size. A model trained on crops (``image.any_size``): the
    ``--image-size``, which must agree with the size ``found`` in the data of ``source``, else
    that size; neither is a one-line error.
    """
    c, side = image["channels"], image["size"]
    if not image.get("any_size"):
        return (c, side, side)
    if image_size:
        if found is not None and found != (image_size, image_size):
            raise InvdiffError(
                f"--image-size {image_size} disagrees with {source}, whose images are "
                f"{found[0]} x {found[1]}; drop --image-size"
            )
        return (c, image_size, image_size)
    if found is None:
        raise InvdiffError(
            f"{source} does not show the image size (no /ground_truth or /mask); "
            "pass --image-size N"
        )
    return (c, *found)


def deprecated(old: str, new: str) -> None:
    """Tell the user (stderr) that ``old`` is an old spelling kept for one release."""
    typer.echo(f"Note: {old} is deprecated and will be removed; use {new}", err=True)
