"""Shared CLI plumbing: one-line errors with exit code 2 (ours and typer's own), the options every
sampling and training command repeats (``Annotated`` aliases, one help text each), device and
thread selection (the option checks are in ``_checks``), the operator
registry as the command line sees it, and the image size a model works at."""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from invdiff._entry import interrupted_while_starting
from invdiff.errors import InvdiffError
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
        _python_sigint()
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


def _python_sigint() -> None:
    """Put Python's KeyboardInterrupt back in place of the console script's start-up handler
    (invdiff/_entry.py), which covers importing and option parsing: typer turns a Ctrl-C there
    into a silent exit 130. An ignored SIGINT (a background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` so that temporaries are removed and the command
    ends with one line (the console script installs it; tests run commands in-process)."""
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
