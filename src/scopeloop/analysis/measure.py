"""Per-object measurements from a label image and its intensity image.

Positions are converted to stage micrometres so that tracks stay consistent
when the stage moves (following a cell) or the objective changes. Convention:
the centre of the image is the stage position; +x runs to the right along the
image columns and +y down the image rows (the camera's orientation on the
simulated microscope and on a calibrated real one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from skimage.measure import regionprops_table

from scopeloop.models.detections import FrameInfo

__all__ = ["FrameMeasurements", "measure_objects", "pixel_to_stage_um", "stage_to_pixel"]

_PROPS = (
    "label",
    "area",
    "centroid",
    "intensity_mean",
    "intensity_max",
    "eccentricity",
    "solidity",
    "perimeter",
    "bbox",
)


def pixel_to_stage_um(
    row: NDArray[np.float64] | float,
    col: NDArray[np.float64] | float,
    shape_yx: tuple[int, int],
    stage_x_um: float,
    stage_y_um: float,
    pixel_size_um: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Stage coordinates (x_um, y_um) of pixel-centre coordinates (row, col)."""
    h, w = shape_yx
    # Pixel centres sit at index + 0.5; the image centre (w/2, h/2) is the stage position.
    x = stage_x_um + (np.asarray(col, dtype=np.float64) + 0.5 - w / 2.0) * pixel_size_um
    y = stage_y_um + (np.asarray(row, dtype=np.float64) + 0.5 - h / 2.0) * pixel_size_um
    return x, y


def stage_to_pixel(
    x_um: float,
    y_um: float,
    shape_yx: tuple[int, int],
    stage_x_um: float,
    stage_y_um: float,
    pixel_size_um: float,
) -> tuple[float, float]:
    """Pixel (row, col) of a stage point; inverse of :func:`pixel_to_stage_um`."""
    h, w = shape_yx
    col = (x_um - stage_x_um) / pixel_size_um + w / 2.0 - 0.5
    row = (y_um - stage_y_um) / pixel_size_um + h / 2.0 - 0.5
    return float(row), float(col)


@dataclass(frozen=True)
class FrameMeasurements:
    """Columns of per-object measurements for one frame (all arrays of length N).

    Intensities are in camera units; ``net_mean_intensity`` has the frame's
    background (median of unlabelled pixels) subtracted, so ratios between
    frames are not diluted by the camera offset.
    """

    label: NDArray[np.int64]
    area_um2: NDArray[np.float64]
    mean_intensity: NDArray[np.float64]
    net_mean_intensity: NDArray[np.float64]
    max_intensity: NDArray[np.float64]
    eccentricity: NDArray[np.float64]
    solidity: NDArray[np.float64]
    circularity: NDArray[np.float64]
    row: NDArray[np.float64]
    col: NDArray[np.float64]
    x_um: NDArray[np.float64]
    y_um: NDArray[np.float64]
    touches_border: NDArray[np.bool_]
    background: float
    pixel_size_um: float
    shape_yx: tuple[int, int]
    covered_fraction: float

    def __len__(self) -> int:
        return int(self.label.size)

    def select(self, keep: NDArray[np.bool_]) -> FrameMeasurements:
        """The same table restricted to rows where ``keep`` is True."""
        cols = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, np.ndarray) and value.shape == (len(self),):
                cols[name] = value[keep]
            else:
                cols[name] = value
        return FrameMeasurements(**cols)

    @property
    def field_area_um2(self) -> float:
        h, w = self.shape_yx
        return float(h * w) * self.pixel_size_um**2


def _empty(shape_yx: tuple[int, int], background: float, pixel_size_um: float) -> FrameMeasurements:
    f = np.zeros(0, dtype=np.float64)
    return FrameMeasurements(
        label=np.zeros(0, dtype=np.int64),
        area_um2=f,
        mean_intensity=f,
        net_mean_intensity=f,
        max_intensity=f,
        eccentricity=f,
        solidity=f,
        circularity=f,
        row=f,
        col=f,
        x_um=f,
        y_um=f,
        touches_border=np.zeros(0, dtype=bool),
        background=background,
        pixel_size_um=pixel_size_um,
        shape_yx=shape_yx,
        covered_fraction=0.0,
    )


