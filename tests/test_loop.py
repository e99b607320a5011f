"""The adaptive loop end to end on the simulated microscope (real core, real MDA runner)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
from pymmcore_plus import CMMCorePlus

from scopeloop.acquisition import RunController, RunState, run_protocol
from scopeloop.analysis.segmenter import get_segmenter
from scopeloop.models.protocol import Protocol, load_protocol
from scopeloop.storage import read_decisions, read_journal

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "protocols"


def _proto(name: str, **updates: Any) -> Protocol:
    p = load_protocol(PROTOCOLS / f"{name}.yaml")
    data = p.model_dump(mode="python")
    for path, value in updates.items():
        node = data
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return Protocol.model_validate(data)


def _ts(path: Path) -> np.ndarray:
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}
    return np.asarray(ts.open(spec).result().read().result())


def _check_readable(run_dir: Path) -> list[dict[str, Any]]:
    """Every journaled frame is in the OME-Zarr (external reader) and is not blank."""
    written = [j for j in read_journal(run_dir) if j["status"] == "written"]
    by_image: dict[str, list[dict[str, Any]]] = {}
    for j in written:
        by_image.setdefault(j["image"], []).append(j)
    for image, frames in by_image.items():
        arr = _ts(run_dir / "images" / f"{image}.ome.zarr" / "0")
        for j in frames:
            assert arr[j["t"], j["c"], j["z"]].max() > 0, (image, j)
    read_decisions(run_dir)  # parses
    return written


@pytest.mark.parametrize(
    ("name", "duration_s", "time_scale"),
    [
        ("mitosis_burst", 1800, 600),
        ("hit_reimage", 2400, 600),
        ("follow_cell", 1500, 1000),
        ("plate_triage", 3600, 300),
    ],
)
def test_shipped_protocol_runs_end_to_end(
    sim_core: CMMCorePlus, tmp_path: Path, name: str, duration_s: float, time_scale: float
) -> None:
    s = run_protocol(
        PROTOCOLS / f"{name}.yaml",
        sim_core,
        tmp_path / "run",
        duration_s=duration_s,
        time_scale=time_scale,
    )
    assert s.stop_reason == "duration reached", s
    assert s.error is None and s.analysis_errors == 0
    assert s.frames_written > 0 and s.frames_missing == 0
    written = _check_readable(tmp_path / "run")
    assert len(written) == s.frames_written
    # specimen time starts with the model loaded: the first frame is not late by the
    # seconds the segmenter took to load (at 1000x, a second is 17 simulated minutes)
    protocol = json.loads((tmp_path / "run" / "run.json").read_text())["protocol"]
    interval_s = protocol["acquisition"]["interval_s"]
    assert min(f["t_s"] for f in written) < 0.25 * interval_s
    assert (tmp_path / "run" / "run.json").is_file()
    assert (tmp_path / "run" / "ground_truth.json").is_file()
    assert not sim_core.getShutterOpen()
    assert s.light_used_s <= (s.light_budget_s or np.inf)
    decisions = [d for d in read_decisions(tmp_path / "run") if d.get("accepted")]
    if name == "follow_cell":  # after each move, the position is imaged where it was moved
        moves = [d for d in decisions if d["action"]["type"] == "reposition"]
        assert moves
        for d in moves:
            # the first frame planned after the decision (an event already handed to the
            # runner when the decision came is taken where it was planned)
            nxt = [
                f for f in _frames_of(tmp_path / "run", d["position"]) if f["planned_s"] > d["t_s"]
            ][:1]
            for f in nxt:
                # the newest move made before the event was built: at least up to its
                # planned time, and up to its acquisition when the scheduler ran late
                made = [
                    m
                    for m in moves
                    if m["position"] == d["position"] and d["t_s"] <= m["t_s"] <= f["t_s"]
                ]
                n_before_plan = sum(m["t_s"] < f["planned_s"] for m in made)
                allowed = [m["action"] for m in made[n_before_plan - 1 :]]
                assert any(
                    (f["x_um"], f["y_um"]) == pytest.approx((a["x_um"], a["y_um"])) for a in allowed
                ), (f, allowed)
    if name == "plate_triage":  # a skipped well gets no more light
        skips = [d for d in decisions if d["action"]["type"] == "skip"]
        assert skips and s.skipped_positions == len(skips)
        for d in skips:
            assert not [
                f for f in _frames_of(tmp_path / "run", d["position"]) if f["t_s"] > d["t_s"]
            ]


def test_auto_nucleus_size_is_measured_then_held_and_logged(tmp_path: Path) -> None:
    # follow_cell at 40x: 11 um nuclei, 68 px across, over the U-Net's trained range;
    # told nothing of their size, it measures them and bins the run's frames 2x2
    import yaml
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    data = yaml.safe_load((PROTOCOLS / "follow_cell.yaml").read_text())
    data["analysis"]["nucleus_diameter_um"] = "auto"
    proto = tmp_path / "follow_auto.yaml"
    proto.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    # (at 300x, analysis on a slow CPU still sees most of the 18 frames)
    args = ["run", str(proto), "-q", "--out", str(run), "--duration", "1800"]
    res = CliRunner().invoke(app, [*args, "--time-scale", "300"])
    assert res.exit_code == 0, res.output
    notes = [d for d in read_decisions(run) if d["source"] == "analysis"]
    held = [d["nucleus_size"] for d in notes if d["nucleus_size"]["held"]]
    assert len(held) == 1, notes  # held once, then never measured again
    assert held[0]["bin_factor"] == 2 and held[0]["measures"] == 3
    # (G1 nuclei 11 um across, growing to 14 um by mitosis)
    assert 55 < held[0]["diameter_px"] < 100 and 9 < held[0]["diameter_um"] < 16
    assert notes[-1]["nucleus_size"] == held[0]  # nothing logged after the hold
    assert not [d for d in notes if "accepted" in d or "action" in d]  # notes, not decisions
    d_px, d_um = held[0]["diameter_px"], held[0]["diameter_um"]
    assert f"nuclei {d_px:.0f} px ({d_um:.1f} um): frames binned 2x2 (held)" in res.output


def _frames_of(run_dir: Path, position: str, kind: str = "timelapse") -> list[dict[str, Any]]:
    return [
        j
        for j in read_journal(run_dir)
        if j["status"] == "written" and j["image"] == f"{position}_{kind}"
    ]


def _busy_wells() -> Protocol:
    # four dense wells: mitoses early and often, and analysis keeps up in a short test
    dens = {"B2": 150.0, "B3": 150.0, "B4": 150.0, "B5": 150.0}
    return _proto(
        "mitosis_burst",
        **{
            "acquisition.wells": list(dens),
            "simulation.specimen": {"well_densities_per_mm2": dens},
        },
    )


def test_burst_decision_brings_frames_at_the_burst_interval(
    sim_core: CMMCorePlus, tmp_path: Path
) -> None:
    s = run_protocol(_busy_wells(), sim_core, tmp_path / "r", duration_s=4500, time_scale=500)
    bursts = [
        d
        for d in read_decisions(tmp_path / "r")
        if d.get("accepted") and (d.get("action") or {}).get("mode") == "burst"
    ]
    assert bursts, f"no burst in {s}"
    d = bursts[0]
    frames = _frames_of(tmp_path / "r", d["position"])
    after = [f for f in frames if f["planned_s"] is not None and f["t_s"] >= d["t_s"]]
    burst = [f for f in after if f["mode"] == "burst"]
    assert len(burst) >= 3
    gaps = np.diff([f["planned_s"] for f in burst])
    # the policy's burst_interval_s (a frame late under CPU load shifts one step)
    burst_interval = _busy_wells().policies[0].burst_interval_s  # type: ignore[union-attr]
    assert np.median(gaps) == pytest.approx(burst_interval), gaps
    assert (gaps < 450).all(), gaps
    before = [f for f in frames if f["t_s"] < d["t_s"]]
    assert np.median(np.diff([f["planned_s"] for f in before])) == pytest.approx(900.0)
    assert d["latency_ms"] > 0 and d["evidence"] and d["trigger"]["position"] == d["position"]


def test_reimage_moves_stage_objective_and_takes_the_zstack(
    sim_core: CMMCorePlus, tmp_path: Path
) -> None:
    dens = {"B2": 150.0, "B3": 150.0, "B4": 150.0, "B5": 150.0}
    proto = _proto(
        "hit_reimage",
        **{
            "acquisition.wells": list(dens),
            "simulation.specimen": {"well_densities_per_mm2": dens},
        },
    )
    run_protocol(proto, sim_core, tmp_path / "r", duration_s=3600, time_scale=600)
    hits = [
        d
        for d in read_decisions(tmp_path / "r")
        if d.get("accepted") and (d.get("action") or {}).get("type") == "reimage"
    ]
    assert hits
    a = hits[0]["action"]
    frames = _frames_of(tmp_path / "r", a["position"], "reimage")
    first = [f for f in frames if f["t"] == 0]
    assert len(first) == 2 * 5  # FITC + TRITC, 8 um in 2 um steps
    assert {f["objective"] for f in first} == {"40x"}
    assert {f["pixel_size_um"] for f in first} == {0.1625}
    assert sorted({f["z_um"] for f in first}) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert {f["channel"] for f in first} == {"FITC", "TRITC"}
    for f in first:  # measured stage position is the hit's
        assert abs(f["x_um"] - a["x_um"]) < 1 and abs(f["y_um"] - a["y_um"]) < 1
    arr = _ts(tmp_path / "r" / "images" / f"{a['position']}_reimage.ome.zarr" / "0")
    assert arr.shape[1:3] == (2, 5)
    # the screen resumes at 10x, at the well centre
    tl = _frames_of(tmp_path / "r", a["position"])
    later = [f for f in tl if f["t_s"] > first[-1]["t_s"]]
    assert all(f["objective"] == "10x" and f["z_um"] == 0.0 for f in later)


class SlowSegmenter:
    """The classical segmenter made slow, as a heavy model on a weak PC would be."""

    name = "slow"
    device = "cpu"

    def __init__(self, delay_s: float) -> None:
        self.inner = get_segmenter("classical")
        self.delay_s = delay_s

    def segment(self, frames: np.ndarray) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.segment(frames)


def test_slow_analysis_does_not_slow_acquisition(sim_core: CMMCorePlus, tmp_path: Path) -> None:
    proto = _proto("mitosis_burst", **{"acquisition.wells": ["B2", "B3", "B4", "B5"]})
    scale = 600.0
    s = run_protocol(
        proto,
        sim_core,
        tmp_path / "r",
        duration_s=5400,
        time_scale=scale,
        policies=False,  # a fixed plan: every frame's due time is known in advance
        segmenter=SlowSegmenter(1.0),
    )
    assert s.frames_written == 4 * 6  # every planned frame, in time
    assert s.analysis_dropped > 0  # analysis fell behind and said so
    assert s.frames_analysed + s.analysis_dropped <= s.frames_written
    frames = [j for j in read_journal(tmp_path / "r") if j["status"] == "written"]
    late = [f["t_s"] - f["planned_s"] for f in frames]
    # 1 s of analysis per frame is 600 s of specimen time: waiting for it, the 24
    # frames would fall further behind each cycle; instead lateness stays bounded
    # by acquisition itself (a few frames' rendering)
    assert max(late) < 400, late
    assert s.wall_s < 5400 / scale + 24 * 1.0 / 2, s.wall_s


def test_out_of_limits_decision_is_refused_and_logged(
    sim_core: CMMCorePlus, tmp_path: Path
) -> None:
    proto = _busy_wells().model_copy(
        update={"limits": _busy_wells().limits.model_copy(update={"max_concurrent_bursts": 0})}
    )
    s = run_protocol(proto, sim_core, tmp_path / "r", duration_s=4500, time_scale=500)
    refused = [d for d in read_decisions(tmp_path / "r") if d.get("accepted") is False]
    assert refused and s.refused == len(refused)
    reasons = [d["reason"] for d in refused]
    # (a decision that arrives after the last frame is refused because the run is ending)
    assert all("max_concurrent_bursts" in r or "run is ending" in r for r in reasons), reasons
    assert any("max_concurrent_bursts" in r for r in reasons)
    assert {f["mode"] for f in read_journal(tmp_path / "r") if f["status"] == "written"} == {
        "baseline"
    }


def test_light_budget_is_never_exceeded(sim_core: CMMCorePlus, tmp_path: Path) -> None:
    proto = _proto("mitosis_burst", **{"limits.light_budget_s": 0.5})
    s = run_protocol(proto, sim_core, tmp_path / "r", duration_s=43200, time_scale=500)
    assert s.stop_reason == "light budget exhausted"
    frames = [j for j in read_journal(tmp_path / "r") if j["status"] == "written"]
    used = sum(f["exposure_ms"] for f in frames) / 1000
    assert used <= 0.5 and s.light_used_s <= 0.5
    assert len(frames) == 16  # 30 ms each


def test_cancelled_run_ends_safe_and_readable(sim_core: CMMCorePlus, tmp_path: Path) -> None:
    proto = _proto("mitosis_burst").with_overrides(time_scale=300)
    ctrl = RunController(proto, sim_core, tmp_path / "r")
    states: list[str] = []
    ctrl.signals.stateChanged.connect(states.append)

    def on_frame(info: Any) -> None:
        if ctrl.store is not None and ctrl.store.frames_written >= 12:
            threading.Thread(target=ctrl.cancel).start()

    ctrl.signals.frameStored.connect(on_frame)
    s = ctrl.run()
    assert s.stop_reason == "cancelled"
    assert ctrl.state is RunState.DONE and states[0] == "running" and states[-1] == "done"
    assert "cancelling" in states
    assert not sim_core.getShutterOpen() and not sim_core.mda.is_running()
    written = _check_readable(tmp_path / "r")
    assert 12 <= len(written) == s.frames_written


_RUN = """
import sys
from scopeloop.acquisition import run_protocol
run_protocol(sys.argv[1], out_dir=sys.argv[2], time_scale=300)
"""


def test_killed_run_is_readable_up_to_its_last_frame(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN, str(PROTOCOLS / "mitosis_burst.yaml"), str(run_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    journal = run_dir / "frames.jsonl"
    while time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count('"written"') >= 15:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    written = _check_readable(run_dir)
    assert len(written) >= 15


def _four_wells() -> Protocol:
    return _proto("mitosis_burst", **{"acquisition.wells": ["B2", "B3", "B4", "B5"]})


def _fixed_plan_controller(core: CMMCorePlus, run_dir: Path) -> RunController:
    # four wells, three time points each, no decisions: frame counts are exact
    return RunController(
        _four_wells().with_overrides(policies=False, duration_s=2700, time_scale=600),
        core,
        run_dir,
    )


def _arm_fault_after_first_frame(
    ctrl: RunController, core: CMMCorePlus, device: str, prop: str, value: int
) -> None:
    """Set a simulated device's fault knob once the first frame is stored."""
    armed: list[bool] = []

    def on_frame(info: Any) -> None:
        if not armed:
            armed.append(True)
            core.setProperty(device, prop, value)

    ctrl.signals.frameStored.connect(on_frame)


