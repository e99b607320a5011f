"""The analysis worker: what the segmenter and the measurements are given."""

from __future__ import annotations

from typing import Any

import numpy as np
from pymmcore_plus import CMMCorePlus

from scopeloop.acquisition import LimitChecker, ObjectiveSetting, Scheduler, Site
from scopeloop.acquisition.worker import AnalysisWorker, FrameItem
from scopeloop.analysis.segmenter import get_segmenter
from scopeloop.clock import Clock
from scopeloop.models.detections import Detection, FrameInfo
from scopeloop.models.protocol import ChannelSpec, LimitsSpec
from scopeloop.simulation import world_of
from scopeloop.simulation.optics import hot_pixel_dark_current


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def process(self, image: Any, labels: Any, info: FrameInfo) -> list[Detection]:
        self.seen.append((np.array(image), np.array(labels)))
        return []


def test_segmenters_without_their_own_cleaning_get_frames_without_hot_pixels(
    sim_core: CMMCorePlus,
) -> None:
    core = sim_core
    world = world_of(core)
    world.reset(seed=3, options={"well_densities_per_mm2": {"B4": 400.0}})
    core.setConfig("Objective", "10x")
    core.setConfig("Channel", "FITC")
    core.setExposure(50)
    core.setXYPosition(*world.specimen.well_center_um("B4"))
    core.setProperty("Camera", "HotPixels(ppm)", 3000)
    frame = core.snap()
    recorder = _Recorder()
    obj = ObjectiveSetting("10x", (("Objective", "Label", "10x"),), 0.65)
    scheduler = Scheduler(
        [Site("P0", 0, 0.0, 0.0, 0.0, 600.0)], [ChannelSpec(config="FITC", exposure_ms=50)],
        obj, Clock(1.0, fast_forward=True), 600.0, LimitChecker(LimitsSpec()),
    )  # fmt: skip
    worker = AnalysisWorker(get_segmenter("classical"), lambda _: recorder, [], scheduler, print)
    info = FrameInfo(position="P0", frame_index=0, t_s=0.0, stage_x_um=0.0, stage_y_um=0.0,
                     pixel_size_um=0.65)  # fmt: skip
    worker.put(FrameItem(frame, info, "P0", 0))
    worker.start()
    assert worker.stop(drain=True) and worker.errors == 0
    ((image, labels),) = recorder.seen
    # the hot pixels brighter than the nuclei (alone among their neighbours) are gone from
    # what is measured; fainter ones, within the frame's own range, may stay
    padded = np.pad(frame.astype(np.float32), 1, mode="reflect")
    h, w = frame.shape
    shifts = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    neighbours = np.stack([padded[dy : dy + h, dx : dx + w] for dy, dx in shifts])
    second = np.sort(neighbours, axis=0)[-2]
    hot = frame > second + 10_000
    assert hot.sum() > 50 and np.percentile(frame[labels > 0], 99) < 10_000
    assert np.all(image[hot] < frame[hot] - 8000)
    # and only the camera's hot pixels are touched, nearly all that stand out of the noise
    dark_e = hot_pixel_dark_current(frame.shape, 1, 3000.0, 0) * 50  # at 50 ms
    pattern = dark_e > 0
    assert np.count_nonzero((image != frame) & ~pattern) <= 5
    faint = (dark_e >= 500) & (frame < second + 10_000)
    assert faint.sum() > 100 and np.mean(image[faint] != frame[faint]) > 0.9
    # and none of them is an object of its own
    areas = np.bincount(labels.ravel())
    assert labels.max() > 5 and np.all(areas[labels[hot & (labels > 0)]] > 4)
