"""What the camera sees: the specimen through an objective, a filter and a sensor.

Stage/image convention: the image centre is the stage position; image columns
run along +x and image rows along +y, one pixel = ``pixel_size_um``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .nuclei import NucleusBatch, draw_nuclei
from .optics import (
    camera_readout,
    defocus_blur,
    defocus_sigma_um,
    hot_pixel_dark_current,
    illumination_profile,
)
from .specimen import CellStage, Specimen, _Cells

__all__ = [
    "CAMERA_PIXEL_UM",
    "CHANNELS",
    "OBJECTIVES",
    "CameraSpec",
    "ChannelSpec",
    "ObjectiveSpec",
    "field_bounds",
    "render_frame",
    "render_labels",
]

CAMERA_PIXEL_UM = 6.5  # physical sCMOS pixel


@dataclass(frozen=True)
class ObjectiveSpec:
    label: str
    magnification: float
    na: float
    irradiance: float  # relative light dose per exposure second at the sample
    signal: float  # relative photons per pixel for the same emitter

    @property
    def pixel_size_um(self) -> float:
        return CAMERA_PIXEL_UM / self.magnification


@dataclass(frozen=True)
class ChannelSpec:
    label: str
    nuclear_marker: float  # H2B-GFP signal in this filter set
    cycle_reporter: float  # S/G2 reporter (geminin-like, red) signal
    background_per_ms: float  # medium and plastic autofluorescence, photons/px/ms
    toxicity: float  # relative phototoxicity of this excitation band


OBJECTIVES: dict[str, ObjectiveSpec] = {
    o.label: o
    for o in (
        ObjectiveSpec("4x", 4.0, 0.13, 0.25, 0.35),
        ObjectiveSpec("10x", 10.0, 0.30, 0.5, 0.6),
        ObjectiveSpec("20x", 20.0, 0.75, 1.0, 1.0),
        ObjectiveSpec("40x", 40.0, 0.95, 2.0, 1.3),
    )
}

CHANNELS: dict[str, ChannelSpec] = {
    c.label: c
    for c in (
        ChannelSpec("DAPI", 0.05, 0.0, 4.0, 3.0),
        ChannelSpec("FITC", 1.0, 0.02, 2.5, 1.0),
        ChannelSpec("TRITC", 0.03, 1.0, 1.5, 0.6),
        ChannelSpec("Cy5", 0.0, 0.0, 0.8, 0.3),
    )
}

# photons per pixel per ms from a G1 nucleus interior, 20x, FITC, unbleached
_BASE_PHOTONS_PER_MS = 60.0


@dataclass(frozen=True)
class CameraSpec:
    quantum_efficiency: float = 0.8
    read_noise_e: float = 1.6
    gain_e_per_adu: float = 0.5
    offset_adu: float = 100.0
    bit_depth: int = 16
    vignetting: float = 0.15
    hot_pixels_per_million: float = 0.0  # a fixed pattern of hot pixels (none by default)
    hot_pixel_seed: int = 0


def field_bounds(
    x_um: float, y_um: float, shape_yx: tuple[int, int], pixel_size_um: float
) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a field of view in stage micrometres."""
    h, w = shape_yx
    half_w, half_h = 0.5 * w * pixel_size_um, 0.5 * h * pixel_size_um
    return x_um - half_w, y_um - half_h, x_um + half_w, y_um + half_h


def _geometry(
    c: _Cells, prophase_s: float, telophase_s: float, dying_s: float
) -> tuple[NDArray[np.float64], ...]:
    """Per-cell (semi_major_um, semi_minor_um, angle, content, texture, irregularity)."""
    stage = c.stage
    grown = c.radius * np.cbrt(1.0 + c.progress)  # G1 -> G2 nucleus volume doubles
    sq = np.sqrt(c.aspect)
    a = grown * sq
    b = grown / sq
    angle = c.angle.copy()
    content = 1.0 + c.progress  # DNA (and H2B) content
    texture = np.where(c.abnormal, 0.35, 0.15)
    irregular = np.where(c.abnormal, 0.55, 0.12)
    plate_angle = c.spindle + np.pi / 2

    pro = stage == CellStage.PROPHASE
    f = np.clip(c.stage_t / prophase_s, 0, 1)
    shrink = 1.0 - 0.3 * f
    round_a = grown * (1 + (sq - 1) * (1 - f)) * shrink
    round_b = grown / (1 + (sq - 1) * (1 - f)) * shrink
    a = np.where(pro, round_a, a)
    b = np.where(pro, round_b, b)
    texture = np.where(pro, 0.15 + 0.55 * f, texture)
    irregular = np.where(pro, 0.12 * (1 - f) + 0.04, irregular)

    meta = stage == CellStage.METAPHASE
    a = np.where(meta, 0.85 * grown, a)
    b = np.where(meta, 0.33 * grown, b)
    angle = np.where(meta, plate_angle, angle)
    texture = np.where(meta, 0.35, texture)
    irregular = np.where(meta, 0.08, irregular)

    ana = stage == CellStage.ANAPHASE
    telo = stage == CellStage.TELOPHASE
    g = np.clip(c.stage_t / telophase_s, 0, 1)
    a = np.where(ana, 0.62 * c.radius, a)
    b = np.where(ana, 0.30 * c.radius, b)
    a = np.where(telo, (0.62 + 0.2 * g) * c.radius, a)
    b = np.where(telo, (0.30 + 0.4 * g) * c.radius, b)
    angle = np.where(ana | telo, plate_angle, angle)
    content = np.where(ana | telo, 1.0, content)
    texture = np.where(ana, 0.35, np.where(telo, 0.35 - 0.2 * g, texture))
    irregular = np.where(ana | telo, 0.08, irregular)

    dying = stage == CellStage.DYING
    k = np.clip(c.stage_t / dying_s, 0, 1)
    a = np.where(dying, grown * (1 - 0.5 * k), a)
    b = np.where(dying, grown * (1 - 0.5 * k) * 0.9, b)
    texture = np.where(dying, 0.5 + 0.5 * k, texture)
    irregular = np.where(dying, 0.3 + 0.4 * k, irregular)
    content = np.where(dying, content * (1 - 0.6 * k), content)
    return a, b, angle, content, texture, irregular


