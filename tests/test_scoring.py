"""Scoring a run's frames against ground truth: catches, false triggers, light."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scopeloop.evaluation.run_scoring import FrameRow, load_run_frames, score_frames

PX = 0.65
SHAPE = (512, 512)  # a 333 um field


def _frames(pos: str, x: float, times: list[float], mode: str = "baseline") -> list[FrameRow]:
    return [
        FrameRow(
            image=f"{pos}_{mode}",
            position=pos,
            mode=mode,
            t_s=t,
            x_um=x,
            y_um=0.0,
            pixel_size_um=PX,
            shape_yx=SHAPE,
            exposure_ms=50.0,
        )
        for t in times
    ]


def _gt(mitoses: list[dict]) -> dict:
    return {"options": {"anaphase_min": 4.0}, "total_light_dose": 12.5, "mitoses": mitoses}


def _mitosis(cell: int, x: float, onset: float) -> dict:
    # prophase 15 min, metaphase 20 min, anaphase 4 min, telophase 10 min
    return {
        "cell_id": cell,
        "well": "B2",
        "x_um": x,
        "y_um": 10.0,
        "onset_s": onset,
        "metaphase_s": onset + 900,
        "anaphase_s": onset + 2100,
        "end_s": onset + 2940,
    }


def test_fixed_slow_misses_and_a_burst_catches() -> None:
    gt = _gt([_mitosis(1, 20.0, 3000.0), _mitosis(2, 5000.0, 3000.0), _mitosis(3, 2000.0, 3000.0)])
    # Position A (x=0) and B (x=5000): baseline every 20 min for 3 h.
    slow = [t * 1200.0 for t in range(10)]
    frames = _frames("A", 0.0, slow) + _frames("B", 5000.0, slow)
    s = score_frames("fixed slow", frames, gt)
    # Mitosis 3 lies in no imaged field.
    assert s.mitoses_in_fields == 2
    assert s.caught == 0  # 2 frames in the 39-minute window
    assert s.illumination_s == pytest.approx(20 * 0.05)
    assert s.specimen_dose == 12.5
    # Adaptive: at A, a burst every 2 min from 3600 s to 5400 s.
    burst = [3600.0 + 120.0 * k for k in range(16)]
    frames = (
        _frames("A", 0.0, [t for t in slow if t < 3600 or t > 5400])
        + _frames("A", 0.0, burst, mode="burst")
        + _frames("B", 5000.0, slow)
    )
    s = score_frames("adaptive", frames, gt)
    assert s.mitoses_in_fields == 2 and s.caught == 1 and s.caught_fraction == 0.5
    caught = next(m for m in s.mitoses if m.caught)
    assert caught.cell_id == 1 and caught.position == "A"
    assert caught.first_burst_frame_s == 3600.0
    assert s.bursts == 1 and s.false_triggers == 0


def test_a_burst_without_mitosis_is_a_false_trigger() -> None:
    gt = _gt([_mitosis(1, 20.0, 30000.0)])
    frames = _frames("A", 0.0, [0.0, 1200.0]) + _frames(
        "A", 0.0, [1300.0, 1420.0, 1540.0], mode="burst"
    )
    frames += _frames("A", 0.0, [2800.0, 4000.0])
    # the second burst covers the mitosis
    frames += _frames("A", 0.0, [30000.0 + 120 * k for k in range(30)], mode="burst")
    s = score_frames("adaptive", frames, gt)
    assert s.bursts == 2
    assert s.false_triggers == 1
    assert [b["false_trigger"] for b in s.burst_list] == [True, False]
    assert s.caught == 1


def test_mitoses_outside_the_run_or_unfinished_are_not_judged() -> None:
    gt = _gt(
        [
            _mitosis(1, 0.0, 100_000.0),  # after the run
            {**_mitosis(2, 0.0, 600.0), "anaphase_s": None, "end_s": None},  # unfinished
        ]
    )
    frames = _frames("A", 0.0, [k * 600.0 for k in range(10)])
    s = score_frames("x", frames, gt)
    assert s.mitoses_in_fields == 0
    assert s.to_json()["caught_fraction"] is None


def test_frames_are_read_from_the_run_journal(tmp_path: Path) -> None:
    run = tmp_path / "run"
    arr = run / "images" / "A1_baseline.ome.zarr" / "0"
    arr.mkdir(parents=True)
    (arr / "zarr.json").write_text(json.dumps({"shape": [3, 1, 1, 256, 300]}))
    lines = [
        {
            "status": "written",
            "image": "A1_baseline",
            "t": k,
            "c": 0,
            "z": 0,
            "t_s": 600.0 * k,
            "stage_x_um": 10.0,
            "stage_y_um": -5.0,
            "pixel_size_um": PX,
            "exposure_ms": 40.0,
            "position": "A1",
            "mode": "baseline",
        }
        for k in range(3)
    ]
    lines.insert(1, {"status": "missing", "image": "A1_baseline", "t": 9, "reason": "fault"})
    text = "\n".join(json.dumps(e) for e in lines) + '\n{"status": "writ'  # torn last line
    (run / "frames.jsonl").write_text(text)
    rows = load_run_frames(run)
    assert [r.t_s for r in rows] == [0.0, 600.0, 1200.0]
    assert rows[0].shape_yx == (256, 300)
    assert rows[0].position == "A1" and rows[0].mode == "baseline"
    assert rows[0].contains(10.0 + 0.5 * 300 * PX - 1, -5.0)
    assert not rows[0].contains(10.0 + 0.5 * 300 * PX + 1, -5.0)
    with pytest.raises(FileNotFoundError, match=r"no frames\.jsonl"):
        load_run_frames(tmp_path)


def _write_run(run: Path) -> None:
    """A small run folder in the loop's layout: journal, image shape, decisions, provenance."""
    arr = run / "images" / "A1_timelapse.ome.zarr" / "0"
    arr.mkdir(parents=True)
    (arr / "zarr.json").write_text(json.dumps({"shape": [40, 1, 1, 512, 512]}))
    times = [k * 1200.0 for k in range(3)] + [3600.0 + 120 * k for k in range(16)]
    times += [5520.0 + 1200 * k for k in range(3)]
    entries = []
    for k, t in enumerate(times):
        mode = "burst" if 3600 <= t < 5500 else "baseline"
        entries.append(
            {
                "status": "written",
                "image": "A1_timelapse",
                "t": k,
                "t_s": t,
                "stage_x_um": 0.0,
                "stage_y_um": 0.0,
                "pixel_size_um": PX,
                "exposure_ms": 50.0,
                "position": "A1",
                "mode": mode,
            }
        )
    (run / "frames.jsonl").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    decisions = [
        {
            "t_s": 3590.0,
            "source": "burst_on_event",
            "position": "A1",
            "action": {"type": "retime", "position": "A1", "interval_s": 120, "mode": "burst"},
            "accepted": True,
            "reason": "mitosis_onset",
            "latency_ms": 12.5,
        },
        {
            "t_s": 5500.0,
            "source": "burst_on_event",
            "position": "A1",
            "action": {"type": "retime", "position": "A1", "interval_s": 1200, "mode": "baseline"},
            "accepted": True,
            "reason": "event over",
            "latency_ms": 9.0,
        },
        # notes a run also logs: what the segmenter measured, the end, the summary
        {
            "t_s": 0.0,
            "source": "analysis",
            "position": "A1",
            "nucleus_size": {
                "diameter_px": 68.4,
                "bin_factor": 2,
                "held": True,
                "measures": 3,
                "diameter_um": 11.1,
            },
        },
        {"t_s": 7200.0, "source": "scheduler", "end": "duration reached"},
        {"t_s": 7200.0, "source": "run", "summary": {"frames_written": 9}},
    ]
    (run / "decisions.jsonl").write_text("\n".join(json.dumps(d) for d in decisions) + "\n")
    (run / "run.json").write_text(
        json.dumps(
            {
                "protocol": {
                    "name": "mitosis_burst",
                    "acquisition": {"interval_s": 1200},
                    "policies": [{"kind": "burst_on_event", "burst_interval_s": 120}],
                    "simulation": {"seed": 1},
                }
            }
        )
    )
    (run / "ground_truth.json").write_text(json.dumps(_gt([_mitosis(7, 20.0, 3000.0)])))