def test_camera_fault_is_journaled_as_a_gap_and_the_run_goes_on(
    sim_core: CMMCorePlus, tmp_path: Path
) -> None:
    ctrl = _fixed_plan_controller(sim_core, tmp_path / "r")
    # the 2nd snap from now fails, as a flaky camera would
    _arm_fault_after_first_frame(ctrl, sim_core, "Camera", "FaultOnSnap", 2)
    s = ctrl.run()
    assert s.stop_reason == "duration reached"
    assert s.frames_missing == 1 and s.frames_written == 4 * 3 - 1
    gaps = [j for j in read_journal(tmp_path / "r") if j["status"] == "missing"]
    # snaps after arming: B3 (1st), B4 (2nd, fails)
    assert len(gaps) == 1 and gaps[0]["image"] == "B4_timelapse" and gaps[0]["t"] == 0
    arr = _ts(tmp_path / "r" / "images" / "B4_timelapse.ome.zarr" / "0")
    assert arr.shape[0] == 3  # the time point exists; the journal says frame 0 is a gap
    _check_readable(tmp_path / "r")


def test_frames_from_a_stalled_stage_are_flagged_and_not_analysed(
    sim_core: CMMCorePlus, tmp_path: Path
) -> None:
    ctrl = _fixed_plan_controller(sim_core, tmp_path / "r")
    # the stage silently stops moving (stays at B2)
    _arm_fault_after_first_frame(ctrl, sim_core, "XYStage", "FaultDropMoves", 1)
    s = ctrl.run()
    frames = [j for j in read_journal(tmp_path / "r") if j["status"] == "written"]
    flagged = [f for f in frames if f.get("misplaced")]
    # every frame planned away from B2 was taken at B2: flagged, never analysed as B3..B5
    assert {f["position"] for f in flagged} == {"B3", "B4", "B5"}
    assert len(flagged) == 9 and s.frames_misplaced == 9
    assert s.frames_analysed <= 3


