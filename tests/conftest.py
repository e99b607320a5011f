"""Shared fixtures: a fresh simulated microscope per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymmcore_plus import CMMCorePlus

from scopeloop.microscope import make_core


@pytest.fixture
def sim_core() -> Iterator[CMMCorePlus]:
    """A freshly loaded simulated microscope (seed 0, time scale 1)."""
    core = make_core()
    yield core
    if core.mda.is_running():
        core.mda.cancel()
