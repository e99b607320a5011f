"""Scheduler and limits without hardware: events in due order; actions change what comes next."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import useq

from scopeloop.acquisition import LimitChecker, ObjectiveSetting, Scheduler, Site
from scopeloop.clock import Clock
from scopeloop.models.actions import Reimage, Reposition, Retime, Skip, Stop
from scopeloop.models.protocol import ChannelSpec, LimitsSpec

OBJ10 = ObjectiveSetting("10x", (("Objective", "Label", "10x"),), 0.65)
OBJ40 = ObjectiveSetting("40x", (("Objective", "Label", "40x"),), 0.1625)


def make(
    limits: LimitsSpec | None = None,
    n: int = 2,
    interval_s: float = 600.0,
    duration_s: float = 6000.0,
    clock: Clock | None = None,
) -> Scheduler:
    sites = [Site(f"P{i}", i, 1000.0 * i, 0.0, 0.0, interval_s) for i in range(n)]
    return Scheduler(
        sites,
        [ChannelSpec(config="FITC", exposure_ms=100)],
        OBJ10,
        clock or Clock(1.0, fast_forward=True),
        duration_s,
        LimitChecker(limits or LimitsSpec()),
        objectives={"10x": OBJ10, "40x": OBJ40},
    )


def pos(ev: useq.MDAEvent) -> str:
    return str(ev.metadata["scopeloop"]["position"])


def drive(sch: Scheduler, on_event=None) -> list[tuple[float, useq.MDAEvent]]:
    """Pull events as the runner does, stamping each with the clock."""
    out = []
    for ev in sch.events():
        out.append((sch.clock.now_s(), ev))
        sch.confirm(ev)
        if on_event is not None:
            on_event(sch, ev, len(out))
    return out


def test_baseline_events_in_due_order() -> None:
    got = drive(make())
    assert len(got) == 2 * 10  # 6000 s / 600 s, two positions
    times = [t for t, _ in got]
    assert times == sorted(times)
    p0 = [t for t, ev in got if pos(ev) == "P0"]
    assert [round(b - a) for a, b in itertools.pairwise(p0)] == [600] * 9
    ev = got[0][1]
    assert ev.channel is not None and ev.channel.config == "FITC" and ev.exposure == 100
    assert ev.properties and tuple(ev.properties[0]) == ("Objective", "Label", "10x")


def test_retime_makes_next_frames_come_at_burst_interval_then_back() -> None:
    def on(sch: Scheduler, ev: useq.MDAEvent, i: int) -> None:
        if i == 3 and pos(ev) == "P0":
            v = sch.submit(Retime(position="P0", interval_s=120, duration_s=1200, mode="burst"))
            assert v.accepted

    got = drive(make(), on)
    p0 = [(t, ev.metadata["scopeloop"]["mode"]) for t, ev in got if pos(ev) == "P0"]
    gaps = [round(b[0] - a[0]) for a, b in itertools.pairwise(p0)]
    # frame at 600, burst from there: 120 s steps for 1200 s, then 600 s again
    assert gaps[1:11].count(120) >= 9, gaps
    assert gaps[-1] == 600
    assert "burst" in {m for _, m in p0} and p0[-1][1] == "baseline"


def test_reposition_moves_next_frames_and_skip_stops_a_position() -> None:
    def on(sch: Scheduler, ev: useq.MDAEvent, i: int) -> None:
        if i == 2:
            assert sch.submit(Reposition(position="P1", x_um=1030.0, y_um=-20.0)).accepted
            assert sch.submit(Skip(position="P0")).accepted

    got = drive(make(), on)
    p1 = [ev for _, ev in got if pos(ev) == "P1"]
    assert (p1[0].x_pos, p1[0].y_pos) == (1000.0, 0.0)
    assert all((e.x_pos, e.y_pos) == (1030.0, -20.0) for e in p1[1:])
    assert [pos(e) for _, e in got].count("P0") == 1


def test_reimage_events_match_objective_zstack_and_channels() -> None:
    def on(sch: Scheduler, ev: useq.MDAEvent, i: int) -> None:
        if i == 1:
            a = Reimage(
                position="P0",
                x_um=15.0,
                y_um=-7.5,
                objective="40x",
                z_range_um=4,
                z_step_um=1,
                channels=("FITC", "TRITC"),
                exposure_ms=50,
            )
            assert sch.submit(a).accepted

    got = drive(make(), on)
    re = [ev for _, ev in got if ev.metadata["scopeloop"]["kind"] == "reimage"]
    assert len(re) == 2 * 5
    assert {(e.x_pos, e.y_pos) for e in re} == {(15.0, -7.5)}
    assert sorted({e.z_pos for e in re}) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert [e.channel.config for e in re if e.channel][::5] == ["FITC", "TRITC"]
    assert all(tuple(e.properties[0]) == ("Objective", "Label", "40x") for e in re if e.properties)
    # the time-lapse goes on at 10x, back at its own position
    after = [ev for _, ev in got if ev.metadata["scopeloop"]["kind"] == "timelapse"][2:]
    assert all(tuple(e.properties[0])[2] == "10x" and e.z_pos == 0.0 for e in after if e.properties)


def test_stop_ends_the_stream() -> None:
    def on(sch: Scheduler, ev: useq.MDAEvent, i: int) -> None:
        if i == 4:
            assert sch.submit(Stop(reason="enough")).accepted

    sch = make()
    got = drive(sch, on)
    assert len(got) == 4 and "enough" in (sch.stop_reason or "")


@pytest.mark.parametrize(
    ("action", "limits", "why"),
    [
        (Retime(position="P0", interval_s=10), LimitsSpec(min_interval_s=30), "min_interval_s"),
        (
            Retime(position="P0", interval_s=60, duration_s=9000),
            LimitsSpec(max_burst_s=3600),
            "max_burst_s",
        ),
        (Retime(position="P0", interval_s=60), LimitsSpec(max_concurrent_bursts=0), "concurrent"),
        (
            Reposition(position="P0", x_um=99999, y_um=0),
            LimitsSpec(stage_x_range_um=(-100, 5000)),
            "stage_x_range_um",
        ),
        (
            Reposition(position="P0", x_um=800, y_um=0),
            LimitsSpec(max_reposition_um=500),
            "max_reposition",
        ),
        (
            Reimage(position="P0", x_um=0, y_um=0, z_range_um=40),
            LimitsSpec(z_range_um=(-10, 10)),
            "z_range_um",
        ),
        (Reimage(position="P0", x_um=0, y_um=0), LimitsSpec(max_reimages=0), "max_reimages"),
        (
            Reimage(position="P0", x_um=0, y_um=0, z_range_um=10, exposure_ms=500),
            LimitsSpec(light_budget_s=1.0),
            "light",
        ),
        (Skip(position="nowhere"), LimitsSpec(), "unknown position"),
    ],
)
def test_out_of_limits_actions_are_refused_with_a_reason(action, limits, why) -> None:  # type: ignore[no-untyped-def]
    sch = make(limits)
    v = sch.submit(action)
    assert not v.accepted
    assert why in v.reason


def test_light_budget_is_never_exceeded() -> None:
    # 0.1 s per frame, budget 1.25 s: twelve frames, never a thirteenth
    limits = LimitsSpec(light_budget_s=1.25, min_interval_s=10)

    def on(sch: Scheduler, ev: useq.MDAEvent, i: int) -> None:
        if i == 1:
            sch.submit(Retime(position="P0", interval_s=10, duration_s=3000, mode="burst"))
            sch.submit(Reimage(position="P1", x_um=1000, y_um=0, z_range_um=2, z_step_um=1))

    sch = make(limits)
    got = drive(sch, on)
    light = sum(ev.exposure or 0 for _, ev in got) / 1000
    assert light <= 1.25 + 1e-9
    assert sch.light_used_s <= 1.25 + 1e-9
    assert sch.stop_reason == "light budget exhausted"


def test_a_decision_wakes_a_waiting_scheduler() -> None:
    # real-time clock (1000x): the next baseline frame is 600 s = 0.6 s away;
    # a burst decision must bring P0's next frame at ~60 s instead
    clock = Clock(1000.0)
    sch = make(
        n=1, interval_s=600, duration_s=1400, clock=clock, limits=LimitsSpec(min_interval_s=10)
    )
    times: list[float] = []

    def decide() -> None:
        time.sleep(0.05)
        sch.submit(Retime(position="P0", interval_s=60, duration_s=3000, mode="burst"))

    for ev in sch.events():
        times.append(clock.now_s())
        sch.confirm(ev)
        if len(times) == 1:
            threading.Thread(target=decide).start()
        if len(times) == 3:
            sch.stop()
    assert times[1] - times[0] < 150, times


def test_missing_frames_are_reported_as_gaps() -> None:
    sch = make(n=1, duration_s=1800)
    missing = []
    sch.on_missing = missing.append
    for seen, ev in enumerate(sch.events(), start=1):
        if seen != 2:  # the camera "fails" on the second frame
            sch.confirm(ev)
    sch.flush_missing()
    assert [m.metadata["scopeloop"]["t"] for m in missing] == [1]
