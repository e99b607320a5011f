"""Shared fixtures: a fresh simulated microscope per test; each test its own render cache."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pymmcore_plus import CMMCorePlus

from scopeloop.microscope import make_core
from scopeloop.simulation.render_cache import CACHE_ENV


@pytest.fixture(autouse=True)
def _own_render_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered training images go to a folder of the test's own, not the user's cache."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("render-cache")))


@pytest.fixture
def sim_core() -> Iterator[CMMCorePlus]:
    """A freshly loaded simulated microscope (seed 0, time scale 1)."""
    core = make_core()
    yield core
    if core.mda.is_running():
        core.mda.cancel()