def test_pause_holds_acquisition_and_resume_continues(
    sim_core: CMMCorePlus, tmp_path: Path
) -> None:
    ctrl = _fixed_plan_controller(sim_core, tmp_path / "r")
    states: list[str] = []
    ctrl.signals.stateChanged.connect(states.append)

    def pause_then_resume() -> None:
        ctrl.set_paused(True)
        time.sleep(0.5)
        ctrl.set_paused(False)

    def on_frame(info: Any) -> None:
        if ctrl.store is not None and ctrl.store.frames_written == 2:
            threading.Thread(target=pause_then_resume).start()

    ctrl.signals.frameStored.connect(on_frame)
    s = ctrl.run()
    assert "paused" in states and states[-1] == "done"
    assert s.frames_written == 12 and s.stop_reason == "duration reached"


def test_ctrl_c_on_scopeloop_run_stops_cleanly(tmp_path: Path) -> None:
    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "scopeloop"),
            "run",
            str(PROTOCOLS / "mitosis_burst.yaml"),
            "--out",
            str(run_dir),
            "--time-scale",
            "300",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    journal = run_dir / "frames.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count('"written"') >= 10:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130, err
    assert "interrupted (Ctrl-C)" in err
    written = _check_readable(run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["summary"]["stop_reason"] == "interrupted (Ctrl-C)"
    assert info["summary"]["frames_written"] == len(written) >= 10
