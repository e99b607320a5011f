"""Domain-randomized fluorescence-nuclei images with exact instance labels.

Training and test data for the segmenters and the cell-stage classifier. Built
on the same drawing and optics primitives as the simulated camera
(:func:`~scopeloop.simulation.nuclei.draw_nuclei`, :mod:`~scopeloop.simulation.optics`),
but randomized far wider than one simulated microscope so that a model trained
here is not a specialist of it: nucleus size (pixel size), density from sparse
to crowded touching clusters, outline irregularity, chromatin texture,
dim and bright nuclei in one image, background, uneven illumination,
out-of-focus haze from nuclei in other planes, defocus, bleaching, noise
level, uint8 and uint16 outputs, mitotic figures (condensed prophase
nuclei, metaphase bars, anaphase pairs) with their stage, and the look-alikes
a stage classifier must not call mitotic (large bright late-G2 nuclei,
shrunken ragged apoptotic ones).

Named test sets of fixed difficulty (``sparse``, ``crowded``, ``low_signal``,
``defocused``) come from fixed seeds so scores are comparable between runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from .nuclei import NucleusBatch, draw_nuclei
from .optics import camera_readout, defocus_blur, illumination_profile

J = TypeVar("J")
R = TypeVar("R")

__all__ = [
    "CLASSIFIER_RECIPE",
    "EMPHASES",
    "STAGES",
    "TEST_SETS",
    "TRAIN_RECIPE",
    "Recipe",
    "SyntheticSample",
    "make_sample",
    "make_samples",
    "mixed_recipes",
    "per_seed",
    "recipe_for",
    "render_in_processes",
    "render_pairs",
    "reporter_lost_in_mitosis",
    "sample_of_job",
    "test_set",
    "test_set_seeds",
]

#: cell-cycle stage names, index = class id of the stage classifier
STAGES = ("interphase", "prophase", "metaphase", "anaphase")


@dataclass(frozen=True)
class Recipe:
    """Ranges the generator draws from (uniform unless said otherwise).

    Radii in pixels (log-uniform), ``coverage`` = fraction of the field covered
    by nuclei, ``photons`` = peak photons per pixel of a typical nucleus
    (log-uniform; sets the signal-to-noise), ``defocus_px`` = Gaussian blur of
    the in-focus plane.
    """

    radius_px: tuple[float, float] = (4.0, 22.0)
    coverage: tuple[float, float] = (0.01, 0.6)
    clustering: tuple[float, float] = (0.0, 1.0)
    spacing: tuple[float, float] = (0.78, 1.15)
    aspect: tuple[float, float] = (1.0, 1.8)
    irregularity: tuple[float, float] = (0.0, 0.45)
    texture: tuple[float, float] = (0.0, 0.5)
    brightness_spread: tuple[float, float] = (0.1, 0.7)
    photons: tuple[float, float] = (5.0, 2000.0)
    background: tuple[float, float] = (0.0, 0.5)
    haze: tuple[float, float] = (0.0, 0.6)
    vignetting: tuple[float, float] = (0.0, 0.6)
    defocus_px: tuple[float, float] = (0.0, 4.0)
    mitotic_fraction: tuple[float, float] = (0.0, 0.25)
    g2_fraction: tuple[float, float] = (0.0, 0.3)
    dying_fraction: tuple[float, float] = (0.0, 0.08)
    uint8_probability: float = 0.35
    empty_probability: float = 0.03


#: the wide training distribution; it contains every named test set's ranges
TRAIN_RECIPE = Recipe()
#: the stage classifier's: more mitotic figures, so every stage is well sampled
CLASSIFIER_RECIPE = replace(TRAIN_RECIPE, mitotic_fraction=(0.15, 0.4), empty_probability=0.0)

#: regimes a training run can give half its images to (``scopeloop train --emphasis``): the
#: training recipe narrowed to where segmentation errs most, so a network at its capacity
#: spends more of it there; every range lies inside the training recipe's
EMPHASES: dict[str, dict[str, tuple[float, float]]] = {
    "dense": {"coverage": (0.3, 0.6), "clustering": (0.5, 1.0)},
    "blurred": {"defocus_px": (2.0, 4.0), "haze": (0.2, 0.6)},
    "dim": {"photons": (5.0, 30.0)},
    "small": {"radius_px": (4.0, 8.0)},
}


def mixed_recipes(n: int, recipe: Recipe, emphasis: Sequence[str] = ()) -> list[Recipe]:
    """The recipe of each of ``n`` training images: ``recipe`` for the even ones, and for
    the odd ones ``recipe`` narrowed to each regime of ``emphasis`` (names of
    :data:`EMPHASES`) in turn. Without ``emphasis``, ``recipe`` for all."""
    unknown = [e for e in emphasis if e not in EMPHASES]
    if unknown:
        raise ValueError(f"unknown emphasis {unknown[0]!r}; choose from {', '.join(EMPHASES)}")
    narrowed = [replace(recipe, **EMPHASES[e]) for e in emphasis]  # type: ignore[arg-type]
    if not narrowed:
        return [recipe] * n
    return [recipe if i % 2 == 0 else narrowed[(i // 2) % len(narrowed)] for i in range(n)]


#: named test sets: (recipe, base seed)
TEST_SETS: dict[str, tuple[Recipe, int]] = {
    "sparse": (
        Recipe(
            coverage=(0.03, 0.1), clustering=(0.0, 0.2), spacing=(1.2, 1.6),
            photons=(300.0, 2000.0), haze=(0.0, 0.05), defocus_px=(0.0, 0.5),
            background=(0.0, 0.1), vignetting=(0.0, 0.2), empty_probability=0.0,
        ),
        1_000,
    ),
    "crowded": (
        Recipe(
            coverage=(0.35, 0.55), clustering=(0.5, 1.0), spacing=(0.8, 0.9),
            photons=(150.0, 1500.0), empty_probability=0.0, defocus_px=(0.0, 1.0),
        ),
        2_000,
    ),
    "low_signal": (
        Recipe(
            coverage=(0.05, 0.3), photons=(6.0, 20.0), background=(0.1, 0.5),
            empty_probability=0.0, defocus_px=(0.0, 1.0),
        ),
        3_000,
    ),
    "defocused": (
        Recipe(
            coverage=(0.05, 0.3), defocus_px=(2.0, 3.5), haze=(0.2, 0.6),
            photons=(100.0, 1500.0), empty_probability=0.0,
        ),
        4_000,
    ),
}  # fmt: skip


@dataclass
class SyntheticSample:
    """One generated image with its ground truth.

    ``labels`` holds instance ids 1..K (0 = background); ``stages`` maps each
    id to its stage index in :data:`STAGES`; ``params`` records the drawn
    rendering parameters.
    """

    image: NDArray[Any]
    labels: NDArray[np.int32]
    stages: dict[int, int]
    params: dict[str, float] = field(default_factory=dict)


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _logu(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(lo_hi[0]), np.log(lo_hi[1]))))


def _place(
    rng: np.random.Generator,
    shape: tuple[int, int],
    radius: float,
    coverage: float,
    clustering: float,
    spacing: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Centres and radii; clustered placement, nuclei at least ``spacing`` radii-sums apart."""
    h, w = shape
    # nuclei may sit partly outside the field, so place them in a padded frame
    pad = radius
    area = (h + 2 * pad) * (w + 2 * pad)
    n_target = round(coverage * area / (np.pi * radius * radius))
    n_clusters = max(1, round(n_target / rng.uniform(4, 15)))
    cluster_c = rng.uniform((-pad, -pad), (h + pad, w + pad), size=(n_clusters, 2))
    cluster_sd = radius * rng.uniform(2.0, 5.0, n_clusters)
    ys: list[float] = []
    xs: list[float] = []
    rs: list[float] = []
    grid: dict[tuple[int, int], list[int]] = {}
    cell = 4 * radius
    tries = 0
    while len(ys) < n_target and tries < 30 * max(n_target, 1):
        tries += 1
        r = radius * float(np.exp(rng.normal(0, 0.15)))
        if rng.random() < clustering:
            k = rng.integers(n_clusters)
            y, x = cluster_c[k] + rng.normal(0, cluster_sd[k], 2)
        else:
            y, x = rng.uniform((-pad, -pad), (h + pad, w + pad))
        if not (-pad <= y < h + pad and -pad <= x < w + pad):
            continue
        gy, gx = int(y // cell), int(x // cell)
        ok = True
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                for j in grid.get((gy + dy, gx + dx), ()):
                    if np.hypot(ys[j] - y, xs[j] - x) < spacing * (rs[j] + r):
                        ok = False
                        break
                if not ok:
                    break
            if not ok:
                break
        if ok:
            grid.setdefault((gy, gx), []).append(len(ys))
            ys.append(float(y))
            xs.append(float(x))
            rs.append(r)
    return np.array(ys), np.array(xs), np.array(rs)


def _batch(
    cy: NDArray[np.float64],
    cx: NDArray[np.float64],
    a: NDArray[np.float64],
    b: NDArray[np.float64],
    angle: NDArray[np.float64],
    bright: NDArray[np.float64],
    labels: NDArray[np.int64],
    texture: NDArray[np.float64],
    irregular: NDArray[np.float64],
    seeds: NDArray[np.int64],
    edge_px: float,
    texture_scale_px: float,
) -> NucleusBatch:
    return NucleusBatch(
        center_y=cy, center_x=cx, semi_major=np.maximum(a, 0.7), semi_minor=np.maximum(b, 0.7),
        angle=angle, brightness=bright, label=labels, texture=texture, irregularity=irregular,
        shape_seed=seeds, edge_px=edge_px, texture_scale_px=texture_scale_px,
    )  # fmt: skip


def _haze(
    rng: np.random.Generator, shape: tuple[int, int], radius: float, haze: float, defocus: float
) -> NDArray[np.float32]:
    """Out-of-focus haze: nuclei of other planes, never labelled.

    They lie further from focus than the labelled plane, so their blur adds to its
    ``defocus``: were they no blurrier than the labelled nuclei (small nuclei in a
    defocused field), nobody could tell the two apart, and the labels would not
    say what the image shows.
    """
    hz = np.zeros(shape, np.float32)
    hy, hx, hr = _place(rng, shape, radius, rng.uniform(0.05, 0.4), 0.5, 0.5)
    k = len(hy)
    if not k:
        return hz
    hb = haze * np.exp(rng.normal(0, 0.4, k))
    draw_nuclei(
        hz,
        None,
        _batch(
            hy, hx, hr, hr * rng.uniform(0.6, 1.0, k), rng.uniform(0, np.pi, k), hb,
            np.zeros(k, np.int64), np.zeros(k), np.zeros(k), np.zeros(k, np.int64), 1.0, 1.5,
        ),
    )  # fmt: skip
    return defocus_blur(hz, defocus + float(rng.uniform(3.0, 4.0) * max(radius / 4, 1.0)))


def make_sample(
    seed: int, shape: tuple[int, int] = (256, 256), recipe: Recipe = TRAIN_RECIPE
) -> SyntheticSample:
    """Render one randomized image with exact instance labels and stages.

    Parameters
    ----------
    seed : int
        Fully determines the sample.
    shape : (int, int)
        Image size in pixels.
    recipe : Recipe
        Parameter ranges (the wide training distribution by default).
    """
    rng = np.random.default_rng(seed)
    # optics and camera from their own stream: drawn first, so nuclei can be kept visible
    cam = np.random.default_rng([seed, 7])
    peak = _logu(cam, recipe.photons)  # includes bleaching and exposure: one overall scale
    background = _u(cam, recipe.background)
    haze = _u(cam, recipe.haze)
    defocus = _u(cam, recipe.defocus_px)
    read_noise = float(cam.uniform(1.0, 3.0))
    offset = float(cam.uniform(50, 300))
    radius = _logu(rng, recipe.radius_px)
    empty = rng.random() < recipe.empty_probability
    coverage = 0.0 if empty else _u(rng, recipe.coverage)
    cy, cx, r = _place(
        rng, shape, radius, coverage, _u(rng, recipe.clustering), _u(rng, recipe.spacing)
    )
    n = len(cy)
    aspect_max = _u(rng, recipe.aspect)
    aspect = rng.uniform(1.0, aspect_max, n)
    sq = np.sqrt(aspect)
    # keep the outline inside the spacing disc: semi-major no more than ~r * sq
    a, b = r * sq, r / sq
    angle = rng.uniform(0, np.pi, n)
    irr = rng.uniform(0, _u(rng, recipe.irregularity), n)
    texture = np.full(n, _u(rng, recipe.texture)) * rng.uniform(0.6, 1.4, n)
    spread = _u(rng, recipe.brightness_spread)
    bright = np.exp(rng.normal(0, spread, n))
    if rng.random() < 0.3:  # a dim and a bright population in one field
        dim = rng.random(n) < rng.uniform(0.2, 0.6)
        bright = np.where(dim, bright * rng.uniform(0.15, 0.5), bright)
    stage = np.zeros(n, np.int64)
    mitotic = rng.random(n) < _u(rng, recipe.mitotic_fraction)
    stage[mitotic] = rng.integers(1, 4, int(mitotic.sum()))
    # late-G2 interphase nuclei: replicated DNA makes them bright and large, but their
    # chromatin is not condensed. Without them, "bright" alone would mean prophase.
    g2 = ~mitotic & (rng.random(n) < _u(rng, recipe.g2_fraction))
    grow = rng.uniform(1.1, 1.26, int(g2.sum()))  # up to twice the volume
    a[g2] *= grow
    b[g2] *= grow
    bright[g2] *= 2.0 / grow**2 * rng.uniform(0.9, 1.1, int(g2.sum()))  # 2x DNA over the area
    # apoptotic (pyknotic) nuclei: shrunken, ragged, blotchy; not mitotic either
    dying = ~mitotic & ~g2 & (rng.random(n) < _u(rng, recipe.dying_fraction))
    k = int(dying.sum())
    shrink = rng.uniform(0.5, 0.9, k)
    a[dying] *= shrink
    b[dying] *= shrink * rng.uniform(0.8, 1.0, k)
    bright[dying] *= rng.uniform(0.8, 1.8, k)
    texture[dying] = rng.uniform(0.5, 1.0, k)
    irr[dying] = rng.uniform(0.3, 0.7, k)
    # prophase: condensed, rounder, smaller, brighter, coarse texture
    pro = stage == 1
    a[pro] = b[pro] = r[pro] * rng.uniform(0.7, 0.85, int(pro.sum()))
    bright[pro] *= rng.uniform(1.5, 2.2, int(pro.sum()))
    texture[pro] = rng.uniform(0.45, 0.7, int(pro.sum()))
    irr[pro] = 0.05
    # metaphase: a bright bar (the chromosome plate)
    meta = stage == 2
    a[meta] = 0.85 * r[meta]
    b[meta] = 0.33 * r[meta]
    bright[meta] *= rng.uniform(2.0, 3.0, int(meta.sum()))
    texture[meta] = 0.35
    irr[meta] = 0.05
    seeds = rng.integers(0, 2**31, n)
    lab = np.arange(1, n + 1, dtype=np.int64)
    # anaphase: the nucleus becomes two short bars moving apart, each its own object
    ana = np.flatnonzero(stage == 3)
    extra_cy, extra_cx, extra_a, extra_b, extra_ang = [], [], [], [], []
    for i in ana:
        sep = r[i] * rng.uniform(0.5, 1.0)
        dy, dx = np.sin(angle[i] + np.pi / 2) * sep, np.cos(angle[i] + np.pi / 2) * sep
        extra_cy.append(cy[i] - dy)
        extra_cx.append(cx[i] - dx)
        cy[i] += dy
        cx[i] += dx
        a[i] = 0.62 * r[i] * rng.uniform(0.9, 1.1)
        b[i] = 0.3 * r[i] * rng.uniform(0.9, 1.3)
        extra_a.append(a[i])
        extra_b.append(b[i])
        extra_ang.append(angle[i])
        bright[i] *= rng.uniform(1.6, 2.4)
        texture[i] = 0.35
        irr[i] = 0.05
    if len(ana):
        m = len(ana)
        cy = np.concatenate([cy, extra_cy])
        cx = np.concatenate([cx, extra_cx])
        a = np.concatenate([a, extra_a])
        b = np.concatenate([b, extra_b])
        angle = np.concatenate([angle, extra_ang])
        bright = np.concatenate([bright, bright[ana]])
        texture = np.concatenate([texture, texture[ana]])
        irr = np.concatenate([irr, irr[ana]])
        seeds = np.concatenate([seeds, rng.integers(0, 2**31, m)])
        lab = np.concatenate([lab, np.arange(n + 1, n + m + 1)])
        stage = np.concatenate([stage, np.full(m, 3)])
    # Ground truth holds only nuclei an annotator could see: each nucleus' peak stands at
    # least 3 noise sigmas above the background (after the soft edge and defocus), however
    # dim it was drawn. Thin objects (anaphase bars) lose most of their peak to both.
    edge_px = float(rng.uniform(0.4, 1.2))
    qe = 0.8
    noise_e = np.sqrt((background + 0.5 * haze) * peak * qe + read_noise**2)
    edge_keep = 0.5 + 0.5 * np.tanh(b / (2 * edge_px))
    blur_keep = 1.0 - np.exp(-(b**2) / (2 * max(defocus, 0.3) ** 2))
    floor = 3.0 * noise_e / (peak * qe * 0.85 * edge_keep * np.maximum(blur_keep, 0.05))
    bright = np.maximum(bright, floor * rng.uniform(1.0, 1.3, len(bright)))
    tex_scale = float(np.clip(radius / rng.uniform(4, 10), 0.6, 3.0))

    photons = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int32)
    draw_nuclei(
        photons,
        labels,
        _batch(cy, cx, a, b, angle, bright, lab, texture, irr, seeds, edge_px, tex_scale),
    )
    photons = defocus_blur(photons, defocus)
    # haze, illumination and readout each from their own stream: the specimen's draws
    # (Poisson sampling takes a varying count of random numbers) leave them unchanged
    if haze > 0.02:
        photons += _haze(np.random.default_rng([seed, 9]), shape, radius, haze, defocus)
    photons += np.float32(background)
    readout = np.random.default_rng([seed, 11])
    falloff = _u(readout, recipe.vignetting)
    centre = (float(readout.uniform(0.2, 0.8)), float(readout.uniform(0.2, 0.8)))
    photons *= illumination_profile(
        shape, round(falloff, 3), (round(centre[0], 2), round(centre[1], 2))
    )
    photons *= np.float32(peak)
    # the export is chosen before the noise, whose draw count varies with the photons
    to_uint8 = readout.random() < recipe.uint8_probability
    limits_pct = (readout.uniform(0, 2), readout.uniform(99.5, 100))
    raw = camera_readout(photons, readout, read_noise_e=read_noise, offset_adu=offset)
    if to_uint8:
        # an 8-bit export: scaled by display limits, as Fiji would save it
        lo, hi = np.percentile(raw, limits_pct)
        img = np.clip((raw.astype(np.float32) - lo) / max(hi - lo, 1.0) * 255, 0, 255)
        image: NDArray[Any] = np.rint(img).astype(np.uint8)
    else:
        image = raw
    # ids compacted to what is visible (nuclei outside the field vanish)
    present = np.unique(labels)
    present = present[present > 0]
    remap = np.zeros(int(labels.max()) + 1, np.int32)
    remap[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    stage_of = dict(zip(lab.tolist(), stage.tolist(), strict=True))
    stages = {int(remap[p]): int(stage_of[int(p)]) for p in present}
    params = {
        "radius_px": radius, "coverage": coverage, "defocus_px": defocus, "haze": haze,
        "background": background, "vignetting": falloff, "photons": peak,
        "uint8": float(to_uint8), "n_objects": float(len(present)),
    }  # fmt: skip
    return SyntheticSample(image, remap[labels], stages, params)


def sample_of_job(job: tuple[int, tuple[int, int], Recipe]) -> SyntheticSample:
    """:func:`make_sample` of one ``(seed, shape, recipe)`` job (for worker processes)."""
    return make_sample(*job)


def _image_and_labels(
    job: tuple[int, tuple[int, int], Recipe],
) -> tuple[NDArray[Any], NDArray[Any]]:
    sample = make_sample(*job)
    return sample.image, sample.labels


def render_pairs(
    seeds: Sequence[int],
    shape: tuple[int, int] = (256, 256),
    workers: int = 1,
    recipe: Recipe | Sequence[Recipe] = TRAIN_RECIPE,
) -> list[tuple[NDArray[Any], NDArray[Any]]]:
    """``(image, labels)`` of :func:`make_sample` for each seed (the training recipe
    unless given; one recipe for all or one per seed), rendered in ``workers`` processes;
    the same pairs whatever the number."""
    jobs = [(int(seed), shape, r) for seed, r in zip(seeds, per_seed(seeds, recipe), strict=True)]
    return render_in_processes(_image_and_labels, jobs, workers)


def per_seed(seeds: Sequence[int], recipe: Recipe | Sequence[Recipe]) -> list[Recipe]:
    """One recipe per seed, from one recipe for all or a sequence of one per seed."""
    recipes = [recipe] * len(seeds) if isinstance(recipe, Recipe) else list(recipe)
    if len(recipes) != len(seeds):
        raise ValueError(f"{len(recipes)} recipes for {len(seeds)} seeds")
    return recipes


def render_in_processes(fn: Callable[[J], R], jobs: Sequence[J], workers: int) -> list[R]:
    """``[fn(job) for job in jobs]``, in ``workers`` processes when more than one (each job
    carries its own seed, so the results are the same whatever the number)."""
    if workers <= 1 or len(jobs) < 2:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def make_samples(
    n: int, seed: int, shape: tuple[int, int] = (256, 256), recipe: Recipe = TRAIN_RECIPE
) -> list[SyntheticSample]:
    """``n`` samples from consecutive seeds ``seed, seed + 1, ...``."""
    return [make_sample(seed + i, shape, recipe) for i in range(n)]


def reporter_lost_in_mitosis(
    seed: int, shape: tuple[int, int] = (192, 192), brightness: float = 1 / 3
) -> SyntheticSample:
    """A classifier sample as a nuclear reporter that leaves the nucleus when its
    envelope breaks down would show it: mitotic figures (and a 2-px rim around them)
    at ``brightness`` of their intensity above the background. The marker the shipped
    classifier was not trained for, and what fine-tuning on stage labels is for."""
    from scipy import ndimage

    s = make_sample(seed, shape, CLASSIFIER_RECIPE)
    img = s.image.astype(np.float32)
    bg = float(np.percentile(img, 5))
    mitotic = np.isin(s.labels, [i for i, k in s.stages.items() if k > 0])
    near = ndimage.binary_dilation(mitotic, iterations=2)
    img = np.where(near, bg + (img - bg) * brightness, img)
    return replace(s, image=img.astype(s.image.dtype))


def recipe_for(name: str) -> Recipe:
    """The recipe of a named test set (``"train"`` is the wide training recipe)."""
    if name == "train":
        return TRAIN_RECIPE
    try:
        return TEST_SETS[name][0]
    except KeyError:
        raise ValueError(f"unknown test set {name!r}; choose from {', '.join(TEST_SETS)}") from None


#: a test set's draw ``d`` takes its seeds from ``base + DRAW_STRIDE * d``
DRAW_STRIDE = 100_000


def test_set(
    name: str, n: int = 16, shape: tuple[int, int] = (256, 256), draw: int = 0
) -> list[SyntheticSample]:
    """The named test set (fixed seeds, so the same images on every machine).

    ``draw`` 0 is the published set; others are independent draws of the same
    difficulty (``scopeloop evaluate --seed``)."""
    recipe, seeds = test_set_seeds(name, n, draw)
    return [make_sample(s, shape, recipe) for s in seeds]


def test_set_seeds(name: str, n: int = 16, draw: int = 0) -> tuple[Recipe, list[int]]:
    """The recipe and seeds of :func:`test_set` ``(name, n, draw=draw)``'s images."""
    recipe, base = TEST_SETS[name] if name in TEST_SETS else (recipe_for(name), 0)
    first = base + DRAW_STRIDE * draw
    return recipe, list(range(first, first + n))


test_set.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
test_set_seeds.__test__ = False  # type: ignore[attr-defined]
