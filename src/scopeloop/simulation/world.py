"""The simulated optical bench: one specimen, one clock, the state of every device.

Python devices loaded into a ``UniMMCore`` cannot reach each other (the core
gives them only an event emitter), yet the camera must know where the stage,
focus, objective and filter are. Each core therefore gets one ``SimWorld``,
found through the core's own signal group; every simulated device of that core
reads and writes the same world.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..clock import Clock
from .render import CHANNELS, OBJECTIVES, CameraSpec, render_frame
from .specimen import Specimen, SpecimenOptions

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from pymmcore_plus import CMMCorePlus

__all__ = ["FaultKnobs", "SimWorld", "is_simulated", "world_of"]

DEFAULT_TIME_SCALE = 1.0


@dataclass
class FaultKnobs:
    """Injected hardware faults, for testing how a run survives them.

    Counters are in calls since the knob was set; None disables the fault.
    """

    camera_error_on_snap: int | None = None  # the Nth snap from now raises
    xy_error_on_move: int | None = None  # the Nth XY move from now raises
    xy_drop_move: bool = False  # moves are silently ignored (stage stalls)
    snap_delay_s: float = 0.0  # extra wall time per snap (slow camera/bus)
    _snaps: int = 0
    _moves: int = 0

    def check_snap(self) -> None:
        self._snaps += 1
        if self.camera_error_on_snap is not None and self._snaps >= self.camera_error_on_snap:
            self.camera_error_on_snap = None
            raise RuntimeError("simulated camera fault: sensor read-out failed")

    def check_move(self) -> None:
        self._moves += 1
        if self.xy_error_on_move is not None and self._moves >= self.xy_error_on_move:
            self.xy_error_on_move = None
            raise RuntimeError("simulated XY stage fault: controller did not respond")


class SimWorld:
    """Specimen + clock + device state shared by the simulated devices of one core."""

    def __init__(self, seed: int = 0, time_scale: float = DEFAULT_TIME_SCALE) -> None:
        self._lock = threading.RLock()
        self.clock = Clock(time_scale)
        self.seed = seed
        self.specimen = Specimen(seed)
        self.faults = FaultKnobs()
        self.camera = CameraSpec()
        self.xy_um: tuple[float, float] = (0.0, 0.0)
        self.z_um = 0.0
        self.objective = "10x"
        self.channel = "FITC"
        self.shutter_open = False
        self.frames_rendered = 0
        self._rng = np.random.default_rng([seed, 0xCA11])

    def reset(
        self,
        seed: int | None = None,
        time_scale: float | None = None,
        *,
        fast_forward: bool | None = None,
        options: SpecimenOptions | dict[str, Any] | None = None,
    ) -> None:
        """Fresh specimen (same seed unless given) and the clock restarted at 0."""
        with self._lock:
            if seed is not None:
                self.seed = int(seed)
            if isinstance(options, dict):
                options = SpecimenOptions(**options)
            self.specimen = Specimen(self.seed, options or self.specimen.options)
            self.faults = FaultKnobs()
            self.frames_rendered = 0
            self._rng = np.random.default_rng([self.seed, 0xCA11])
            self.clock.reset(0.0, time_scale, fast_forward)

    def snap(
        self, shape_yx: tuple[int, int], binning: int, exposure_ms: float, bit_depth: int
    ) -> tuple[NDArray[np.uint16], dict[str, Any]]:
        """Render one frame at the current time; returns the image and its metadata."""
        with self._lock:
            self.faults.check_snap()
            t = self.clock.now_s()
            self.specimen.advance_to(t)
            x, y = self.xy_um
            camera = CameraSpec(**{**self.camera.__dict__, "bit_depth": bit_depth})
            img = render_frame(
                self.specimen,
                x_um=x,
                y_um=y,
                z_um=self.z_um,
                shape_yx=shape_yx,
                binning=binning,
                objective=OBJECTIVES[self.objective],
                channel=CHANNELS[self.channel],
                exposure_ms=exposure_ms,
                light_on=self.shutter_open,
                rng=self._rng,
                camera=camera,
            )
            self.frames_rendered += 1
            px = OBJECTIVES[self.objective].pixel_size_um * binning
            meta = {
                "SimTime_s": f"{t:.3f}",
                "XPositionUm": f"{x:.3f}",
                "YPositionUm": f"{y:.3f}",
                "ZPositionUm": f"{self.z_um:.3f}",
                "PixelSizeUm": f"{px:.5f}",
                "Objective": self.objective,
                "Channel": self.channel,
                "ShutterOpen": str(int(self.shutter_open)),
            }
            return img, meta


# one world per core, keyed by the core's signal group (devices see only that)
_WORLDS: weakref.WeakKeyDictionary[Any, SimWorld] = weakref.WeakKeyDictionary()
_WORLDS_LOCK = threading.Lock()


def _world_for_events(events: Any) -> SimWorld:
    with _WORLDS_LOCK:
        world = _WORLDS.get(events)
        if world is None:
            world = _WORLDS[events] = SimWorld()
        return world


def world_of_device(device: Any) -> SimWorld:
    """The world of the core a simulated device is loaded into."""
    return _world_for_events(device.core.events.propertyChanged.instance)


def is_simulated(core: CMMCorePlus) -> bool:
    """True if the core has scopeloop's simulated devices loaded."""
    with _WORLDS_LOCK:
        return core.events in _WORLDS


def world_of(core: CMMCorePlus) -> SimWorld:
    """The simulated world behind ``core``.

    Raises
    ------
    LookupError
        If the core has no simulated devices (a real microscope).
    """
    with _WORLDS_LOCK:
        world = _WORLDS.get(core.events)
    if world is None:
        raise LookupError(
            "this core has no scopeloop simulated devices loaded (is it a real microscope?); "
            "ground truth exists only on the simulated microscope"
        )
    return world
