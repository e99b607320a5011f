"""Shared fixtures: a fresh simulated microscope per test; a user folder of annotated images."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from pymmcore_plus import CMMCorePlus

from scopeloop.microscope import make_core


@pytest.fixture
def sim_core() -> Iterator[CMMCorePlus]:
    """A freshly loaded simulated microscope (seed 0, time scale 1)."""
    core = make_core()
    yield core
    if core.mda.is_running():
        core.mda.cancel()


def _write_label_folder(root: Path, pairs: Sequence[tuple[Any, Any]]) -> None:
    """``root/images`` and ``root/labels`` TIFFs (``field_<i>.tif``), as a user exports them."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, (image, labels) in enumerate(pairs):
        tifffile.imwrite(root / "images" / f"field_{i}.tif", image)
        tifffile.imwrite(root / "labels" / f"field_{i}.tif", np.asarray(labels).astype(np.uint16))


@pytest.fixture
def write_label_folder() -> Callable[[Path, Sequence[tuple[Any, Any]]], None]:
    """Writes (image, labels) pairs as a user folder of ``images/`` and ``labels/``."""
    return _write_label_folder
