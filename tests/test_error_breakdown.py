"""benchmarks/error_breakdown.py sorts each unmatched true nucleus by how it failed."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np

from scopeloop.analysis.metrics import match_objects

_PATH = Path(__file__).parents[1] / "benchmarks" / "error_breakdown.py"
_spec = importlib.util.spec_from_file_location("error_breakdown", _PATH)
assert _spec is not None and _spec.loader is not None
error_breakdown = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(error_breakdown)


def test_unmatched_nuclei_are_told_apart_as_not_found_merged_or_outline() -> None:
    gt = np.zeros((40, 40), np.int32)
    pred = np.zeros_like(gt)
    gt[2:8, 2:8] = 1  # found well: matched, not listed
    pred[2:8, 2:8] = 1
    gt[12:16, 2:6] = 2  # a touching pair drawn as one object: both merged
    gt[12:16, 7:11] = 3
    pred[12:16, 2:11] = 2  # the gap between them too: IoU 16/36 each
    gt[22:24, 22:24] = 4  # a 4-px nucleus drawn as a 36-px blob: IoU 0.11, outline
    pred[20:26, 20:26] = 3
    gt[32:36, 32:36] = 5  # nothing drawn there: not found
    assert error_breakdown.classify_unmatched(gt, pred, match_objects(gt, pred)) == {
        2: "merged",
        3: "merged",
        4: "outline",
        5: "not_found",
    }
    nothing = dict.fromkeys((1, 2, 3, 4, 5), "not_found")
    empty = np.zeros_like(gt)
    assert error_breakdown.classify_unmatched(gt, empty, match_objects(gt, empty)) == nothing


def test_ap_by_radius_pools_each_image_into_its_nuclei_radius_bin() -> None:
    from scopeloop.simulation.synthetic import test_set

    samples = test_set("sparse", 8)
    radii = [s.params["radius_px"] for s in samples]
    assert min(radii) < 9 < max(radii)  # both halves of the bins are exercised

    class SmallOnly:
        """Finds every nucleus of images drawn under 9 px radius, none of the others."""

        def segment(self, image: np.ndarray) -> np.ndarray:
            s = next(s for s in samples if s.image is image or np.array_equal(s.image, image))
            return s.labels if s.params["radius_px"] < 9 else np.zeros_like(s.labels)

    r, scores = error_breakdown.breakdown(SmallOnly(), "sparse", 8, seed=0)
    bins = error_breakdown.RADIUS_BINS
    for (lo, hi), ap in zip(itertools.pairwise(bins), r["ap50_by_radius"], strict=True):
        held = [x for x in radii if lo <= x < hi]
        if not held:
            assert ap is None
        else:
            assert ap == (1.0 if hi <= 9 else 0.0), (lo, hi, ap)
    # pooled over sets: the same set twice gives the same per-bin AP
    both = error_breakdown.ap_by_radius([scores, scores])
    assert both == r["ap50_by_radius"]
