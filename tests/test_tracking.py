"""Tracking on synthetic label images: linking, motion, division, appearance."""

from __future__ import annotations

import numpy as np
import pytest

from scopeloop.analysis.measure import measure_objects, pixel_to_stage_um, stage_to_pixel
from scopeloop.analysis.tracking import Tracker
from scopeloop.models.detections import FrameInfo

PX = 0.65  # um per pixel (10x)
SHAPE = (128, 128)


def _frame(
    discs: list[tuple[float, float, float, float]], stage: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray, FrameInfo]:
    """Label + image with discs given as (row, col, radius_px, brightness)."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.zeros(SHAPE, dtype=np.uint32)
    image = np.full(SHAPE, 100.0, dtype=np.float32)
    for k, (r, c, rad, b) in enumerate(discs, start=1):
        m = (yy - r) ** 2 + (xx - c) ** 2 <= rad**2
        labels[m] = k
        image[m] += b
    info = FrameInfo(
        position="A1",
        frame_index=0,
        t_s=0.0,
        stage_x_um=stage[0],
        stage_y_um=stage[1],
        pixel_size_um=PX,
    )
    return labels, image, info


def _track(tracker: Tracker, discs, t_s: float, stage=(0.0, 0.0)):
    labels, image, info = _frame(discs, stage)
    meas = measure_objects(labels, image, info)
    res = tracker.update(meas, t_s, labels=labels, grid=(*stage, PX))
    return meas, res


def test_measurements_in_stage_micrometres() -> None:
    labels, image, info = _frame([(64 - 0.5, 64 - 0.5, 8, 1000.0)], stage=(100.0, -50.0))
    m = measure_objects(labels, image, info)
    assert len(m) == 1
    # A disc at the image centre sits at the stage position.
    assert m.x_um[0] == pytest.approx(100.0, abs=0.05)
    assert m.y_um[0] == pytest.approx(-50.0, abs=0.05)
    assert m.area_um2[0] == pytest.approx(np.pi * 8**2 * PX**2, rel=0.05)
    assert m.net_mean_intensity[0] == pytest.approx(1000.0, rel=1e-3)
    assert m.circularity[0] > 0.85
    # +x to the right, +y down the rows.
    labels, image, info = _frame([(20, 100, 6, 500.0)], stage=(0.0, 0.0))
    m = measure_objects(labels, image, info)
    assert m.x_um[0] > 0 and m.y_um[0] < 0
    r, c = stage_to_pixel(float(m.x_um[0]), float(m.y_um[0]), SHAPE, 0.0, 0.0, PX)
    assert (r, c) == pytest.approx((20.0, 100.0), abs=1e-6)
    x, _y = pixel_to_stage_um(20.0, 100.0, SHAPE, 0.0, 0.0, PX)
    assert float(x) == pytest.approx(float(m.x_um[0]))


def test_moving_objects_keep_their_tracks_and_velocity() -> None:
    tracker = Tracker()
    ids = None
    for k in range(5):
        # Two cells drifting in opposite directions, 3 px per frame, one frame a minute.
        discs = [(40, 30 + 3 * k, 7, 800.0), (90, 100 - 3 * k, 7, 800.0)]
        _, res = _track(tracker, discs, 60.0 * k)
        if ids is None:
            ids = res.track_ids.copy()
        assert set(res.track_ids) == set(ids)
        assert not res.divisions and not res.appeared and not res.disappeared
    top = next(t for t in tracker.active if t.last.y_um < 0)
    vx, vy = top.velocity_um_per_min()
    assert vx == pytest.approx(3 * PX, rel=0.05)
    assert vy == pytest.approx(0.0, abs=0.05)


def test_tracks_survive_a_stage_move() -> None:
    """Positions are in stage micrometres, so moving the stage does not break a track."""
    tracker = Tracker()
    _, r0 = _track(tracker, [(64, 64, 8, 800.0)], 0.0, stage=(0.0, 0.0))
    # Stage moved +13 um in x: the same cell now appears 20 px further left.
    _, r1 = _track(tracker, [(64, 44, 8, 800.0)], 60.0, stage=(13.0, 0.0))
    assert r1.track_ids[0] == r0.track_ids[0]
    assert not r1.appeared


def test_division_one_track_becomes_two() -> None:
    tracker = Tracker()
    _, r0 = _track(tracker, [(64, 64, 10, 800.0), (20, 20, 9, 700.0)], 0.0)
    parent = int(r0.track_ids[0])
    _, r1 = _track(tracker, [(64, 64, 8, 1600.0), (20, 20, 9, 700.0)], 120.0)  # condensed
    assert int(r1.track_ids[0]) == parent
    # Anaphase/telophase: two small daughters either side of where the parent was.
    _meas, r2 = _track(
        tracker, [(64, 56, 6, 1500.0), (64, 72, 6, 1500.0), (20, 20, 9, 700.0)], 240.0
    )
    assert len(r2.divisions) == 1
    div = r2.divisions[0]
    assert div.parent == parent
    assert set(div.daughters) == {int(r2.track_ids[0]), int(r2.track_ids[1])}
    assert tracker.tracks[parent].ended_by == "division"
    for d in div.daughters:
        assert tracker.tracks[d].parent == parent
        assert tracker.tracks[d].origin == "division"
    assert not r2.appeared  # daughters are not appearances
    # The bystander keeps its identity.
    assert int(r2.track_ids[2]) == int(r0.track_ids[1])
    # Daughters keep their own tracks afterwards.
    _, r3 = _track(tracker, [(64, 52, 6, 1400.0), (64, 76, 6, 1400.0), (20, 20, 9, 700.0)], 360.0)
    assert list(r3.track_ids[:2]) == list(r2.track_ids[:2])
    assert not r3.divisions


def test_division_is_seen_when_the_parent_was_partly_hidden_just_before() -> None:
    """A neighbour pressed against a metaphase plate hides part of it in the last frame
    before the split; the daughters are then larger than that last view, but not than the
    parent's recent size."""
    tracker = Tracker()
    _, r0 = _track(tracker, [(64, 64, 8, 1600.0)], 0.0)
    parent = int(r0.track_ids[0])
    _track(tracker, [(64, 64, 8, 1600.0)], 120.0)
    _, r2 = _track(tracker, [(64, 64, 5, 1600.0)], 240.0)  # partly hidden: 0.4x the area
    assert int(r2.track_ids[0]) == parent
    _, r3 = _track(tracker, [(64, 57, 6, 1500.0), (64, 71, 6, 1500.0)], 360.0)
    assert len(r3.divisions) == 1
    assert r3.divisions[0].parent == parent
    assert not r3.appeared


