"""Policies: detections in, actions out.

Policies are pure decision logic: no hardware, no clock, no I/O. They keep a
little memory per position (which event a burst is for, which cell is being
followed), so one policy object serves a whole run.

How the loop drives them
------------------------
For **every analysed time-lapse frame** of a position (also when it produced no
detections, so that bursts can end), the loop calls, for each policy::

    actions = policy.decide(detections_of_that_frame, PositionContext(...))

with a :class:`PositionContext` describing the position's plan *as the
scheduler holds it now* (after any earlier action was applied or refused).
The loop then checks every action against the protocol's limits and logs it.
A ``Retime`` from ``burst_on_event`` carries ``duration_s = max_burst_s`` so
the scheduler falls back to baseline by itself even if no later decision
comes; the policy ends bursts earlier with a ``Retime`` to the baseline
interval and ``mode="baseline"``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from scopeloop.models.actions import Action, Reimage, Reposition, Retime, Skip
from scopeloop.models.detections import Detection
from scopeloop.models.detector_config import DetectorConfig
from scopeloop.models.policy_config import (
    BurstOnEventPolicyConfig,
    FollowCellPolicyConfig,
    PolicyConfig,
    ReimageOnHitPolicyConfig,
    TriagePolicyConfig,
)

__all__ = [
    "BurstOnEventPolicy",
    "FollowCellPolicy",
    "Policy",
    "PositionContext",
    "ReimageOnHitPolicy",
    "TriagePolicy",
    "build_policies",
    "check_policy_detectors",
]


@dataclass(frozen=True)
class PositionContext:
    """The scheduler's current plan for one position, as a policy sees it.

    Attributes
    ----------
    position : str
        Position name.
    now_s : float
        Specimen time of the analysed frame (or now), seconds since run start.
    mode : str
        Current acquisition mode of the position: "baseline", "burst" (or the
        burst policy's mode name), "skipped".
    interval_s : float
        Current interval between frames of the position.
    baseline_interval_s : float
        The protocol's interval for the position outside bursts.
    mode_since_s : float
        Specimen time the current mode started (burst start time in a burst).
    frames_in_mode : int
        Frames of this position acquired since ``mode_since_s``.
    frames_total : int
        Time-lapse frames of this position acquired so far.
    stage_x_um, stage_y_um : float
        Where the position's field is centred now (after any reposition).
    reimages_done : int
        Re-images of this position so far.
    """

    position: str
    now_s: float
    mode: str = "baseline"
    interval_s: float = 600.0
    baseline_interval_s: float = 600.0
    mode_since_s: float = 0.0
    frames_in_mode: int = 0
    frames_total: int = 0
    stage_x_um: float = 0.0
    stage_y_um: float = 0.0
    reimages_done: int = 0


@runtime_checkable
class Policy(Protocol):
    """Maps one frame's detections at one position to actions."""

    name: str

    def decide(self, detections: Sequence[Detection], ctx: PositionContext) -> list[Action]: ...


# ------------------------------------------------------------------ burst on event


@dataclass
class _Event:
    track_id: int | None
    x_um: float
    y_um: float
    last_t_s: float


@dataclass
class _BurstState:
    events: list[_Event] = field(default_factory=list)
    last_end_t_s: float | None = None
    last_end_kind: str = ""
    burst_start_s: float | None = None
    refractory_until_s: float = -np.inf


class BurstOnEventPolicy:
    """EDA-like hysteresis: fast while an event runs, baseline otherwise."""

    def __init__(self, cfg: BurstOnEventPolicyConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._state: dict[str, _BurstState] = {}

    def _match(self, st: _BurstState, d: Detection) -> list[_Event]:
        return [
            e
            for e in st.events
            if (d.track_id is not None and e.track_id == d.track_id)
            or np.hypot(e.x_um - d.x_um, e.y_um - d.y_um) <= self.cfg.match_radius_um
        ]

    def decide(self, detections: Sequence[Detection], ctx: PositionContext) -> list[Action]:
        cfg = self.cfg
        st = self._state.setdefault(ctx.position, _BurstState())
        now = ctx.now_s
        in_burst = ctx.mode == cfg.mode
        if not in_burst and st.burst_start_s is not None:
            # The scheduler ended (duration ran out) or refused our burst: start afresh.
            st.events.clear()
            st.last_end_t_s = None
            st.burst_start_s = None

        triggers = [
            d for d in detections if d.kind in cfg.trigger_kinds and d.score >= cfg.min_score
        ]
        for d in triggers:
            near = self._match(st, d)
            if near:
                near[0].last_t_s = now
            else:
                st.events.append(_Event(d.track_id, d.x_um, d.y_um, now))
        for d in detections:
            if d.kind in cfg.sustain_kinds:
                for e in self._match(st, d):
                    e.track_id = d.track_id if d.track_id is not None else e.track_id
                    e.x_um, e.y_um, e.last_t_s = d.x_um, d.y_um, now
        ends = [d for d in detections if d.kind in cfg.end_kinds]
        for d in ends:
            done = self._match(st, d)
            if done or in_burst:
                st.last_end_t_s = now
                st.last_end_kind = d.kind
            st.events = [e for e in st.events if e not in done]
        st.events = [e for e in st.events if now - e.last_t_s <= cfg.quiet_s]

        if not in_burst:
            if not triggers or now < st.refractory_until_s:
                st.events.clear()
                return []
            st.burst_start_s = now
            st.last_end_t_s = None
            best = max(triggers, key=lambda d: d.score)
            return [
                Retime(
                    position=ctx.position,
                    interval_s=cfg.burst_interval_s,
                    duration_s=cfg.max_burst_s,
                    mode=cfg.mode,
                    reason=(
                        f"{best.kind} (score {best.score:.2f}, track {best.track_id}) at "
                        f"({best.x_um:.0f}, {best.y_um:.0f}) um: burst every "
                        f"{cfg.burst_interval_s:g} s"
                    ),
                )
            ]

        started = ctx.mode_since_s if st.burst_start_s is None else st.burst_start_s
        elapsed = now - started
        reason = ""
        if elapsed >= cfg.max_burst_s:
            reason = f"burst reached max_burst_s ({cfg.max_burst_s:g} s)"
        elif ctx.frames_in_mode >= cfg.min_fast_frames and not st.events:
            if st.last_end_t_s is not None and now - st.last_end_t_s >= cfg.post_end_s:
                reason = f"event over ({st.last_end_kind} seen)"
            elif st.last_end_t_s is None:
                reason = f"no event evidence for {cfg.quiet_s:g} s"
        if not reason:
            return []
        st.events.clear()
        st.burst_start_s = None
        st.last_end_t_s = None
        st.refractory_until_s = now + cfg.refractory_s
        return [
            Retime(
                position=ctx.position,
                interval_s=ctx.baseline_interval_s,
                duration_s=None,
                mode="baseline",
                reason=f"{reason}: back to baseline after {elapsed:.0f} s",
            )
        ]


# ------------------------------------------------------------------ re-image on hit


class ReimageOnHitPolicy:
    """Guided acquisition: one detailed look at each new hit."""

    def __init__(self, cfg: ReimageOnHitPolicyConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._done: dict[str, list[tuple[float, float, float]]] = {}  # (t, x, y)

    def decide(self, detections: Sequence[Detection], ctx: PositionContext) -> list[Action]:
        cfg = self.cfg
        done = self._done.setdefault(ctx.position, [])
        if max(len(done), ctx.reimages_done) >= cfg.max_per_position:
            return []
        if done and ctx.now_s - done[-1][0] < cfg.cooldown_s:
            return []
        hits = sorted(
            (d for d in detections if d.kind in cfg.trigger_kinds and d.score >= cfg.min_score),
            key=lambda d: -d.score,
        )
        for d in hits:
            if any(np.hypot(d.x_um - x, d.y_um - y) < cfg.min_separation_um for _, x, y in done):
                continue
            done.append((ctx.now_s, d.x_um, d.y_um))
            return [
                Reimage(
                    position=ctx.position,
                    x_um=d.x_um,
                    y_um=d.y_um,
                    objective=cfg.objective,
                    z_range_um=cfg.z_range_um,
                    z_step_um=cfg.z_step_um,
                    channels=cfg.channels,
                    exposure_ms=cfg.exposure_ms,
                    reason=f"{d.kind} (score {d.score:.2f}, track {d.track_id})",
                )
            ]
        return []


# ------------------------------------------------------------------ follow cell


class FollowCellPolicy:
    """Keep the chosen cells centred: move the stage by at most ``max_step_um``."""

    def __init__(self, cfg: FollowCellPolicyConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._targets: dict[str, list[int]] = {}
        self._last_xy: dict[str, tuple[float, float]] = {}

    def _choose(
        self, cands: list[Detection], ref: tuple[float, float], n: int, rule: str
    ) -> list[int]:
        def key(d: Detection) -> float:
            if rule == "largest":
                return -float(d.evidence.get("area_um2", 0.0))
            if rule == "brightest":
                return -float(d.evidence.get("intensity", 0.0))
            return float(np.hypot(d.x_um - ref[0], d.y_um - ref[1]))

        return [d.track_id for d in sorted(cands, key=key)[:n] if d.track_id is not None]

    def decide(self, detections: Sequence[Detection], ctx: PositionContext) -> list[Action]:
        cfg = self.cfg
        cands = [d for d in detections if d.kind in cfg.trigger_kinds and d.track_id is not None]
        if not cands:
            return []
        by_id = {d.track_id: d for d in cands}
        targets = self._targets.get(ctx.position)
        centre = (ctx.stage_x_um, ctx.stage_y_um)
        if targets is None:
            targets = self._choose(cands, centre, cfg.n_cells, cfg.select)
        else:
            kept = [t for t in targets if t in by_id]
            if len(kept) < len(targets) and cfg.reselect_on_loss:
                # A lost cell (division, tracking break): take the track nearest to where
                # the followed group last was.
                ref = self._last_xy.get(ctx.position, centre)
                free = [d for d in cands if d.track_id not in kept]
                kept += self._choose(free, ref, len(targets) - len(kept), "nearest_center")
            targets = kept
        self._targets[ctx.position] = targets
        found = [by_id[t] for t in targets if t in by_id]
        if not found:
            return []
        tx = float(np.mean([d.x_um for d in found]))
        ty = float(np.mean([d.y_um for d in found]))
        self._last_xy[ctx.position] = (tx, ty)
        dx, dy = tx - centre[0], ty - centre[1]
        dist = float(np.hypot(dx, dy))
        if dist <= cfg.deadband_um:
            return []
        scale = min(1.0, cfg.max_step_um / dist)
        return [
            Reposition(
                position=ctx.position,
                x_um=centre[0] + dx * scale,
                y_um=centre[1] + dy * scale,
                reason=f"follow track(s) {targets}: {dist:.1f} um off centre",
            )
        ]


# ------------------------------------------------------------------ triage


class TriagePolicy:
    """Skip positions whose first frames show too few cells or too little cover."""

    def __init__(self, cfg: TriagePolicyConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._seen: dict[str, list[tuple[int, float]]] = {}
        self._decided: set[str] = set()

    def decide(self, detections: Sequence[Detection], ctx: PositionContext) -> list[Action]:
        cfg = self.cfg
        if ctx.position in self._decided or ctx.mode == "skipped":
            return []
        conf = [d for d in detections if d.kind == "confluence"]
        if not conf:
            return []
        seen = self._seen.setdefault(ctx.position, [])
        d = conf[0]
        seen.append((int(d.evidence.get("count", 0)), float(d.evidence.get("covered_fraction", 0))))
        if len(seen) < cfg.after_frames:
            return []
        self._decided.add(ctx.position)
        count = float(np.median([c for c, _ in seen]))
        cover = float(np.median([f for _, f in seen]))
        why = []
        if cfg.min_count is not None and count < cfg.min_count:
            why.append(f"{count:g} cells < min_count {cfg.min_count}")
        if cfg.min_confluence_fraction is not None and cover < cfg.min_confluence_fraction:
            why.append(f"confluence {cover:.3f} < {cfg.min_confluence_fraction:g}")
        if not why:
            return []
        return [Skip(position=ctx.position, reason="triage: " + "; ".join(why))]


_BUILDERS: dict[str, Callable[..., Policy]] = {
    "burst_on_event": BurstOnEventPolicy,
    "reimage_on_hit": ReimageOnHitPolicy,
    "follow_cell": FollowCellPolicy,
    "triage": TriagePolicy,
}

# Detection kinds each detector kind can emit, to check a protocol's wiring.
_EMITS: dict[str, set[str]] = {
    "mitosis": {"mitosis_onset", "mitosis_ongoing", "mitosis_abandoned", "division"},
    "appearance": {"appearance", "disappearance"},
    "intensity_change": {"intensity_change"},
    "confluence": {"confluence"},
    "abnormal_morphology": {"abnormal_morphology"},
    "motion": {"motion"},
}


def build_policies(cfgs: Sequence[PolicyConfig]) -> list[Policy]:
    """Fresh policy objects (with empty per-position memory) for a run."""
    return [_BUILDERS[c.kind](c) for c in cfgs]


def check_policy_detectors(
    detectors: Sequence[DetectorConfig], policies: Sequence[PolicyConfig]
) -> list[str]:
    """Problems where a policy listens for detections no configured detector emits.

    Returns one readable message per problem (empty when the wiring is sound);
    protocol validation should report them.
    """
    emitted: set[str] = set()
    for d in detectors:
        emitted |= _EMITS.get(d.kind, set())
    problems = []
    for i, p in enumerate(policies):
        if isinstance(p, TriagePolicyConfig):
            needed: tuple[str, ...] = ("confluence",)
            bad = [
                d
                for d in detectors
                if d.kind == "confluence" and d.min_confluence_fraction is not None
            ]
            if bad and len(bad) == sum(d.kind == "confluence" for d in detectors):
                problems.append(
                    f"policies[{i}] (triage) needs a confluence detector that reports every "
                    "frame (min_confluence_fraction: null)"
                )
        else:
            needed = p.trigger_kinds
        missing = [k for k in needed if k not in emitted]
        if missing:
            problems.append(
                f"policies[{i}] ({p.kind}) listens for {missing} but no detector emits them "
                f"(detectors emit {sorted(emitted) or 'nothing'})"
            )
    return problems
