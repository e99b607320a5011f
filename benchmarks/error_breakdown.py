"""Where a segmenter's misses are on the synthetic test sets: which nuclei go
unmatched at IoU 0.5, by the image's nucleus radius and by the nucleus' kind
(interphase, prophase, metaphase, one half of an anaphase pair), and how they
fail, and AP@0.5 by nucleus radius. AP@0.5 says how many objects are lost;
this says which, so the next change to the generator, the loss or the
network can aim at them (and a change that trades large nuclei for small
ones shows).

    python benchmarks/error_breakdown.py [--weights unet.pt] [--n-images 100] [--seed 0]
        [--draws 1] [--device cpu] [--threads 2] [--workers 2]
        [--out bench_results/error_breakdown.json]

An unmatched true nucleus is "not found" when no predicted object reaches IoU
0.1 with it, "merged" when the predicted object that overlaps it most also
covers at least half of another true nucleus, and "outline" otherwise (found,
but drawn with IoU under 0.5: too large, too small or cut). Radius bins are
those of the image (every nucleus of a synthetic image is drawn from one
radius); the counts are pooled over the set's images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scopeloop.analysis.metrics import (
    ImageScores,
    Match,
    match_objects,
    pooled_ap,
    score_image,
)
from scopeloop.analysis.segmenter import get_segmenter
from scopeloop.simulation.render_cache import samples_cached
from scopeloop.simulation.synthetic import STAGES, TEST_SETS, test_set_seeds

#: radius bin edges in px: the training recipe's 4-22 px split where the errors change
RADIUS_BINS = (4.0, 6.0, 9.0, 13.0, 23.0)
FAILURES = ("not_found", "merged", "outline")


def classify_unmatched(gt: np.ndarray, pred: np.ndarray, match: Match) -> dict[int, str]:
    """``{true id: failure}`` for every true nucleus without a match at IoU 0.5
    (``match``: :func:`~scopeloop.analysis.metrics.match_objects` of the pair)."""
    g_ids = np.unique(gt)
    g_ids = g_ids[g_ids > 0]
    p_ids = np.unique(pred)
    p_ids = p_ids[p_ids > 0]
    iou, rows, cols = match
    matched = {int(r) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= 0.5}
    # share of each true nucleus a predicted object covers
    area = np.bincount(gt.ravel(), minlength=int(gt.max()) + 1)
    out: dict[int, str] = {}
    for r, gid in enumerate(g_ids):
        if r in matched:
            continue
        if not iou.size or iou[r].max() < 0.1:
            out[int(gid)] = "not_found"
            continue
        pid = p_ids[int(np.argmax(iou[r]))]
        covered = np.bincount(gt[pred == pid], minlength=len(area)) / np.maximum(area, 1)
        covered[[0, gid]] = 0.0
        out[int(gid)] = "merged" if covered.max() >= 0.5 else "outline"
    return out


def breakdown(
    seg: Any, set_name: str, n_images: int, seed: int, draws: int = 1, workers: int = 1
) -> tuple[dict[str, Any], list[list[ImageScores]]]:
    """The set's counts (JSON-ready) and its images' scores in each radius bin (the
    images of ``test_set``, read from the render cache, the rest drawn in ``workers``
    processes)."""
    samples = []
    for d in range(seed, seed + draws):
        recipe, seeds = test_set_seeds(set_name, n_images, draw=d)
        samples += samples_cached(seeds, (256, 256), workers, recipe)[0]
    n_bins = len(RADIUS_BINS) - 1
    true = np.zeros((n_bins, len(STAGES)), int)
    lost = np.zeros((n_bins, len(STAGES), len(FAILURES)), int)
    scores = []
    by_radius: list[list[ImageScores]] = [[] for _ in range(n_bins)]
    for s in samples:
        pred = seg.segment(s.image)
        match = match_objects(s.labels, pred)  # one IoU matrix and assignment per image
        scores.append(score_image(s.labels, pred, match=match))
        b = int(np.clip(np.digitize(s.params["radius_px"], RADIUS_BINS) - 1, 0, n_bins - 1))
        by_radius[b].append(scores[-1])
        for stage in s.stages.values():
            true[b, stage] += 1
        for k, why in classify_unmatched(s.labels, pred, match).items():
            lost[b, s.stages[k], FAILURES.index(why)] += 1
    result = {
        "ap50": pooled_ap(scores), "ap50_by_radius": ap_by_radius([by_radius]),
        "true": true.tolist(), "unmatched": lost.tolist(),
    }  # fmt: skip
    return result, by_radius


def ap_by_radius(sets: list[list[list[ImageScores]]]) -> list[float | None]:
    """AP@0.5 per radius bin, pooled over the images of every set given (each set's
    scores by bin, as :func:`breakdown` returns them); None where a bin has no image."""
    pooled = [[s for bins in sets for s in bins[b]] for b in range(len(RADIUS_BINS) - 1)]
    return [pooled_ap(b) if b else None for b in pooled]


def _by_radius_line(aps: list[float | None]) -> str:
    return ", ".join(
        f"{lo:.0f}-{hi:.0f} px {'-' if ap is None else f'{ap:.4f}'}"
        for (lo, hi), ap in zip(itertools.pairwise(RADIUS_BINS), aps, strict=True)
    )


def _pct(a: float, b: float) -> str:
    return f"{100 * a / b:5.1f}" if b else "    -"


def report(name: str, r: dict[str, Any]) -> None:
    true, lost = np.array(r["true"]), np.array(r["unmatched"])
    print(f"\n{name}: AP@0.5 {r['ap50']:.4f}, {true.sum()} true nuclei, {lost.sum()} unmatched")
    print(f"  AP@0.5 by radius: {_by_radius_line(r['ap50_by_radius'])}")
    head = "".join(f"{s:>16}" for s in STAGES)
    print("  radius px   nuclei  unmatched % | by kind: unmatched % (nuclei)")
    print(f"  {'':32}|{head}")
    for b in range(len(true)):
        lo, hi = RADIUS_BINS[b], RADIUS_BINS[b + 1]
        kinds = "".join(
            f"{_pct(lost[b, k].sum(), true[b, k])} ({true[b, k]:5d})".rjust(16)
            for k in range(len(STAGES))
        )
        share = _pct(lost[b].sum(), true[b].sum())
        print(f"  {lo:4.0f}-{hi:<4.0f} {true[b].sum():8d} {share:>12} |{kinds}")
    total = lost.sum(axis=(0, 1))
    print(
        "  unmatched by failure: "
        + ", ".join(f"{f} {n}" for f, n in zip(FAILURES, total, strict=True))
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="U-Net weights (default: the shipped ones)")
    p.add_argument("--tta", action="store_true", help="flip averaging")
    p.add_argument("--sets", default=",".join(TEST_SETS))
    p.add_argument("--n-images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="draw, as scopeloop evaluate --seed")
    p.add_argument("--draws", type=int, default=1, help="pool this many draws from --seed on")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="processes drawing the images not in the render cache (default: one per core)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="write the counts as JSON")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    seg = get_segmenter("unet", device=a.device, weights=a.weights, tta=a.tta)
    results, by_radius = {}, []
    for name in a.sets.split(","):
        results[name], scores = breakdown(seg, name, a.n_images, a.seed, a.draws, a.workers)
        by_radius.append(scores)
        report(name, results[name])
    if len(results) > 1:
        print(f"\nall sets, AP@0.5 by radius: {_by_radius_line(ap_by_radius(by_radius))}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "weights": a.weights, "tta": a.tta, "n_images": a.n_images, "seed": a.seed,
            "draws": a.draws,
        }  # fmt: skip
        body = {"radius_bins_px": RADIUS_BINS, "kinds": STAGES, "failures": FAILURES}
        a.out.write_text(json.dumps({**meta, **body, "sets": results}, indent=1))


if __name__ == "__main__":
    main()
