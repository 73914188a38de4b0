"""The `invdiff` command line: one file per command group."""

from __future__ import annotations

import typer

from invdiff.cli._common import Command, Group, handle_sigterm

app = typer.Typer(
    name="invdiff",
    help="Solve imaging inverse problems with a diffusion prior.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=Group,
)


def _register() -> None:
    from invdiff.cli import data, operators, sample, solve, train, train_classifier

    app.add_typer(data.app, name="data")
    app.add_typer(operators.app, name="operators")
    app.command("train", cls=Command)(train.train)
    app.command("train-classifier", cls=Command)(train_classifier.train_classifier)
    app.command("sample", cls=Command)(sample.sample)
    app.command(
        "solve",
        cls=solve.SolveCommand,
        options_metavar=solve.USAGE,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(solve.solve)


def _version(value: bool) -> None:
    if value:
        from invdiff import __version__

        typer.echo(f"invdiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Solve imaging inverse problems with a diffusion prior."""


_register()


def main() -> None:
    handle_sigterm()
    app()
