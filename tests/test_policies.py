"""Policies decide from detections and plan state alone (no hardware)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from scopeloop.decisions.policies import (
    PositionContext,
    build_policies,
    check_policy_detectors,
)
from scopeloop.models.actions import Reimage, Reposition, Retime, Skip
from scopeloop.models.detections import Detection
from scopeloop.models.detector_config import DetectorConfig
from scopeloop.models.policy_config import BurstOnEventPolicyConfig, PolicyConfig

POLICIES = TypeAdapter(list[PolicyConfig])
DETECTORS = TypeAdapter(list[DetectorConfig])


def _det(kind: str, t: float, x: float = 0.0, y: float = 0.0, track: int | None = 1, **kw):
    return Detection(
        kind=kind,
        position="A1",
        frame_index=0,
        t_s=t,
        x_um=x,
        y_um=y,
        track_id=track,
        score=kw.pop("score", 1.0),
        evidence=kw,
    )


class _Plan:
    """The smallest faithful stand-in for the scheduler's per-position plan."""

    def __init__(self, baseline: float) -> None:
        self.baseline = baseline
        self.mode, self.interval, self.since, self.frames = "baseline", baseline, 0.0, 0
        self.x = self.y = 0.0

    def ctx(self, now: float) -> PositionContext:
        return PositionContext(
            position="A1",
            now_s=now,
            mode=self.mode,
            interval_s=self.interval,
            baseline_interval_s=self.baseline,
            mode_since_s=self.since,
            frames_in_mode=self.frames,
            stage_x_um=self.x,
            stage_y_um=self.y,
        )

    def apply(self, actions, now: float) -> None:
        for a in actions:
            if isinstance(a, Retime):
                self.mode, self.interval, self.since, self.frames = a.mode, a.interval_s, now, 0
            if isinstance(a, Reposition):
                self.x, self.y = a.x_um, a.y_um


def test_burst_starts_on_onset_and_ends_promptly_after_division() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python(
            [{"kind": "burst_on_event", "burst_interval_s": 120, "min_fast_frames": 3}]
        )
    )
    plan = _Plan(baseline=900.0)
    t = 0.0
    assert policy.decide([], plan.ctx(t)) == []
    t = 900.0
    acts = policy.decide([_det("mitosis_onset", t, track=7, score=0.8)], plan.ctx(t))
    assert len(acts) == 1 and isinstance(acts[0], Retime)
    assert acts[0].interval_s == 120 and acts[0].mode == "burst"
    assert acts[0].duration_s == pytest.approx(4800.0)  # scheduler's own safety net
    plan.apply(acts, t)
    # Mitosis goes on: the burst holds while the cell stays condensed.
    for _ in range(10):
        t += 120
        plan.frames += 1
        assert policy.decide([_det("mitosis_ongoing", t, track=7)], plan.ctx(t)) == []
    # Division seen: back to baseline at once (post_end_s defaults to 0).
    t += 120
    plan.frames += 1
    acts = policy.decide([_det("division", t, x=2.0, track=7)], plan.ctx(t))
    assert len(acts) == 1 and acts[0].mode == "baseline" and acts[0].interval_s == 900.0
    assert "division" in acts[0].reason


def test_burst_waits_for_every_event_in_the_field() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python(
            [{"kind": "burst_on_event", "burst_interval_s": 120, "min_fast_frames": 1}]
        )
    )
    plan = _Plan(900.0)
    plan.apply(policy.decide([_det("mitosis_onset", 0.0, track=1)], plan.ctx(0.0)), 0.0)
    t = 120.0
    plan.frames = 1
    # A second cell, far away, starts mitosis during the burst.
    dets = [_det("mitosis_ongoing", t, track=1), _det("mitosis_onset", t, x=200, track=2)]
    assert policy.decide(dets, plan.ctx(t)) == []
    t += 120
    plan.frames += 1
    dets = [_det("division", t, track=1), _det("mitosis_ongoing", t, x=200, track=2)]
    assert policy.decide(dets, plan.ctx(t)) == []  # the second one is not over
    t += 120
    plan.frames += 1
    acts = policy.decide([_det("division", t, x=200, track=2)], plan.ctx(t))
    assert [a.mode for a in acts] == ["baseline"]