def test_report_is_written_with_plots_and_scores(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    run = tmp_path / "run"
    _write_run(run)
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    page = (run / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # timelines, light, latency
    assert "1/1" in page  # the mitosis was caught by the burst
    assert "mitosis_onset" in page
    # notes in the log are not decisions: two decisions, none refused
    assert "2 (2 accepted, 0 refused)" in page
    assert "68 px (11.1 um); frames analysed binned 2x2, held" in page
    # A folder that is not a run is bad input (exit 2), one readable line.
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output


@pytest.mark.slow
def test_evaluate_scores_a_real_run_against_both_fixed_plans(tmp_path: Path) -> None:
    """A short simulated mitosis_burst run, scored with the fixed plans on the same seed."""
    from typer.testing import CliRunner

    from scopeloop.acquisition import run_protocol
    from scopeloop.cli.main import app
    from scopeloop.models.protocol import load_protocol

    root = Path(__file__).resolve().parents[1]
    p = load_protocol(root / "protocols" / "mitosis_burst.yaml")
    acq = p.acquisition.model_copy(update={"wells": ("B2", "B5"), "duration_s": 3 * 3600.0})
    p = p.model_copy(update={"acquisition": acq})
    summary = run_protocol(p, out_dir=tmp_path / "run", time_scale=1000)
    run = Path(summary.run_dir)
    assert (run / "ground_truth.json").is_file()

    res = CliRunner().invoke(app, ["evaluate", str(run)])
    assert res.exit_code == 0, res.output
    for name in ("adaptive", "fixed slow", "fixed fast"):
        assert name in res.output
    ev = json.loads((run / "evaluation.json").read_text())
    plans = {q["name"]: q for q in ev["plans"]}
    slow, fast, adaptive = plans["fixed slow"], plans["fixed fast"], plans["adaptive"]
    # The fixed plans image 2 wells for 3 h at the baseline and at the burst interval.
    burst_s = p.policies[0].burst_interval_s  # type: ignore[union-attr]
    assert slow["frames"] == pytest.approx(2 * 3 * 3600 / p.acquisition.interval_s, abs=2)
    assert fast["frames"] == pytest.approx(2 * 3 * 3600 / burst_s, abs=4)
    assert fast["illumination_s"] == pytest.approx(fast["frames"] * 0.030)
    # (the live run may lose a few baseline frames on a loaded machine: no lower bound)
    assert slow["illumination_s"] < fast["illumination_s"]
    assert adaptive["illumination_s"] < fast["illumination_s"]
    assert slow["specimen_dose"] < fast["specimen_dose"]
    # Imaging everything fast catches every judged mitosis; slow catches none.
    assert fast["caught"] == fast["mitoses_in_fields"]
    assert slow["caught"] == 0
    assert ev["light_vs_fixed_fast"] == pytest.approx(
        adaptive["illumination_s"] / fast["illumination_s"]
    )
    # The report picks the comparison up.
    pytest.importorskip("matplotlib")
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
    assert "fixed fast" in (run / "report.html").read_text()


def test_evaluate_command_serves_runs_and_segmenters(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["evaluate"])
    assert res.exit_code == 2 and "RUN folder" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path), "--segmenter", "classical"])
    assert res.exit_code == 2 and "not both" in res.output
    res = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert res.exit_code == 2 and "not a run folder" in res.output
    # an option of the other mode is refused, not silently ignored
    res = runner.invoke(app, ["evaluate", str(tmp_path), "--workers", "2", "--tta"])
    assert res.exit_code == 2 and "--workers, --tta only apply" in res.output
    res = runner.invoke(app, ["evaluate", "-s", "classical", "--no-reference"])
    assert res.exit_code == 2 and "--no-reference only applies when scoring a RUN" in res.output
    # (even when given the default value: it still does nothing there)
    res = runner.invoke(app, ["evaluate", "-s", "classical", "--min-frames", "5"])
    assert res.exit_code == 2 and "--min-frames only applies when scoring a RUN" in res.output
    # Without RUN, --segmenter scores segmenters against exact labels.
    out = tmp_path / "seg.json"
    args = ["evaluate", "--segmenter", "classical", "--set", "sparse", "--n-images", "1"]
    res = runner.invoke(app, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "classical" in json.loads(out.read_text())["results"]
