"""Simulated-camera rendering speed: ``python benchmarks/bench_rendering.py [--quick]``.

Same as ``scopeloop bench rendering``; writes bench_results/rendering.json.
"""

import json
import sys
from pathlib import Path

from scopeloop.bench.rendering import run

if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    out = Path("bench_results")
    out.mkdir(exist_ok=True)
    (out / "rendering.json").write_text(json.dumps(result, indent=2))
