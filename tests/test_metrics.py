"""Instance-segmentation metrics: matching and rates on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from scopeloop.analysis.metrics import (
    aggregate,
    bootstrap_ap,
    iou_matrix,
    pooled_ap,
    score_image,
)


def _squares(
    spec: list[tuple[int, int, int, int]], shape: tuple[int, int] = (40, 40)
) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    for i, (y, x, h, w) in enumerate(spec, start=1):
        lab[y : y + h, x : x + w] = i
    return lab


def test_perfect_prediction_with_other_ids_scores_one() -> None:
    gt = _squares([(0, 0, 10, 10), (20, 20, 10, 10)])
    pred = np.where(gt == 1, 7, np.where(gt == 2, 3, 0))
    s = score_image(gt, pred)
    assert s.ap[0.5] == s.ap[0.9] == 1.0
    assert s.f1[0.5] == 1.0 and s.mean_matched_iou == 1.0 and s.foreground_iou == 1.0


def test_partial_overlap_iou_and_thresholds() -> None:
    gt = _squares([(0, 0, 10, 10)])
    pred = _squares([(0, 0, 10, 7)])  # IoU 0.7
    assert iou_matrix(gt, pred)[0, 0] == pytest.approx(0.7)
    s = score_image(gt, pred)
    assert s.tp[0.5] == 1 and s.tp[0.7] == 1 and s.tp[0.8] == 0
    assert s.ap[0.8] == 0.0  # one FP and one FN: 0 / 2


def test_false_positive_and_missed_object_count_in_ap() -> None:
    gt = _squares([(0, 0, 10, 10), (20, 20, 10, 10)])
    pred = _squares([(0, 0, 10, 10), (30, 0, 5, 5)])  # one hit, one spurious
    s = score_image(gt, pred)
    assert (s.precision[0.5], s.recall[0.5]) == (0.5, 0.5)
    assert s.ap[0.5] == pytest.approx(1 / 3)  # TP / (TP + FP + FN)


def test_merged_prediction_matches_at_most_one_object() -> None:
    gt = _squares([(0, 0, 10, 10), (0, 10, 10, 10)])
    pred = _squares([(0, 0, 12, 20)])  # two touching nuclei merged into one (IoU 100/240)
    s = score_image(gt, pred)
    assert s.tp[0.5] == 0 and s.n_pred == 1 and s.n_true == 2


def test_empty_images_and_pooled_aggregate() -> None:
    empty = np.zeros((10, 10), np.int32)
    s_empty = score_image(empty, empty)
    assert s_empty.ap[0.5] == 1.0
    gt = _squares([(0, 0, 10, 10), (20, 20, 10, 10)])
    s_half = score_image(gt, _squares([(0, 0, 10, 10)]))
    agg = aggregate([s_half, score_image(gt, gt)])
    assert agg["n_true"] == 4 and agg["n_pred"] == 3
    assert agg["ap"]["0.5"] == pytest.approx(3 / 4)
    assert agg["recall"]["0.5"] == pytest.approx(3 / 4) and agg["precision"]["0.5"] == 1.0
    with pytest.raises(ValueError, match="shape"):
        score_image(gt, gt[:5])


def test_pooled_ap_comes_with_an_interval_that_narrows_with_more_images() -> None:
    gt = _squares([(0, 0, 10, 10), (20, 20, 10, 10), (0, 25, 8, 8)])
    # images of varying quality: all found, one missed, two missed
    scores = [
        score_image(gt, gt),
        score_image(gt, _squares([(0, 0, 10, 10), (20, 20, 10, 10)])),
        score_image(gt, _squares([(0, 0, 10, 10)])),
    ]
    agg = aggregate(scores)
    lo, hi = agg["ap_ci95"]["0.5"]
    assert lo < agg["ap"]["0.5"] < hi  # 6/9 lies inside, and the images disagree
    assert pooled_ap(scores, 0.5) == agg["ap"]["0.5"] == 6 / 9
    assert lo >= 1 / 3 and hi <= 1.0  # no resample is worse than the worst image
    assert aggregate(scores)["ap_ci95"] == agg["ap_ci95"]  # deterministic
    lo4, hi4 = aggregate(scores * 4)["ap_ci95"]["0.5"]
    assert hi4 - lo4 < 0.7 * (hi - lo)  # four times the images, about half the width
    # all images perfect: nothing to be unsure of
    assert aggregate([scores[0]] * 5)["ap_ci95"]["0.5"] == [1.0, 1.0]
    assert bootstrap_ap(scores, 0.5, n_boot=50).shape == (50,)
