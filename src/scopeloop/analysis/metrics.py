"""Instance-segmentation metrics as used in the bioimage literature.

Objects are matched one-to-one by optimal assignment on IoU (Hungarian), a
match counting as a true positive when its IoU reaches the threshold. Per
threshold: precision TP/(TP+FP), recall TP/(TP+FN), F1, and the "average
precision" of the Data Science Bowl 2018 and StarDist, AP = TP/(TP+FP+FN).
Mean IoU is the mean IoU of matched pairs at IoU >= 0.5 (the "mean matched
score"), plus the foreground (semantic) IoU.

Test sets of a few dozen images give AP figures that move by a few hundredths
from one draw of images to the next, so pooled AP comes with a bootstrap 95 %
interval over images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

__all__ = [
    "THRESHOLDS",
    "ImageScores",
    "aggregate",
    "bootstrap_ap",
    "iou_matrix",
    "pooled_ap",
    "score_image",
]

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def iou_matrix(gt: NDArray[np.integer], pred: NDArray[np.integer]) -> NDArray[np.float64]:
    """IoU between every ground-truth object (rows) and predicted object (columns).

    Labels need not be consecutive; rows/columns follow the sorted non-zero ids.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth shape {gt.shape} != prediction shape {pred.shape}")
    g_ids, g_inv = np.unique(gt.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    ng, npd = len(g_ids), len(p_ids)
    inter = np.bincount(g_inv * npd + p_inv, minlength=ng * npd).reshape(ng, npd)
    g_area = inter.sum(1, keepdims=True)
    p_area = inter.sum(0, keepdims=True)
    union = g_area + p_area - inter
    iou = inter / np.maximum(union, 1)
    # drop background rows/columns
    keep_g = g_ids != 0
    keep_p = p_ids != 0
    return np.asarray(iou[keep_g][:, keep_p], np.float64)


@dataclass
class ImageScores:
    """Scores of one image: counts and rates per IoU threshold."""

    n_true: int
    n_pred: int
    tp: dict[float, int]
    mean_matched_iou: float
    foreground_iou: float
    precision: dict[float, float] = field(default_factory=dict)
    recall: dict[float, float] = field(default_factory=dict)
    f1: dict[float, float] = field(default_factory=dict)
    ap: dict[float, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (threshold keys as strings)."""
        return {
            "n_true": self.n_true, "n_pred": self.n_pred,
            "mean_matched_iou": self.mean_matched_iou, "foreground_iou": self.foreground_iou,
            **{
                name: {f"{t:.1f}": v for t, v in getattr(self, name).items()}
                for name in ("precision", "recall", "f1", "ap")
            },
        }  # fmt: skip


def _rates(tp: int, n_true: int, n_pred: int) -> tuple[float, float, float, float]:
    fp, fn = n_pred - tp, n_true - tp
    # empty ground truth and empty prediction is a perfect answer
    precision = tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0)
    recall = tp / n_true if n_true else (1.0 if n_pred == 0 else 0.0)
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    ap = tp / (tp + fp + fn) if (tp + fp + fn) else 1.0
    return precision, recall, f1, ap


#: an IoU matrix (true x predicted objects) and its optimal assignment (rows, columns)
Match = tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.intp]]


def match_objects(gt: NDArray[np.integer], pred: NDArray[np.integer]) -> Match:
    """The IoU of every true with every predicted object (ids in ascending order,
    background left out) and the one-to-one assignment that maximises total IoU."""
    iou = iou_matrix(gt, pred)
    if iou.shape[0] and iou.shape[1]:
        rows, cols = linear_sum_assignment(-iou)
    else:
        rows = cols = np.zeros(0, np.intp)
    return iou, np.asarray(rows, np.intp), np.asarray(cols, np.intp)


def score_image(
    gt: NDArray[np.integer],
    pred: NDArray[np.integer],
    thresholds: Sequence[float] = THRESHOLDS,
    match: Match | None = None,
) -> ImageScores:
    """Match predicted objects to ground truth (optimal assignment on IoU) and score.

    ``match``: :func:`match_objects` of the same pair, when the caller has it already."""
    iou, rows, cols = match if match is not None else match_objects(gt, pred)
    n_true, n_pred = iou.shape
    matched = iou[rows, cols]
    # with IoU > 0.5 matches are unique anyway; the assignment makes lower thresholds fair
    tp = {float(t): int((matched >= t).sum()) for t in thresholds}
    good = matched[matched >= 0.5]
    mean_iou = float(good.mean()) if good.size else 0.0
    fg_t, fg_p = gt > 0, pred > 0
    union = int((fg_t | fg_p).sum())
    fg_iou = float((fg_t & fg_p).sum() / union) if union else 1.0
    s = ImageScores(n_true, n_pred, tp, mean_iou, fg_iou)
    for t in tp:
        s.precision[t], s.recall[t], s.f1[t], s.ap[t] = _rates(tp[t], n_true, n_pred)
    return s


def bootstrap_ap(
    scores: Sequence[ImageScores], threshold: float = 0.5, n_boot: int = 2000, seed: int = 0
) -> NDArray[np.float64]:
    """Pooled AP of ``n_boot`` resamplings of the images (with replacement).

    Deterministic for a given ``seed``; sets of the same size resampled with the
    same seed can be averaged sample by sample (the interval of a mean over sets).
    """
    if not scores:
        raise ValueError("no images to resample")
    tp = np.array([s.tp[threshold] for s in scores], np.int64)
    n_true = np.array([s.n_true for s in scores], np.int64)
    n_pred = np.array([s.n_pred for s in scores], np.int64)
    idx = np.random.default_rng(seed).integers(0, len(scores), (n_boot, len(scores)))
    tp_b, true_b, pred_b = tp[idx].sum(1), n_true[idx].sum(1), n_pred[idx].sum(1)
    denom = true_b + pred_b - tp_b  # TP + FP + FN
    return np.where(denom > 0, tp_b / np.maximum(denom, 1), 1.0)


def pooled_ap(scores: Sequence[ImageScores], threshold: float = 0.5) -> float:
    """AP at one IoU threshold with counts pooled over the images."""
    tp = sum(s.tp[threshold] for s in scores)
    return _rates(tp, sum(s.n_true for s in scores), sum(s.n_pred for s in scores))[3]


def aggregate(scores: Sequence[ImageScores]) -> dict[str, Any]:
    """Dataset-level scores: counts pooled over images (as in StarDist), plus image means.

    Returns a dict with ``precision``, ``recall``, ``f1``, ``ap`` (pooled, per
    threshold), ``ap_ci95`` (bootstrap 95 % interval of the pooled AP over
    images, per threshold), ``ap_image_mean`` (mean of per-image AP),
    ``mean_matched_iou``, ``foreground_iou`` and the object counts.
    """
    if not scores:
        raise ValueError("no images to aggregate")
    n_true = sum(s.n_true for s in scores)
    n_pred = sum(s.n_pred for s in scores)
    out: dict[str, Any] = {"n_images": len(scores), "n_true": n_true, "n_pred": n_pred}
    thresholds = list(scores[0].tp)
    for name in ("precision", "recall", "f1", "ap"):
        out[name] = {}
    out["ap_image_mean"] = {}
    out["ap_ci95"] = {}
    for t in thresholds:
        tp = sum(s.tp[t] for s in scores)
        p, r, f1, ap = _rates(tp, n_true, n_pred)
        key = f"{t:.1f}"
        out["precision"][key], out["recall"][key], out["f1"][key], out["ap"][key] = p, r, f1, ap
        out["ap_image_mean"][key] = float(np.mean([s.ap[t] for s in scores]))
        lo, hi = np.percentile(bootstrap_ap(scores, t, n_boot=1000), (2.5, 97.5))
        out["ap_ci95"][key] = [float(lo), float(hi)]
    ious = [s.mean_matched_iou for s in scores if s.n_true]
    out["mean_matched_iou"] = float(np.mean(ious)) if ious else 0.0
    out["foreground_iou"] = float(np.mean([s.foreground_iou for s in scores]))
    return out
