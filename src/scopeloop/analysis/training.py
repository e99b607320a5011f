"""Training the U-Net (and the stage classifier) from images with instance labels.

Works from pixels and label images only: the caller brings the data (rendered
synthetic images from ``scopeloop train``, or a user folder of TIFFs). A fixed
train / validation split is monitored every few steps; training stops early
when the validation loss stops improving and the best weights are kept.
Augmentations: flips and 90-degree rotations, intensity gamma and gain, and
added noise. The foreground loss is weighted per pixel (:func:`pixel_weights`)
towards the thin gaps between touching nuclei and towards small objects, the
two places where instances are lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage
from skimage.segmentation import expand_labels, find_boundaries
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from .classifier import STAGES
from .segmenter import nonfinite_pixels
from .unet import (
    EXTRACTION_DEFAULTS,
    UNet,
    UNetSegmenter,
    bin_factor,
    extract_instances,
    flip_averaged,
    normalise_frames,
)

__all__ = [
    "FOLDER_TILE_PX",
    "LOSS_RECORD",
    "SMALL_FOLDER",
    "STAGE_NAMES",
    "STAGE_TABLE",
    "SYNTHETIC_SPLIT",
    "TARGETS_RECORD",
    "Pair",
    "TrainResult",
    "bin_pairs",
    "bin_to_trained_range",
    "folder_units",
    "load_folder",
    "load_stage_folder",
    "masks_nucleus_diameter_px",
    "pixel_weights",
    "read_image",
    "save_unet",
    "split_folder",
    "split_pairs",
    "synthetic_seeds",
    "synthetic_seeds_record",
    "tile_pairs",
    "train_unet",
    "tune_thresholds",
    "unet_targets",
    "widen_unet",
    "write_folder",
    "write_labels",
]

#: one training example: (image, instance labels)
Pair = tuple[NDArray[Any], NDArray[np.integer]]
T = TypeVar("T")


def unet_targets(labels: NDArray[np.integer]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Foreground and centre-ness targets of an instance label image.

    Centre-ness is each nucleus' distance to its own outline (touching nuclei
    are separated by their inner boundaries), divided by that nucleus' maximum,
    so 1 at every centre whatever the nucleus size.
    """
    lab = np.asarray(labels)
    fg = lab > 0
    if not fg.any():
        z = np.zeros(lab.shape, np.float32)
        return z, z
    inner = fg & ~find_boundaries(lab, mode="inner")  # type: ignore[no-untyped-call]
    dist = ndimage.distance_transform_edt(inner) + inner  # 1 px at the first inner pixel
    n = int(lab.max())
    peak = np.asarray(ndimage.maximum(dist, lab, index=np.arange(n + 1)), np.float64)
    peak[0] = 1.0
    centre = dist / np.maximum(peak[lab], 1.0)
    return fg.astype(np.float32), centre.astype(np.float32)


#: extra loss weight on the pixels where two nuclei (almost) touch
CONTACT_WEIGHT = 4.0
_CONTACT_PX = 1
#: objects smaller than this (px) get up to ``SMALL_WEIGHT``x loss weight, by sqrt(area)
_SMALL_AREA = 120.0
SMALL_WEIGHT = 3.0
_MAX_WEIGHT = 8.0
_RING_PX = 2


#: how the targets are made, as written into each training record
TARGETS_RECORD = (
    "foreground and centre-ness from each crop's own labels: a nucleus cut by the crop "
    "edge is an object of its own, as in a frame cut there"
)
#: the loss, as written into each training record
LOSS_RECORD = (
    f"BCE(foreground) + 2 x BCE(centre-ness, 3x on nuclei), per-pixel weights: "
    f"{1 + CONTACT_WEIGHT:g}x where two nuclei (nearly) touch, up to {SMALL_WEIGHT:g}x on "
    f"objects under {_SMALL_AREA:g} px and a {_RING_PX}-px ring around them"
)


def pixel_weights(labels: NDArray[np.integer]) -> NDArray[np.float32]:
    """Per-pixel loss weights of an instance label image (1 almost everywhere).

    Averaged over all pixels, a 2-px gap between two touching nuclei or a
    10-px anaphase bar costs the network next to nothing, yet each decides
    whether a whole object is found. So (after the U-Net paper's border
    weights, in a cheap form) pixels within ``_CONTACT_PX`` of two different
    nuclei (gap and rims) weigh ``1 + CONTACT_WEIGHT``, and the pixels of
    objects smaller than ``_SMALL_AREA``, and a ring of ``_RING_PX`` around
    them, weigh up to ``SMALL_WEIGHT`` times more (edge slivers of nuclei cut
    by the frame included).
    """
    lab = np.asarray(labels)
    w = np.ones(lab.shape, np.float32)
    if not lab.any():
        return w
    near = expand_labels(lab, _CONTACT_PX)  # type: ignore[no-untyped-call]
    big = np.iinfo(near.dtype).max
    # two ids meet within 5x5: the gap and about 2 px of each rim
    hi = ndimage.maximum_filter(near, size=5)
    lo = ndimage.minimum_filter(np.where(near > 0, near, big), size=5)
    w[(lo < big) & (hi > lo)] += CONTACT_WEIGHT
    area = np.bincount(lab.ravel()).astype(np.float32)
    boost = np.clip(np.sqrt(_SMALL_AREA / np.maximum(area, 1.0)), 1.0, SMALL_WEIGHT)
    boost[0] = 1.0
    # the boost covers a ring around each object too: weighting only its own pixels
    # would pay the network to draw small objects too large
    w *= boost[expand_labels(lab, _RING_PX)]  # type: ignore[no-untyped-call]
    return np.minimum(w, _MAX_WEIGHT)


