"""Mitosis onset: the stage CNN against the hand rule on a simulated time-lapse.

    python benchmarks/eval_stage_onset.py [--hours 8] [--interval-s 300] [--k-frames 3]
        [--weights stage_classifier.pt]

prints onset recall (within k frames of prophase start), call precision and
median delay for each caller, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scopeloop.analysis.classifier import StageClassifier
from scopeloop.evaluation.stage_onset import onset_scores

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--hours", type=float, default=8.0)
    ap.add_argument("--interval-s", type=float, default=300.0)
    ap.add_argument("--k-frames", type=int, default=3)
    ap.add_argument("--min-probability", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", type=Path, default=None, help="classifier (default: shipped)")
    ap.add_argument("--out", type=Path, default=Path("bench_results/stage_onset.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    r = onset_scores(
        hours=args.hours, interval_s=args.interval_s, k_frames=args.k_frames,
        seed=args.seed, min_probability=args.min_probability,
        classifier=StageClassifier(args.weights, device="cpu"),
    )  # fmt: skip
    print(f"{r['mitoses']} mitoses in {r['frames']} frames (every {r['interval_s']:.0f} s)")
    head = ("caller", "onset recall", "call precision", "false calls", "delay")
    print("{:>10} {:>13} {:>15} {:>12} {:>6}".format(*head))
    for name, v in r.items():
        if isinstance(v, dict):
            print(
                f"{name:>10} {v['onset_recall']:13.2f} {v['call_precision']:15.2f} "
                f"{v['false_calls']:12d} {v['median_delay_frames']!s:>6}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1))
