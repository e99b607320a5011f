"""The one clock that specimen, scheduler and decision log all read.

Times are *specimen seconds* since the start of the run. On real hardware the
scale is 1; on the simulated microscope ``time_scale`` lets hours of biology
pass in seconds of wall time, and every component still agrees on "now".
"""

from __future__ import annotations

import threading
import time

__all__ = ["Clock"]


class Clock:
    """Scaled monotonic clock.

    Parameters
    ----------
    time_scale : float
        Specimen seconds per wall second (1.0 for real hardware).
    start_s : float
        Specimen time at the moment the clock is created (or last reset).
    """

    def __init__(
        self, time_scale: float = 1.0, start_s: float = 0.0, *, fast_forward: bool = False
    ) -> None:
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        self._lock = threading.Lock()
        self._time_scale = float(time_scale)
        self._wall0 = time.perf_counter()
        self._t0 = float(start_s)
        # Fast-forward (simulation only): waits jump the clock instead of sleeping, so
        # plans with nothing to wait for (fixed-rate reference runs) finish at compute speed.
        self.fast_forward = fast_forward

    @property
    def time_scale(self) -> float:
        return self._time_scale

    def now_s(self) -> float:
        """Current specimen time in seconds."""
        with self._lock:
            return self._t0 + (time.perf_counter() - self._wall0) * self._time_scale

    def reset(
        self,
        start_s: float = 0.0,
        time_scale: float | None = None,
        fast_forward: bool | None = None,
    ) -> None:
        """Restart the clock at ``start_s`` (optionally with a new scale)."""
        with self._lock:
            if fast_forward is not None:
                self.fast_forward = fast_forward
            if time_scale is not None:
                if not time_scale > 0:
                    raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
                self._time_scale = float(time_scale)
            self._wall0 = time.perf_counter()
            self._t0 = float(start_s)

    def to_wall_s(self, specimen_s: float) -> float:
        """Convert a specimen duration to wall seconds."""
        return specimen_s / self._time_scale

    def sleep_until(self, t_s: float, cancel: threading.Event | None = None) -> bool:
        """Block until specimen time ``t_s``.

        Returns False if ``cancel`` was set before the time was reached.
        """
        if self.fast_forward:
            if cancel is not None and cancel.is_set():
                return False
            with self._lock:
                now = self._t0 + (time.perf_counter() - self._wall0) * self._time_scale
                if t_s > now:
                    self._t0 += t_s - now
            return True
        while True:
            remaining = self.to_wall_s(t_s - self.now_s())
            if remaining <= 0:
                return True
            step = min(remaining, 0.05)
            if cancel is not None:
                if cancel.wait(step):
                    return False
            else:
                time.sleep(step)
