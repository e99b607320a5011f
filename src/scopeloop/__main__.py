"""``python -m scopeloop``: the ``scopeloop`` command, for checkouts that are not installed."""

from scopeloop.cli.main import app

app(prog_name="scopeloop")
