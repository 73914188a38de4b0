"""Checks of the options and output paths that several commands share, run before any work: one
place per rule, each failing with a one-line error that names the option and the fix."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invdiff.cli._common import MAX_BATCH, MIN_IMAGE_SIZE
from invdiff.errors import InvdiffError
from invdiff.io import MAX_GIB


def require(checks: dict[str, tuple[bool, str]]) -> None:
    """Raise one InvdiffError naming the first option whose check failed.

    ``checks`` maps an option (``--lr``) to (ok, what it must be), e.g.
    ``{"--lr": (lr > 0, "a positive number")}``; NaN fails every comparison, so it is refused.
    """
    for option, (ok, must) in checks.items():
        if not ok:
            raise InvdiffError(f"{option} must be {must}")


def within(value: float | None, lo: float, hi: float, kind: str = "a number") -> tuple[bool, str]:
    """Return the ``require`` entry "``value`` is None or lies in [lo, hi]" (NaN and Inf fail)."""
    ok = value is None or (math.isfinite(value) and lo <= value <= hi)
    return ok, f"{kind} in [{lo:g}, {hi:g}]"


def seed_check(seed: int | None) -> tuple[bool, str]:
    """The ``--seed`` entry of every command: seeds k, seed + k, ... stay below 2^63."""
    return seed is None or 0 <= seed < 2**62, "an integer in [0, 2^62)"


def batch_check(batch_size: int | None) -> tuple[bool, str]:
    return within(batch_size, 1, MAX_BATCH, "an integer")


def check_training(steps: int, batch_size: int, lr: float, ema_decay: float, ckpt_every: int, seed):
    """Refuse impossible optimisation options (shared by train and train-classifier)."""
    require(
        {
            "--steps": (1 <= steps <= 10**9, "an integer in [1, 1e9]"),
            "--batch-size": batch_check(batch_size),
            "--lr": (0 < lr < 1, "a number in (0, 1)"),
            "--ema-decay": (0 <= ema_decay < 1, "in [0, 1)"),
            "--ckpt-every": (ckpt_every >= 1, ">= 1"),
            "--seed": seed_check(seed),
        }
    )


def check_net(base: int, res_blocks: int, mult: tuple[int, ...]) -> None:
    """Refuse network sizes that cannot be built (shared by train and train-classifier)."""
    require(
        {
            "--base": within(base, 1, 1024, "an integer"),
            "--res-blocks": within(res_blocks, 1, 16, "an integer"),
            "--mult": within(max(mult), 1, 1024, "a list of integers"),
        }
    )


def check_network_memory(build: Callable[[dict], Any], config: dict) -> None:
    """Refuse a network whose training (weights, EMA, gradients and two Adam moments: five
    float32 copies) would take more than MAX_GIB, counted on the meta device before any weight
    is made (shared by train and train-classifier)."""
    import torch

    with torch.device("meta"):
        params = sum(p.numel() for p in build(config).parameters())
    check_memory(
        5 * params,
        f"the network's {params:.3g} parameters, 5 times (weights, EMA, gradients, Adam moments),",
        "lower --base, --mult or --res-blocks",
    )


def parse_ints(text: str, option: str, empty: bool = False) -> tuple[int, ...]:
    """Return the comma-separated integers >= 1 of ``option`` (``--mult 1,2,2``)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = (0,)
    if min(values, default=1) < 1 or not (values or empty):
        raise InvdiffError(
            f"{option} takes comma-separated integers >= 1, e.g. 1,2,2; got {text!r}"
        )
    return values


def check_sampling(
    steps: int | None = None,
    seed: int | None = None,
    snr: float | None = None,
    lam: float | None = None,
    zeta: float | None = None,
    *,
    samples: int | None = None,
    batch_size: int | None = None,
    cg_iters: int | None = None,
    noise: float | None = None,
    sigma_start: float | None = None,
    tv: float | None = None,
    kappa: float | None = None,
    relax: float | None = None,
) -> None:
    """Refuse impossible sampling knobs (shared by solve and sample) before any work."""
    require(
        {
            "--steps": within(steps, 1, 100_000, "an integer"),
            "--samples": within(samples, 1, 1_000_000, "an integer"),
            "--batch-size": batch_check(batch_size),
            "--seed": seed_check(seed),
            "--snr": within(snr, 0, 10),
            "--lambda": (lam is None or (math.isfinite(lam) and 0 < lam <= 1e6), "in (0, 1e6]"),
            "--zeta": within(zeta, 0, 1e6),
            "--cg-iters": within(cg_iters, 1, 1000, "an integer"),
            "--noise": within(noise, 0, 1000),
            "--sigma-start": within(sigma_start, 0, 1e5),
            "--tv": within(tv, 0, 1e3),
            "--kappa": within(kappa, 1, 100),
            "--relax": (relax is None or (math.isfinite(relax) and 0 < relax <= 2), "in (0, 2]"),
        }
    )


