"""Detectors on frames rendered by the simulated specimen (exact labels, real optics).

The analysis only sees pixels; the specimen's ground truth is used here to
choose fields and to judge the detections.
"""

from __future__ import annotations

import numpy as np
import pytest

from scopeloop.analysis.pipeline import PositionAnalyzer
from scopeloop.models.detections import Detection, FrameInfo
from scopeloop.models.detector_config import (
    AbnormalMorphologyDetectorConfig,
    ConfluenceDetectorConfig,
    MitosisDetectorConfig,
    MotionDetectorConfig,
)
from scopeloop.simulation import Specimen
from scopeloop.simulation.render import CHANNELS, OBJECTIVES, render_frame

SHAPE = (256, 256)
PX = OBJECTIVES["10x"].pixel_size_um
HALF_UM = SHAPE[0] * PX / 2


def _run_field(
    seed: int, x: float, y: float, t_end: float, dt: float, cfgs
) -> tuple[list[Detection], Specimen, PositionAnalyzer]:
    spec = Specimen(seed)
    rng = np.random.default_rng(0)
    pa = PositionAnalyzer(cfgs)
    out: list[Detection] = []
    for k, t in enumerate(np.arange(0.0, t_end, dt)):
        spec.advance_to(float(t))
        img = render_frame(
            spec,
            x_um=x,
            y_um=y,
            z_um=spec.focus_z_um(x, y),
            shape_yx=SHAPE,
            binning=1,
            objective=OBJECTIVES["10x"],
            channel=CHANNELS["FITC"],
            exposure_ms=50.0,
            light_on=True,
            rng=rng,
        )
        labels = spec.labels(x, y, SHAPE, PX)
        info = FrameInfo(
            position="P", frame_index=k, t_s=float(t), stage_x_um=x, stage_y_um=y, pixel_size_um=PX
        )
        out += pa.process(img, labels, info)
    return out, spec, pa


def _inside(m, x: float, y: float, margin: float = 15.0) -> bool:
    return abs(m.x_um - x) < HALF_UM - margin and abs(m.y_um - y) < HALF_UM - margin


def _scout(seed: int, density: tuple[float, float], t_end: float):
    """Fields (well centres) of moderate density and their ground-truth mitoses."""
    spec = Specimen(seed)
    fields = []
    for w in spec.well_names:
        if density[0] <= spec.well_density(w) <= density[1]:
            x, y = spec.well_center_um(w)
            spec.labels(x, y, SHAPE, PX)  # brings the field's cells into being
            fields.append((w, x, y))
        if len(fields) >= 6:
            break
    spec.advance_to(t_end)
    return fields, spec.mitoses()


@pytest.fixture(scope="module")
def dividing_field():
    """A field whose cell enters mitosis after 1 h and divides within the run."""
    for seed in range(3, 12):
        fields, mitoses = _scout(seed, (250.0, 600.0), 6 * 3600)
        for _, x, y in fields:
            mine = [m for m in mitoses if abs(m.x_um - x) < HALF_UM and abs(m.y_um - y) < HALF_UM]
            good = [
                m for m in mine if _inside(m, x, y) and m.onset_s > 3600 and m.end_s is not None
            ]
            # One clean mitosis, no other in the field at the same time.
            if len(good) >= 1 and all(
                abs(o.onset_s - good[0].onset_s) > 3600 for o in mine if o is not good[0]
            ):
                return seed, x, y, good[0]
    pytest.fail("no simulated field with a clean mitosis found")


def test_mitosis_onset_fires_before_anaphase_and_division_is_seen(dividing_field) -> None:
    seed, x, y, gt = dividing_field
    t_end = gt.end_s + 1800
    dets, spec, _ = _run_field(seed, x, y, t_end, 300.0, [MitosisDetectorConfig()])
    # The biology is the same whoever looks (light aside): the mitosis is still there.
    rec = next(m for m in spec.mitoses() if m.cell_id == gt.cell_id)
    onsets = [
        d
        for d in dets
        if d.kind == "mitosis_onset" and np.hypot(d.x_um - rec.x_um, d.y_um - rec.y_um) < 15
    ]
    assert onsets, f"no onset near the mitosis at ({rec.x_um:.0f}, {rec.y_um:.0f})"
    first = min(d.t_s for d in onsets)
    assert rec.onset_s <= first < rec.anaphase_s, (first, rec)
    assert first - rec.onset_s <= 1500, "onset should be seen in prophase/early metaphase"
    divisions = [
        d
        for d in dets
        if d.kind == "division" and np.hypot(d.x_um - rec.x_um, d.y_um - rec.y_um) < 20
    ]
    assert divisions and rec.anaphase_s <= divisions[0].t_s <= rec.end_s + 900
    assert divisions[0].evidence["onset_seen"] is True
    # Between onset and division, the cell keeps reporting that mitosis is ongoing.
    ongoing = [d for d in dets if d.kind == "mitosis_ongoing" and d.track_id == onsets[0].track_id]
    assert ongoing


