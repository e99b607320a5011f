"""Cell-cycle stage of each segmented nucleus: a small CNN on per-object crops.

Stages: interphase, prophase (condensing: rounder, smaller, brighter, coarse
chromatin), metaphase (a bright bar, the chromosome plate) and
anaphase/telophase (two short bars moving apart). Telling prophase lets the
mitosis detector fire at onset, tens of minutes before the split.

Each object's crop is scaled to its own size (so the classifier works at any
pixel size) and its intensity is expressed relative to the image's typical
nucleus, with the object's area relative to the typical area passed beside the
crop: "brighter and smaller than its neighbours" is what a biologist looks
for, and it does not depend on exposure or camera.

:func:`rule_stage` is the hand-written alternative (area, intensity,
roundness) the CNN is compared with.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage
from skimage.measure import regionprops
from skimage.segmentation import relabel_sequential
from torch import nn
from torch.optim.swa_utils import AveragedModel

from .segmenter import select_device
from .weights_file import read_weights

__all__ = [
    "STAGES",
    "StageClassifier",
    "StageNet",
    "default_classifier_path",
    "object_crops",
    "rule_stage",
    "save_classifier",
    "stage_report",
    "stage_scores",
    "train_classifier",
]

STAGES = ("interphase", "prophase", "metaphase", "anaphase")
CROP = 32
MITOTIC = frozenset(STAGES[1:])


class StageNet(nn.Module):
    """Crop (2 channels: intensity, object mask) + 2 scalars -> 4 stage logits."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(2, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Linear(4 * w + 2, 64), nn.ReLU(inplace=True), nn.Linear(64, len(STAGES))
        )
        self.width = width

    def forward(self, crops: torch.Tensor, scalars: torch.Tensor) -> torch.Tensor:
        """``(K, 2, 32, 32)`` crops, ``(K, 2)`` scalars -> ``(K, 4)`` logits."""
        f = self.features(crops).flatten(1)
        out: torch.Tensor = self.head(torch.cat([f, scalars], dim=1))
        return out


@dataclass
class Crops:
    """Per-object inputs of one image."""

    ids: NDArray[np.int64]
    crops: NDArray[np.float32]  # (K, 2, CROP, CROP)
    scalars: NDArray[np.float32]  # (K, 2): log area ratio, log intensity ratio
    area: NDArray[np.float64]
    intensity_ratio: NDArray[np.float64]
    area_ratio: NDArray[np.float64]
    roundness: NDArray[np.float64]  # minor / major axis
    solidity: NDArray[np.float64]


def object_crops(image: NDArray[Any], labels: NDArray[np.integer]) -> Crops:
    """Size-normalised crops and relative measurements of every labelled object."""
    img = np.asarray(image, np.float32)
    lab = np.asarray(labels)
    bg = float(np.percentile(img[::2, ::2], 5))
    img = img - bg
    # ids may be large (plate-unique cell ids): measure on consecutive ids, report the originals
    seq, _, inverse = relabel_sequential(lab.astype(np.int64))  # type: ignore[no-untyped-call]
    props = regionprops(seq, intensity_image=img)  # type: ignore[no-untyped-call]
    k = len(props)
    if k == 0:
        z = np.zeros(0)
        return Crops(
            np.zeros(0, np.int64), np.zeros((0, 2, CROP, CROP), np.float32),
            np.zeros((0, 2), np.float32), z, z, z, z, z,
        )  # fmt: skip
    ids = np.array([inverse[p.label] for p in props], np.int64)
    area = np.array([p.area for p in props], np.float64)
    mean_i = np.array([max(float(p.intensity_mean), 1e-3) for p in props])
    major = np.array([max(p.axis_major_length, 1e-3) for p in props])
    minor = np.array([p.axis_minor_length for p in props])
    solidity = np.array([p.solidity for p in props])
    ref_area = float(np.median(area))
    ref_i = float(np.median(mean_i))
    area_ratio = area / max(ref_area, 1.0)
    int_ratio = mean_i / max(ref_i, 1e-3)
    crops = np.zeros((k, 2, CROP, CROP), np.float32)
    h, w = lab.shape
    for j, p in enumerate(props):
        cy, cx = p.centroid
        # window: 3 equivalent diameters of the typical nucleus, at least the object itself
        half = max(1.5 * np.sqrt(ref_area / np.pi) * 2, 0.6 * major[j], 4.0)
        grid = np.linspace(-half, half, CROP)
        yy = cy + grid[:, None]
        xx = cx + grid[None, :]
        coords = np.stack([np.broadcast_to(yy, (CROP, CROP)), np.broadcast_to(xx, (CROP, CROP))])
        crops[j, 0] = ndimage.map_coordinates(img, coords, order=1, mode="nearest") / ref_i
        yi = np.clip(np.rint(coords[0]).astype(int), 0, h - 1)
        xi = np.clip(np.rint(coords[1]).astype(int), 0, w - 1)
        crops[j, 1] = seq[yi, xi] == p.label
    scalars = np.stack([np.log(area_ratio), np.log(int_ratio)], 1).astype(np.float32)
    return Crops(ids, crops, scalars, area, int_ratio, area_ratio, minor / major, solidity)


