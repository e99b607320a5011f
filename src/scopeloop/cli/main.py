"""The ``scopeloop`` command.

Each sub-command lives in its own module and is registered here. Errors are
one readable line per problem; tracebacks only with ``--debug``. Exit codes:
0 success, 1 run failure, 2 bad input.
"""

from __future__ import annotations

import typer

from . import _bench, _cache, _evaluate, _report, _run, _segment, _train, _tune, _validate
from ._common import state

app = typer.Typer(
    name="scopeloop",
    help="Smart-microscopy acquisition controller (simulated microscope by default).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    state.debug = debug


app.command("run")(_run.run)
app.command("validate")(_validate.validate)
app.command("evaluate")(_evaluate.evaluate)
app.command("segment")(_segment.segment)
app.command("train")(_train.train)
app.command("tune")(_tune.tune)
app.command("bench")(_bench.bench)
app.command("report")(_report.report)
app.command("cache")(_cache.cache)
