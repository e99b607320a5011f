"""Per-position analysis: measure, track, detect.

One :class:`PositionAnalyzer` per position of a run (tracks only make sense
within one field). The acquisition's analysis worker segments each frame and
calls :meth:`PositionAnalyzer.process` with the image, its labels and the
frame's :class:`~scopeloop.models.detections.FrameInfo`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from scopeloop.models.detections import Detection, FrameInfo
from scopeloop.models.detector_config import DetectorConfig

from .detectors import Detector, FrameContext, build_detector
from .measure import FrameMeasurements, measure_objects
from .tracking import Tracker, TrackingResult

__all__ = ["PositionAnalyzer"]


class PositionAnalyzer:
    """Owns the tracker and the detectors of one position.

    Parameters
    ----------
    detector_cfgs : sequence of DetectorConfig
        The protocol's detector entries; each gets its own state here.
    tracker : Tracker, optional
        A configured tracker (default settings otherwise).

    Notes
    -----
    Frames of other modes (a high-magnification re-image, a z-stack) are not
    part of the time-lapse: pass only the position's time-lapse frames (any
    interval, baseline or burst), in acquisition order. Frames may be skipped
    (analysis dropping stale frames); the tracker widens its search with the
    time gap.
    """

    def __init__(
        self, detector_cfgs: Sequence[DetectorConfig], tracker: Tracker | None = None
    ) -> None:
        self.detector_cfgs = tuple(detector_cfgs)
        self.detectors: list[Detector] = [build_detector(c) for c in self.detector_cfgs]
        self.tracker = tracker or Tracker()
        if self.detector_cfgs:
            self._min_area = min(c.min_area_um2 for c in self.detector_cfgs)
            self._max_area = max(c.max_area_um2 for c in self.detector_cfgs)
        else:
            self._min_area, self._max_area = 0.0, float("inf")
        self.frames_processed = 0
        self.last_measurements: FrameMeasurements | None = None
        self.last_tracking: TrackingResult | None = None
        self._last_t: float | None = None

    def process(
        self, image: NDArray[np.number], labels: NDArray[np.integer], info: FrameInfo
    ) -> list[Detection]:
        """Analyse one frame; returns the detections it produced (possibly none)."""
        if image.ndim != 2:
            raise ValueError(f"PositionAnalyzer.process needs a 2-D image, got {image.shape}")
        if self._last_t is not None and info.t_s < self._last_t:
            raise ValueError(
                f"position {info.position!r}: frame at t={info.t_s:.1f}s is older than the "
                f"previous one (t={self._last_t:.1f}s); frames must come in time order"
            )
        meas = measure_objects(labels, image, info)
        keep = (meas.area_um2 >= self._min_area) & (meas.area_um2 <= self._max_area)
        if not keep.all():
            meas = meas.select(keep)
        tracking = self.tracker.update(
            meas,
            info.t_s,
            labels=labels,
            grid=(info.stage_x_um, info.stage_y_um, info.pixel_size_um),
        )
        ctx = FrameContext(info, image, labels, meas, tracking, self.tracker)
        out: list[Detection] = []
        for det in self.detectors:
            out.extend(det.update(ctx))
        self.frames_processed += 1
        self.last_measurements = meas
        self.last_tracking = tracking
        self._last_t = info.t_s
        return out
