"""``run.json``: what is needed to know where a run came from and to reproduce it."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["file_sha256", "package_versions", "write_run_info"]

_PACKAGES = (
    "scopeloop",
    "pymmcore-plus",
    "pymmcore",
    "useq-schema",
    "numpy",
    "zarr",
    "scikit-image",
    "torch",
    "pydantic",
)


def file_sha256(path: str | Path | None) -> str | None:
    """SHA-256 of a file's bytes (None when there is no file)."""
    if path is None:
        return None
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_run_info(path: str | Path, info: dict[str, Any]) -> dict[str, Any]:
    """Write ``run.json`` (atomically: a kill never leaves half a file).

    ``info`` is merged over the standard provenance (package versions,
    Python, platform, creation time).
    """
    p = Path(path)
    record: dict[str, Any] = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        **info,
    }
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(p)
    return record
