"""JSON Lines shared by the run's logs (``frames.jsonl``, ``decisions.jsonl``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_jsonl", "to_jsonable"]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Parse a JSON Lines file; blank lines and a torn last line (from a kill) are skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def to_jsonable(obj: Any) -> Any:
    """``json.dumps`` fallback: numpy scalars and arrays, pydantic models, else ``str``."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return str(obj)
