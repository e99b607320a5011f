"""The loop's own figures: does analysis stall acquisition, and how fast are decisions?

Runs the same short ``mitosis_burst`` plan twice in one process, side by side:
with analysis and decisions off (a fixed plan), then with them on. Reported:
how late frames come against their plan in each (the same lateness with
analysis on means acquisition never waits for it), frame-to-decision latency,
analysis time per frame and frames the analysis had to drop.
"""

from __future__ import annotations

import json
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]

PROTOCOL = Path(__file__).resolve().parents[3] / "protocols" / "mitosis_burst.yaml"


def _lateness_wall_ms(run_dir: Path, time_scale: float) -> tuple[float, float]:
    """Median and p95 of (actual - planned) acquisition time, in wall milliseconds."""
    late = []
    for line in (run_dir / "frames.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("planned_s") is not None and rec.get("t_s") is not None:
            late.append((rec["t_s"] - rec["planned_s"]) / time_scale * 1000.0)
    if not late:
        return (float("nan"), float("nan"))
    return (round(float(np.median(late)), 1), round(float(np.percentile(late, 95)), 1))


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
    rows: dict[str, dict[str, Any]] = {}
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
            lateness = _lateness_wall_ms(Path(s.run_dir), protocol.simulation.time_scale)
            rows[name] = {
                "frame_lateness_wall_ms_median": lateness[0],
                "frame_lateness_wall_ms_p95": lateness[1],
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
    print(f"{'run':<26} {'frames':>7} {'late med/p95 ms':>16} {'dropped':>8} {'decision ms':>12}")
    for name, r in rows.items():
        late = f"{r['frame_lateness_wall_ms_median']:.0f}/{r['frame_lateness_wall_ms_p95']:.0f}"
        lat = f"{r['latency_ms_median'] or 0:.0f}/{r['latency_ms_p95'] or 0:.0f}"
        print(f"{name:<26} {r['frames']:>7} {late:>16} {r['analysis_dropped']:>8} {lat:>12}")
    print("late: wall ms from a frame's planned to its actual acquisition (median/p95);")
    print("decision ms: frame arrival to action in the schedule (median/p95)")
    return {
        "benchmark": "loop",
        "protocol": str(PROTOCOL.name),
        "specimen_duration_s": duration_s,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "runs": rows,
        "lateness_p95_ratio_adaptive_vs_fixed": round(
            adaptive["frame_lateness_wall_ms_p95"] / max(base["frame_lateness_wall_ms_p95"], 1e-3),
            2,
        ),
    }