def test_appearance_and_disappearance() -> None:
    tracker = Tracker(max_gap_frames=1)
    _, r0 = _track(tracker, [(30, 30, 8, 800.0)], 0.0)
    _, r1 = _track(tracker, [(30, 30, 8, 800.0), (100, 100, 8, 800.0)], 60.0)
    assert len(r1.appeared) == 1 and r1.appeared[0] == int(r1.track_ids[1])
    # The first cell vanishes; after one missed frame (gap allowed) its track ends.
    _, r2 = _track(tracker, [(100, 100, 8, 800.0)], 120.0)
    assert not r2.disappeared
    _, r3 = _track(tracker, [(100, 100, 8, 800.0)], 180.0)
    assert r3.disappeared == [int(r0.track_ids[0])]
    assert tracker.tracks[int(r0.track_ids[0])].ended_by == "disappearance"


def test_two_neighbours_are_not_a_division() -> None:
    """Two cells of normal size passing close by stay two tracks, no division."""
    tracker = Tracker()
    _, r0 = _track(tracker, [(64, 40, 9, 800.0), (64, 88, 9, 800.0)], 0.0)
    _, r1 = _track(tracker, [(64, 44, 9, 800.0), (64, 84, 9, 800.0)], 60.0)
    assert list(r1.track_ids) == list(r0.track_ids)
    assert not r1.divisions and not r1.appeared


def test_a_false_onset_is_abandoned_when_the_cell_does_not_stay_condensed() -> None:
    """Pixels only: a one-frame brightening (e.g. a neighbour passing over) is dropped."""
    from scopeloop.analysis.pipeline import PositionAnalyzer
    from scopeloop.models.detector_config import MitosisDetectorConfig

    pa = PositionAnalyzer([MitosisDetectorConfig(confirm_misses=2)])
    bystanders = [(20, 20, 9, 700.0), (100, 30, 9, 650.0), (30, 100, 9, 720.0)]
    kinds = []
    sizes = [(10, 800), (10, 800), (10, 800), (8, 1400), (10, 800), (10, 800)]
    for k, (rad, b) in enumerate(sizes):
        labels, image, info = _frame([(64, 64, rad, b), *bystanders])
        info = info.model_copy(update={"frame_index": k, "t_s": 600.0 * k})
        kinds.append(sorted({d.kind for d in pa.process(image, labels, info)}))
    assert kinds[3] == ["mitosis_onset"]
    assert kinds[4] == []  # one miss: still waiting
    assert kinds[5] == ["mitosis_abandoned"]
