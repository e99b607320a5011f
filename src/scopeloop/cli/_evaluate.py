"""`scopeloop evaluate` (placeholder until its part lands)."""

from __future__ import annotations

import typer


def evaluate() -> None:
    """Not available yet."""
    typer.echo("scopeloop evaluate is not available in this build", err=True)
    raise typer.Exit(1)
