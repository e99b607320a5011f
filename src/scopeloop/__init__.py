"""scopeloop: smart-microscopy acquisition controller.

A pymmcore-plus acquisition whose running schedule is steered by real-time
segmentation and event detection, with a simulated microscope whose specimen
has ground truth so every decision can be scored.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scopeloop")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"

__all__ = ["__version__"]