def test_false_trigger_ends_after_quiet_time_but_not_before_min_fast_frames() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python(
            [
                {
                    "kind": "burst_on_event",
                    "burst_interval_s": 100,
                    "min_fast_frames": 5,
                    "quiet_s": 250,
                }
            ]
        )
    )
    plan = _Plan(600.0)
    plan.apply(policy.decide([_det("mitosis_onset", 0.0)], plan.ctx(0.0)), 0.0)
    ended_at = None
    for k in range(1, 10):
        t = 100.0 * k
        plan.frames = k
        acts = policy.decide([], plan.ctx(t))
        if acts:
            ended_at = k
            assert acts[0].mode == "baseline" and "no event evidence" in acts[0].reason
            break
    assert ended_at == 5  # quiet after 3 frames, but hysteresis holds 5 fast frames


def test_burst_never_exceeds_max_burst() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python(
            [{"kind": "burst_on_event", "burst_interval_s": 100, "max_burst_s": 1000}]
        )
    )
    plan = _Plan(600.0)
    plan.apply(policy.decide([_det("mitosis_onset", 0.0)], plan.ctx(0.0)), 0.0)
    for k in range(1, 12):
        plan.frames = k
        acts = policy.decide([_det("mitosis_ongoing", 100.0 * k)], plan.ctx(100.0 * k))
        if acts:
            assert 100.0 * k >= 1000 and "max_burst_s" in acts[0].reason
            return
    pytest.fail("burst did not end at max_burst_s")


def test_low_score_does_not_trigger_and_scheduler_reset_is_followed() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python([{"kind": "burst_on_event", "min_score": 0.7}])
    )
    plan = _Plan(600.0)
    assert policy.decide([_det("mitosis_onset", 0.0, score=0.5)], plan.ctx(0.0)) == []
    plan.apply(policy.decide([_det("mitosis_onset", 600.0, score=0.9)], plan.ctx(600.0)), 600.0)
    assert plan.mode == "burst"
    # The scheduler refused or timed out the burst: the policy starts over cleanly.
    plan.mode = "baseline"
    acts = policy.decide([_det("mitosis_onset", 1800.0, track=9, score=0.9)], plan.ctx(1800.0))
    assert [a.mode for a in acts] == ["burst"]


def test_reimage_on_hit_centres_each_hit_once_within_limits() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python(
            [
                {
                    "kind": "reimage_on_hit",
                    "trigger_kinds": ["abnormal_morphology"],
                    "objective": "40x",
                    "z_range_um": 6,
                    "z_step_um": 1.5,
                    "channels": ["FITC", "TRITC"],
                    "max_per_position": 2,
                    "cooldown_s": 0,
                }
            ]
        )
    )
    ctx = PositionContext(position="A1", now_s=0.0)
    acts = policy.decide([_det("abnormal_morphology", 0.0, x=40, y=-12)], ctx)
    assert len(acts) == 1 and isinstance(acts[0], Reimage)
    a = acts[0]
    assert (a.x_um, a.y_um, a.objective, a.z_range_um, a.z_step_um) == (40, -12, "40x", 6, 1.5)
    assert a.channels == ("FITC", "TRITC")
    # The same spot again: no second look. A new spot: yes. A third: over the limit.
    assert policy.decide([_det("abnormal_morphology", 10.0, x=41, y=-12)], ctx) == []
    assert len(policy.decide([_det("abnormal_morphology", 20.0, x=-80, y=5)], ctx)) == 1
    assert policy.decide([_det("abnormal_morphology", 30.0, x=100, y=100)], ctx) == []


