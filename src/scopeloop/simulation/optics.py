"""Optics and camera physics: defocus, illumination, photon and read noise, digitisation.

Shared by the simulated camera and the training-data generator.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = [
    "camera_readout",
    "defocus_blur",
    "defocus_sigma_um",
    "hot_pixel_dark_current",
    "illumination_profile",
]

EMISSION_WAVELENGTH_UM = 0.51


def defocus_sigma_um(dz_um: float, na: float) -> float:
    """Gaussian-equivalent blur (sigma, um) of a widefield image ``dz_um`` out of focus.

    In focus the diffraction limit (~0.21 lambda / NA); away from focus the
    geometric blur circle grows linearly with the defocus and the aperture angle.
    """
    diffraction = 0.21 * EMISSION_WAVELENGTH_UM / na
    half_angle = np.arcsin(min(na / 1.33, 0.99))  # water/cells as the medium
    geometric = 0.5 * abs(dz_um) * np.tan(half_angle)
    return float(np.hypot(diffraction, geometric))


def defocus_blur(image: NDArray[np.float32], sigma_px: float) -> NDArray[np.float32]:
    """Blur a photon-rate image; sub-pixel blur is left to the pixel integration."""
    if sigma_px < 0.5:
        return image
    out: NDArray[np.float32] = ndimage.gaussian_filter(
        image, sigma_px, mode="nearest", truncate=3.0
    )
    return out


@functools.lru_cache(maxsize=16)
def illumination_profile(
    shape: tuple[int, int], falloff: float, center: tuple[float, float] = (0.5, 0.5)
) -> NDArray[np.float32]:
    """Uneven widefield illumination: 1 at ``center`` (fractions), ``1 - falloff`` at corners."""
    h, w = shape
    y = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - center[0])[:, None]
    x = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - center[1])[None, :]
    r2 = (x * x + y * y) / 0.5
    return (1.0 - falloff * np.clip(r2, 0, 1)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def hot_pixel_dark_current(
    shape_yx: tuple[int, int], binning: int, per_million: float, seed: int
) -> NDArray[np.float32]:
    """Dark current (electrons per ms) of each read-out pixel from the sensor's hot pixels.

    A fixed pattern, as on a real sCMOS sensor: ``per_million`` of the
    physical pixels, placed by ``seed``, each with a dark current of 1 to 300
    electrons per ms (log-uniform), so that at common exposures some are
    faint and some outshine any nucleus. A binned pixel sums its physical
    pixels; the pattern is the same for every frame of a shape and binning.
    """
    h, w = shape_yx[0] * binning, shape_yx[1] * binning
    rng = np.random.default_rng([seed, 0x40F])
    n = int(rng.binomial(h * w, min(per_million * 1e-6, 1.0)))
    rate = np.zeros(h * w, np.float32)
    rate[rng.choice(h * w, n, replace=False)] = np.exp(rng.uniform(0.0, np.log(300.0), n))
    binned: NDArray[np.float32] = rate.reshape(shape_yx[0], binning, shape_yx[1], binning).sum(
        axis=(1, 3)
    )
    binned.setflags(write=False)  # shared by the cache
    return binned


def camera_readout(
    photons: NDArray[np.float32],
    rng: np.random.Generator,
    *,
    dark_electrons: NDArray[np.float32] | None = None,
    quantum_efficiency: float = 0.8,
    read_noise_e: float = 1.6,
    gain_e_per_adu: float = 0.5,
    offset_adu: float = 100.0,
    bit_depth: int = 16,
    out: NDArray[np.uint16] | None = None,
) -> NDArray[np.uint16]:
    """Photons on the sensor -> digital numbers, as an sCMOS camera would give them.

    Shot noise (Poisson on detected electrons, ``dark_electrons`` included),
    Gaussian read noise, gain, offset and clipping to ``bit_depth``.
    """
    mean = np.clip(photons, 0, None) * np.float32(quantum_efficiency)
    if dark_electrons is not None:
        mean = mean + dark_electrons
    read_var = np.float32(read_noise_e**2)
    # Shot + read noise in one normal draw where counts are high (the Poisson's normal
    # limit, indistinguishable above ~50 e-); exact Poisson + read noise where low.
    noise = rng.standard_normal(photons.shape, dtype=np.float32)
    electrons = mean + np.sqrt(mean + read_var) * noise
    low = mean < 50
    if low.any():
        electrons[low] = rng.poisson(mean[low]).astype(np.float32) + noise[low] * np.float32(
            read_noise_e
        )
    adu = electrons / gain_e_per_adu + offset_adu
    np.clip(adu, 0, 2**bit_depth - 1, out=adu)
    if out is None:
        out = np.empty(photons.shape, dtype=np.uint16)
    np.rint(adu, out=adu)
    out[...] = adu
    return out
