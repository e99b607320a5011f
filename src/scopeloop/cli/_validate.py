"""`scopeloop validate`: check a protocol file; export the protocol JSON Schema."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import EXIT_BAD_INPUT, cli_errors


def validate(
    protocol: Annotated[
        Path | None, typer.Argument(help="Protocol YAML file to check.", show_default=False)
    ] = None,
    schema: Annotated[
        bool,
        typer.Option("--schema", help="Print the protocol JSON Schema (for editors) and exit."),
    ] = False,
    schema_out: Annotated[
        Path | None,
        typer.Option("--schema-out", help="Write the protocol JSON Schema to this file."),
    ] = None,
) -> None:
    """Check a protocol: one line per problem (field, value, what was expected); exit 2 if bad."""
    with cli_errors():
        from scopeloop.models.protocol import ProtocolError, load_protocol, protocol_json_schema

        if schema or schema_out is not None:
            text = protocol_json_schema()
            if schema_out is not None:
                schema_out.write_text(text)
                typer.echo(f"wrote {schema_out}")
            else:
                sys.stdout.write(text)
            if protocol is None:
                return
        if protocol is None:
            raise typer.BadParameter("give a protocol file (or --schema)")
        try:
            proto = load_protocol(protocol)
        except ProtocolError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line}", file=sys.stderr)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        from scopeloop.acquisition import check_protocol

        problems = check_protocol(proto)
        if problems:
            for p in problems:
                print(f"error: {protocol}: {p}", file=sys.stderr)
            raise typer.Exit(EXIT_BAD_INPUT)
        acq = proto.acquisition
        where = len(acq.wells) + len(acq.positions)
        typer.echo(
            f"{protocol}: ok ({proto.name}: {where} wells/positions, every {acq.interval_s:g} s "
            f"for {acq.duration_s / 3600:g} h, {len(proto.detectors)} detectors, "
            f"{len(proto.policies)} policies)"
        )
