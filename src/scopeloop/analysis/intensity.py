"""Per-frame intensity handling shared by the segmenters and the acquisition:
percentiles and hot-pixel removal, on torch tensors so that they run on the
frames' own device (the U-Net's GPU, or the host)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor

__all__ = ["clean_hot_pixels", "clip_hot_pixels", "frame_percentiles"]


def frame_percentiles(x: Tensor, lo_pct: float, hi_pct: float) -> tuple[Tensor, Tensor]:
    """Per-frame low and high percentiles of ``(N, H, W)`` frames, each ``(N, 1, 1)``.

    From a strided subsample (every 4th pixel in each axis for large frames) so
    the cost stays small at 2048x2048.
    """
    n = x.shape[0]
    step = 4 if x.shape[-1] * x.shape[-2] > 256 * 256 else 1
    ordered = x[:, ::step, ::step].reshape(n, -1).sort(dim=1).values
    last = ordered.shape[1] - 1

    def at(pct: float) -> Tensor:
        # torch.quantile's linear interpolation, with positions worked out on the host:
        # no tensor of quantiles copied to the device (a stream sync) for every frame
        pos = pct / 100 * last
        i = int(pos)
        return torch.lerp(ordered[:, i], ordered[:, min(i + 1, last)], pos - i).view(n, 1, 1)

    return at(lo_pct), at(hi_pct)


def clip_hot_pixels(
    frames: Tensor, margin: float = 0.5, noise_factor: float = 3.0, floor: float = 0.05
) -> Tensor:
    """Replace hot pixels of ``(N, H, W)`` float frames by their surroundings.

    A hot camera pixel (or a cosmic-ray hit; now and then two side by side)
    stands above all but at most one of its 8 neighbours, while a nucleus, however
    small, spans several pixels. A pixel is replaced by the second-brightest of
    its neighbours when it exceeds it by more than

    - ``margin`` times the frame's 1-99.8 percentile range (bright ones, pairs
      included), or
    - ``noise_factor`` times the spread of its 8 neighbours (brightest minus
      darkest, about 3 noise sigmas where the frame is flat) and ``floor`` times
      the frame's range: fainter ones, which no noise peak reaches, wherever
      they sit in the frame's range. At a nucleus' rim the spread is large, so
      real structure is left alone.

    Clean frames pass all but unchanged (a rare noise peak in a very faint
    frame). Left in, a few bright hot pixels per thousand set the upper
    percentile of the normalisation and each becomes a nucleus; faint ones
    raise the intensity measured in the nucleus they fall in.
    """
    h, w = frames.shape[-2:]
    # mirrored edges, so an edge pixel is not its own neighbour
    mode = "reflect" if h > 1 and w > 1 else "replicate"
    p = F.pad(frames.unsqueeze(1), (1, 1, 1, 1), mode=mode).squeeze(1)
    first = second = torch.full_like(frames, -torch.inf)
    darkest = torch.full_like(frames, torch.inf)
    for dy in range(3):
        for dx in range(3):
            if dy == dx == 1:
                continue  # the pixel itself
            v = p[..., dy : dy + h, dx : dx + w]
            second = torch.maximum(second, torch.minimum(first, v))
            first = torch.maximum(first, v)
            darkest = torch.minimum(darkest, v)
    clipped = torch.minimum(frames, second)
    lo, hi = frame_percentiles(clipped, 1.0, 99.8)
    excess, span = frames - clipped, hi - lo
    hot = (excess > margin * span) | (
        (excess > noise_factor * (first - darkest)) & (excess > floor * span)
    )
    return torch.where(hot, clipped, frames)


def clean_hot_pixels(frame: NDArray[Any]) -> NDArray[np.float32]:
    """A host frame (any dtype, ``(H, W)`` or ``(N, H, W)``) as float32 with hot pixels
    replaced (:func:`clip_hot_pixels`)."""
    x = torch.from_numpy(np.asarray(frame, np.float32))
    out = clip_hot_pixels(x[None] if x.ndim == 2 else x)
    return out.reshape(x.shape).numpy()
