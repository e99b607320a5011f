"""`scopeloop validate` (placeholder until its part lands)."""

from __future__ import annotations

import typer


def validate() -> None:
    """Not available yet."""
    typer.echo("scopeloop validate is not available in this build", err=True)
    raise typer.Exit(1)