def measure_objects(
    labels: NDArray[np.integer],
    image: NDArray[np.number],
    info: FrameInfo | None = None,
    *,
    pixel_size_um: float | None = None,
) -> FrameMeasurements:
    """Measure every labelled object of one frame.

    Parameters
    ----------
    labels : (Y, X) integer array
        Instance labels, 0 = background.
    image : (Y, X) array
        The intensity image the labels were found in.
    info : FrameInfo, optional
        Where the frame was taken; gives stage coordinates and pixel size. Without
        it, positions are relative to the image centre.
    pixel_size_um : float, optional
        Overrides ``info.pixel_size_um`` (required when ``info`` is None).

    Returns
    -------
    FrameMeasurements
        Area, intensities, shape descriptors and stage-micrometre centroids.
    """
    if labels.shape != image.shape or labels.ndim != 2:
        raise ValueError(
            f"labels {labels.shape} and image {image.shape} must be 2-D and the same shape"
        )
    if pixel_size_um is None:
        if info is None:
            raise ValueError("measure_objects needs info or pixel_size_um")
        pixel_size_um = info.pixel_size_um
    if not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um!r}")
    sx = info.stage_x_um if info is not None else 0.0
    sy = info.stage_y_um if info is not None else 0.0
    shape_yx = (int(labels.shape[0]), int(labels.shape[1]))
    img = np.asarray(image, dtype=np.float32)
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iu":
        raise ValueError(f"labels must be an integer array, got {lab.dtype}")
    fg = lab > 0
    bg_pixels = img[~fg]
    background = float(np.median(bg_pixels)) if bg_pixels.size else 0.0
    if not fg.any():
        return _empty(shape_yx, background, pixel_size_um)

    original_ids = None
    if int(lab.max()) > max(lab.size, 2**31 - 1) or int(lab.max()) > 4 * 65536:
        # Sparse large ids (e.g. ground-truth cell ids): relabel so that regionprops'
        # per-label tables stay small, and report the original ids.
        original_ids, inverse = np.unique(lab, return_inverse=True)
        lab = inverse.reshape(lab.shape)
    t = regionprops_table(lab.astype(np.int32, copy=False), intensity_image=img, properties=_PROPS)
    area_px = np.asarray(t["area"], dtype=np.float64)
    perim = np.asarray(t["perimeter"], dtype=np.float64)
    # skimage's perimeter under-counts tiny objects; clip so a disc reads as ~1, never above.
    with np.errstate(divide="ignore", invalid="ignore"):
        circ = np.where(perim > 0, 4.0 * np.pi * area_px / np.maximum(perim, 1e-9) ** 2, 1.0)
    circ = np.clip(circ, 0.0, 1.0)
    row = np.asarray(t["centroid-0"], dtype=np.float64)
    col = np.asarray(t["centroid-1"], dtype=np.float64)
    x_um, y_um = pixel_to_stage_um(row, col, shape_yx, sx, sy, pixel_size_um)
    h, w = shape_yx
    border = (
        (np.asarray(t["bbox-0"]) == 0)
        | (np.asarray(t["bbox-1"]) == 0)
        | (np.asarray(t["bbox-2"]) == h)
        | (np.asarray(t["bbox-3"]) == w)
    )
    mean_i = np.asarray(t["intensity_mean"], dtype=np.float64)
    return FrameMeasurements(
        label=(
            np.asarray(t["label"], dtype=np.int64)
            if original_ids is None
            else original_ids[np.asarray(t["label"])].astype(np.int64)
        ),
        area_um2=area_px * pixel_size_um**2,
        mean_intensity=mean_i,
        net_mean_intensity=np.maximum(mean_i - background, 1e-6),
        max_intensity=np.asarray(t["intensity_max"], dtype=np.float64),
        eccentricity=np.asarray(t["eccentricity"], dtype=np.float64),
        solidity=np.asarray(t["solidity"], dtype=np.float64),
        circularity=circ,
        row=row,
        col=col,
        x_um=x_um,
        y_um=y_um,
        touches_border=border.astype(bool),
        background=background,
        pixel_size_um=float(pixel_size_um),
        shape_yx=shape_yx,
        covered_fraction=float(fg.mean()),
    )
