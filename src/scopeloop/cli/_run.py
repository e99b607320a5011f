"""`scopeloop run` (placeholder until its part lands)."""

from __future__ import annotations

import typer


def run() -> None:
    """Not available yet."""
    typer.echo("scopeloop run is not available in this build", err=True)
    raise typer.Exit(1)
