"""Scoring segmenters against exact labels: generated test sets and user folders.

Sits above analysis and simulation (it needs both: segmenters from one,
ground truth from the other). Metrics are those of
:mod:`scopeloop.analysis.metrics` (IoU matching by optimal assignment;
precision, recall, F1 and AP = TP / (TP + FP + FN) at IoU 0.5..0.9).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scopeloop.analysis.metrics import THRESHOLDS, aggregate, bootstrap_ap, score_image
from scopeloop.analysis.segmenter import get_segmenter, segmenter_entries

__all__ = ["evaluate_segmenters", "evaluate_segmenters_cli", "load_sets"]

Pair = tuple[NDArray[Any], NDArray[np.integer]]


def load_sets(
    sets: Sequence[str],
    n_images: int,
    data_dir: Path | None = None,
    size: int = 256,
    seed: int = 0,
    draws: int = 1,
    workers: int = 1,
) -> dict[str, list[Pair]]:
    """Named generated test sets (fixed seeds) and, when given, a user folder.

    Names are the synthetic difficulty sets (``sparse``, ``crowded``, ...) and
    the simulated microscope's per-objective sets (``microscope_10x``, ...;
    ``microscope`` for all of them). ``size`` is the synthetic sets' frame size;
    the microscope sets have their own. ``seed`` shifts each set's fixed seeds by
    ``DRAW_STRIDE * seed``: 0 gives the published sets, others independent draws
    of the same difficulty. ``draws`` > 1 pools ``n_images`` from each of the
    draws ``seed, seed + 1, ...`` into each set (a larger sample, in the same
    images for every segmenter and every run). ``workers`` processes render the
    images not in the render cache (the same images whatever the number).
    """
    from scopeloop.simulation.microscope_set import (
        ALL_MICROSCOPE,
        MICROSCOPE_SETS,
        expand_set_names,
        microscope_samples,
    )
    from scopeloop.simulation.render_cache import render_pairs_cached
    from scopeloop.simulation.synthetic import TEST_SETS, test_set_seeds

    out: dict[str, list[Pair]] = {}
    for name in expand_set_names(list(sets)):
        if name not in TEST_SETS and name not in MICROSCOPE_SETS:
            known = [*TEST_SETS, ALL_MICROSCOPE, *MICROSCOPE_SETS]
            raise ValueError(f"unknown test set {name!r}; choose from {', '.join(known)}")
        out[name] = []
        for draw in range(seed, seed + draws):
            if name in TEST_SETS:  # the test_set images, read from the render cache if there
                recipe, seeds = test_set_seeds(name, n_images, draw=draw)
                out[name] += render_pairs_cached(seeds, (size, size), workers, recipe)[0]
            else:
                out[name] += [
                    (s.image, s.labels)
                    for s in microscope_samples(name, n_images, draw, workers=workers)
                ]
    if data_dir is not None:
        from scopeloop.analysis.training import load_folder

        out[Path(data_dir).name or "folder"] = load_folder(data_dir)
    return out


def evaluate_segmenters(
    segmenters: Sequence[str],
    data: dict[str, list[Pair]],
    device: str = "auto",
    weights: Sequence[str | Path] = (),
    tta: bool = False,
    nucleus_diameter_px: float | str | None = None,
) -> dict[str, Any]:
    """Score each segmenter on each set; returns ``{segmenter: {set: scores}}``.

    Each set's entry holds the pooled scores (:func:`~scopeloop.analysis.metrics.aggregate`),
    the per-image scores and the segmentation time per image; each segmenter's
    entry also holds ``mean_ap50_over_sets`` and its bootstrap 95 % interval
    ``mean_ap50_ci95`` (images resampled within each set, sets independently).
    Each ``weights`` entry (``[SEGMENTER=]PATH``, a bare path being U-Net weights)
    adds that segmenter with that model, keyed ``<segmenter>:<path>``. With
    ``tta``, each U-Net is also scored with test-time flip averaging (``<name>+tta``).
    ``nucleus_diameter_px`` goes to each U-Net (see
    :class:`~scopeloop.analysis.unet.UNetSegmenter`).

    Every segmenter after the first also holds ``paired``: its mean AP@0.5 over
    sets minus the first one's, with a 95 % interval and the share of
    resamples in which it is ahead, from the same image resamples for both (a
    paired comparison: far narrower than the two intervals side by side, since
    both are scored on the same images).
    """
    results: dict[str, Any] = {}
    boot_means: dict[str, NDArray[np.float64]] = {}
    for name, kind, options in segmenter_entries(segmenters, weights, tta, nucleus_diameter_px):
        seg = get_segmenter(kind, device=device, **options)
        results[name] = {"device": seg.device}
        boot = []
        for i, (set_name, pairs) in enumerate(data.items()):
            per_image, measured = [], []
            t0 = time.perf_counter()
            for img, lab in pairs:
                per_image.append(score_image(lab, seg.segment(img)))
                if (m := getattr(seg, "last_measure", None)) is not None:  # measured, chose
                    measured.append(m)
            dt = (time.perf_counter() - t0) / max(len(pairs), 1)
            results[name][set_name] = {
                **aggregate(per_image),
                "s_per_image": dt,
                "per_image": [s.as_dict() for s in per_image],
            }
            if measured:
                entry = results[name][set_name]
                entry["diameter_px"] = [m["diameter_px"] for m in measured]
                entry["bin_factor"] = [m["bin_factor"] for m in measured]
            boot.append(bootstrap_ap(per_image, 0.5, n_boot=1000, seed=i))
        aps = [results[name][s]["ap"]["0.5"] for s in data]
        results[name]["mean_ap50_over_sets"] = float(np.mean(aps)) if aps else None
        if boot:
            boot_means[name] = np.mean(boot, axis=0)
            lo, hi = np.percentile(boot_means[name], (2.5, 97.5))
            results[name]["mean_ap50_ci95"] = [float(lo), float(hi)]
    if len(boot_means) > 1:
        first, *others = boot_means
        for name in others:
            diff = boot_means[name] - boot_means[first]
            lo, hi = np.percentile(diff, (2.5, 97.5))
            mean_diff = results[name]["mean_ap50_over_sets"] - results[first]["mean_ap50_over_sets"]
            results[name]["paired"] = {
                "reference": first, "mean_ap50_diff": float(mean_diff),
                "ci95": [float(lo), float(hi)], "share_ahead": float(np.mean(diff > 0)),
            }  # fmt: skip
    return results


def _hint_large_nuclei(console: Any, data: dict[str, list[Pair]]) -> None:
    """Say so when a set's masks hold larger nuclei than the U-Net was trained on."""
    from scopeloop.analysis.training import masks_nucleus_diameter_px
    from scopeloop.analysis.unet import trained_diameter_px

    top = trained_diameter_px({})  # the shipped training range
    for name, pairs in data.items():
        d = masks_nucleus_diameter_px(pairs)
        if d > top:
            console.print(
                f"hint: the nuclei of {name} are {d:.0f} px across (median of its masks), over "
                f"the {top:.0f} px the U-Net was trained on: give --nucleus-diameter {d:.0f} "
                "(or auto) to have it bin the frames"
            )


