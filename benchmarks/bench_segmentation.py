"""Segmentation speed: `python benchmarks/bench_segmentation.py [--quick] [--device cuda]`.

Same as `scopeloop bench segmentation`; prints the table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scopeloop.bench.segmentation import run

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=Path("bench_results/segmentation.json"))
    args = ap.parse_args()
    result = run(quick=args.quick, device=args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"results written to {args.out}")
