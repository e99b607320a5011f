"""How fast each segmenter turns frames into instance labels.

Frames per second and per-frame latency at 512x512 and 2048x2048, batch 1 and
batched, instance extraction and the host copy of the labels included. On a
GPU the device-resident path (frames already on the GPU, as from a camera
buffer mapped to the device) is timed too.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..analysis.segmenter import get_segmenter, segmenter_entries, select_device
from ..simulation.synthetic import TEST_SETS, make_sample

__all__ = ["run"]


def crowded_frames(size: int, n: int) -> np.ndarray:
    """``n`` crowded synthetic fields of ``size`` x ``size``, uint16 like a camera."""
    recipe, base = TEST_SETS["crowded"]
    imgs = []
    for i in range(n):
        s = make_sample(base + 77 + i, (size, size), recipe)
        imgs.append(s.image.astype(np.uint16))
    return np.stack(imgs)


def _time(fn: Any, repeats: int, sync: Any = None) -> list[float]:
    out = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t0)
    return out


def run(
    quick: bool = False,
    device: str = "auto",
    weights: Sequence[str | Path] = (),
    tta: bool = False,
    nucleus_diameter_px: float | str | None = None,
    sizes: Sequence[int] = (512, 2048),
    segmenters: Sequence[str] = ("classical", "unet"),
) -> dict[str, Any]:
    """Time every built-in segmenter; print a table and return the figures.

    Each ``weights`` entry (``[SEGMENTER=]PATH``, a bare path being U-Net weights,
    e.g. a wider network from ``scopeloop train --channels``) adds that segmenter
    with that model, named ``<segmenter>:<path>``. With ``tta``, each U-Net is
    also timed with test-time flip averaging (``<name>+tta``). With
    ``nucleus_diameter_px``, each U-Net is also timed as it runs for nuclei of
    that size (``<name>@<d>px``): binned on the device when they are larger than
    it was trained on, as at 40x and 60x, so the two figures sit side by side
    (``"auto"``: measuring the nuclei in each call, ``<name>@auto``).
    """
    import torch

    dev = select_device(device)
    is_cuda = dev.startswith("cuda")
    sync = torch.cuda.synchronize if is_cuda else None
    results: list[dict[str, Any]] = []
    # batched: 8 frames at 512, 4 at 2048 on a GPU (2 on a CPU, where one takes seconds)
    frames = {s: crowded_frames(s, 8 if s <= 512 else (4 if is_cuda else 2)) for s in sizes}
    print(f"device: {dev}" + (f" ({torch.cuda.get_device_name()})" if is_cuda else ""))
    print(f"{'segmenter':>10} {'size':>5} {'batch':>5} {'path':>7} {'ms/call':>9} "
          f"{'ms/frame':>9} {'frames/s':>9}")  # fmt: skip
    entries = segmenter_entries(segmenters, weights, tta)
    d = nucleus_diameter_px
    if d is not None:
        entries += [
            (
                f"{label}@{d if isinstance(d, str) else f'{d:g}px'}",
                kind,
                {**opts, "nucleus_diameter_px": d},
            )
            for label, kind, opts in entries
            if kind == "unet"
        ]
    for name, kind, options in entries:
        try:
            seg = get_segmenter(kind, device=dev, **options)
        except FileNotFoundError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        for size in sizes:
            for batch in (1, len(frames[size])):
                if name == "classical" and size >= 2048 and batch > 1 and quick:
                    continue
                x = frames[size][:batch]
                # the classical pipeline runs on the host even in a GPU run: seconds per
                # 2048x2048 frame, so it gets the CPU repeat counts there too
                on_gpu = str(seg.device).startswith("cuda")
                cpu_slow = not on_gpu and (size >= 2048 or name == "classical")
                repeats = 2 if (quick or cpu_slow) else (20 if on_gpu else 5)
                seg.segment(x)  # warm-up (allocations, kernels, cudnn choice)
                paths: list[tuple[str, Any]] = [("host", lambda x=x, seg=seg: seg.segment(x))]
                if is_cuda and kind == "unet":
                    xt = torch.from_numpy(x.astype(np.int32)).to(dev)
                    seg_t = seg.segment_tensor  # type: ignore[attr-defined]
                    seg_t(xt)
                    paths.append(("device", lambda xt=xt, seg_t=seg_t: seg_t(xt)))
                for path, fn in paths:
                    t = statistics.median(_time(fn, repeats, sync))
                    rec = {
                        "segmenter": name, "device": seg.device, "size": size, "batch": batch,
                        "path": path, "ms_per_call": 1e3 * t, "ms_per_frame": 1e3 * t / batch,
                        "frames_per_s": batch / t, "repeats": repeats,
                        # the binning the frames were segmented at (with "auto": chosen)
                        "bin_factor": getattr(seg, "last_bin_factor", 1),
                    }  # fmt: skip
                    results.append(rec)
                    print(
                        f"{name:>10} {size:>5} {batch:>5} {path:>7} {rec['ms_per_call']:9.1f} "
                        f"{rec['ms_per_frame']:9.2f} {rec['frames_per_s']:9.2f}"
                    )
    return {
        "benchmark": "segmentation",
        "device": dev,
        "gpu": torch.cuda.get_device_name() if is_cuda else None,
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
        "nucleus_diameter_px": nucleus_diameter_px,
        "note": "ms per call includes instance extraction and the copy of labels to the host "
        "(path=host: numpy frames in, numpy labels out; path=device: frames already on the GPU)",
        "results": results,
    }