def evaluate_segmenters_cli(
    segmenters: list[str],
    sets: list[str] | None = None,
    data_dir: Path | None = None,
    n_images: int | None = None,
    device: str = "auto",
    json_out: Path | None = None,
    seed: int = 0,
    draws: int = 1,
    folder: Path | None = None,
    quick: bool = False,
    weights: Sequence[Path] = (),
    tta: bool = False,
    nucleus_diameter_px: float | str | None = None,
    workers: int = 1,
) -> int:
    """Score segmenters and print a table (what ``scopeloop evaluate --segmenter`` runs).

    Parameters
    ----------
    segmenters : list of str
        Registry names (``unet``, ``classical``, ...).
    sets : list of str
        Generated test sets (see :func:`load_sets`); empty/None = the four
        synthetic difficulty sets (none when only a folder is given).
    data_dir, folder : Path, optional
        A user folder with ``images/`` and ``labels/`` TIFFs (either name).
    n_images : int, optional
        Images per generated set (default 24, 6 with ``quick``).
    seed : int
        Offset added to each set's fixed seeds (0 = the published sets).
    draws : int
        Pool ``n_images`` from each of this many draws (``seed, seed + 1, ...``) per set.
    workers : int
        Processes rendering the generated images not in the render cache.
    json_out : Path, optional
        Also write all scores (per image included) here.
    weights : paths
        Trained models as ``[SEGMENTER=]PATH`` (U-Net weights from ``scopeloop
        train --data`` when bare), each scored as one more segmenter beside
        ``segmenters``.
    tta : bool
        Also score each U-Net with test-time flip averaging, side by side.
    nucleus_diameter_px : float or "auto", optional
        Typical nucleus diameter, for U-Nets (larger nuclei than trained on: binned;
        ``"auto"``: measured in each image).

    Returns
    -------
    int
        Exit code (0).
    """
    from rich.console import Console
    from rich.table import Table

    from scopeloop.simulation.synthetic import TEST_SETS

    user_dir = data_dir if data_dir is not None else folder
    names = list(sets) if sets else ([] if user_dir is not None else list(TEST_SETS))
    n = n_images if n_images is not None else (6 if quick else 24)
    data = load_sets(names, n, user_dir, seed=seed, draws=draws, workers=workers)
    console = Console()
    if not console.is_terminal:  # piped to a file: do not squeeze the table to 80 columns
        console = Console(width=180)
    results = evaluate_segmenters(segmenters, data, device, weights, tta, nucleus_diameter_px)
    table = Table(title="Segmentation scores (pooled over images; AP = TP/(TP+FP+FN))")
    for col in ("segmenter", "set", "images", "objects"):
        table.add_column(col)
    for t in THRESHOLDS:
        table.add_column(f"AP@{t:.1f}", justify="right")
    table.add_column("AP@0.5 95% CI", justify="right", no_wrap=True, min_width=11)
    for col in ("F1@0.5", "P@0.5", "R@0.5", "mean IoU", "s/image"):
        table.add_column(col, justify="right")

    def interval(lo_hi: list[float], n_images: int) -> str:
        # one image has nothing to resample: its "interval" would have zero width
        return "- (one image)" if n_images < 2 else f"{lo_hi[0]:.3f}-{lo_hi[1]:.3f}"

    # when every set has one image, the mean over sets has nothing to resample either
    single = max(len(p) for p in data.values()) < 2

    for seg_name in results:
        for set_name in data:
            r = results[seg_name][set_name]
            table.add_row(
                seg_name, set_name, str(r["n_images"]), str(r["n_true"]),
                *(f"{r['ap'][f'{t:.1f}']:.3f}" for t in THRESHOLDS),
                interval(r["ap_ci95"]["0.5"], r["n_images"]),
                f"{r['f1']['0.5']:.3f}", f"{r['precision']['0.5']:.3f}",
                f"{r['recall']['0.5']:.3f}", f"{r['mean_matched_iou']:.3f}",
                f"{r['s_per_image']:.3f}",
            )  # fmt: skip
        if len(data) > 1:
            mean, ci = results[seg_name]["mean_ap50_over_sets"], results[seg_name]["mean_ap50_ci95"]
            table.add_row(
                seg_name, "[b]mean over sets[/b]", "", "", f"[b]{mean:.3f}[/b]", "", "", "", "",
                interval(ci, 1 if single else 2),
            )  # fmt: skip
    console.print(table)
    for seg_name in results:
        for set_name in data:
            if "bin_factor" in (r := results[seg_name][set_name]):
                counts = Counter(r["bin_factor"])
                binned = ", ".join(
                    f"{f}x{f} in {counts[f]}" if f > 1 else f"as they are in {counts[f]}"
                    for f in sorted(counts)
                )  # fmt: skip
                found = [d for d in r["diameter_px"] if d is not None]
                median = f"median {np.median(found):.0f} px" if found else "none found"
                console.print(
                    f"{seg_name} on {set_name}: nucleus diameter measured per image "
                    f"({median}); images segmented {binned}"
                )
    if nucleus_diameter_px is None and any(k == "unet" for _, k, _ in segmenter_entries(
        segmenters, weights)):  # fmt: skip
        _hint_large_nuclei(console, data)
    paired = [(k, v["paired"]) for k, v in results.items() if "paired" in v]
    if paired:
        cmp = Table(
            title=f"Against {paired[0][1]['reference']}, on the same images "
            "(paired bootstrap of the mean AP@0.5 over sets)"
        )
        for col in ("segmenter", "difference", "95% CI", "ahead in"):
            cmp.add_column(col, justify="right")
        for k, v in paired:
            lo, hi = v["ci95"]
            cmp.add_row(
                k, f"{v['mean_ap50_diff']:+.4f}",
                "- (one image)" if single else f"{lo:+.4f} to {hi:+.4f}",
                "-" if single else f"{100 * v['share_ahead']:.0f}% of resamples",
            )  # fmt: skip
        console.print(cmp)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "n_images": n, "seed": seed, "draws": draws, "device": device,
            "nucleus_diameter_px": nucleus_diameter_px, "results": results,
        }  # fmt: skip
        json_out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        console.print(f"scores written to {json_out}")
    return 0
