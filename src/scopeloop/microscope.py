"""A ready microscope core: the simulated one by default, or any Micro-Manager config.

>>> from scopeloop.microscope import make_core
>>> core = make_core()  # simulated microscope, no hardware, no downloads
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from pymmcore_plus import CMMCorePlus
from pymmcore_plus.experimental.unicore import UniMMCore

__all__ = [
    "CPP_DEMO_CONFIG",
    "SIM_CONFIG",
    "MicroscopeConfigError",
    "config_needs_micromanager",
    "make_core",
    "pixel_size_um",
]


def _find_mm_configs() -> Path:
    # repository checkout (editable install) first, then the copy inside the package
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "mm_configs", here.parent / "mm_configs"):
        if (candidate / "scopeloop_sim.cfg").is_file():
            return candidate
    return here.parent / "mm_configs"


MM_CONFIGS = _find_mm_configs()
SIM_CONFIG = MM_CONFIGS / "scopeloop_sim.cfg"
CPP_DEMO_CONFIG = MM_CONFIGS / "MMConfig_demo.cfg"


class MicroscopeConfigError(RuntimeError):
    """A configuration cannot be loaded here; the message says why and what to do."""


@contextlib.contextmanager
def _quiet_discovery() -> Iterator[None]:
    # Creating a core logs an ERROR when no Micro-Manager installation exists; for a
    # purely Python-device core that is noise, not a problem.
    logger = logging.getLogger("pymmcore-plus")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def config_needs_micromanager(path: Path) -> list[str]:
    """C++ device adapters a config loads (``Device,...`` lines not hidden behind ``#py``)."""
    adapters = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("Device,"):
            parts = line.split(",")
            if len(parts) >= 4:
                adapters.append(parts[2])
    return sorted(set(adapters))


def make_core(config: str | Path | None = None) -> CMMCorePlus:
    """Return a core with ``config`` loaded (the simulated microscope when None).

    Raises
    ------
    FileNotFoundError
        If the config file does not exist.
    MicroscopeConfigError
        If the config needs Micro-Manager's C++ device adapters and no
        Micro-Manager installation is found, or the config fails to load.
    """
    path = Path(config) if config is not None else SIM_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"microscope config {str(path)!r} does not exist")
    adapters = config_needs_micromanager(path)
    if adapters:
        from pymmcore_plus import find_micromanager

        with _quiet_discovery():
            mm_path = find_micromanager()
        if not mm_path:
            raise MicroscopeConfigError(
                f"{path.name} uses Micro-Manager device adapters ({', '.join(adapters)}) but no "
                "Micro-Manager installation was found. Install one with `mmcore install` "
                f"(needs internet), or use the simulated microscope, which needs nothing: "
                f"{SIM_CONFIG} (the default when no config is given)."
            )
    with _quiet_discovery():
        core = UniMMCore()
    try:
        core.loadSystemConfiguration(str(path))
    except Exception as exc:
        raise MicroscopeConfigError(f"could not load {path}: {exc}") from exc
    # UniMMCore only logs Python devices that fail to initialise; fail loudly instead
    for label in core.getLoadedDevices():
        if core.isPyDevice(label):
            state = core._pydevices[label]._initialized_  # no public accessor in 0.18
            if isinstance(state, BaseException):
                raise MicroscopeConfigError(
                    f"{path.name}: device {label!r} failed to initialise: {state}"
                )
    return core


def pixel_size_um(core: CMMCorePlus) -> float:
    """Pixel size of the current camera image, micrometres.

    ``UniMMCore`` (pymmcore-plus 0.18) resolves the active pixel-size config
    with the C++ core alone, so with a Python objective turret it reports 0.
    Here the pixel-size configs are matched against the current device
    properties directly, and the camera binning is applied.
    """
    px = float(core.getPixelSizeUm())
    if px > 0:
        return px
    for name in core.getAvailablePixelSizeConfigs():
        data = core.getPixelSizeConfigData(name)
        if all(str(core.getProperty(dev, prop)) == str(val) for dev, prop, val in data):
            binning = 1
            cam = core.getCameraDevice()
            if cam and core.hasProperty(cam, "Binning"):
                binning = int(float(core.getProperty(cam, "Binning")))
            return float(core.getPixelSizeUmByID(name)) * binning
    raise MicroscopeConfigError(
        "no pixel-size configuration matches the current objective; "
        "define ConfigPixelSize/PixelSize_um lines in the microscope config"
    )