def rule_stage(image: NDArray[Any], labels: NDArray[np.integer]) -> dict[int, tuple[str, float]]:
    """Hand-written stage rule (the baseline): brighter than typical and compact = mitotic.

    Mitotic when the mean intensity is at least 1.5x the image's typical
    nucleus and the area at most 0.9x the typical area; then a round object
    (minor/major >= 0.6) is prophase, an elongated one metaphase when it is
    about as long as a nucleus, anaphase when it is short.
    """
    c = object_crops(image, labels)
    out: dict[int, tuple[str, float]] = {}
    for j, i in enumerate(c.ids.tolist()):
        if c.intensity_ratio[j] >= 1.5 and c.area_ratio[j] <= 0.9:
            if c.roundness[j] >= 0.6:
                stage = "prophase"
            elif c.area_ratio[j] >= 0.3:
                stage = "metaphase"
            else:
                stage = "anaphase"
            out[int(i)] = (stage, 1.0)
        else:
            out[int(i)] = ("interphase", 1.0)
    return out


def _augment(crops: torch.Tensor) -> torch.Tensor:
    k = int(torch.randint(4, (1,)))
    crops = torch.rot90(crops, k, dims=(2, 3))
    if bool(torch.rand(1) < 0.5):
        crops = crops.flip(3)
    gain = torch.empty(crops.shape[0], 1, 1, 1).uniform_(0.85, 1.15)
    return torch.cat([crops[:, :1] * gain, crops[:, 1:]], 1)


@dataclass
class ClassifierTrainResult:
    """The trained classifier and a summary (per-class precision/recall on held-out data)."""

    model: StageNet
    summary: dict[str, Any] = field(default_factory=dict)


