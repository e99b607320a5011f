"""Test images from the simulated microscope's own renderer, with exact labels.

The segmenters are trained on :mod:`.synthetic`'s domain-randomized images.
The simulated microscope renders something else: fields of the living
specimen (:mod:`.specimen`: its cell cycle, migration, dividing and dying
cells, densities per well) through one objective, a defocus that follows the
plate and the camera of :mod:`.render`. Scoring a segmenter on those frames
checks it on a renderer it never saw in training, the nearest stand-in for
real data the project has, and it measures the segmentation the adaptive loop
actually gets in a simulated run.

One named set per objective (``microscope_4x`` ... ``microscope_40x``; G1
nucleus diameters of about 7, 17, 34 and 68 pixels), each from fixed seeds:
per image a new specimen (density 100 to 4000 nuclei per mm^2, a random time
in its first day), a random position, exposure and focus error; camera
binning 1, so one set has one nucleus size. ``microscope`` names the four.
The 40x set's frames are 512x512, the others' 256x256: a 256x256 frame at 40x
is 41 um wide and holds three or four nuclei, too few for a tight score.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .render import CHANNELS, OBJECTIVES, field_bounds, render_frame
from .render_cache import cached_samples
from .specimen import CellStage, Specimen, SpecimenOptions
from .synthetic import DRAW_STRIDE, STAGES, SyntheticSample

__all__ = [
    "ALL_MICROSCOPE",
    "MICROSCOPE_SETS",
    "STAGE_SETS",
    "TRAINING_SEED_OFFSET",
    "expand_set_names",
    "microscope_samples",
    "microscope_training_samples",
]

#: set name -> (objective, base seed, frame size in pixels)
MICROSCOPE_SETS: dict[str, tuple[str, int, int]] = {
    "microscope_4x": ("4x", 5_000, 256),
    "microscope_10x": ("10x", 6_000, 256),
    "microscope_20x": ("20x", 7_000, 256),
    "microscope_40x": ("40x", 8_000, 512),
}
#: the name that stands for all of them
ALL_MICROSCOPE = "microscope"
#: the sets the stage classifier trains and is scored on: a 4x nucleus of 7 pixels shows no stage
STAGE_SETS = ("microscope_10x", "microscope_20x", "microscope_40x")
#: training frames shift the sets' seeds by this (times 100,000); evaluation uses 0 and a few
TRAINING_SEED_OFFSET = 1000

# specimen stage -> stage-classifier class (dying nuclei are interphase-like, as in training)
_STAGE_CLASS = {
    CellStage.INTERPHASE: STAGES.index("interphase"),
    CellStage.PROPHASE: STAGES.index("prophase"),
    CellStage.METAPHASE: STAGES.index("metaphase"),
    CellStage.ANAPHASE: STAGES.index("anaphase"),
    CellStage.TELOPHASE: STAGES.index("anaphase"),
    CellStage.DYING: STAGES.index("interphase"),
}


def expand_set_names(names: list[str]) -> list[str]:
    """``microscope`` -> the four per-objective set names; other names unchanged."""
    out: list[str] = []
    for name in names:
        out.extend(MICROSCOPE_SETS if name == ALL_MICROSCOPE else [name])
    return list(dict.fromkeys(out))  # keep order, drop repeats


def microscope_samples(
    name: str, n: int, seed: int = 0, shape: tuple[int, int] | None = None, workers: int = 1
) -> list[SyntheticSample]:
    """``n`` frames of the named set with their labels and stages.

    ``seed`` shifts the set's fixed seeds by :data:`DRAW_STRIDE` ``* seed`` (0 = the published set);
    ``shape`` overrides the set's frame size; ``workers`` processes render the frames
    (the same frames whatever the number). Frames rendered before are read from
    the render cache (:mod:`~scopeloop.simulation.render_cache`).
    """
    if name not in MICROSCOPE_SETS:
        raise ValueError(
            f"unknown microscope set {name!r}; choose from {', '.join(MICROSCOPE_SETS)}"
        )
    objective_name, base, size = MICROSCOPE_SETS[name]
    first = base + DRAW_STRIDE * seed
    h, w = shape or (size, size)
    jobs = [(objective_name, first + i, (h, w)) for i in range(n)]
    names = [f"{objective_name}/{h}x{w}/{first + i}.npz" for i in range(n)]
    return cached_samples("microscope_set", _frame, jobs, names, workers)[0]


def microscope_training_samples(
    n: int,
    seed: int = 0,
    shape: tuple[int, int] = (256, 256),
    workers: int = 1,
    sets: Sequence[str] | None = None,
) -> list[SyntheticSample]:
    """``n`` frames for training, spread evenly over the named sets' objectives (all four
    by default).

    Drawn like the named sets but from seeds of their own (offset
    :data:`TRAINING_SEED_OFFSET`), so no training frame is a test frame. The
    sets' base seeds are 1,000 apart: beyond 1,000 frames per set, two
    objectives start to share specimens (never test ones).
    """
    names = list(sets or MICROSCOPE_SETS)
    out: list[SyntheticSample] = []
    for k, name in enumerate(names):
        count = n // len(names) + (k < n % len(names))
        out += microscope_samples(name, count, TRAINING_SEED_OFFSET + seed, shape, workers)
    return out


def _frame(job: tuple[str, int, tuple[int, int]]) -> SyntheticSample:
    """One frame: a new specimen, a random position, exposure and focus error."""
    objective_name, frame_seed, shape = job
    objective = OBJECTIVES[objective_name]
    rng = np.random.default_rng(frame_seed)
    density = float(np.exp(rng.uniform(np.log(100.0), np.log(4000.0))))
    specimen = Specimen(
        int(rng.integers(2**31)), SpecimenOptions(well_densities_per_mm2={"A1": density})
    )
    specimen.advance_to(float(rng.uniform(0.0, 24.0)) * 3600.0)
    x, y = (float(v) for v in rng.uniform(-1000.0, 1000.0, 2))
    # a focus error of about a micrometre either way, as autofocus leaves it
    dz = float(np.clip(rng.normal(0.0, 1.0), -2.5, 2.5))
    # 3 to 100 ms: tens to a few thousand photons per nucleus pixel, by objective
    exposure_ms = float(np.exp(rng.uniform(np.log(3.0), np.log(100.0))))
    image = render_frame(
        specimen, x_um=x, y_um=y, z_um=specimen.focus_z_um(x, y) + dz, shape_yx=shape,
        binning=1, objective=objective, channel=CHANNELS["FITC"],
        exposure_ms=exposure_ms, light_on=True, rng=rng,
    )  # fmt: skip
    pixel_size_um = objective.pixel_size_um
    cell_ids = specimen.labels(x, y, shape, pixel_size_um)
    # consecutive ids, as the synthetic samples have
    ids, inverse = np.unique(cell_ids, return_inverse=True)
    labels: NDArray[np.int32] = inverse.reshape(shape).astype(np.int32)
    if ids[0] != 0:  # no background pixel at all
        labels += 1
        ids = np.concatenate([[0], ids])
    cells = specimen.cells_in(*field_bounds(x, y, shape, pixel_size_um))
    stage_of = dict(zip(cells.id.tolist(), cells.stage.tolist(), strict=True))
    stages = {k: _STAGE_CLASS[stage_of[int(cid)]] for k, cid in enumerate(ids) if k}
    params = {
        "objective_magnification": objective.magnification,
        "pixel_size_um": pixel_size_um,
        "density_per_mm2": density,
        "defocus_um": dz,
        "exposure_ms": exposure_ms,
        "n_objects": float(len(ids) - 1),
    }
    return SyntheticSample(image, labels, stages, params)
