"""The analysis worker: segments frames, detects events and feeds decisions back.

``frameReady`` (on the acquisition thread) only calls :meth:`AnalysisWorker.put`,
which never blocks: the inbox holds at most one pending frame per position
(newest wins) and at most ``maxsize`` positions; a frame that is replaced or
pushed out is counted as dropped. The worker thread takes the oldest pending
frame, segments it, runs the position's analyzer and every policy, submits the
resulting actions to the scheduler and logs each decision with its latency
(frame arrival to the action entering the schedule).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from scopeloop.analysis.intensity import clean_hot_pixels
from scopeloop.decisions.policies import Policy
from scopeloop.models.detections import Detection, FrameInfo

from .scheduler import Scheduler

__all__ = ["AnalysisWorker", "FrameItem", "SegmenterLike"]

logger = logging.getLogger("scopeloop")


class SegmenterLike(Protocol):
    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]: ...


class AnalyzerLike(Protocol):
    def process(
        self, image: NDArray[Any], labels: NDArray[Any], info: FrameInfo
    ) -> list[Detection]: ...


@dataclass(frozen=True)
class FrameItem:
    """A frame waiting for analysis."""

    image: NDArray[Any]
    info: FrameInfo
    store_image: str  # OME-Zarr image name where its labels go
    t_index: int


class AnalysisWorker:
    """Analysis on its own thread with a bounded, newest-wins inbox.

    Parameters
    ----------
    segmenter : object with ``segment((N, Y, X)) -> (N, Y, X) labels``
    make_analyzer : callable
        ``make_analyzer(position) -> object with process(image, labels, info)``;
        called once per position on its first frame.
    policies : sequence of Policy
    scheduler : Scheduler
        Where actions go (and whose plan the policies see).
    log : callable
        Receives one dict per decision.
    write_labels : callable, optional
        ``write_labels(image_name, t, labels)``: keep the labels beside the images.
    maxsize : int
        Positions with a pending frame before the oldest is dropped.
    """

    def __init__(
        self,
        segmenter: SegmenterLike,
        make_analyzer: Callable[[str], AnalyzerLike],
        policies: Sequence[Policy],
        scheduler: Scheduler,
        log: Callable[[dict[str, Any]], None],
        *,
        write_labels: Callable[[str, int, NDArray[Any]], None] | None = None,
        maxsize: int = 8,
    ) -> None:
        self.segmenter = segmenter
        self._make_analyzer = make_analyzer
        self.analyzers: dict[str, AnalyzerLike] = {}
        self.policies = list(policies)
        self.scheduler = scheduler
        self._log = log
        self._write_labels = write_labels
        self.maxsize = maxsize
        self._inbox: OrderedDict[str, FrameItem] = OrderedDict()
        self._cv = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="scopeloop-analysis", daemon=True)
        # counters (read by progress displays; written under the condition's lock)
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.first_error: str | None = None
        self.detections = 0
        self.latencies_s: list[float] = []
        self.analysis_s: list[float] = []
        #: the segmenter's own measure of the nuclei (U-Net, diameter "auto") as last logged
        self.nucleus_size: dict[str, Any] | None = None

    # ------------------------------------------------------------------ acquisition side

    def put(self, item: FrameItem) -> None:
        """Hand a frame over; never blocks (called on the acquisition thread)."""
        with self._cv:
            self.received += 1
            pos = item.info.position
            if pos in self._inbox:
                del self._inbox[pos]  # stale frame of the same position: newest wins
                self.dropped += 1
            elif len(self._inbox) >= self.maxsize:
                self._inbox.popitem(last=False)
                self.dropped += 1
            self._inbox[pos] = item
            self._cv.notify()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 30.0, drain: bool = False) -> bool:
        """Stop the thread (after the inbox empties when ``drain``); True if it ended in time."""
        deadline = time.monotonic() + timeout_s
        if drain:
            with self._cv:
                while (self._inbox or self._busy) and time.monotonic() < deadline:
                    self._cv.wait(0.05)
        with self._cv:
            self._stop = True
            self._inbox.clear()
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def idle(self) -> bool:
        with self._cv:
            return not self._inbox and not self._busy

    # ------------------------------------------------------------------ worker thread

    def _note_nucleus_size(self, item: FrameItem) -> None:
        """Keep what a segmenter that measures the nuclei itself (U-Net, diameter
        "auto") measured, and log it whenever its binning changes or its measure is
        held: how the run's frames were analysed."""
        measure = getattr(self.segmenter, "last_measure", None)
        if not isinstance(measure, dict):
            return
        info = item.info
        size = dict(measure)
        d_px = measure.get("diameter_px")
        if d_px is not None and info.pixel_size_um > 0:
            size["diameter_um"] = round(d_px * info.pixel_size_um, 2)
        last, self.nucleus_size = self.nucleus_size, size
        if last is not None and all(last.get(k) == size.get(k) for k in ("bin_factor", "held")):
            return
        self._log(
            {
                "t_s": self.scheduler.clock.now_s(),
                "source": "analysis",
                "position": info.position,
                "trigger": {
                    "position": info.position,
                    "image": item.store_image,
                    "t": item.t_index,
                    "frame_t_s": info.t_s,
                },
                "nucleus_size": size,
            }
        )

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._inbox and not self._stop:
                    self._cv.wait(0.5)
                if self._stop:
                    return
                _, item = self._inbox.popitem(last=False)
                self._busy = True
            try:
                self._process(item)
            except Exception as exc:  # analysis must never take the acquisition down
                with self._cv:
                    self.errors += 1
                    if self.first_error is None:
                        self.first_error = "".join(traceback.format_exception_only(exc)).strip()
                logger.exception("analysis of %s failed", item.info.position)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _process(self, item: FrameItem) -> None:
        info = item.info
        t0 = time.perf_counter()
        image = item.image
        # segmented and measured in the frame cleaned of hot pixels (a hot pixel inside a
        # nucleus raises its intensity; alone, it can become an object); the store keeps
        # the camera's frame
        segment_and_clean = getattr(self.segmenter, "segment_and_clean", None)
        if segment_and_clean is not None:  # the segmenter cleans, on its own device
            labels, image = (np.asarray(a)[0] for a in segment_and_clean(item.image[None]))
        else:
            image = clean_hot_pixels(item.image)
            labels = np.asarray(self.segmenter.segment(image[None]))[0]
        self._note_nucleus_size(item)
        if self._write_labels is not None:
            self._write_labels(item.store_image, item.t_index, labels)
        analyzer = self.analyzers.get(info.position)
        if analyzer is None:
            analyzer = self.analyzers[info.position] = self._make_analyzer(info.position)
        detections = analyzer.process(image, labels, info)
        with self._cv:
            self.detections += len(detections)
        ctx = self.scheduler.context(info.position, info.t_s)
        for policy in self.policies:
            for action in policy.decide(detections, ctx):
                verdict = self.scheduler.submit(action)
                latency = time.perf_counter() - info.arrival_wall_s
                with self._cv:
                    self.latencies_s.append(latency)
                evidence = [
                    d.model_dump(mode="json")
                    for d in detections
                    if action.position is None or d.position == action.position
                ]
                self._log(
                    {
                        "t_s": verdict.t_s,
                        "source": policy.name,
                        "position": action.position,
                        "trigger": {
                            "position": info.position,
                            "image": item.store_image,
                            "t": item.t_index,
                            "frame_t_s": info.t_s,
                            "mode": info.mode,
                        },
                        "evidence": evidence,
                        "action": action.model_dump(mode="json"),
                        "accepted": verdict.accepted,
                        "reason": action.reason if verdict.accepted else verdict.reason,
                        "latency_ms": round(latency * 1000, 3),
                    }
                )
                if verdict.accepted:
                    # later policies of this frame see the plan as it now stands
                    ctx = self.scheduler.context(info.position, info.t_s)
        with self._cv:
            self.processed += 1
            self.analysis_s.append(time.perf_counter() - t0)
