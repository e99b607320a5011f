"""The loop's own figures: does analysis stall acquisition, and how fast are decisions?

Runs the same short ``mitosis_burst`` plan twice in one process, side by side:
with analysis and decisions off (a fixed plan), then with them on. Reported:
the acquisition's frame rate in each (their ratio is the cost of analysis on
acquisition; ~1 means it never waits), frame-to-decision latency, analysis
time per frame and frames the analysis had to drop.
"""

from __future__ import annotations

import platform
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["run"]

PROTOCOL = Path(__file__).resolve().parents[3] / "protocols" / "mitosis_burst.yaml"


def run(quick: bool = False, device: str = "auto") -> dict[str, Any]:
    """Run the loop benchmark; ``device`` is the torch device for the segmenter."""
    from ..acquisition import run_protocol
    from ..models.protocol import load_protocol

    if not PROTOCOL.is_file():
        raise FileNotFoundError(f"the loop benchmark needs {PROTOCOL} (run it from a checkout)")
    protocol = load_protocol(PROTOCOL)
    if device != "auto":
        protocol = protocol.model_copy(
            update={"analysis": protocol.analysis.model_copy(update={"device": device})}
        )
    duration_s = 3600.0 if quick else 3 * 3600.0
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, on in (("fixed plan, no analysis", False), ("adaptive, analysis on", True)):
            s = run_protocol(
                protocol,
                out_dir=Path(tmp) / name.split(",")[0].replace(" ", "_"),
                policies=on,
                analysis=on,
                duration_s=duration_s,
                fast_forward=False,
            )
            rows[name] = {
                "frames": s.frames_written,
                "wall_s": round(s.wall_s, 2),
                "frames_per_wall_s": round(s.frames_written / max(s.wall_s, 1e-9), 2),
                "analysed": s.frames_analysed,
                "analysis_dropped": s.analysis_dropped,
                "analysis_ms_median": s.analysis_ms_median,
                "latency_ms_median": s.latency_ms_median,
                "latency_ms_p95": s.latency_ms_p95,
                "decisions": s.decisions,
            }
    base, adaptive = rows["fixed plan, no analysis"], rows["adaptive, analysis on"]
    # frames per wall second would differ through bursts alone; compare time per frame
    per_frame = [r["wall_s"] / max(r["frames"], 1) for r in (base, adaptive)]
    print(f"{'run':<26} {'frames':>7} {'wall s':>7} {'ms/frame':>9} {'dropped':>8} "
          f"{'latency med/p95 ms':>19}")  # fmt: skip
    for name, r in rows.items():
        lat = f"{r['latency_ms_median'] or 0:.0f}/{r['latency_ms_p95'] or 0:.0f}"
        print(f"{name:<26} {r['frames']:>7} {r['wall_s']:>7.1f} "
              f"{1000 * r['wall_s'] / max(r['frames'], 1):>9.1f} {r['analysis_dropped']:>8} "
              f"{lat:>19}")  # fmt: skip
    print(
        "note: both runs follow the specimen clock, so wall time per frame mostly "
        "reflects the plan; a ratio near 1 means analysis did not hold acquisition back"
    )
    return {
        "benchmark": "loop",
        "protocol": str(PROTOCOL.name),
        "specimen_duration_s": duration_s,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "runs": rows,
        "wall_per_frame_ratio_adaptive_vs_fixed": round(per_frame[1] / per_frame[0], 3),
    }
