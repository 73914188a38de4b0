"""Shared CLI plumbing: one-line errors with exit code 2 (ours and typer's own), the options every
sampling and training command repeats (``Annotated`` aliases, one help text each), device and
thread selection, checks of the options and output paths several commands share, the operator
registry as the command line sees it, and the image size a model works at."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from invdiff.errors import InvdiffError
from invdiff.io import MAX_GIB
from invdiff.plugins import Registry

# Options shared by sample, solve, train and train-classifier (and --force by data) ------------

BatchSize = Annotated[
    int,
    typer.Option(
        "--batch-size", help="Batch size: samples per network call, or images per training step."
    ),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")]
Threads = Annotated[
    int, typer.Option("--threads", help="CPU threads for torch (0: torch's default).")
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
Clip = Annotated[
    bool,
    typer.Option(
        "--clip/--no-clip", help="Clip the prior's denoised estimate to the data range every step."
    ),
]

MAX_THREADS = 4096
MAX_BATCH = 65536
MIN_IMAGE_SIZE = 8  # the smallest side any-size models reconstruct or sample (--image-size)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler, torchrun), raised in the main thread like Ctrl-C."""


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that InvdiffError (and friends) become one line on stderr and exit 2;
    Ctrl-C is "Interrupted." with exit 130 and SIGTERM "Terminated." with exit 143."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InvdiffError as err:
            typer.echo(f"Error: {err}", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt as err:
            terminated = isinstance(err, Terminated)
            typer.echo("Terminated." if terminated else "Interrupted.", err=True)
            raise typer.Exit(code=143 if terminated else 130) from None

    return wrapper


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` so that temporaries are removed and the command
    ends with one line (the console script installs it; tests run commands in-process)."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)


# typer's own errors and help --------------------------------------------------------------------

_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


class _OneLine:
    """Typer's usage errors (unknown option, value of the wrong type, missing argument) as one
    'Error: ...' line naming the option and where to look, like ours; flags show no '<bool>'."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""  # a flag takes no value: show none in --help
        return params

    def make_context(self, *args, **kwargs):
        with _one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _one_line():
            return super().invoke(ctx)


@contextlib.contextmanager
def _one_line() -> Iterator[None]:
    try:
        yield
    except _CLICK_ERROR as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `invdiff` alone prints the help
            raise
        text = " ".join(err.format_message().split())
        ctx = getattr(err, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        typer.echo(f"Error: {text}{where}", err=True)
        raise typer.Exit(code=err.exit_code) from None


class Group(_OneLine, TyperGroup):
    """The command groups of invdiff (the root, data, operators)."""


class Command(_OneLine, TyperCommand):
    """A command of invdiff."""


# Devices, threads ------------------------------------------------------------------------------


def resolve_device(name: str | None) -> str:
    """Return 'cuda' when present and no device was asked for, else the requested device."""
    import torch

    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda") or dev.type == "cpu" and dev.index:
        raise InvdiffError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvdiffError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return name


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count when given (0 or None: torch's default)."""
    if threads is not None and not 0 <= threads <= MAX_THREADS:
        raise InvdiffError(
            f"--threads must lie in [0, {MAX_THREADS}] (0: torch's default), got {threads}"
        )
    if threads:
        import torch

        torch.set_num_threads(threads)


def seeded_build(build: Any, config: dict, seed: int) -> Any:
    """Return ``build(config)`` with torch's global RNG seeded by ``seed`` for the call only, so
    that initial weights depend on ``--seed`` alone and the caller's RNG state is untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(config)


# Option checks ---------------------------------------------------------------------------------


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
    or whose folder is missing: before any long computation."""
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


# Operators -------------------------------------------------------------------------------------


class CliRegistry(Registry):
    """The operator registry as the command line sees it: plugins that failed to load or to
    register are not Python warnings on stderr but named where they matter, when an operator
    is not found (or by ``invdiff operators list``)."""

    def __init__(self, registry: Registry, skipped: list[str]):
        super().__init__(registry.values())
        self.skipped = skipped

    def lookup(self, name: str):
        try:
            return super().lookup(name)
        except InvdiffError as err:
            if not self.skipped:
                raise
            raise InvdiffError(f"{err}; note: {'; '.join(self.skipped)}") from None


def load_registry() -> CliRegistry:
    """Return the registry of the installed operator plugins (a fresh one per invocation)."""
    import warnings

    from invdiff.plugins import build_registry, make_plugin_manager

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        registry = build_registry(make_plugin_manager())
    skipped = []
    for w in caught:
        if str(w.message).startswith("invdiff plugin"):
            skipped.append(str(w.message))
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return CliRegistry(registry, skipped)


# Image sizes -----------------------------------------------------------------------------------


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
    if found is not None and min(found) < MIN_IMAGE_SIZE:
        raise InvdiffError(
            f"the images of {source} are {found[0]} x {found[1]}; invdiff reconstructs images of "
            f"at least {MIN_IMAGE_SIZE} x {MIN_IMAGE_SIZE}"
        )
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
