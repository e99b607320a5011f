"""Shared CLI plumbing: error reporting, exit codes, what weights records name."""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "BadInput",
    "cli_errors",
    "command_line",
    "require_weights",
    "state",
    "training_versions",
]

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


@dataclass
class _State:
    debug: bool = False


state = _State()


class BadInput(Exception):
    """User input (file, option, value) is wrong; message says what and where."""


def require_weights(option: str, specs: Sequence[Path] | None) -> list[Path]:
    """``[SEGMENTER=]PATH`` entries, refused with :class:`BadInput` if the model is
    missing (a file, or a folder for StarDist) or the segmenter takes none."""
    from scopeloop.analysis.segmenter import parse_weights

    for spec in specs or []:
        kind, path = parse_weights(spec)
        if kind == "classical":
            raise BadInput(f"{option} {str(spec)!r}: the classical segmenter has no weights")
        if not path.exists():
            raise BadInput(f"{option} {str(spec)!r}: no such file or folder {str(path)!r}")
    return list(specs or [])


def parse_diameter(option: str, text: str | None) -> float | str | None:
    """A nucleus diameter option: pixels (a positive number) or ``auto``."""
    if text is None or text.strip().lower() == "auto":
        return None if text is None else "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise BadInput(f"{option} {text!r}: give the diameter in pixels (e.g. 68) or auto")
    return value


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


def training_versions() -> dict[str, str]:
    """The versions a weights record names (scopeloop, torch, numpy, python)."""
    import numpy
    import torch

    import scopeloop

    return {
        "scopeloop": getattr(scopeloop, "__version__", "unknown"),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
    }


def command_line(options: dict[str, Any], command: str = "train") -> str:
    """The full ``scopeloop <command>`` that reproduces this run (every option spelled out;
    a True flag bare, a False one left out)."""
    parts = ["scopeloop", command]
    for name, value in options.items():
        if value is None or value is False:  # not given, or a flag left off
            continue
        flag = "--" + name.replace("_", "-")
        parts += [flag] if value is True else [flag, shlex.quote(str(value))]
    return " ".join(parts)
