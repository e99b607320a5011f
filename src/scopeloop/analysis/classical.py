"""The classical baseline: smoothing, threshold, distance transform, watershed.

What a bioimage analyst builds first in scikit-image (or Fiji): Gaussian
smoothing, an Otsu threshold, hole filling and small-object removal, then a
distance transform whose regional maxima seed a watershed that splits
touching nuclei. Runs on the CPU; the ``device`` argument is accepted for the
common interface only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from skimage import filters, morphology, segmentation

from .segmenter import as_batch

__all__ = ["ClassicalSegmenter", "segment_classical"]


def _normalise(frame: NDArray[Any]) -> NDArray[np.float32]:
    img = frame.astype(np.float32, copy=False)
    lo, hi = np.percentile(img[::2, ::2], (1.0, 99.8))
    return ((img - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)  # type: ignore[no-any-return]


def segment_classical(
    frame: NDArray[Any],
    *,
    smooth_sigma_px: float = 1.0,
    min_size_px: int = 16,
    h_px: float = 1.5,
) -> NDArray[np.int32]:
    """Segment one 2-D frame; returns int32 labels 1..K (0 = background).

    Parameters
    ----------
    frame : (Y, X) array
        Any dtype and intensity range.
    smooth_sigma_px : float
        Gaussian smoothing before the threshold.
    min_size_px : int
        Objects (and holes) smaller than this are removed (filled).
    h_px : float
        Depth (in pixels of distance) a distance maximum must have to seed its
        own object; larger merges more, smaller splits more.
    """
    img = filters.gaussian(_normalise(frame), sigma=smooth_sigma_px, preserve_range=True)  # type: ignore[no-untyped-call]
    if float(img.max() - img.min()) < 1e-6:
        return np.zeros(frame.shape, np.int32)
    mask = img > filters.threshold_otsu(img)  # type: ignore[no-untyped-call]
    mask = ndimage.binary_fill_holes(mask)
    mask = morphology.remove_small_objects(mask, max_size=min_size_px - 1)
    if not mask.any():
        return np.zeros(frame.shape, np.int32)
    dist = ndimage.distance_transform_edt(mask)
    dist = ndimage.gaussian_filter(dist, 1.0)
    markers, _ = ndimage.label(morphology.h_maxima(dist, h_px))  # type: ignore[no-untyped-call]
    labels = segmentation.watershed(-dist, markers, mask=mask)  # type: ignore[no-untyped-call]
    if labels.max() > 1:  # one label: already >= min size (mask step); skimage warns on it
        labels = morphology.remove_small_objects(labels, max_size=min_size_px - 1)
    relabelled, _, _ = segmentation.relabel_sequential(labels)  # type: ignore[no-untyped-call]
    return relabelled.astype(np.int32)  # type: ignore[no-any-return]


class ClassicalSegmenter:
    """scikit-image threshold + watershed behind the :class:`Segmenter` protocol.

    Parameters
    ----------
    device : str
        Ignored (always ``"cpu"``); present for the common constructor.
    **options
        Passed to :func:`segment_classical` (``smooth_sigma_px``, ``min_size_px``, ``h_px``).
    """

    name = "classical"

    def __init__(self, device: str = "auto", **options: Any) -> None:
        allowed = {"smooth_sigma_px", "min_size_px", "h_px"}
        unknown = set(options) - allowed
        if unknown:
            raise ValueError(
                f"classical segmenter: unknown option(s) {sorted(unknown)}; "
                f"allowed: {sorted(allowed)}"
            )
        self.device = "cpu"
        self.options = options

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``(N, Y, X)`` (or ``(Y, X)``) frames into int32 instance labels."""
        batch, was_2d = as_batch(frames)
        out = np.stack([segment_classical(f, **self.options) for f in batch]).astype(np.int32)
        return out[0] if was_2d else out
