"""How fast the simulated camera renders frames (it must not limit the loop)."""

from __future__ import annotations

import platform
import time
from typing import Any

import numpy as np

from ..simulation.render import CHANNELS, OBJECTIVES, render_frame
from ..simulation.specimen import Specimen, SpecimenOptions

__all__ = ["run"]

CASES = [
    # (objective, sensor size, cells per mm^2)
    ("20x", 512, 400.0),
    ("10x", 512, 400.0),
    ("4x", 512, 400.0),
    ("20x", 2048, 400.0),
    ("10x", 2048, 400.0),
    ("40x", 2048, 1000.0),
]


def run(quick: bool = False, device: str = "auto") -> dict[str, Any]:
    """Render frames of a populated well and report ms per frame.

    The specimen is advanced 6 h first so mitoses are in progress; each case
    times full frames (nuclei, defocus blur, photon and read noise, dose).
    """
    repeats = 3 if quick else 10
    results = []
    print(f"{'objective':>9} {'size':>9} {'cells':>6} {'ms/frame':>9} {'frames/s':>9}")
    for objective, size, density in CASES:
        sp = Specimen(1, SpecimenOptions(well_densities_per_mm2={"A1": density}))
        rng = np.random.default_rng(0)
        kw = {
            "x_um": 0.0, "y_um": 0.0, "z_um": 1.0, "shape_yx": (size, size), "binning": 1,
            "objective": OBJECTIVES[objective], "channel": CHANNELS["FITC"], "exposure_ms": 30.0,
            "light_on": True, "rng": rng,
        }  # fmt: skip
        render_frame(sp, **kw)  # type: ignore[arg-type]  # creates and populates the tiles
        sp.advance_to(6 * 3600)
        render_frame(sp, **kw)  # type: ignore[arg-type]
        px = OBJECTIVES[objective].pixel_size_um
        half = size * px / 2
        n_cells = len(sp.cells_in(-half, -half, half, half, margin_um=0))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            render_frame(sp, **kw)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t0)
        ms = 1000 * float(np.median(times))
        results.append(
            {
                "objective": objective,
                "size_px": size,
                "cells_in_field": n_cells,
                "ms_per_frame_median": round(ms, 2),
                "frames_per_s": round(1000 / ms, 1),
                "repeats": repeats,
            }
        )
        print(f"{objective:>9} {size:>4}x{size:<4} {n_cells:>6} {ms:>9.1f} {1000 / ms:>9.1f}")
    return {
        "benchmark": "rendering",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "results": results,
    }
