"""The simulated microscope, driven only through the real core and MDA runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import useq
from pymmcore_plus import CMMCorePlus
from scipy import ndimage

from scopeloop.microscope import (
    CPP_DEMO_CONFIG,
    SIM_CONFIG,
    MicroscopeConfigError,
    make_core,
    pixel_size_um,
)
from scopeloop.simulation import world_of

DENSE, EMPTY, SPARSE = "B2", "B3", "B4"


def _prepare(core: CMMCorePlus, objective: str = "20x", exposure_ms: float = 40) -> None:
    world_of(core).reset(
        seed=3,
        options={
            "well_densities_per_mm2": {DENSE: 900.0, EMPTY: 0.0, SPARSE: 150.0},
            "arrival_rate_per_mm2_h": 0.0,
        },
    )
    core.setConfig("Objective", objective)
    core.setConfig("Channel", "FITC")
    core.setExposure(exposure_ms)


def test_sim_config_loads_standard_devices(sim_core: CMMCorePlus) -> None:
    core = sim_core
    assert core.getCameraDevice() == "Camera"
    assert core.getXYStageDevice() == "XYStage"
    assert core.getFocusDevice() == "Z"
    assert core.getShutterDevice() == "Shutter"
    for prop in ("Exposure", "Binning", "BitDepth", "PixelType"):
        assert core.hasProperty("Camera", prop), prop
    assert set(core.getAvailableConfigs("Objective")) == {"4x", "10x", "20x", "40x"}
    assert set(core.getAvailableConfigs("Channel")) == {"DAPI", "FITC", "TRITC", "Cy5"}
    assert core.getStateLabels("Objective") == ("4x", "10x", "20x", "40x")
    core.setExposure(37.5)
    assert core.getExposure() == pytest.approx(37.5)


def test_pixel_size_follows_objective_and_binning(sim_core: CMMCorePlus) -> None:
    expected = {"4x": 1.625, "10x": 0.65, "20x": 0.325, "40x": 0.1625}
    for objective, px in expected.items():
        sim_core.setConfig("Objective", objective)
        assert pixel_size_um(sim_core) == pytest.approx(px)
    sim_core.setProperty("Camera", "Binning", 2)
    assert pixel_size_um(sim_core) == pytest.approx(0.325)
    assert sim_core.getImageWidth() == 256


def test_mda_over_wells_shows_cells_where_ground_truth_says(sim_core: CMMCorePlus) -> None:
    core = sim_core
    _prepare(core)
    world = world_of(core)
    plan = useq.WellPlatePlan(
        plate="96-well", a1_center_xy=(0, 0), selected_wells=([1, 1, 1], [1, 2, 3])
    )
    seq = useq.MDASequence(
        stage_positions=plan, channels=["FITC"], time_plan={"interval": 0, "loops": 2}
    )
    frames: list[tuple[np.ndarray, np.ndarray, str]] = []

    def on_frame(img: np.ndarray, event: useq.MDAEvent, meta: dict) -> None:
        # frameReady runs on the acquisition thread right after the snap: the
        # specimen is still in the state the frame shows
        x, y = core.getXYPosition()
        labels = world.specimen.labels(x, y, img.shape, pixel_size_um(core))
        frames.append((img.copy(), labels, str(event.pos_name)))

    core.mda.events.frameReady.connect(on_frame)
    core.mda.run(seq)
    assert len(frames) == 6
    by_well: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for img, labels, name in frames:
        by_well.setdefault(name[:2] if name else "?", []).append((img, labels))
    for img, labels, name in frames:
        background = np.median(img[labels == 0]) if (labels == 0).any() else np.median(img)
        bright = img > background + 8 * np.sqrt(max(background - 100, 1.0))
        if name.startswith(EMPTY):
            assert labels.max() == 0
            assert bright.mean() < 1e-3, "an empty well must show no cells"
            continue
        assert labels.max() > 0
        near_cells = ndimage.binary_dilation(labels > 0, iterations=3)
        # bright pixels lie on ground-truth nuclei, and nuclei are bright (the outer
        # rim is left out: nuclei just outside the field glow into it)
        inner = np.s_[4:-4, 4:-4]
        on_cells = bright[inner][near_cells[inner]].sum() / max(bright[inner].sum(), 1)
        assert on_cells > 0.98
        assert bright[labels > 0].mean() > 0.8
    n_dense = np.mean([len(np.unique(lab)) - 1 for img, lab, n in frames if n.startswith(DENSE)])
    n_sparse = np.mean([len(np.unique(lab)) - 1 for img, lab, n in frames if n.startswith(SPARSE)])
    assert n_dense > 3 * n_sparse > 0


def _sharpness(img: np.ndarray) -> float:
    # gradient energy at a scale above the pixel noise
    return float((ndimage.gaussian_gradient_magnitude(img.astype(np.float64), 1.5) ** 2).mean())


def test_blur_grows_with_defocus(sim_core: CMMCorePlus) -> None:
    core = sim_core
    _prepare(core, objective="40x", exposure_ms=80)
    x, y = world_of(core).specimen.well_center_um(DENSE)
    core.setXYPosition(x, y)
    values = []
    for z in (0.0, 2.0, 5.0, 10.0):
        core.setPosition(z)
        values.append(_sharpness(core.snap()))
    assert values == sorted(values, reverse=True)
    assert values[-1] < 0.2 * values[0]


def test_binning_and_bit_depth_act_on_the_image(sim_core: CMMCorePlus) -> None:
    core = sim_core
    _prepare(core)
    x, y = world_of(core).specimen.well_center_um(DENSE)
    core.setXYPosition(x, y)
    full = core.snap()
    core.setProperty("Camera", "Binning", 2)
    binned = core.snap()
    assert binned.shape == (full.shape[0] // 2, full.shape[1] // 2)
    # four pixels' photons in one: the signal above offset roughly quadruples
    ratio = (np.percentile(binned, 99) - 100) / (np.percentile(full, 99) - 100)
    assert 2.5 < ratio < 5.5
    core.setProperty("Camera", "BitDepth", 8)
    assert core.snap().dtype == np.uint8


def test_closed_shutter_gives_dark_frame_and_no_dose(sim_core: CMMCorePlus) -> None:
    core = sim_core
    _prepare(core)
    world = world_of(core)
    core.setXYPosition(*world.specimen.well_center_um(DENSE))
    core.setAutoShutter(False)
    core.setShutterOpen(False)
    dark = core.snap()
    assert dark.max() < 130  # offset + read noise only
    assert world.specimen.total_light_dose == 0
    core.setAutoShutter(True)
    lit = core.snap()
    assert lit.max() > 1000
    assert world.specimen.total_light_dose > 0


def test_bad_property_values_give_clear_errors(sim_core: CMMCorePlus) -> None:
    core = sim_core
    with pytest.raises(Exception, match="Binning"):
        core.setProperty("Camera", "Binning", 3)
    with pytest.raises(Exception, match="Exposure"):
        core.setExposure(-5)
    with pytest.raises(Exception, match="travel range"):
        core.setXYPosition(1e7, 0)
    with pytest.raises(Exception, match="travel range"):
        core.setPosition(5000)
    with pytest.raises(Exception, match="63x"):
        core.setConfig("Objective", "63x")


def test_bad_configs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_core(tmp_path / "missing.cfg")
    if not CPP_DEMO_CONFIG.is_file():
        pytest.fail("the Micro-Manager demo config must be shipped")
    from pymmcore_plus import find_micromanager

    if find_micromanager() is None:
        with pytest.raises(MicroscopeConfigError, match=r"mmcore install.*scopeloop_sim\.cfg"):
            make_core(CPP_DEMO_CONFIG)
    broken = tmp_path / "broken.cfg"
    broken.write_text(SIM_CONFIG.read_text().replace("SimFilterWheel", "SimFilterWheelTypo"))
    with pytest.raises(MicroscopeConfigError, match="SimFilterWheelTypo"):
        make_core(broken)


def test_fault_knobs_act_through_device_properties(sim_core: CMMCorePlus) -> None:
    core = sim_core
    core.setProperty("Camera", "FaultOnSnap", 2)
    core.snap()
    with pytest.raises(Exception, match="simulated camera fault"):
        core.snap()
    core.snap()  # a one-off fault: the camera works again
    core.setProperty("XYStage", "FaultOnMove", 1)
    with pytest.raises(Exception, match="simulated XY stage fault"):
        core.setXYPosition(100.0, 100.0)
    core.setProperty("XYStage", "FaultDropMoves", 1)
    core.setXYPosition(500.0, 500.0)
    assert core.getXYPosition() != (500.0, 500.0)  # the stage stalled


def test_stage_reaches_every_well_of_a_96_well_plate(sim_core: CMMCorePlus) -> None:
    plan = useq.WellPlatePlan(plate="96-well", a1_center_xy=(0, 0))
    for well in (plan.all_well_positions[0], plan.all_well_positions[-1]):  # A1 and H12
        sim_core.setXYPosition(well.x, well.y)
        assert sim_core.getXYPosition() == pytest.approx((well.x, well.y))


def test_hot_pixels_are_a_fixed_pattern_that_grows_with_exposure(sim_core: CMMCorePlus) -> None:
    core = sim_core
    _prepare(core, exposure_ms=20)
    core.setXYPosition(*world_of(core).specimen.well_center_um(EMPTY))
    clean = core.snap().astype(np.float32)
    core.setProperty("Camera", "HotPixels(ppm)", 2000)
    assert float(core.getProperty("Camera", "HotPixels(ppm)")) == 2000
    a, b = (core.snap().astype(np.float32) for _ in range(2))
    hot_a = a > np.median(clean) + 100
    hot_b = b > np.median(clean) + 100
    assert not (clean > np.median(clean) + 100).any()
    # about 2000 per million of a 512x512 sensor, most bright enough to see at 20 ms,
    # in the same places every frame
    assert 200 < hot_a.sum() < 600
    assert (hot_a & hot_b).sum() > 0.9 * hot_a.sum()
    core.setExposure(80)
    longer = core.snap().astype(np.float32)
    excess = (longer - np.median(longer))[hot_a] / (a - np.median(a))[hot_a]
    assert 3.0 < float(np.median(excess)) < 5.0  # dark current: 4x the exposure, 4x the charge
    core.setProperty("Camera", "HotPixels(ppm)", 0)
    cold = core.snap()
    assert not (cold > np.median(cold) + 150).any()