def _reporter(c: _Cells) -> NDArray[np.float64]:
    """S/G2/M reporter level (0..1): rises in S phase, degraded at anaphase."""
    level = np.clip((c.progress - 0.35) / 0.15, 0, 1)
    level = np.where((c.stage == CellStage.PROPHASE) | (c.stage == CellStage.METAPHASE), 1.0, level)
    return np.asarray(
        np.where((c.stage == CellStage.ANAPHASE) | (c.stage == CellStage.TELOPHASE), 0.0, level)
    )


def _nuclei(
    specimen: Specimen,
    x_um: float,
    y_um: float,
    shape_yx: tuple[int, int],
    pixel_size_um: float,
    channel: ChannelSpec | None,
) -> NucleusBatch:
    h, w = shape_yx
    x0, y0, x1, y1 = field_bounds(x_um, y_um, shape_yx, pixel_size_um)
    c = specimen.cells_in(x0, y0, x1, y1, margin_um=25.0)
    o = specimen.options
    a, b, angle, content, texture, irregular = _geometry(
        c, o.prophase_min * 60, o.telophase_min * 60, o.dying_min * 60
    )
    r0 = o.nucleus_radius_um
    # emitter density: content spread over the nucleus' area (condensed = brighter)
    density = content * r0 * r0 / np.maximum(a * b, 1e-6)
    if channel is None:
        brightness = np.ones(len(c))
    else:
        brightness = (
            density * c.fluor * (channel.nuclear_marker + channel.cycle_reporter * _reporter(c))
        )
    return NucleusBatch(
        center_y=(c.y - y_um) / pixel_size_um + (h - 1) / 2,
        center_x=(c.x - x_um) / pixel_size_um + (w - 1) / 2,
        semi_major=np.maximum(a / pixel_size_um, 0.5),
        semi_minor=np.maximum(b / pixel_size_um, 0.5),
        angle=angle,
        brightness=brightness,
        label=c.id,
        texture=texture,
        irregularity=irregular,
        shape_seed=c.shape_seed,
        edge_px=max(0.2 / pixel_size_um, 0.4),
        texture_scale_px=float(np.clip(0.8 / pixel_size_um, 0.6, 3.0)),
    )


def render_labels(
    specimen: Specimen,
    x_um: float,
    y_um: float,
    shape_yx: tuple[int, int],
    pixel_size_um: float,
) -> NDArray[np.uint32]:
    """Ground-truth instance labels (label = cell id) of a field at the current time."""
    nuc = _nuclei(specimen, x_um, y_um, shape_yx, pixel_size_um, None)
    scratch = np.zeros(shape_yx, np.float32)
    labels = np.zeros(shape_yx, np.uint32)
    draw_nuclei(scratch, labels, nuc)
    return labels


def render_frame(
    specimen: Specimen,
    *,
    x_um: float,
    y_um: float,
    z_um: float,
    shape_yx: tuple[int, int],
    binning: int,
    objective: ObjectiveSpec,
    channel: ChannelSpec,
    exposure_ms: float,
    light_on: bool,
    rng: np.random.Generator,
    camera: CameraSpec = CameraSpec(),
) -> NDArray[np.uint16]:
    """Render one camera frame (and, if the light is on, expose the specimen).

    Light is applied *after* the photons are counted: the frame shows the
    specimen as it was when the exposure began.
    """
    pixel_size_um = objective.pixel_size_um * binning
    image = np.zeros(shape_yx, np.float32)
    x0, y0, x1, y1 = field_bounds(x_um, y_um, shape_yx, pixel_size_um)
    if light_on and exposure_ms > 0:
        nuc = _nuclei(specimen, x_um, y_um, shape_yx, pixel_size_um, channel)
        draw_nuclei(image, None, nuc)
        dz = z_um - specimen.focus_z_um(x_um, y_um)
        sigma_px = defocus_sigma_um(dz, objective.na) / pixel_size_um
        image = defocus_blur(image, sigma_px)
        # binned pixels integrate binning^2 physical pixels
        scale = _BASE_PHOTONS_PER_MS * objective.signal * exposure_ms * binning * binning
        image *= scale
        image += channel.background_per_ms * exposure_ms * binning * binning
        image *= illumination_profile(shape_yx, camera.vignetting)
        specimen.illuminate(
            x0, y0, x1, y1, exposure_ms / 1000.0 * objective.irradiance * channel.toxicity
        )
    dark = None
    if camera.hot_pixels_per_million > 0:
        rate = hot_pixel_dark_current(
            shape_yx, binning, camera.hot_pixels_per_million, camera.hot_pixel_seed
        )
        dark = rate * np.float32(exposure_ms)
    return camera_readout(
        image,
        rng,
        dark_electrons=dark,
        quantum_efficiency=camera.quantum_efficiency,
        read_noise_e=camera.read_noise_e,
        gain_e_per_adu=camera.gain_e_per_adu,
        offset_adu=camera.offset_adu,
        bit_depth=camera.bit_depth,
    )
