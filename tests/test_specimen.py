"""The virtual specimen's biology and ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from scopeloop.clock import Clock
from scopeloop.simulation import Specimen, SpecimenOptions
from scopeloop.simulation.render import CHANNELS, OBJECTIVES, render_frame

DAY_S = 24 * 3600.0
BOX = (-300.0, -300.0, 300.0, 300.0)  # well A1 centre, 0.6 mm square


def _specimen(seed: int = 7, **opts: object) -> Specimen:
    base = {"well_densities_per_mm2": {"A1": 250.0}, "arrival_rate_per_mm2_h": 0.0,
            "death_rate_per_h": 0.0}  # fmt: skip
    base.update(opts)
    return Specimen(seed, SpecimenOptions(**base))  # type: ignore[arg-type]


def _cell_ids(sp: Specimen) -> set[int]:
    return set(sp.cells_in(*BOX, margin_um=0).id.tolist())


def test_cells_divide_at_the_expected_rate() -> None:
    sp = _specimen(cycle_h=20.0)
    _cell_ids(sp)
    n0 = len(sp.all_cells())  # every simulated tile, not only the box
    assert n0 > 150
    sp.advance_to(DAY_S)
    divisions = [m for m in sp.mitoses() if m.anaphase_s is not None]
    # asynchronous population, 20 h cycle: about 2**(24/20) - 1 = 1.3 divisions per cell
    per_cell = len(divisions) / n0
    assert 1.0 < per_cell < 1.6, per_cell
    # ground truth is consistent with the population: each division adds one cell
    assert len(sp.all_cells()) == n0 + len(divisions)


def test_faster_cycle_means_more_divisions() -> None:
    slow, fast = _specimen(cycle_h=30.0), _specimen(cycle_h=12.0)
    for sp in (slow, fast):
        _cell_ids(sp)
        sp.advance_to(DAY_S / 2)
    assert len(fast.mitoses()) > 1.8 * len(slow.mitoses())


def test_mitosis_phases_have_realistic_durations() -> None:
    sp = _specimen()
    _cell_ids(sp)
    sp.advance_to(DAY_S / 2)
    done = [m for m in sp.mitoses() if m.end_s is not None]
    assert len(done) > 20
    total_min = np.array([(m.end_s - m.onset_s) / 60 for m in done])  # type: ignore[operator]
    prophase_min = np.array([(m.metaphase_s - m.onset_s) / 60 for m in done])  # type: ignore[operator]
    assert 35 < np.median(total_min) < 65
    assert 8 < np.median(prophase_min) < 22
    for m in done:
        assert m.onset_s < m.metaphase_s < m.anaphase_s < m.end_s  # type: ignore[operator]
        assert len(m.daughter_ids) == 2


def test_heavy_light_dose_slows_division() -> None:
    dark, lit = _specimen(), _specimen()
    ids = _cell_ids(dark)
    assert ids == _cell_ids(lit)  # same seed, same cells
    t = 0.0
    while t < DAY_S:
        t += 600
        dark.advance_to(t)
        lit.advance_to(t)
        lit.illuminate(*BOX, dose=1.5)  # e.g. 0.75 s of 40x light every 10 min

    def divided(sp: Specimen) -> int:
        return sum(1 for m in sp.mitoses() if m.cell_id in ids and m.anaphase_s is not None)

    assert divided(lit) < 0.6 * divided(dark)
    assert lit.total_light_dose == pytest.approx(1.5 * 144)


def test_same_seed_same_specimen_whatever_the_viewing_order() -> None:
    a, b = _specimen(seed=11), _specimen(seed=11)
    far = (1500.0, 1500.0, 1800.0, 1800.0)
    a.cells_in(*BOX)
    a.advance_to(5 * 3600)
    a.cells_in(*far)
    b.cells_in(*far)
    b.advance_to(2 * 3600)
    b.cells_in(*BOX)
    b.advance_to(5 * 3600)
    key = lambda m: (m.cell_id, round(m.onset_s, 3))  # noqa: E731
    assert sorted(map(key, a.mitoses())) == sorted(map(key, b.mitoses()))
    assert len(a.mitoses()) > 0


def test_empty_wells_and_between_wells_hold_no_cells() -> None:
    sp = _specimen(well_densities_per_mm2={"A1": 250.0, "A2": 0.0})
    x, y = sp.well_center_um("A2")
    assert len(sp.cells_in(x - 500, y - 500, x + 500, y + 500)) == 0
    assert sp.well_at(4500.0, 0.0) is None  # between A1 and A2
    assert sp.well_at(*sp.well_center_um("A2")) == "A2"


def _blobs(sp: Specimen, x: float, y: float) -> int:
    img = render_frame(
        sp, x_um=x, y_um=y, z_um=0.0, shape_yx=(96, 96), binning=1,
        objective=OBJECTIVES["40x"], channel=CHANNELS["FITC"], exposure_ms=50,
        light_on=True, rng=np.random.default_rng(0),
    )  # fmt: skip
    smooth = ndimage.gaussian_filter(img.astype(float), 2.0)
    mask = smooth > 100 + 0.25 * (smooth.max() - 100)
    n = ndimage.label(mask)[1]
    return int(n)


def test_ground_truth_mitosis_matches_rendered_frames() -> None:
    opts = {"well_densities_per_mm2": {"A1": 60.0}}  # sparse: mostly isolated nuclei
    sp = _specimen(**opts)
    _cell_ids(sp)
    sp.advance_to(DAY_S / 2)
    px = OBJECTIVES["40x"].pixel_size_um
    checked = 0
    for m in sp.mitoses():
        if m.end_s is None or m.onset_s < 3600:
            continue
        replay = _specimen(**opts)
        _cell_ids(replay)
        replay.advance_to(m.onset_s + 120)
        labels = replay.labels(m.x_um, m.y_um, (96, 96), px)
        if set(np.unique(labels).tolist()) != {0, m.cell_id}:
            continue  # a neighbour in the crop would confuse the blob count
        assert replay.stage_of(m.cell_id) == "prophase"
        assert labels[48, 48] == m.cell_id
        assert _blobs(replay, m.x_um, m.y_um) == 1  # one condensing nucleus
        replay.advance_to(m.end_s + 60)  # type: ignore[operator]
        assert replay.stage_of(m.cell_id) == "gone"
        labels = replay.labels(m.x_um, m.y_um, (96, 96), px)
        assert set(m.daughter_ids) <= set(np.unique(labels).tolist())
        assert _blobs(replay, m.x_um, m.y_um) == 2  # the nucleus has split in two
        checked += 1
        if checked == 2:
            break
    assert checked == 2


def test_time_scale_compresses_a_12_hour_experiment() -> None:
    clock = Clock(time_scale=2000.0)
    clock.sleep_until(60.0)
    assert clock.now_s() >= 60.0
    ff = Clock(time_scale=1.0, fast_forward=True)
    ff.sleep_until(12 * 3600.0)
    assert ff.now_s() >= 12 * 3600.0


def _overlapping_pairs(sp: Specimen) -> int:
    """Interphase nuclei whose centres are closer than 0.75 of their radii's sum."""
    from scipy.spatial import cKDTree

    c = sp.cells_in(*BOX, margin_um=0)
    keep = c.stage == 0
    r = c.radius[keep] * np.cbrt(1 + np.clip(c.progress[keep], 0, 1))
    xy = np.stack([c.x[keep], c.y[keep]], 1)
    pairs = cKDTree(xy).query_pairs(2 * float(r.max()), output_type="ndarray")
    d = np.hypot(*(xy[pairs[:, 0]] - xy[pairs[:, 1]]).T)
    return int((d < 0.75 * (r[pairs[:, 0]] + r[pairs[:, 1]])).sum())


def test_nuclei_in_a_crowded_well_do_not_pass_through_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scopeloop.simulation.specimen as specimen_module

    crowded = {"well_densities_per_mm2": {"A1": 1500.0}}
    sp = _specimen(**crowded)
    sp.advance_to(3 * 3600.0)
    with_contact = _overlapping_pairs(sp)  # tiles are simulated when first looked at
    monkeypatch.setattr(specimen_module, "_CONTACT", 0.0)  # contact off: cells overlap freely
    free = _specimen(**crowded)
    free.advance_to(3 * 3600.0)
    without = _overlapping_pairs(free)
    # pairs across tile borders (tiles are simulated apart) may still overlap: about a
    # third of the pairs in a 0.6 mm box
    assert without > 50
    assert with_contact < 0.5 * without, (with_contact, without)
