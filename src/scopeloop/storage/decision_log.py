"""``decisions.jsonl``: every decision of a run, one JSON line each, flushed as it happens."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from .jsonl import read_jsonl, to_jsonable

__all__ = ["DecisionLog", "read_decisions"]


class DecisionLog:
    """Append-only log of decisions.

    Each record is a dict; common keys are ``t_s`` (specimen time), ``source``
    (policy or "scheduler"), ``trigger`` (the frame that led to it), ``evidence``
    (the detections), ``action``, ``accepted``, ``reason`` and ``latency_ms``
    (frame arrival to the action entering the schedule). Thread-safe; each line
    is flushed before ``write`` returns, so a killed run keeps every decision.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.n_written = 0
        self.n_accepted = 0
        self.n_refused = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=to_jsonable, sort_keys=False)
        with self._lock:
            if self._fh.closed:
                return
            self._fh.write(line + "\n")
            self._fh.flush()
            self.n_written += 1
            if record.get("accepted") is True:
                self.n_accepted += 1
            elif record.get("accepted") is False:
                self.n_refused += 1

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                self._fh.close()


def read_decisions(path: str | Path) -> list[dict[str, Any]]:
    """Parse a ``decisions.jsonl`` file (or the one in a run folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "decisions.jsonl"
    return read_jsonl(p)