def _collect(
    data: Sequence[tuple[NDArray[Any], NDArray[np.integer], dict[int, int]]],
    groups: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crops, scalars, stage and group (the image's ``groups`` entry) of every object."""
    xs, ss, ys, gs = [], [], [], []
    for k, (image, labels, stages) in enumerate(data):
        c = object_crops(image, labels)
        keep = [j for j, i in enumerate(c.ids.tolist()) if int(i) in stages]
        xs.append(c.crops[keep])
        ss.append(c.scalars[keep])
        ys.append(np.array([stages[int(c.ids[j])] for j in keep], np.int64))
        gs.append(np.full(len(keep), groups[k] if groups is not None else 0, np.int64))
    return (
        torch.from_numpy(np.concatenate(xs)),
        torch.from_numpy(np.concatenate(ss)),
        torch.from_numpy(np.concatenate(ys)),
        torch.from_numpy(np.concatenate(gs)),
    )


def stage_report(pred: NDArray[np.int64], true: NDArray[np.int64]) -> dict[str, Any]:
    """Per-stage precision/recall, plus mitotic-vs-interphase precision/recall."""
    rep: dict[str, Any] = {}
    for k, name in enumerate(STAGES):
        tp = int(((pred == k) & (true == k)).sum())
        rep[name] = {
            "precision": tp / max(int((pred == k).sum()), 1),
            "recall": tp / max(int((true == k).sum()), 1),
            "n": int((true == k).sum()),
        }
    pm, tm = pred > 0, true > 0
    tp = int((pm & tm).sum())
    rep["mitotic"] = {
        "precision": tp / max(int(pm.sum()), 1),
        "recall": tp / max(int(tm.sum()), 1),
        "n": int(tm.sum()),
    }
    rep["accuracy"] = float((pred == true).mean()) if len(true) else 0.0
    return rep


def stage_scores(
    predict: Callable[[NDArray[Any], NDArray[np.integer]], dict[int, tuple[str, float]]],
    data: Sequence[tuple[NDArray[Any], NDArray[np.integer], dict[int, int]]],
) -> dict[str, Any]:
    """:func:`stage_report` of a stage caller (``StageClassifier().predict``,
    :func:`rule_stage`) on ``(image, labels, {label: stage index})`` triples."""
    pred, true = [], []
    for image, labels, stages in data:
        out = predict(image, labels)
        for i, stage in stages.items():
            pred.append(STAGES.index(out[i][0]))
            true.append(stage)
    return stage_report(np.array(pred, np.int64), np.array(true, np.int64))


def _every_source_held_out(
    order: NDArray[np.int64], n_val: int, sources: Sequence[str]
) -> NDArray[np.int64]:
    """``order`` (validation = first ``n_val``, test = next ``n_val``, then training)
    with images swapped in so that every source of three images or more has at least
    one in validation and one in test: a few user frames beside hundreds of rendered
    ones would otherwise all land in training, unscored. The default split of sources
    that are all held out already is unchanged."""
    order = order.copy()
    src = [sources[int(i)] for i in order]  # source of each position
    for name in sorted(set(sources)):
        if src.count(name) < 3:
            continue
        for lo in (0, n_val):
            part = list(range(lo, lo + n_val))
            held = Counter(src[k] for k in part)
            if held[name]:
                continue
            # this source's last training image swaps with an image of the source
            # most represented in the part (never a source's only one, where avoidable)
            spare = [k for k in range(2 * n_val, len(order)) if src[k] == name]
            if not spare:
                continue
            k = spare[-1]
            j = max(part, key=lambda p: (held[src[p]], p))
            order[[k, j]] = order[[j, k]]
            src[k], src[j] = src[j], src[k]
    return order


def train_classifier(
    data: Sequence[tuple[NDArray[Any], NDArray[np.integer], dict[int, int]]],
    *,
    sources: Sequence[str] | None = None,
    init: StageNet | None = None,
    epochs: int = 16,
    batch_size: int = 128,
    lr: float = 3e-3,
    patience: int = 6,
    seed: int = 0,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
    average: bool = False,
) -> ClassifierTrainResult:
    """Train the stage CNN on ``(image, labels, {label: stage index})`` triples.

    Images are split 70/15/15 into train/validation/test; class-balanced
    sampling (mitotic figures are rare); early stopping on validation loss.
    ``sources`` names where each image came from (e.g. ``"synthetic"``,
    ``"microscope"``, ``"user"``): each is drawn equally often in training,
    each with three images or more has images in validation and test, and the
    test scores are also reported per source. ``init`` fine-tunes a trained
    network (a copy) instead of starting from scratch.

    ``average``: run the whole schedule and return the average of the weights
    at the end of each epoch of its second half (stochastic weight averaging;
    batch-norm statistics recomputed on training batches) instead of the epoch
    of lowest validation loss. For fine-tuning on a few dozen fields, where the
    one or two user images in validation pick an epoch by chance; the
    validation loss is still reported, for the average too.
    """
    if sources is not None and len(sources) != len(data):
        raise ValueError(f"{len(sources)} sources given for {len(data)} images")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    order = rng.permutation(len(data))
    n_val = max(1, len(data) * 15 // 100)
    if sources is not None:
        order = _every_source_held_out(order, n_val, sources)
    parts = {
        "val": [data[i] for i in order[:n_val]],
        "test": [data[i] for i in order[n_val : 2 * n_val]],
        "train": [data[i] for i in order[2 * n_val :]],
    }
    names = sorted(set(sources or [""]))

    def groups(idx: NDArray[np.int64]) -> list[int]:
        return [names.index(sources[i]) if sources else 0 for i in idx]

    test_groups = groups(order[n_val : 2 * n_val])
    x_tr, s_tr, y_tr, g_tr = _collect(parts["train"], groups(order[2 * n_val :]))
    x_va, s_va, y_va, _ = _collect(parts["val"])
    x_te, s_te, y_te, g_te = _collect(parts["test"], test_groups)
    dev = torch.device(device)
    net = (copy.deepcopy(init) if init is not None else StageNet()).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    counts = torch.bincount(y_tr, minlength=len(STAGES)).float().clamp(min=1)
    # partly balanced sampling: rare mitotic stages seen often enough to learn, but
    # not so often that the common interphase nucleus gets called mitotic; and each
    # source drawn equally often, so that the one with more nuclei does not crowd out
    # how the other's look
    sample_w = torch.zeros(len(y_tr))
    for g in sorted(set(g_tr.tolist())):
        mine = g_tr == g
        per_stage = torch.bincount(y_tr[mine], minlength=len(STAGES)).float().clamp(min=1)
        w = (per_stage**-0.5)[y_tr[mine]]
        sample_w[mine] = w / w.sum()
    n_per_epoch = min(len(y_tr), 16_000)
    best, best_state, bad, t0 = float("inf"), None, 0, time.perf_counter()
    epoch = 0
    averaged = AveragedModel(net) if average else None
    first_averaged = epochs // 2 + 1

    def val_loss(model: nn.Module) -> float:
        # weighted like training, so rare stages count
        with torch.no_grad():
            logits = model(x_va.to(dev), s_va.to(dev))
            return float(F.cross_entropy(logits, y_va.to(dev), weight=(counts**-0.5).to(dev)))

    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 0.02)
    for epoch in range(1, epochs + 1):
        net.train()
        idx = torch.multinomial(sample_w, n_per_epoch, replacement=True)
        for b in range(0, n_per_epoch, batch_size):
            j = idx[b : b + batch_size]
            logits = net(_augment(x_tr[j]).to(dev), s_tr[j].to(dev))
            loss = F.cross_entropy(logits, y_tr[j].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
        sched.step()
        net.eval()
        vl = val_loss(net)
        if averaged is not None and epoch >= first_averaged:
            averaged.update_parameters(net)
        if progress is not None:
            dt = time.perf_counter() - t0
            progress(f"classifier: epoch {epoch:3d}  val loss {vl:.4f}  ({dt:.0f} s)")
        if vl < best - 1e-4:
            best, bad = vl, 0
            if averaged is None:  # an averaged run returns the average, not an epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif averaged is None:  # an averaged run goes through its whole schedule
            bad += 1
            if bad >= patience:
                break
    if averaged is not None:
        net = cast(StageNet, averaged.module)
        drawn = torch.multinomial(sample_w, n_per_epoch, replacement=True)  # as an epoch
        _recompute_batchnorm(net, x_tr[drawn], s_tr[drawn], batch_size, dev)
    elif best_state is not None:
        net.load_state_dict(best_state)
    net.eval()

    def report(x: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        with torch.no_grad():
            pred = net(x.to(dev), s.to(dev)).argmax(1).cpu().numpy()
        return stage_report(pred, y.numpy())

    summary = {
        "epochs_run": epoch, "best_val_loss": best, "seconds": round(time.perf_counter() - t0, 1),
        "n_objects": {"train": len(y_tr), "validation": len(y_va), "test": len(y_te)},
        "test_ground_truth_masks": report(x_te, s_te, y_te),
    }  # fmt: skip
    if averaged is not None:
        summary["weights"] = {
            "averaged_epochs": [first_averaged, epoch], "val_loss": val_loss(net),
        }  # fmt: skip
    for k in sorted(set(test_groups)) if sources else []:
        mine = g_te == k
        summary[f"test_ground_truth_masks_{names[k]}"] = report(x_te[mine], s_te[mine], y_te[mine])
    return ClassifierTrainResult(net.cpu(), summary)


def _recompute_batchnorm(
    net: nn.Module, crops: torch.Tensor, scalars: torch.Tensor, batch_size: int, dev: Any
) -> None:
    """Batch-norm statistics of ``net`` measured anew on these training inputs, in
    batches augmented as in training: averaged weights do not go with any epoch's
    running statistics."""
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches
    net.train()
    with torch.no_grad():
        for b in range(0, len(crops), batch_size):
            j = slice(b, b + batch_size)
            net(_augment(crops[j]).to(dev), scalars[j].to(dev))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum  # as it was, for any later fine-tuning
    net.eval()


def default_classifier_path() -> Path:
    """The classifier weights shipped inside the package."""
    return Path(str(resources.files("scopeloop.analysis") / "weights" / "stage_classifier.pt"))


def save_classifier(model: StageNet, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write classifier weights (float16) with their metadata, and the same metadata as a
    readable record beside them (``.json``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {**meta, "width": model.width}
    torch.save({"state_dict": state, "meta": json.dumps(meta)}, p)
    p.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return p


class StageClassifier:
    """Stage of every object of a segmented frame.

    Parameters
    ----------
    weights : path, optional
        Weights written by ``scopeloop train`` (default: the shipped ones).
    device : str
        ``"auto"`` or a torch device.
    model : StageNet, optional
        An in-memory model instead of weights.

    Examples
    --------
    >>> clf = StageClassifier()                       # doctest: +SKIP
    >>> clf.predict(image, labels)                    # doctest: +SKIP
    {1: ('interphase', 0.98), 2: ('prophase', 0.91)}
    """

    def __init__(
        self, weights: str | Path | None = None, device: str = "auto", model: StageNet | None = None
    ) -> None:
        self.device = select_device(device)
        if model is None:
            p = Path(weights) if weights is not None else default_classifier_path()
            if not p.is_file():
                raise FileNotFoundError(
                    f"stage classifier weights not found at {p}; train them with "
                    "`scopeloop train --what classifier`"
                )
            state, meta = read_weights(p, "stage_classifier")
            model = StageNet(int(meta.get("width", 24)))
            model.load_state_dict(state)
        self.model = model.to(torch.device(self.device)).eval()

    @torch.inference_mode()
    def predict(
        self, image: NDArray[Any], labels: NDArray[np.integer]
    ) -> dict[int, tuple[str, float]]:
        """``{label: (stage, probability)}`` for every object of ``labels``."""
        c = object_crops(image, labels)
        if len(c.ids) == 0:
            return {}
        dev = torch.device(self.device)
        logits = self.model(torch.from_numpy(c.crops).to(dev), torch.from_numpy(c.scalars).to(dev))
        prob = torch.softmax(logits.float(), 1).cpu().numpy()
        best = prob.argmax(1)
        return {
            int(i): (STAGES[int(k)], float(prob[j, k]))
            for j, (i, k) in enumerate(zip(c.ids.tolist(), best.tolist(), strict=True))
        }

    def mitotic_probability(
        self, image: NDArray[Any], labels: NDArray[np.integer]
    ) -> dict[int, float]:
        """``{label: P(prophase, metaphase or anaphase)}``; handy for an onset detector."""
        c = object_crops(image, labels)
        if len(c.ids) == 0:
            return {}
        dev = torch.device(self.device)
        with torch.inference_mode():
            logits = self.model(
                torch.from_numpy(c.crops).to(dev), torch.from_numpy(c.scalars).to(dev)
            )
            prob = torch.softmax(logits.float(), 1)[:, 1:].sum(1).cpu().numpy()
        return {int(i): float(p) for i, p in zip(c.ids.tolist(), prob.tolist(), strict=True)}
