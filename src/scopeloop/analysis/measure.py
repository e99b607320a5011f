"""Per-object measurements from a label image and its intensity image.

Positions are converted to stage micrometres so that tracks stay consistent
when the stage moves (following a cell) or the objective changes. Convention:
the centre of the image is the stage position; +x runs to the right along the
image columns and +y down the image rows (the camera's orientation on the
simulated microscope and on a calibrated real one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage.measure import regionprops_table
from skimage.morphology import convex_hull_image

from scopeloop.models.detections import FrameInfo

__all__ = ["FrameMeasurements", "measure_objects", "pixel_to_stage_um", "stage_to_pixel"]


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
    # for shape descriptors computed on demand (convex hulls are costly)
    _lab: NDArray[np.int32] | None = field(default=None, repr=False, compare=False)
    _bbox: NDArray[np.int64] | None = field(default=None, repr=False, compare=False)
    _ids: NDArray[np.int64] | None = field(default=None, repr=False, compare=False)

    def solidity_at(self, i: int) -> float:
        """Solidity (area / convex hull area) of row ``i``, computed once on demand."""
        v = float(self.solidity[i])
        if not np.isnan(v):
            return v
        if self._lab is None or self._bbox is None or self._ids is None:
            return 1.0
        r0, c0, r1, c1 = (int(b) for b in self._bbox[i])
        mask = self._lab[r0:r1, c0:c1] == self._ids[i]
        hull = convex_hull_image(mask) if mask.sum() > 2 else mask  # type: ignore[no-untyped-call]
        v = float(mask.sum() / max(int(hull.sum()), 1))
        self.solidity[i] = v
        return v

    def touches_other_at(self, i: int) -> bool:
        """Whether object ``i`` touches another object (overlapping or abutting nuclei)."""
        if self._lab is None or self._bbox is None or self._ids is None:
            return False
        h, w = self.shape_yx
        r0, c0, r1, c1 = (int(b) for b in self._bbox[i])
        r0, c0, r1, c1 = max(r0 - 2, 0), max(c0 - 2, 0), min(r1 + 2, h), min(c1 + 2, w)
        crop = self._lab[r0:r1, c0:c1]
        mask = crop == self._ids[i]
        ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
        return bool(((crop[ring] != 0) & (crop[ring] != self._ids[i])).any())

    def __len__(self) -> int:
        return int(self.label.size)

    def select(self, keep: NDArray[np.bool_]) -> FrameMeasurements:
        """The same table restricted to rows where ``keep`` is True."""
        cols = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "_lab":
                cols[name] = value
            elif isinstance(value, np.ndarray) and value.shape[:1] == (len(self),):
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
    if int(lab.max()) > 4 * 65536:
        # Sparse large ids (e.g. ground-truth cell ids): relabel so that per-label
        # tables stay small, and report the original ids.
        original_ids, inverse = np.unique(lab, return_inverse=True)
        lab = inverse.reshape(lab.shape)
    lab = lab.astype(np.int32, copy=False)
    # Vectorised per-label sums (one pass over the image) instead of per-object
    # regionprops: this runs for every frame of every position.
    flat = lab.ravel()
    nlab = int(flat.max()) + 1
    counts = np.bincount(flat, minlength=nlab)
    present = np.flatnonzero(counts)
    present = present[present > 0]
    grid = np.indices(lab.shape, dtype=np.float64)
    rr, cc = grid[0].ravel(), grid[1].ravel()
    n_px = counts[present].astype(np.float64)
    sr = np.bincount(flat, rr, nlab)[present]
    sc = np.bincount(flat, cc, nlab)[present]
    row = sr / n_px
    col = sc / n_px
    mu_rr = np.bincount(flat, rr * rr, nlab)[present] / n_px - row**2
    mu_cc = np.bincount(flat, cc * cc, nlab)[present] / n_px - col**2
    mu_rc = np.bincount(flat, rr * cc, nlab)[present] / n_px - row * col
    half_tr = (mu_rr + mu_cc) / 2
    disc = np.sqrt(np.maximum(((mu_rr - mu_cc) / 2) ** 2 + mu_rc**2, 0.0))
    l1, l2 = half_tr + disc, np.maximum(half_tr - disc, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ecc = np.where(l1 > 0, np.sqrt(np.clip(1.0 - l2 / l1, 0.0, 1.0)), 0.0)
    mean_i = np.bincount(flat, img.ravel().astype(np.float64), nlab)[present] / n_px
    max_i = np.asarray(ndimage.maximum(img, lab, present), dtype=np.float64)
    t = regionprops_table(lab, properties=("label", "perimeter", "bbox"))  # type: ignore[no-untyped-call]
    if not np.array_equal(np.asarray(t["label"]), present):  # pragma: no cover - defensive
        raise RuntimeError("label bookkeeping mismatch in measure_objects")
    area_px = n_px
    perim = np.asarray(t["perimeter"], dtype=np.float64)
    # skimage's perimeter under-counts tiny objects; clip so a disc reads as ~1, never above.
    with np.errstate(divide="ignore", invalid="ignore"):
        circ = np.where(perim > 0, 4.0 * np.pi * area_px / np.maximum(perim, 1e-9) ** 2, 1.0)
    circ = np.clip(circ, 0.0, 1.0)
    x_um, y_um = pixel_to_stage_um(row, col, shape_yx, sx, sy, pixel_size_um)
    h, w = shape_yx
    b0, b1 = np.asarray(t["bbox-0"]), np.asarray(t["bbox-1"])
    b2, b3 = np.asarray(t["bbox-2"]), np.asarray(t["bbox-3"])
    border = (b0 == 0) | (b1 == 0) | (b2 == h) | (b3 == w)
    return FrameMeasurements(
        label=(
            present.astype(np.int64)
            if original_ids is None
            else original_ids[present].astype(np.int64)
        ),
        area_um2=area_px * pixel_size_um**2,
        mean_intensity=mean_i,
        net_mean_intensity=np.maximum(mean_i - background, 1e-6),
        max_intensity=max_i,
        eccentricity=ecc,
        solidity=np.full(present.size, np.nan),
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
        _lab=lab,
        _bbox=np.stack([b0, b1, b2, b3], axis=1),
        _ids=present.astype(np.int64),
    )