def test_interphase_field_does_not_trigger() -> None:
    """Hours of a sparse field with no mitosis in view: no onset, no division."""
    for seed in range(20, 30):
        fields, mitoses = _scout(seed, (100.0, 300.0), 3 * 3600)
        for _, x, y in fields:
            near = [
                m
                for m in mitoses
                if abs(m.x_um - x) < HALF_UM + 20 and abs(m.y_um - y) < HALF_UM + 20
            ]
            if near:
                continue
            dets, _, pa = _run_field(seed, x, y, 3 * 3600, 600.0, [MitosisDetectorConfig()])
            assert len(pa.tracker.tracks) >= 3, "the field should hold cells"
            bad = [d for d in dets if d.kind in ("mitosis_onset", "division")]
            assert not bad, bad
            return
    pytest.fail("no quiet simulated field found")


def test_confluence_motion_and_morphology_detectors_report_the_field() -> None:
    spec = Specimen(4)
    w = max(spec.well_names, key=spec.well_density)
    x, y = spec.well_center_um(w)
    cfgs = [ConfluenceDetectorConfig(), MotionDetectorConfig(), AbnormalMorphologyDetectorConfig()]
    dets, spec, _ = _run_field(4, x, y, 1800, 600, cfgs)
    conf = [d for d in dets if d.kind == "confluence"]
    assert len(conf) == 3
    # ground truth counted as the detector does: objects of at least min_area_um2
    # (slivers of nuclei cut by the frame edge are below it)
    areas = np.bincount(spec.labels(x, y, SHAPE, PX).ravel())[1:] * PX * PX
    truth = int((areas >= cfgs[0].min_area_um2).sum())
    assert abs(conf[-1].evidence["count"] - truth) <= max(2, 0.1 * truth)
    assert 0 < conf[-1].evidence["covered_fraction"] < 1
    motion = [d for d in dets if d.kind == "motion" and d.frame_index == 2]
    assert len(motion) >= 0.8 * conf[-1].evidence["count"]
    speeds = [np.hypot(d.evidence["vx_um_per_min"], d.evidence["vy_um_per_min"]) for d in motion]
    assert 0 < float(np.median(speeds)) < 3.0  # cells crawl at ~0.4 um/min
    # Each abnormal-morphology report names why.
    for d in dets:
        if d.kind == "abnormal_morphology":
            assert d.evidence["reasons"]


def test_classifier_onsets_need_a_nucleus_brighter_than_the_field() -> None:
    from scopeloop.analysis.detectors import register_stage_classifier

    # a classifier that calls every object mitotic: only the field-brightness check is left
    register_stage_classifier(
        "all_mitotic", lambda: lambda image, labels, meas: np.full(len(meas), 0.99)
    )
    spec = Specimen(4)
    w = next(w for w in spec.well_names if spec.well_density(w) > 700)
    x, y = spec.well_center_um(w)
    cfg = MitosisDetectorConfig(classifier="all_mitotic")
    found, _, _ = _run_field(4, x, y, 1.0, 1.0, [cfg])
    onsets = [d for d in found if d.kind == "mitosis_onset"]
    ratios = [d.evidence["field_ratio"] for d in onsets]
    n_objects = len(np.unique(spec.labels(x, y, SHAPE, PX))) - 1
    assert n_objects >= 6 and 0 < len(onsets) < n_objects
    assert min(ratios) >= 1.0  # no nucleus dimmer than the field's median one fires
    anyone = MitosisDetectorConfig(classifier="all_mitotic", classifier_min_field_ratio=0.0)
    found_all, _, _ = _run_field(4, x, y, 1.0, 1.0, [anyone])
    assert len([d for d in found_all if d.kind == "mitosis_onset"]) > len(onsets)