def _normalise_np(image: NDArray[Any]) -> NDArray[np.float32]:
    t = torch.from_numpy(np.asarray(image).astype(np.float32))[None]
    return normalise_frames(t)[0].numpy()


@dataclass
class _Prepared:
    image: NDArray[np.float32]  # normalised
    labels: NDArray[np.int32]


def _prepare(pairs: Sequence[Pair]) -> list[_Prepared]:
    out = []
    for img, lab in pairs:
        if img.shape != lab.shape:
            raise ValueError(f"image shape {img.shape} != labels shape {lab.shape}")
        out.append(_Prepared(_normalise_np(img), np.asarray(lab, np.int32)))
    return out


def _copy_index(n: int, length: int) -> NDArray[np.int64]:
    """Along an axis of ``length`` mirrored out to ``n``: which copy each position is in
    (0 the original, 1 its mirror image, 2 the mirror of that, ...)."""
    pos = np.arange(n)
    return np.where(pos < length, 0, 1 + (pos - length) // max(length - 1, 1))


def _mirrored_out(p: _Prepared, size: int) -> tuple[NDArray[np.float32], NDArray[np.int32]]:
    """Image and labels mirrored out to ``size`` along a side shorter than that; each
    mirrored copy of a nucleus is an object of its own, as it looks in the image."""
    h, w = p.image.shape
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not (ph or pw):
        return p.image, p.labels
    image = np.pad(p.image, ((0, ph), (0, pw)), mode="reflect")
    labels = np.pad(p.labels, ((0, ph), (0, pw)), mode="reflect")
    # a side under half the crop is mirrored more than once: number every copy
    cy, cx = _copy_index(h + ph, h), _copy_index(w + pw, w)
    copy = cy[:, None] * (int(cx[-1]) + 1) + cx[None, :]
    top = int(p.labels.max())
    labels = np.where(labels > 0, labels + copy * top, 0).astype(np.int32)
    return image, labels


def _with_targets(image: NDArray[np.float32], labels: NDArray[np.int32]) -> NDArray[np.float32]:
    """(4, H, W): image, foreground, centre-ness, pixel weights of one window.

    The targets are made from the window's own labels, not cut from the whole
    image's: a nucleus cut by the window's edge is then the object it is in a
    camera frame cut there (centre-ness 1 at its visible part's centre, a small
    sliver weighted up as one), instead of a part whose centre lies outside, which
    would teach the network to leave every nucleus at a frame's edge unseeded.
    """
    fg, centre = unet_targets(labels)
    return np.stack([image, fg, centre, pixel_weights(labels)])


def _crop(p: _Prepared, size: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Random crop (padded when small) -> (4, size, size): image, fg, centre, weight."""
    image, labels = _mirrored_out(p, size)
    h, w = image.shape
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return _with_targets(image[y : y + size, x : x + size], labels[y : y + size, x : x + size])


def _pick_images(prepared: Sequence[_Prepared], n: int, rng: np.random.Generator) -> Any:
    """Indices of the images ``n`` training crops come from, drawn per pixel: a large
    image among small ones (a user folder) gives its share of crops, not one image's.
    Images of one size (a synthetic run) keep the plain uniform draw."""
    areas = np.array([p.image.size for p in prepared], dtype=np.float64)
    if np.all(areas == areas[0]):
        return rng.integers(0, len(prepared), n)
    return rng.choice(len(prepared), n, p=areas / areas.sum())


def _augment(
    crops: Sequence[NDArray[np.float32]],
    rng: np.random.Generator,
    noise: torch.Generator,
    device: torch.device | str = "cpu",
) -> Tensor:
    """``(4, S, S)`` crops (image, fg, centre, weight) -> an augmented batch on ``device``.

    Geometric (flips, rot90) on all maps, per crop on the host, where they are
    views that the stacking copy resolves for free; intensity (gamma, gain,
    noise) on the image, batched on the device, so a GPU step does not wait on
    per-crop host arithmetic.
    """
    turned = []
    for c in crops:
        c = np.rot90(c, int(rng.integers(4)), axes=(1, 2))
        turned.append(c[:, :, ::-1] if rng.random() < 0.5 else c)
    batch = torch.from_numpy(np.stack(turned)).to(device)
    b = len(turned)
    params = np.stack(
        [
            # gamma on the [0, 1] part of the range keeps dim nuclei dim, bright bright
            np.where(rng.random(b) < 0.5, rng.uniform(0.6, 1.6, b), 1.0),
            rng.uniform(0.7, 1.3, b),  # gain
            rng.uniform(-0.1, 0.1, b),  # offset
            np.where(rng.random(b) < 0.3, rng.uniform(0.01, 0.08, b), 0.0),  # noise sigma
        ]
    ).astype(np.float32)
    gamma, gain, offset, sigma = torch.from_numpy(params).to(batch.device).view(4, b, 1, 1, 1)
    img = batch[:, :1]
    img = torch.where(img > 0, img.clamp(min=0) ** gamma, img) * gain + offset
    img = img + sigma * torch.randn(img.shape, generator=noise, device=batch.device)
    return torch.cat([img, batch[:, 1:]], dim=1)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``target``: (N, 3, H, W) foreground, centre-ness, pixel weights."""
    pw = target[:, 2]
    fg_loss = F.binary_cross_entropy_with_logits(logits[:, 0], target[:, 0], weight=pw)
    # centre-ness: soft targets, weighted up on nuclei where the split is decided
    w = (1.0 + 2.0 * target[:, 0]) * pw
    c_loss = F.binary_cross_entropy_with_logits(logits[:, 1], target[:, 1], weight=w)
    return fg_loss + 2.0 * c_loss


def synthetic_seeds(seed: int, n_images: int) -> list[int]:
    """Seeds of a training run's synthetic images: disjoint from the named test sets'
    and, for different run seeds, from each other's."""
    return [seed * 1_000_003 + 100_000 + i for i in range(n_images)]


def synthetic_seeds_record(seed: int, n_images: int) -> str:
    """:func:`synthetic_seeds` as written in the weights' record."""
    return f"{seed} * 1000003 + 100000 + [0, {n_images})"


#: validation and test fractions of a synthetic training run's images (its record holds
#: only the seed and count, so what re-renders its validation split must use these)
SYNTHETIC_SPLIT = (0.1, 0.1)


def split_pairs(
    pairs: Sequence[T], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[T], list[T], list[T]]:
    """Shuffle and split into (train, validation, test); each non-empty when possible."""
    idx = np.random.default_rng(seed).permutation(len(pairs))
    n_val = max(1, round(len(pairs) * val_fraction)) if len(pairs) > 2 else 0
    n_test = max(1, round(len(pairs) * test_fraction)) if len(pairs) > 3 and test_fraction else 0
    val = [pairs[i] for i in idx[:n_val]]
    test = [pairs[i] for i in idx[n_val : n_val + n_test]]
    train = [pairs[i] for i in idx[n_val + n_test :]]
    return train, val, test


#: a user folder with fewer images than this is split as tiles, without a test split
SMALL_FOLDER = 10
#: side of the tiles a small folder's images are cut into (larger images only)
FOLDER_TILE_PX = 256


def _bounds(length: int, size: int) -> list[tuple[int, int]]:
    """Non-overlapping spans covering ``length``, each at least ``size`` when possible."""
    edges = np.linspace(0, length, max(1, length // size) + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def tile_pairs(pairs: Sequence[Pair], size: int = FOLDER_TILE_PX) -> tuple[list[Pair], str]:
    """Cut each pair into non-overlapping tiles of at least ``size`` px (images under
    twice that stay whole along that side); says what the units are."""
    tiles = [
        (img[y0:y1, x0:x1], lab[y0:y1, x0:x1])
        for img, lab in pairs
        for y0, y1 in _bounds(img.shape[0], size)
        for x0, x1 in _bounds(img.shape[1], size)
    ]
    return tiles, (f"tiles of about {size} px" if len(tiles) > len(pairs) else "images")


def masks_nucleus_diameter_px(pairs: Sequence[Pair]) -> float:
    """Equivalent diameter of the median nucleus drawn in the masks (nan: none drawn)."""
    areas = [np.unique(lab[lab > 0], return_counts=True)[1] for _, lab in pairs]
    pooled = np.concatenate(areas) if areas else np.zeros(0)
    return float(2 * np.sqrt(np.median(pooled) / np.pi)) if len(pooled) else float("nan")


def bin_pairs(pairs: Sequence[Pair], f: int) -> list[Pair]:
    """Images mean-binned ``f`` x ``f`` as the segmenter bins frames (float32), masks
    sampled at each bin's centre pixel; rows and columns that do not fill a bin are
    dropped."""
    out = []
    for img, lab in pairs:
        h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
        binned = img[:h, :w].astype(np.float32).reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        out.append((binned, lab[f // 2 : h : f, f // 2 : w : f]))
    return out


def bin_to_trained_range(
    pairs: Sequence[Pair], meta: dict[str, Any]
) -> tuple[list[Pair], float, int]:
    """A user folder brought to the scale the network was trained at: its nuclei
    measured on the masks and, when larger than the weights' (``meta``) training
    images held, the pairs binned as :class:`~.unet.UNetSegmenter` bins frames of
    that nucleus diameter. Returns (pairs, diameter px, bin factor).

    Fine-tuning at the trained scale keeps what the network knows (fine-tuned on
    24 simulated 40x frames of 68 px nuclei: 0.87 AP@0.5 binned, 0.78 as they
    are), and the fine-tuned weights record the diameter so that they bin the
    same way when used (:func:`~.unet.recorded_diameter_px`).
    """
    diameter = masks_nucleus_diameter_px(pairs)
    f = bin_factor(diameter, meta) if diameter == diameter else 1  # nan: no nucleus drawn
    return (bin_pairs(pairs, f) if f > 1 else list(pairs)), diameter, f


def folder_units(pairs: Sequence[Pair]) -> tuple[list[Pair], str]:
    """What a user folder is split, and its scores resampled, by: its images when there
    are :data:`SMALL_FOLDER` or more, else tiles of them (:func:`tile_pairs`)."""
    return (list(pairs), "images") if len(pairs) >= SMALL_FOLDER else tile_pairs(pairs)


def split_folder(
    pairs: Sequence[Pair], seed: int
) -> tuple[list[Pair], list[Pair], list[Pair], str]:
    """Split a user folder into (train, validation, test) and say how.

    Ten images or more: by image, 15 % each for validation and test. Fewer: the
    images are cut into tiles of about :data:`FOLDER_TILE_PX` px (smaller images
    stay whole), so that a folder of two large images still has several
    validation units, and the tiles are split by tile. Tiles of one image share
    its look, so with fewer than ten units there is no test split: a one-tile
    test score says little, and the held-out tiles choose the extraction
    thresholds better (a quarter of them: two from six on).
    """
    tiles, how = folder_units(pairs)
    if len(tiles) >= SMALL_FOLDER:
        return (*split_pairs(tiles, 0.15, 0.15, seed), how)
    if len(tiles) < 3:  # nothing to hold out: validate on the training images
        return list(tiles), list(tiles[:1]), [], how
    return (*split_pairs(tiles, 0.25, 0.0, seed), how)  # two validate from six on


@dataclass
class TrainResult:
    """What a training run produced: the best model and its history."""

    model: UNet
    best_val_loss: float
    best_step: int
    steps_run: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    #: weights averaged in the model (``average=True``: checks up to the best one)
    n_averaged: int = 0


#: most validation crops a run scores at each validation (evenly spaced over all tiles)
MAX_VAL_CROPS = 256


def _tile_starts(length: int, size: int) -> list[int]:
    """Starts of the fewest ``size`` windows that cover ``length`` (the last one flush
    with the end, overlapping its neighbour rather than padded past the image)."""
    if length <= size:
        return [0]
    n = -(-length // size)
    return [round(v) for v in np.linspace(0, length - size, n)]


def _val_batches(
    prepared: list[_Prepared], crop: int, max_crops: int = MAX_VAL_CROPS
) -> list[torch.Tensor]:
    """Fixed validation crops tiling every validation image, in batches of 8.

    Tiles, not one crop per image: a user folder of a few large images would
    otherwise be validated on a small corner of one. Beyond ``max_crops`` tiles,
    an evenly spaced subset of them.
    """
    size = max(16, (crop // 16) * 16)
    tiles = []
    for p in prepared:
        image, labels = _mirrored_out(p, size)  # narrower than a crop: padded as a crop is
        h, w = image.shape
        tiles += [
            (image[y : y + size, x : x + size], labels[y : y + size, x : x + size])
            for y in _tile_starts(h, size)
            for x in _tile_starts(w, size)
        ]
    if len(tiles) > max_crops:
        tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, max_crops).round().astype(int)]
    crops = np.stack([_with_targets(*t) for t in tiles])
    return [torch.from_numpy(crops[i : i + 8].copy()) for i in range(0, len(crops), 8)]


def train_unet(
    train: Sequence[Pair],
    val: Sequence[Pair],
    *,
    model: UNet | None = None,
    steps: int = 2000,
    batch_size: int = 8,
    crop: int = 128,
    lr: float = 2e-3,
    eval_every: int = 100,
    patience: int = 5,
    max_seconds: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[dict[str, float]], None] | None = None,
    teacher: UNet | None = None,
    distill: float = 0.5,
    teacher_flips: bool = False,
    average: bool = False,
) -> TrainResult:
    """Train (or fine-tune, when ``model`` is given) the U-Net.

    Parameters
    ----------
    train, val : sequences of (image, labels)
        Any dtype / intensity range; labels are instance ids (0 = background).
    steps : int
        Maximum optimisation steps.
    eval_every : int
        Validation every this many steps; ``patience`` evaluations without
        improvement stop the run early.
    max_seconds : float, optional
        Wall-clock budget; training stops (keeping the best weights) when spent.
    progress : callable, optional
        Called after each validation with ``{"step", "train_loss", "val_loss", "lr"}``.
    teacher : UNet, optional
        A trained network (typically a wider one) to distil: the training targets
        become ``distill`` times its maps plus ``1 - distill`` times the exact
        ones, so a network of the shipped size learns what a larger one sees in
        each crop. Validation still scores against the exact targets.
    teacher_flips : bool
        With ``teacher``: its maps are averaged over the crop and its three flips,
        the view flip averaging (``tta``) scores at inference, so the network
        learns in one pass what the teacher sees in four. The teacher may be the
        network's own starting weights (self-distillation; from the shipped
        weights that scored lower, docs/segmentation.md, Training).
    average : bool
        Stochastic weight averaging: after warm-up the learning rate stays at
        ``lr`` instead of decaying, and the weights at every validation check join
        a uniform running average (BatchNorm statistics too). The average is what
        is validated, kept and stopped on; the weights that train only walk the
        path it averages. A network at a constant rate wanders around a minimum
        in noisy small-batch steps; the average sits nearer its centre, which
        often generalises better (Izmailov et al. 2018); from the shipped weights
        it scored the same (docs/segmentation.md, Training).
    """
    if not train:
        raise ValueError("no training images")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(device)
    # channels-last: faster convolutions on both CPU (oneDNN) and CUDA
    net = (model if model is not None else UNet()).to(dev)
    net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)

    def lr_at(step: int, elapsed: float) -> float:
        # warm-up then cosine decay over whichever runs out first, steps or time, so a
        # run cut short by its time budget still ends at a low learning rate
        frac = step / max(steps, 1)
        if max_seconds:
            frac = max(frac, elapsed / max_seconds)
        frac = min(frac, 1.0)
        if frac < 0.05:
            return lr * max(frac / 0.05, 0.05)
        if average:
            return lr
        return lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * (frac - 0.05) / 0.95)))  # type: ignore[no-any-return]

    if teacher is not None:
        if not 0.0 < distill <= 1.0:
            raise ValueError(f"distill must be in (0, 1], got {distill}")
        teacher = teacher.to(dev).eval()
        teacher = teacher.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    tr = _prepare(train)
    va = _prepare(val) if val else tr[: max(1, len(tr) // 10)]
    val_batches = _val_batches(va, max(crop, 128))
    best = float("inf")
    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    best_step = 0
    bad = 0
    # torch's own averaging (buffers too: the running BatchNorm statistics the
    # folded inference network uses are averaged with the weights they belong to)
    averaged = AveragedModel(net, use_buffers=True) if average else None
    n_best = 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    running = torch.zeros(())
    stopped_early = False
    step = 0
    noise = torch.Generator(device=dev).manual_seed(seed)
    # bfloat16 autocast on CUDA: tensor-core convolutions, no loss scaling needed
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    for step in range(1, steps + 1):
        net.train()
        picks = _pick_images(tr, batch_size, rng)
        x = _augment([_crop(tr[i], crop, rng) for i in picks], rng, noise, dev)
        image = x[:, :1].contiguous(memory_format=torch.channels_last)
        target = x[:, 1:]
        with autocast:
            if teacher is not None:
                with torch.no_grad():
                    if teacher_flips:
                        soft = flip_averaged(teacher, image)
                    else:
                        soft = torch.sigmoid(teacher(image).float())
                maps = (1.0 - distill) * target[:, :2] + distill * soft
                target = torch.cat([maps, target[:, 2:]], 1)
            loss = _loss(net(image), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, time.perf_counter() - t0)
        opt.step()
        # kept on the device: read only at validation, so steps do not wait on each other
        lv = loss.detach().float()
        running = 0.9 * running + 0.1 * lv if step > 1 else lv
        out_of_time = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if step % eval_every == 0 or step == steps or out_of_time:
            judged: nn.Module = net
            if averaged is not None:
                averaged.update_parameters(net)
                judged = averaged.module
            judged.eval()
            with torch.no_grad(), autocast:
                vl = float(
                    np.mean(
                        [
                            float(_loss(judged(b[:, :1].to(dev)), b[:, 1:].to(dev)))
                            for b in val_batches
                        ]
                    )
                )
            rec = {
                "step": float(step), "train_loss": float(running), "val_loss": vl,
                "lr": float(opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0,
            }  # fmt: skip
            history.append(rec)
            if progress is not None:
                progress(rec)
            if vl < best - 1e-4:
                best, best_step, bad = vl, step, 0
                best_state = {k: v.detach().clone() for k, v in judged.state_dict().items()}
                n_best = int(averaged.n_averaged) if averaged is not None else 0
            else:
                bad += 1
                if bad >= patience:
                    stopped_early = True
                    break
        if out_of_time:
            break
    net.load_state_dict(best_state)
    net = net.to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    return TrainResult(
        net, best, best_step, step, stopped_early, history, time.perf_counter() - t0, n_best
    )


def tune_thresholds(
    model: UNet,
    pairs: Sequence[Pair],
    device: str = "cpu",
    fg_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6),
    seed_thresholds: Sequence[float] = (0.3, 0.4, 0.5, 0.6, 0.7),
    confidences: Sequence[float] = (0.0, 0.6, 0.65, 0.7, 0.75),
    min_sizes: Sequence[int] = (12, 8, 6, 4),
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Instance-extraction thresholds that maximise pooled AP@0.5 on ``pairs``.

    Run on validation images (never on a test set). The network runs once per
    image; only the cheap extraction is repeated per setting. The foreground and
    seed thresholds are chosen first, on a grid (objects from ``min_sizes[0]``
    pixels); then, at those, the minimum mean foreground probability of an
    object; then the smallest object kept (nuclei cut by the frame edge can be
    a few pixels; on a tie the larger size, listed first, wins). Returns the
    best ``fg_threshold``, ``seed_threshold``, ``min_confidence`` and
    ``min_size_px`` with the AP and every setting tried; with ``current`` (a
    weights record's thresholds), also their AP on the same images and
    ``p_better``, the share of paired bootstrap resamples of the images in
    which the tuned setting scores higher, as ``current``.
    """
    from .metrics import bootstrap_ap, pooled_ap, score_image

    per_image: dict[tuple[Any, ...], list[Any]] = {}

    seg = UNetSegmenter(device=device, model=model)
    maps = []
    for img, lab in pairs:
        fg, c = seg.predict_maps(seg.to_device(img)[0])
        maps.append((fg, c, lab))

    def scores_at(setting: tuple[Any, ...]) -> list[Any]:
        """Per-image scores at (fg, seed, confidence, size), extracted once per setting."""
        if setting not in per_image:
            ft, st, conf, size = setting
            per_image[setting] = [
                score_image(
                    lab,
                    extract_instances(
                        fg, c, fg_threshold=ft, seed_threshold=st, min_size_px=size,
                        min_confidence=conf,
                    )[0].cpu().numpy(),
                    thresholds=(0.5,),
                )
                for fg, c, lab in maps
            ]  # fmt: skip
        return per_image[setting]

    def ap50(ft: float, st: float, conf: float, size: int) -> dict[str, float]:
        ap = pooled_ap(scores_at((ft, st, conf, size)), 0.5)
        return {"fg": ft, "seed": st, "confidence": conf, "min_size_px": size, "ap50": ap}

    size = min_sizes[0]
    grid = [ap50(ft, st, 0.0, size) for ft in fg_thresholds for st in seed_thresholds]
    best = max(grid, key=lambda g: g["ap50"])
    for conf in confidences:
        if conf > 0:
            grid.append(ap50(best["fg"], best["seed"], conf, size))
    best = max(grid, key=lambda g: g["ap50"])
    for size in min_sizes[1:]:
        grid.append(ap50(best["fg"], best["seed"], best["confidence"], size))
    best = max(grid, key=lambda g: g["ap50"])  # the first of equals: the larger size
    tuned = {
        "fg_threshold": best["fg"], "seed_threshold": best["seed"],
        "min_confidence": best["confidence"], "min_size_px": best["min_size_px"],
        "ap50": best["ap50"], "n_images": len(pairs), "grid": grid,
    }  # fmt: skip
    if current is not None:
        at_current = {k: current[k] for k in EXTRACTION_DEFAULTS}
        at_scores = scores_at(tuple(at_current.values()))  # off the grid: scored once more
        at_current["ap50"] = pooled_ap(at_scores, 0.5)
        # the same resamples for both (same seed and count): a paired comparison
        chosen = per_image[(best["fg"], best["seed"], best["confidence"], best["min_size_px"])]
        ahead = bootstrap_ap(chosen) > bootstrap_ap(at_scores)
        at_current["p_better"] = float(ahead.mean())
        tuned["current"] = at_current
    return tuned


def widen_unet(model: UNet, channels: Sequence[int], seed: int = 0) -> UNet:
    """A wider copy of a trained U-Net that computes exactly what it computed.

    Each level keeps the old filters and gains new ones (randomly initialised,
    as in a fresh network). Weights from new channels into old ones start at
    zero, so the old outputs, and the two heads, are unchanged until training
    moves them (function-preserving widening in the manner of Net2Net). Lets a
    long-trained network grow instead of starting again from scratch.
    """
    old = tuple(model.channels)
    new = tuple(int(c) for c in channels)
    if len(new) != len(old) or any(n < o for n, o in zip(new, old, strict=True)):
        raise ValueError(
            f"channels {list(new)}: can only widen a network, level by level, from its {list(old)}"
        )
    torch.manual_seed(seed)
    wide = UNet(new)
    src = dict(model.state_dict())

    def in_index(block: str) -> list[int]:
        # where each old input channel of a block's first conv sits in the wide one
        kind, i = block.split(".")[0], int(block.split(".")[1])
        if kind == "down":
            return list(range(old[i - 1] if i else 1))
        lvl = len(old) - 2 - i  # up blocks run from the coarsest level back to the finest
        return list(range(old[lvl + 1])) + [new[lvl + 1] + j for j in range(old[lvl])]

    with torch.no_grad():
        for name, dst in wide.state_dict().items():
            if name.endswith("num_batches_tracked"):
                dst.copy_(src[name])
                continue
            w = src[name]
            if name.startswith("head."):
                if name.endswith("weight"):
                    dst.zero_()
                    dst[:, : w.shape[1]] = w
                else:
                    dst.copy_(w)
                continue
            if w.dim() == 4:  # conv: old outputs read only old inputs
                idx = in_index(name) if name.split(".")[2] == "0" else list(range(w.shape[1]))
                dst[: w.shape[0]] = 0.0
                dst[: w.shape[0], idx] = w
            else:  # batch norm of the old channels
                dst[: w.shape[0]] = w
    return wide.eval()


def save_unet(model: UNet, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write weights (float16, a few MB at most) with ``meta`` (recipe, command, seed),
    and the same metadata as a readable record beside them (``.json``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()
    }
    meta = {**meta, "channels": list(model.channels)}
    torch.save({"state_dict": state, "meta": json.dumps(meta)}, p)
    p.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return p


def load_folder(folder: str | Path) -> list[Pair]:
    """Read a folder with ``images/`` and ``labels/`` TIFFs of matching file names.

    This is the usual export of Fiji (ROI map / label image) or napari
    (labels layer): one 2-D image per file, labels as integer instance ids.
    """
    return [(img, lab) for _, img, lab in _read_folder(folder)]


def write_folder(
    folder: str | Path,
    pairs: Sequence[tuple[NDArray[Any], NDArray[np.integer]]],
    stages: Sequence[dict[int, int]] | None = None,
) -> Path:
    """Write image/label pairs as the folder :func:`load_folder` reads.

    ``images/`` and ``labels/`` TIFFs named ``field_<i>.tif`` (zero-padded so that
    they sort in order; labels as 16-bit ids when they fit), and with ``stages``
    (``{label: stage id}`` per pair) the :data:`STAGE_TABLE` of
    :func:`load_stage_folder`, listing the mitotic nuclei as an annotator marks them
    (the others read back as interphase). For simulated fields to fine-tune or
    score on, in the layout a user exports.
    """
    import tifffile

    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    width = len(str(max(len(pairs) - 1, 0)))
    rows = ["image,label,stage"]
    for i, (image, labels) in enumerate(pairs):
        name = f"field_{i:0{width}d}.tif"
        tifffile.imwrite(root / "images" / name, image)
        write_labels(root / "labels" / name, labels)
        if stages is not None:
            rows += [f"{name},{k},{STAGES[s]}" for k, s in stages[i].items() if s > 0]
    if stages is not None:
        (root / STAGE_TABLE).write_text("\n".join(rows) + "\n")
    return root


#: the stage table of a user folder, beside ``images/`` and ``labels/``
STAGE_TABLE = "stages.csv"
#: stage names accepted in it (case-insensitive) -> class id of the stage classifier
STAGE_NAMES = {name: k for k, name in enumerate(STAGES)} | {
    "telophase": STAGES.index("anaphase"),
    "anaphase/telophase": STAGES.index("anaphase"),
}


def load_stage_folder(
    folder: str | Path, unlisted: str = "interphase"
) -> list[tuple[str, NDArray[Any], NDArray[np.int32], dict[int, int]]]:
    """A user folder with stage labels: ``(name, image, labels, {label: stage id})``.

    Beside ``images/`` and ``labels/`` (as :func:`load_folder`), ``stages.csv``
    has one row per annotated nucleus with the columns ``image`` (file name in
    ``images/``, with or without extension), ``label`` (its id in the mask) and
    ``stage`` (interphase, prophase, metaphase, anaphase or telophase; telophase
    counts as anaphase), e.g. a napari labels layer's feature table. Nuclei not
    listed are interphase with ``unlisted="interphase"`` (annotate the mitoses
    only), or left out of training with ``unlisted="ignore"``.
    """
    import csv

    if unlisted not in {"interphase", "ignore"}:
        raise ValueError(f"unlisted={unlisted!r}: choose interphase or ignore")
    items = _read_folder(folder)
    table = Path(folder) / STAGE_TABLE
    if not table.is_file():
        raise FileNotFoundError(
            f"{table}: no stage table; give one row per annotated nucleus with the "
            "columns image,label,stage"
        )
    ids = {name: set(np.unique(lab[lab > 0]).tolist()) for name, _, lab in items}
    stages: dict[str, dict[int, int]] = {name: {} for name, _, _ in items}
    with table.open(newline="", encoding="utf-8-sig") as f:  # Excel writes a BOM
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if not {"image", "label", "stage"} <= set(columns):
            raise ValueError(
                f"{table}: columns image,label,stage expected, found {reader.fieldnames}"
            )
        for row in reader:
            where = f"{table} line {reader.line_num}"
            image, label, stage = (
                (row[columns[c]] or "").strip() for c in ("image", "label", "stage")
            )
            name = Path(image).stem if Path(image).suffix.lower() in {".tif", ".tiff"} else image
            if name not in ids:
                raise ValueError(f"{where}: image {image!r} is not in images/")
            try:
                label_id = int(label)
            except ValueError:
                raise ValueError(f"{where}: label {label!r} is not an integer id") from None
            if label_id not in ids[name]:
                raise ValueError(f"{where}: label {label_id} is not in the mask of {image!r}")
            if stage.lower() not in STAGE_NAMES:
                raise ValueError(
                    f"{where}: stage {stage!r}; choose interphase, prophase, metaphase, "
                    "anaphase or telophase"
                )
            stages[name][label_id] = STAGE_NAMES[stage.lower()]
    if not any(stages.values()):
        raise ValueError(f"{table}: no nucleus listed")
    out = []
    for name, img, lab in items:
        listed = stages[name]
        if unlisted == "interphase":
            listed = {i: listed.get(i, 0) for i in sorted(ids[name])}
        out.append((name, img, lab, listed))
    return out


def read_image(path: str | Path, shape: tuple[int, ...] | None = None) -> NDArray[Any]:
    """One 2-D grey image from a TIFF file, or a clear error naming the file.

    A grey image saved as RGB(A) (as the DSB2018 nuclei are) is read as grey; a
    colour image, a stack, or NaN or infinite pixels are refused. ``shape``: the
    2-D shape expected (its mask's), which tells an RGB image from a stack of
    three or four planes; without it, a last axis of 3 or 4 under larger ones is
    taken for colour.
    """
    import tifffile

    img = np.squeeze(tifffile.imread(path))
    rgb = img.ndim == 3 and img.shape[-1] in (3, 4)
    if rgb and (img.shape[:2] == shape if shape is not None else min(img.shape[:2]) > 4):
        # grey saved as RGB(A), as in the DSB2018 nuclei images: one channel holds it all
        if not all(np.array_equal(img[..., 0], img[..., c]) for c in (1, 2)):
            raise ValueError(
                f"{path}: a colour RGB image; export the nuclear channel alone as a 2-D image"
            )
        img = img[..., 0]
    if img.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {img.shape}")
    problem = nonfinite_pixels(img)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return img


def write_labels(path: str | Path, labels: NDArray[np.integer]) -> None:
    """An instance label image as Fiji and napari read it (16-bit ids when they fit)."""
    import tifffile

    lab = np.asarray(labels)
    tifffile.imwrite(path, lab.astype(np.uint16 if lab.max(initial=0) < 2**16 else np.uint32))


def _read_folder(folder: str | Path) -> list[tuple[str, NDArray[Any], NDArray[np.int32]]]:
    """``(name, image, labels)`` of each image of ``folder/images`` and its mask."""
    import tifffile

    root = Path(folder)
    img_dir, lab_dir = root / "images", root / "labels"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise FileNotFoundError(
                f"{root}: expected sub-folders images/ and labels/ (missing {d.name}/)"
            )
    exts = {".tif", ".tiff"}
    images = {p.stem: p for p in sorted(img_dir.iterdir()) if p.suffix.lower() in exts}
    labels = {p.stem: p for p in sorted(lab_dir.iterdir()) if p.suffix.lower() in exts}
    if not images:
        raise FileNotFoundError(f"{img_dir}: no .tif/.tiff images")
    missing = sorted(set(images) - set(labels))
    if missing:
        raise FileNotFoundError(
            f"{lab_dir}: no label file for image(s) {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    items: list[tuple[str, NDArray[Any], NDArray[np.int32]]] = []
    for stem, ip in images.items():
        lab = np.squeeze(tifffile.imread(labels[stem]))
        img = read_image(ip, lab.shape)
        if lab.shape != img.shape:
            raise ValueError(
                f"{labels[stem]}: label shape {lab.shape} differs from image shape {img.shape}"
            )
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.mod(lab, 1) == 0):
                raise ValueError(f"{labels[stem]}: labels must be integer instance ids")
            lab = lab.astype(np.int64)
        items.append((stem, img, lab.astype(np.int32)))
    return items
