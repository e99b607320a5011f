"""`scopeloop report` (placeholder until its part lands)."""

from __future__ import annotations

import typer


def report() -> None:
    """Not available yet."""
    typer.echo("scopeloop report is not available in this build", err=True)
    raise typer.Exit(1)
