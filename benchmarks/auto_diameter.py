"""The U-Net measuring the nuclei itself (``nucleus_diameter_px="auto"``) against the
same network run on the frames as they are, side by side on the same images: AP@0.5
of each, the binning chosen per image, and the time per image of ``auto`` over the
plain call (each image timed through both in turn, so a busy moment of a shared
machine falls on both). Also ``auto`` held as a protocol's
``nucleus_diameter_um: auto`` holds it (``hold_after=3``, a fresh segmenter per set,
as if the set were one run's frames): its AP@0.5, time ratio, the binning held
and after how many images.

    python benchmarks/auto_diameter.py [--sets microscope,sparse,crowded,low_signal,defocused]
        [--n-images 12] [--large 22,66] [--folder DIR] [--upsample 3] [--device cpu]
        [--threads 2] [--out bench_results/auto_diameter.json]

``--large R0,R1`` adds a set of 512x512 synthetic images of the training recipe
with nucleus radii R0-R1 px instead (beyond the trained 4-22 px; 0 leaves it
out). ``--folder`` adds a user folder (``images/`` and ``labels/``, as for
``scopeloop evaluate --folder``); ``--upsample K`` also scores that folder with
its images and labels shown K times larger (each pixel a KxK block: its noise is
coarser than a camera's, and an empty field of such blocks is drawn full of
small objects at full resolution, so take it as a check of the measure on real
nuclei, not of a higher magnification).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scopeloop.analysis.metrics import pooled_ap, score_image
from scopeloop.analysis.unet import UNetSegmenter
from scopeloop.evaluation.seg_eval import load_sets
from scopeloop.simulation.render_cache import samples_cached
from scopeloop.simulation.synthetic import TRAIN_RECIPE

#: seeds of the --large set's images, clear of the test sets' and the training runs'
LARGE_SEED = 7_000_000

Pairs = list[tuple[np.ndarray, np.ndarray]]


def compare(
    plain: UNetSegmenter, auto: UNetSegmenter, held: UNetSegmenter, pairs: Pairs
) -> dict[str, Any]:
    """AP@0.5 as they are, with ``auto`` and with ``auto`` held, the binnings chosen
    and the time ratios."""
    scores: list[list[Any]] = [[], [], []]
    bins, times, held_at = Counter[int](), np.zeros(3), None
    for k, (img, lab) in enumerate(pairs):
        for j, seg in enumerate((plain, auto, held)):
            t0 = time.perf_counter()
            scores[j].append(score_image(lab, seg.segment(img)))
            times[j] += time.perf_counter() - t0
        bins[auto.last_bin_factor] += 1
        if held_at is None and held.held_diameter_px is not None:
            held_at = k + 1
    return {
        "n_images": len(pairs), "ap50": pooled_ap(scores[0]), "ap50_auto": pooled_ap(scores[1]),
        "bin_factors": dict(sorted(bins.items())), "time_ratio": float(times[1] / times[0]),
        "ap50_held": pooled_ap(scores[2]), "time_ratio_held": float(times[2] / times[0]),
        "held_after_images": held_at, "held_measure": held.last_measure,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="microscope,sparse,crowded,low_signal,defocused")
    p.add_argument("--n-images", type=int, default=12)
    p.add_argument("--large", default="22,66", help="radius range of the large set, px")
    p.add_argument("--folder", type=Path, default=None, help="also a user folder")
    p.add_argument("--upsample", type=int, default=0, help="also the folder K times larger")
    p.add_argument("--weights", default=None, help="U-Net weights (default: the shipped ones)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    names = [n for n in a.sets.split(",") if n]
    data = load_sets(names, a.n_images, workers=a.workers) if names else {}
    lo, hi = (float(x) for x in a.large.split(","))
    if hi > 0:
        recipe = replace(TRAIN_RECIPE, radius_px=(lo, hi))
        seeds = range(LARGE_SEED, LARGE_SEED + a.n_images)
        samples = samples_cached(seeds, (512, 512), a.workers, recipe)[0]
        data[f"radius {lo:g}-{hi:g} px"] = [(s.image, s.labels) for s in samples]
    if a.folder is not None:
        folder = load_sets([], a.n_images, a.folder)
        data.update(folder)
        k = np.ones((a.upsample, a.upsample), np.uint8)
        for name, pairs in folder.items() if a.upsample > 1 else ():
            up = [(np.kron(i, k).astype(i.dtype), np.kron(m, k).astype(m.dtype)) for i, m in pairs]
            data[f"{name} x{a.upsample}"] = up
    plain = UNetSegmenter(device=a.device, weights=a.weights)
    auto = UNetSegmenter(device=a.device, weights=a.weights, nucleus_diameter_px="auto")
    print(f"{'images':>24} {'n':>4} {'as they are':>12} {'auto':>7} {'time x':>7} "
          f"{'held':>6} {'time x':>7}  binning chosen; held")  # fmt: skip
    results = {}
    for name, pairs in data.items():
        held = UNetSegmenter(
            device=a.device, weights=a.weights, nucleus_diameter_px="auto", hold_after=3
        )
        r = results[name] = compare(plain, auto, held, pairs)
        chosen = ", ".join(
            f"{f}x{f}: {n}" if f > 1 else f"none: {n}" for f, n in r["bin_factors"].items()
        )
        f = r["held_measure"]["bin_factor"]
        how = f"{f}x{f}" if f > 1 else "none"
        kept = f"{how} after {r['held_after_images']}" if r["held_after_images"] else "not held"
        print(f"{name:>24} {r['n_images']:4d} {r['ap50']:12.3f} {r['ap50_auto']:7.3f} "
              f"{r['time_ratio']:7.2f} {r['ap50_held']:6.3f} {r['time_ratio_held']:7.2f}  "
              f"{chosen}; {kept}")  # fmt: skip
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"n_images": a.n_images, "device": plain.device, "weights": a.weights}
        a.out.write_text(json.dumps({**meta, "sets": results}, indent=1))


if __name__ == "__main__":
    main()
