"""Where a U-Net frame's time goes, stage by stage, with each speed-up timed side
by side against what it replaced (eager extraction steps, unfolded batch norms,
six flooding levels with convergence checked every eight steps, the network in
the default memory layout rather than channels-last, up blocks over
concatenated maps or split into two convolutions: whichever the device does not
use) and, on CUDA, against what is still to be decided: CUDA graphs (network
and propagation runs), cuDNN's benchmark mode, a compiled network.

    python benchmarks/unet_stages.py [--device cuda] [--shape 2048x1] [--repeats 10]
        [--out bench_results/unet_stages.json]

Prints one line per frame shape and, on CUDA, the kernels that take the most
device time; writes the figures as JSON. Times are medians of 10 calls (--repeats),
in ms; the variants are called in turn within each repeat.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scopeloop.analysis.unet import UNetSegmenter, extract_instances, load_unet, normalise_frames
from scopeloop.bench.segmentation import crowded_frames


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _interleaved_medians_ms(
    fns: dict[str, Callable[[], Any]], sync: Callable[[], None], n: int
) -> dict[str, float]:
    """Median ms of each function, called in turn within every repeat, so a busy
    moment of a shared machine falls on all of them rather than on one."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n):
        for name, fn in fns.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(1e3 * (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in times.items()}


def _median_ms(fn: Callable[[], Any], sync: Callable[[], None], n: int = 10) -> float:
    fn()
    sync()
    times = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def _time_stages(
    seg: UNetSegmenter,
    eager: UNetSegmenter,
    unfolded: Any,
    x: torch.Tensor,
    sync: Any,
    graphed: UNetSegmenter | None = None,
    compiled_net: Any = None,
    contiguous: UNetSegmenter | None = None,
    other_skips: UNetSegmenter | None = None,
    repeats: int = 10,
) -> dict[str, Any]:
    plain_in = normalise_frames(x).unsqueeze(1)
    net_in = plain_in
    if seg.channels_last:
        net_in = net_in.contiguous(memory_format=torch.channels_last)
    if seg.half:
        net_in = net_in.half()
    fg, centre = seg.predict_maps(x)
    kw = {
        "fg_threshold": float(seg.fg_threshold), "seed_threshold": float(seg.seed_threshold),
        "min_size_px": int(seg.min_size_px), "min_confidence": float(seg.min_confidence),
    }  # fmt: skip
    labels = seg.segment_tensor(x)
    rec: dict[str, Any] = {
        "objects": int(labels.amax()),
        "same_labels_as_eager": bool(torch.equal(labels, eager.segment_tensor(x))),
    }
    timed = {
        "segment": lambda: seg.segment_tensor(x),
        "segment_eager_extraction": lambda: eager.segment_tensor(x),
        "normalise": lambda: normalise_frames(x),
        "network": lambda: seg.model(net_in),
        "network_unfolded_bn": lambda: unfolded(net_in),
        "extraction": lambda: extract_instances(fg, centre, compiled=seg.compiled, **kw),
        "extraction_eager": lambda: extract_instances(fg, centre, **kw),
        "extraction_six_levels_checked_every_8": lambda: extract_instances(
            fg, centre, compiled=seg.compiled, levels=6, check_every=8, **kw
        ),
    }
    if graphed is not None:
        rec["same_labels_with_cuda_graphs"] = bool(torch.equal(labels, graphed.segment_tensor(x)))
        timed["segment_cuda_graphs"] = lambda: graphed.segment_tensor(x)
        timed["network_cuda_graph"] = lambda: graphed._forward(net_in)
        timed["extraction_cuda_graphs"] = lambda: extract_instances(
            fg, centre, compiled=seg.compiled, graphs=True, **kw
        )
    if contiguous is not None:  # the network in the default memory layout
        rec["same_labels_contiguous_network"] = bool(
            torch.equal(labels, contiguous.segment_tensor(x))
        )
        timed["segment_contiguous_network"] = lambda: contiguous.segment_tensor(x)
        plain = plain_in.half() if contiguous.half else plain_in
        timed["network_contiguous"] = lambda: contiguous.model(plain)
    if other_skips is not None:  # up blocks over concatenated maps, or split in two convolutions
        kind = "split" if other_skips.split_skips else "concatenated"
        rec[f"same_labels_{kind}_skips"] = bool(torch.equal(labels, other_skips.segment_tensor(x)))
        timed[f"segment_{kind}_skips"] = lambda: other_skips.segment_tensor(x)
        timed[f"network_{kind}_skips"] = lambda: other_skips.model(net_in)
    if compiled_net is not None:
        timed["network_compiled"] = lambda: compiled_net(net_in)
    with torch.inference_mode():
        for name, ms in _interleaved_medians_ms(timed, sync, repeats).items():
            rec[f"{name}_ms"] = ms
        if x.is_cuda:
            # cuDNN's own timing of its algorithms per shape, process-wide (first call pays)
            torch.backends.cudnn.benchmark = True
            rec["network_cudnn_benchmark_ms"] = _median_ms(lambda: seg.model(net_in), sync)
            torch.backends.cudnn.benchmark = False
    return rec


def run(device: str, shapes: list[tuple[int, int]], repeats: int = 10) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    seg = UNetSegmenter(device=device)
    seg.warm_up(shapes[0][0], shapes[0][0])
    sync()
    out: dict[str, Any] = {"device": device, "warm_up_s": time.perf_counter() - t0, "shapes": []}
    print(f"warm-up (compilation on CUDA): {out['warm_up_s']:.1f} s")
    eager = UNetSegmenter(device=device, compiled=False)
    unfolded, _ = load_unet()
    unfolded = unfolded.to(device)
    if seg.channels_last:
        unfolded = unfolded.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if seg.half:
        unfolded = unfolded.half()
    contiguous = UNetSegmenter(device=device, channels_last=False)
    other_skips = UNetSegmenter(device=device, split_skips=not seg.split_skips)
    graphed = UNetSegmenter(device=device, cuda_graphs=True) if cuda else None
    # compiled once per shape (dynamic=False), timed for single frames only
    compiled_net = torch.compile(seg.model, dynamic=False) if cuda else None
    for size, batch in shapes:
        x = torch.from_numpy(crowded_frames(size, batch).astype(np.int32)).to(device)
        extra = {
            "graphed": graphed, "compiled_net": compiled_net if batch == 1 else None,
            "contiguous": contiguous, "other_skips": other_skips, "repeats": repeats,
        }  # fmt: skip
        rec = {"size": size, "batch": batch, **_time_stages(seg, eager, unfolded, x, sync, **extra)}
        out["shapes"].append(rec)
        print(" ".join(f"{k}={_fmt(v)}" for k, v in rec.items()))
    if cuda:
        from torch.profiler import ProfilerActivity, profile

        size, batch = shapes[-1]
        x = torch.from_numpy(crowded_frames(size, batch).astype(np.int32)).to(device)
        seg.segment_tensor(x)
        sync()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            seg.segment_tensor(x)
            sync()
        print(f"kernels of one {size}x{size} batch of {batch}:")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("bench_results/unet_stages.json"))
    ap.add_argument("--repeats", type=int, default=10, help="calls timed per variant")
    ap.add_argument(
        "--shape", action="append", default=None, metavar="SIZExBATCH",
        help="frame size and batch, e.g. 2048x1 (repeatable; default by device)",
    )  # fmt: skip
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    shapes = [(512, 1), (512, 8), (2048, 4), (2048, 1)] if cuda else [(256, 1), (512, 1)]
    if args.shape:
        try:
            shapes = [(int(a), int(b)) for a, b in (v.lower().split("x") for v in args.shape)]
        except ValueError:
            ap.error(f"--shape takes SIZExBATCH, e.g. 2048x1, not {args.shape}")
    result = run(args.device, shapes, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"results written to {args.out}")
