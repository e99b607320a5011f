"""`scopeloop cache`: what the render cache holds, and freeing it.

Training, tuning and evaluation keep the simulated images they render on disk
(:mod:`scopeloop.simulation.render_cache`). Each change to the generator's code
starts a new key folder and leaves the old one behind, never read again by this
version: ``--prune`` removes those, ``--clear`` everything.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import BadInput, cli_errors


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def cache(
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Remove the folders drawn by generator code other than the installed one "
            "(another installed version of scopeloop would render those again).",
        ),
    ] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Remove every rendered image in the cache.")
    ] = False,
) -> None:
    """List the render cache's folders (size, images, current or stale); free them."""
    from rich.console import Console
    from rich.table import Table

    from scopeloop.simulation.render_cache import (
        CACHE_ENV,
        cache_dir,
        cache_folders,
        remove_cache_folders,
    )

    with cli_errors():
        if prune and clear:
            raise BadInput("give --prune or --clear, not both")
        console = Console()
        root = cache_dir()
        if root is None:
            console.print(f"the render cache is off (${CACHE_ENV}=off)")
            return
        folders = cache_folders(root)
        table = Table(title=f"Render cache: {root}")
        for col in ("folder", "drawn by", "images", "size"):
            table.add_column(col, justify="right" if col in ("images", "size") else "left")
        for f in folders:
            state = "installed code" if f.current else "other code (stale)"
            table.add_row(f.path.name, state, f"{f.files:,}", _mb(f.bytes))
        total = sum(f.bytes for f in folders)
        table.add_row("[b]all[/b]", "", f"{sum(f.files for f in folders):,}", _mb(total))
        console.print(table)
        gone = [f for f in folders if clear or (prune and not f.current)]
        if gone:
            freed = remove_cache_folders(gone)
            console.print(f"removed {len(gone)} folder(s), {_mb(freed)} freed")
        elif prune:
            console.print("nothing stale to remove")
