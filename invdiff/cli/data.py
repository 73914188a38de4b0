"""Placeholder until written."""

import typer

app = typer.Typer()
