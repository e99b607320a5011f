"""`scopeloop report RUN`: an HTML report of a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import BadInput, cli_errors


def report(
    run: Annotated[Path, typer.Argument(help="Run folder (holds frames.jsonl and run.json).")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="HTML file to write (default: RUN/report.html)."),
    ] = None,
    no_ground_truth: Annotated[
        bool,
        typer.Option("--no-ground-truth", help="Do not score against the simulated specimen."),
    ] = False,
) -> None:
    """Write an HTML report: timelines, detections against ground truth, latency, light."""
    with cli_errors():
        if not run.is_dir():
            raise BadInput(f"run folder {str(run)!r} does not exist")
        from scopeloop.evaluation.report import write_report

        try:
            path = write_report(run, out, ground_truth=not no_ground_truth)
        except ImportError as exc:  # matplotlib missing: say what to install
            raise BadInput(str(exc)) from None
        typer.echo(f"report written to {path}")
