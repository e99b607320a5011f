# mypy: disable-error-code="no-redef"
# (pymm_property getter/setter pairs reuse one name, as @property does)
"""Simulated microscope devices for pymmcore-plus ``UniMMCore``.

Loaded from a Micro-Manager ``.cfg`` with
``#py pyDevice,<Label>,scopeloop.simulation.devices,<Class>`` lines (see
``mm_configs/scopeloop_sim.cfg``). They expose the standard
Micro-Manager properties a user looks for and all act on one shared
:class:`~scopeloop.simulation.world.SimWorld` per core.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import DTypeLike
from pymmcore_plus.experimental.unicore import (
    GenericDevice,
    ShutterDevice,
    SimpleCameraDevice,
    StageDevice,
    StateDevice,
    XYStageDevice,
    pymm_property,
)

from .render import CHANNELS, OBJECTIVES
from .world import SimWorld, world_of_device

__all__ = [
    "SimCamera",
    "SimFilterWheel",
    "SimFocusStage",
    "SimObjectiveTurret",
    "SimShutter",
    "SimSpecimen",
    "SimXYStage",
]

SENSOR_SHAPE = (512, 512)
# Covers an SBS plate with well A1 at the origin: columns run to +x, rows to -y.
X_TRAVEL_UM = (-20_000.0, 130_000.0)
Y_TRAVEL_UM = (-100_000.0, 20_000.0)
Z_TRAVEL_UM = (-500.0, 500.0)


class _WorldDevice:
    """Mixin: access to the shared simulated world of this device's core."""

    @property
    def world(self) -> SimWorld:
        return world_of_device(self)


class SimSpecimen(_WorldDevice, GenericDevice):
    """The virtual specimen: seed, time scale and plate of the simulated microscope."""

    @pymm_property(name="Seed", limits=(0, 2**31 - 1))
    def seed(self) -> int:
        return self.world.seed

    @seed.setter
    def seed(self, value: int) -> None:
        self.world.reset(seed=int(value))

    @pymm_property(name="TimeScale", limits=(0.001, 1e6))
    def time_scale(self) -> float:
        """Specimen seconds per wall second."""
        return self.world.clock.time_scale

    @time_scale.setter
    def time_scale(self, value: float) -> None:
        self.world.clock.reset(self.world.clock.now_s(), float(value))

    @pymm_property(name="Plate", allowed_values=("96-well", "24-well", "384-well", "6-well"))
    def plate(self) -> str:
        return self.world.specimen.options.plate

    @plate.setter
    def plate(self, value: str) -> None:
        opts = self.world.specimen.options.model_copy(update={"plate": value})
        self.world.reset(options=opts)

    @pymm_property(name="SpecimenTime_s", is_read_only=True)
    def specimen_time(self) -> float:
        return round(self.world.clock.now_s(), 3)


