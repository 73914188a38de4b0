"""`invdiff operators list|check`: what operator plugins are installed, and do they conform."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from invdiff.cli._checks import (
    require,
    seed_check,
)
from invdiff.cli._common import (
    Command,
    Group,
    load_registry,
    user_errors,
)

app = typer.Typer(
    help="List the installed forward operators and check them.", no_args_is_help=True, cls=Group
)


@app.command("list", cls=Command)
@user_errors
def list_operators() -> None:
    """Print every registered operator: plugin, package, version, linearity and parameters;
    plugins that failed to load are named on stderr."""
    table = Table(title="invdiff operators")
    for column in ("name", "plugin", "package", "version", "linear"):
        table.add_column(column, no_wrap=True)
    table.add_column("parameters (default)")
    registry = load_registry()
    for entry in registry.values():
        params = ", ".join(
            f"{p.option}={p.default!s}" if p.default != "" else f"{p.option}=''"
            for p in entry.params
        )
        linear = "yes" if entry.linear else "no"
        table.add_row(entry.name, entry.plugin, entry.package, entry.version, linear, params)
    Console().print(table)
    for note in registry.skipped:
        typer.echo(f"Warning: {note}", err=True)


@app.command("check", cls=Command)
@user_errors
def check(
    name: str = typer.Argument(..., help="operator name, as shown by `invdiff operators list`"),
    seed: int = typer.Option(0, help="seed of the checks' random generators"),
) -> None:
    """Run the conformance kit (invdiff.testing) on one operator; exit 1 if a check fails."""
    from invdiff.testing import check_operator

    require({"--seed": seed_check(seed)})
    entry = load_registry().lookup(name)
    results = check_operator(entry, seed=seed)
    table = Table(title=f"conformance of {entry.name!r} ({entry.plugin}, {entry.package})")
    for column in ("check", "status", "value", "tolerance"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail")
    styles = {"pass": "green", "fail": "bold red", "skip": "yellow"}
    for r in results:
        value = "" if r.value is None else f"{r.value:.3g}"
        tol = "" if r.tolerance is None else f"{r.tolerance:.3g}"
        status = f"[{styles[r.status]}]{r.status}[/]"
        table.add_row(r.check, status, value, tol, r.detail)
    Console().print(table)
    failed = [r.check for r in results if not r.passed]
    if failed:
        typer.echo(f"{entry.name}: {len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(code=1)
    typer.echo(
        f"{entry.name}: all checks passed ({sum(r.status == 'skip' for r in results)} skipped)"
    )
