"""`scopeloop train` (placeholder until its part lands)."""

from __future__ import annotations

import typer


def train() -> None:
    """Not available yet."""
    typer.echo("scopeloop train is not available in this build", err=True)
    raise typer.Exit(1)