class SimCamera(_WorldDevice, SimpleCameraDevice):
    """sCMOS-like camera (6.5 um pixels, 512x512) imaging the virtual specimen."""

    _exposure_ms = 20.0
    _binning = 1
    _bit_depth = 16

    def sensor_shape(self) -> tuple[int, int]:
        return (SENSOR_SHAPE[0] // self._binning, SENSOR_SHAPE[1] // self._binning)

    def dtype(self) -> DTypeLike:
        return np.uint8 if self._bit_depth == 8 else np.uint16

    def get_exposure(self) -> float:
        return self._exposure_ms

    def set_exposure(self, exposure: float) -> None:
        exposure = float(exposure)
        if not 0.01 <= exposure <= 60_000:
            raise ValueError(f"Camera Exposure must be between 0.01 and 60000 ms, got {exposure!r}")
        self._exposure_ms = exposure

    def get_binning(self) -> int:
        return self._binning

    def set_binning(self, value: int) -> None:
        value = int(value)
        if value not in (1, 2, 4):
            raise ValueError(f"Camera Binning must be 1, 2 or 4, got {value!r}")
        self._binning = value

    @pymm_property(name="BitDepth", allowed_values=(8, 10, 12, 14, 16))
    def bit_depth(self) -> int:
        return self._bit_depth

    @bit_depth.setter
    def bit_depth(self, value: int) -> None:
        self._bit_depth = int(value)

    @pymm_property(name="PixelType", is_read_only=True)
    def pixel_type(self) -> str:
        return "8bit" if self._bit_depth == 8 else "16bit"

    @pymm_property(name="ReadNoise(e)", limits=(0.0, 50.0))
    def read_noise(self) -> float:
        return self.world.camera.read_noise_e

    @read_noise.setter
    def read_noise(self, value: float) -> None:
        self.world.camera = replace(self.world.camera, read_noise_e=float(value))

    @pymm_property(name="Offset", limits=(0.0, 1000.0))
    def offset(self) -> float:
        return self.world.camera.offset_adu

    @offset.setter
    def offset(self, value: float) -> None:
        self.world.camera = replace(self.world.camera, offset_adu=float(value))

    @pymm_property(name="HotPixels(ppm)", limits=(0.0, 10_000.0))
    def hot_pixels(self) -> float:
        """Hot pixels per million sensor pixels: a fixed pattern, bright at long exposures."""
        return self.world.camera.hot_pixels_per_million

    @hot_pixels.setter
    def hot_pixels(self, value: float) -> None:
        self.world.camera = replace(self.world.camera, hot_pixels_per_million=float(value))

    # Fault injection, through the device's own properties (as a flaky camera would
    # misbehave): the Nth snap from now raises; each snap takes extra wall time.
    @pymm_property(name="FaultOnSnap", limits=(0, 1_000_000))
    def fault_on_snap(self) -> int:
        return self.world.faults.camera_error_on_snap or 0

    @fault_on_snap.setter
    def fault_on_snap(self, value: int) -> None:
        faults = self.world.faults
        faults.camera_error_on_snap = int(value) or None
        faults._snaps = 0

    @pymm_property(name="ExtraSnapDelay_s", limits=(0.0, 60.0))
    def extra_snap_delay(self) -> float:
        return self.world.faults.snap_delay_s

    @extra_snap_delay.setter
    def extra_snap_delay(self, value: float) -> None:
        self.world.faults.snap_delay_s = float(value)

    def snap(self, buffer: np.ndarray) -> Mapping[str, Any]:
        world = self.world
        if world.faults.snap_delay_s:
            time.sleep(world.faults.snap_delay_s)
        img, meta = world.snap(buffer.shape, self._binning, self._exposure_ms, self._bit_depth)
        buffer[...] = img
        return {**meta, "Binning": str(self._binning), "Exposure-ms": f"{self._exposure_ms:g}"}


class SimXYStage(_WorldDevice, XYStageDevice):
    """Motorised XY stage (micrometres, SBS plate travel)."""

    def set_position_um(self, x: float, y: float) -> None:
        (x0, x1), (y0, y1) = X_TRAVEL_UM, Y_TRAVEL_UM
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            raise ValueError(
                f"XYStage target ({x:.1f}, {y:.1f}) um is outside the travel range "
                f"x {x0:.0f}..{x1:.0f} um, y {y0:.0f}..{y1:.0f} um"
            )
        world = self.world
        world.faults.check_move()
        if not world.faults.xy_drop_move:
            world.xy_um = (float(x), float(y))
        self.core.events.XYStagePositionChanged.emit(self.get_label(), *world.xy_um)

    def get_position_um(self) -> tuple[float, float]:
        return self.world.xy_um

    # Fault injection: the Nth move from now raises; or moves are silently dropped.
    @pymm_property(name="FaultOnMove", limits=(0, 1_000_000))
    def fault_on_move(self) -> int:
        return self.world.faults.xy_error_on_move or 0

    @fault_on_move.setter
    def fault_on_move(self, value: int) -> None:
        faults = self.world.faults
        faults.xy_error_on_move = int(value) or None
        faults._moves = 0

    @pymm_property(name="FaultDropMoves", allowed_values=(0, 1))
    def fault_drop_moves(self) -> int:
        return int(self.world.faults.xy_drop_move)

    @fault_drop_moves.setter
    def fault_drop_moves(self, value: int) -> None:
        self.world.faults.xy_drop_move = bool(int(value))

    def set_origin_x(self) -> None:
        raise NotImplementedError("the simulated stage keeps plate coordinates")

    def set_origin_y(self) -> None:
        raise NotImplementedError("the simulated stage keeps plate coordinates")

    def home(self) -> None:
        self.world.xy_um = (0.0, 0.0)

    def stop(self) -> None:
        pass


class SimFocusStage(_WorldDevice, StageDevice):
    """Focus drive (Z, micrometres); the cell layer is in focus near Z = 0."""

    def set_position_um(self, val: float) -> None:
        lo, hi = Z_TRAVEL_UM
        if not lo <= val <= hi:
            raise ValueError(f"Z target {val:.2f} um is outside the travel range {lo}..{hi} um")
        self.world.z_um = float(val)
        self.core.events.stagePositionChanged.emit(self.get_label(), float(val))

    def get_position_um(self) -> float:
        return self.world.z_um

    def home(self) -> None:
        self.world.z_um = 0.0

    def stop(self) -> None:
        pass

    def set_origin(self) -> None:
        raise NotImplementedError("the simulated focus keeps absolute coordinates")


class SimShutter(_WorldDevice, ShutterDevice):
    """Excitation shutter: no light reaches the specimen (or camera) while closed."""

    def initialize(self) -> None:
        # UniMMCore's auto-shutter only *announces* opening a Python shutter around a
        # snap (a "State" property change); it never calls set_open. Honour the
        # announcement, as a C++ core would open the shutter itself.
        signal: Any = self.core.events.propertyChanged  # the core's real psygnal signal
        signal.connect(self._on_property_changed)

    def _on_property_changed(self, device: str, prop: str, value: Any) -> None:
        if device == self.get_label() and prop == "State":
            self.world.shutter_open = str(value) == "1"

    def get_open(self) -> bool:
        return self.world.shutter_open

    def set_open(self, open: bool) -> None:
        self.world.shutter_open = bool(open)


class SimObjectiveTurret(_WorldDevice, StateDevice):
    """Objective turret: 4x/0.13, 10x/0.30, 20x/0.75, 40x/0.95."""

    def __init__(self) -> None:
        super().__init__(dict(enumerate(OBJECTIVES)))

    def get_state(self) -> int:
        return list(OBJECTIVES).index(self.world.objective)

    def set_state(self, position: int) -> None:
        labels = list(OBJECTIVES)
        if not 0 <= int(position) < len(labels):
            raise ValueError(f"Objective position must be 0..{len(labels) - 1}, got {position!r}")
        self.world.objective = labels[int(position)]


class SimFilterWheel(_WorldDevice, StateDevice):
    """Filter cube turret: DAPI, FITC (H2B-GFP nuclei), TRITC (S/G2 reporter), Cy5."""

    def __init__(self) -> None:
        super().__init__(dict(enumerate(CHANNELS)))

    def get_state(self) -> int:
        return list(CHANNELS).index(self.world.channel)

    def set_state(self, position: int) -> None:
        labels = list(CHANNELS)
        if not 0 <= int(position) < len(labels):
            raise ValueError(f"Filter position must be 0..{len(labels) - 1}, got {position!r}")
        self.world.channel = labels[int(position)]
