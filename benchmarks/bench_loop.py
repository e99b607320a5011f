"""Loop benchmark: ``python benchmarks/bench_loop.py [--quick]`` (= ``scopeloop bench loop``)."""

import json
import sys
from pathlib import Path

from scopeloop.bench.loop import run

if __name__ == "__main__":
    result = run(quick="--quick" in sys.argv)
    out = Path("bench_results")
    out.mkdir(exist_ok=True)
    (out / "loop.json").write_text(json.dumps(result, indent=2))