def check_memory(values: int, what: str, fix: str) -> None:
    """Refuse to make ``values`` float32 numbers when they would take more than MAX_GIB."""
    gib = values * 4 / 2**30
    if gib > MAX_GIB:
        raise InvdiffError(f"{what} need {gib:.0f} GiB (more than {MAX_GIB}); {fix}")


def check_image_size(image_size: int | None, largest: int) -> None:
    """Refuse an ``--image-size`` outside [MIN_IMAGE_SIZE, largest] before any work."""
    if image_size is not None and not MIN_IMAGE_SIZE <= image_size <= largest:
        raise InvdiffError(
            f"--image-size must lie in [{MIN_IMAGE_SIZE}, {largest}], got {image_size}"
        )


def knob_flag(name: str) -> str:
    """Return the option of a strategy knob: ``lam`` is --lambda, ``cg_iters`` --cg-iters."""
    return "--lambda" if name == "lam" else "--" + name.replace("_", "-")


# Output paths ----------------------------------------------------------------------------------


def check_output(
    out: Any, inputs: list[Any], force: bool, resume: bool | None = None, option: str = "--out"
) -> None:
    """Refuse an output that is one of the inputs, or not a regular file (a folder, a device),
    or that exists (unless --force, or --resume for commands that have it: ``resume`` not None),
    or whose folder is missing, not a folder or not writable: before any long computation."""
    out = Path(out)
    for src in inputs:
        if Path(src).exists() and out.exists() and out.resolve() == Path(src).resolve():
            raise InvdiffError(f"{option} {out} is an input file; choose another {option}")
    if out.exists() and not out.is_file():
        raise InvdiffError(
            f"{option} {out} is not a regular file (a folder or a device); choose a file name"
        )
    if not out.parent.exists():
        raise InvdiffError(
            f"folder {out.parent} does not exist; create it or choose another {option}"
        )
    if not out.parent.is_dir():
        raise InvdiffError(f"{out.parent} is not a folder; choose another {option}")
    try:  # the folder takes a new file (permissions, a read-only disk, /proc)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise InvdiffError(
            f"cannot write in folder {out.parent} ({reason}); choose another {option}"
        ) from None
    if out.exists() and not (force or resume):
        other = f"choose another {option}" if resume is None else "--resume to continue"
        raise InvdiffError(f"{out} exists; pass --force to overwrite it or {other}")


def check_state_output(out: Any, state: Any, inputs: list[Any], force: bool, resume: bool) -> None:
    """``check_output`` for the model file ``out`` of a training command and for its resumable
    state ``state`` (OUT.train), written at every checkpoint: --resume continues them, --force
    starts over; --resume with ``out`` but no state to continue from does not start over."""
    check_output(out, inputs, force, resume)
    check_output(state, inputs, force, resume)
    if resume and not force and Path(out).exists() and not Path(state).exists():
        raise InvdiffError(
            f"{out} exists but {state} does not, so there is nothing to resume; pass --force "
            "to train again from the start"
        )


def check_outputs(outputs: dict[str, Any], inputs: list[Any], force: bool) -> None:
    """``check_output`` for each of a command's outputs (option -> path or None), which must
    also be different files."""
    given = {option: Path(path) for option, path in outputs.items() if path is not None}
    for option, path in given.items():
        check_output(path, inputs, force, option=option)
    seen: dict[Path, str] = {}
    for option, path in given.items():
        key = path.resolve()
        if key in seen:
            raise InvdiffError(f"{option} and {seen[key]} are the same file {path}; give two")
        seen[key] = option
