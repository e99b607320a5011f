"""Shared CLI plumbing: error reporting and exit codes."""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "BadInput", "cli_errors", "require_files", "state"]

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@dataclass
class _State:
    debug: bool = False


state = _State()


class BadInput(Exception):
    """User input (file, option, value) is wrong; message says what and where."""


def require_files(option: str, paths: Sequence[Path] | None) -> list[Path]:
    """``paths`` as a list, refused with :class:`BadInput` if one is not a file."""
    for path in paths or []:
        if not path.is_file():
            raise BadInput(f"{option} {str(path)!r}: no such file")
    return list(paths or [])


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn exceptions into one-line messages and the documented exit codes."""
    from pydantic import ValidationError

    try:
        yield
    except typer.Exit:
        raise
    except (BadInput, ValidationError, FileNotFoundError, ValueError) as exc:
        if state.debug:
            traceback.print_exc()
        for line in str(exc).strip().splitlines() or [type(exc).__name__]:
            print(f"error: {line}", file=sys.stderr)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if state.debug:
            traceback.print_exc()
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from None