def test_follow_cell_keeps_the_chosen_cell_centred_with_bounded_steps() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python([{"kind": "follow_cell", "max_step_um": 10, "deadband_um": 2}])
    )
    plan = _Plan(300.0)
    # Two cells; the one nearest the centre (track 1) is chosen.
    x1 = 3.0
    acts = policy.decide(
        [_det("motion", 0, x=x1, y=0, track=1), _det("motion", 0, x=60, y=60, track=2)],
        plan.ctx(0),
    )
    assert len(acts) == 1 and isinstance(acts[0], Reposition)
    plan.apply(acts, 0)
    assert (plan.x, plan.y) == (3.0, 0.0)
    # It runs away 25 um in one frame: the stage follows in steps of at most 10 um.
    x1 = 28.0
    moves = []
    for k in range(1, 5):
        acts = policy.decide(
            [_det("motion", k, x=x1, y=0, track=1), _det("motion", k, x=60, y=60, track=2)],
            plan.ctx(k),
        )
        plan.apply(acts, k)
        moves.append(plan.x)
    assert moves[:3] == pytest.approx([13.0, 23.0, 28.0])
    assert moves[3] == pytest.approx(28.0)  # within the dead band: no move


def test_triage_skips_sparse_positions_after_the_first_pass() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python([{"kind": "triage", "after_frames": 2, "min_count": 5}])
    )

    def conf(pos: str, count: int) -> Detection:
        return Detection(
            kind="confluence",
            position=pos,
            frame_index=0,
            t_s=0,
            x_um=0,
            y_um=0,
            evidence={"count": count, "covered_fraction": count * 0.01},
        )

    for pos, count in (("A1", 2), ("B1", 30)):
        ctx = PositionContext(position=pos, now_s=0)
        assert policy.decide([conf(pos, count)], ctx) == []  # first frame: not yet
        acts = policy.decide([conf(pos, count)], ctx)
        if pos == "A1":
            assert len(acts) == 1 and isinstance(acts[0], Skip) and acts[0].position == "A1"
            assert "min_count" in acts[0].reason
        else:
            assert acts == []
    # Decided once: no repeated skips.
    assert policy.decide([conf("A1", 0)], PositionContext(position="A1", now_s=1)) == []


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValidationError, match="max_burst_s"):
        BurstOnEventPolicyConfig(burst_interval_s=600, min_fast_frames=10, max_burst_s=1000)
    with pytest.raises(ValidationError, match="burst_intervl_s"):
        POLICIES.validate_python([{"kind": "burst_on_event", "burst_intervl_s": 60}])
    with pytest.raises(ValidationError, match="min_count or min_confluence"):
        POLICIES.validate_python([{"kind": "triage", "min_count": None}])


def test_wiring_check_names_missing_detectors() -> None:
    dets = DETECTORS.validate_python([{"kind": "confluence"}])
    pols = POLICIES.validate_python([{"kind": "burst_on_event"}, {"kind": "triage"}])
    problems = check_policy_detectors(dets, pols)
    assert len(problems) == 1 and "mitosis_onset" in problems[0]
    dets = DETECTORS.validate_python([{"kind": "mitosis"}, {"kind": "confluence"}])
    assert check_policy_detectors(dets, pols) == []


def test_abandoned_onset_ends_the_burst_after_min_fast_frames() -> None:
    (policy,) = build_policies(
        POLICIES.validate_python(
            [{"kind": "burst_on_event", "burst_interval_s": 120, "min_fast_frames": 3}]
        )
    )
    plan = _Plan(900.0)
    plan.apply(policy.decide([_det("mitosis_onset", 0.0, track=4)], plan.ctx(0.0)), 0.0)
    plan.frames = 1
    # The detector gives up on the cell at once: the burst still takes its minimum frames.
    assert policy.decide([_det("mitosis_abandoned", 120.0, track=4)], plan.ctx(120.0)) == []
    plan.frames = 2
    assert policy.decide([], plan.ctx(240.0)) == []
    plan.frames = 3
    acts = policy.decide([], plan.ctx(360.0))
    assert [a.mode for a in acts] == ["baseline"]
    assert "mitosis_abandoned" in acts[0].reason
