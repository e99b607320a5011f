"""Drawing fluorescent nuclei with exact instance labels.

One primitive shared by the virtual specimen's camera and by the
domain-randomized training-data generator, so that what the models learn on is
what the simulated microscope shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["NucleusBatch", "draw_nuclei", "texture_tile"]

_TILE = 128
_TEXTURES: dict[int, NDArray[np.float32]] = {}


def texture_tile(scale_px: float = 1.5) -> NDArray[np.float32]:
    """A periodic, zero-mean, unit-std smooth noise tile (chromatin-like texture).

    The grain is ``scale_px`` rounded to 0.1 px, and the tile is made from the
    rounded grain: a tile made from the first exact grain to reach a shared
    cache entry would make every later image depend on what this process drew
    before (and, through the camera noise's draw count, its whole noise).
    """
    key = round(scale_px * 10)
    tile = _TEXTURES.get(key)
    if tile is None:
        rng = np.random.default_rng(1234 + key)
        noise = rng.standard_normal((_TILE, _TILE)).astype(np.float32)
        tile = ndimage.gaussian_filter(noise, key / 10, mode="wrap")
        tile = ((tile - tile.mean()) / (tile.std() + 1e-6)).astype(np.float32)
        _TEXTURES[key] = tile
    return tile


@dataclass
class NucleusBatch:
    """Nuclei to draw, all arrays of length N, in pixel units of the target image.

    ``shape_seed`` picks a smooth irregular outline (harmonics of the radius);
    ``irregularity`` scales it (0 = perfect ellipse). ``texture`` is the relative
    amplitude of chromatin texture; ``texture_scale_px`` its grain size.
    """

    center_y: NDArray[np.float64]
    center_x: NDArray[np.float64]
    semi_major: NDArray[np.float64]
    semi_minor: NDArray[np.float64]
    angle: NDArray[np.float64]
    brightness: NDArray[np.float64]
    label: NDArray[np.int64]
    texture: NDArray[np.float64]
    irregularity: NDArray[np.float64]
    shape_seed: NDArray[np.int64]
    edge_px: float = 0.8
    texture_scale_px: float = 1.5

    def __len__(self) -> int:
        return len(self.center_y)


def _harmonics(seed: int, irregularity: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFF)
    k = np.arange(2, 6)
    amps = irregularity * rng.uniform(0.2, 1.0, k.size) / k
    phases = rng.uniform(0, 2 * np.pi, k.size)
    return amps, phases


def draw_nuclei(
    image: NDArray[np.float32],
    labels: NDArray[np.integer] | None,
    nuclei: NucleusBatch,
) -> None:
    """Add nuclei to ``image`` (photon rate per pixel) and write their ids into ``labels``.

    Nuclei drawn later lie on top in ``labels`` (intensities add, as in a
    widefield image of overlapping nuclei). Nuclei partly outside the image are
    clipped. ``labels`` may be None when only the image is wanted.
    """
    h, w = image.shape
    tex = texture_tile(nuclei.texture_scale_px)
    for i in range(len(nuclei)):
        a = float(nuclei.semi_major[i])
        b = float(nuclei.semi_minor[i])
        cy = float(nuclei.center_y[i])
        cx = float(nuclei.center_x[i])
        irr = float(nuclei.irregularity[i])
        reach = a * (1.0 + 1.2 * irr) + 2.0 * nuclei.edge_px + 1.0
        y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, h)
        x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, w)
        if y0 >= y1 or x0 >= x1:
            continue
        yi = np.arange(y0, y1)[:, None]
        xi = np.arange(x0, x1)[None, :]
        dy = (yi - cy).astype(np.float32)
        dx = (xi - cx).astype(np.float32)
        ca, sa = np.float32(np.cos(nuclei.angle[i])), np.float32(np.sin(nuclei.angle[i]))
        u = dx * ca + dy * sa
        v = dy * ca - dx * sa
        r = np.sqrt((u / np.float32(a)) ** 2 + (v / np.float32(b)) ** 2)
        if irr > 0:
            amps, phases = _harmonics(int(nuclei.shape_seed[i]), irr)
            # cos(k*theta + phase) as Re(z**k * e^(i*phase)), z = e^(i*theta): no arctan2
            z = (u + 1j * v).astype(np.complex64)
            z /= np.maximum(np.abs(z), np.float32(1e-6))
            zk = z
            bump = np.ones(r.shape, np.float32)
            for amp, ph in zip(amps, phases, strict=True):
                zk = zk * z  # k = 2, 3, ...
                bump += np.float32(amp) * (zk * np.complex64(np.exp(1j * ph))).real
            r = r / bump
        # signed distance to the outline along the ray from the centre, in pixels, for a
        # soft optical edge of the same width all round (not stretched along the major axis)
        rho = np.sqrt(u * u + v * v) / np.maximum(r, np.float32(1e-6))
        rho[r < 1e-6] = np.float32(b)
        d = (np.float32(1.0) - r) * rho
        inside = d > 0
        # logistic edge written with tanh, which cannot overflow in float32
        profile = 0.5 + 0.5 * np.tanh(d / np.float32(2 * max(nuclei.edge_px, 1e-3)))
        # slightly brighter rim-to-centre dome, as a flattened sphere of chromatin
        dome = 0.85 + 0.15 * np.sqrt(np.clip(1.0 - r * r, 0.0, 1.0))
        seed = int(nuclei.shape_seed[i])
        oy, ox = (seed * 7919) % _TILE, (seed * 104729) % _TILE
        t = tex[(yi + oy) % _TILE, (xi + ox) % _TILE]
        texture = np.clip(1.0 + float(nuclei.texture[i]) * t, 0.05, None)
        image[y0:y1, x0:x1] += (float(nuclei.brightness[i]) * profile * dome * texture).astype(
            np.float32
        )
        if labels is not None:
            labels[y0:y1, x0:x1][inside] = nuclei.label[i]
