"""The scheduler owns time: a per-position plan, yielded as MDA events in due order.

``core.mda.run(scheduler.events())`` pulls one event at a time. Between
events the generator waits on the run's :class:`~scopeloop.clock.Clock` for the
next due time; an action submitted meanwhile (from the analysis thread) wakes
it, so a decision changes what is acquired next without restarting the run.

Every action passes :class:`~scopeloop.acquisition.limits.LimitChecker` first;
the light budget is also checked before each frame is handed to the runner,
so it is never exceeded.

Images: every position has a *time-lapse* image (baseline and burst frames
alike, in time order; each frame's mode and time are kept in the store) and,
when re-imaged, a *re-image* image (one time point per detailed look:
channels x z-stack).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import useq

from scopeloop.clock import Clock
from scopeloop.decisions.policies import PositionContext
from scopeloop.models.actions import Action, Reimage, Reposition, Retime, Skip, Stop
from scopeloop.models.protocol import ChannelSpec

from .limits import LimitChecker, PlanView

__all__ = ["ObjectiveSetting", "Scheduler", "Site", "Verdict"]

PropertyTuple = tuple[str, str, Any]


@dataclass(frozen=True)
class ObjectiveSetting:
    """An objective preset as the hardware needs it."""

    name: str
    properties: tuple[PropertyTuple, ...] = ()
    pixel_size_um: float = 1.0


@dataclass
class Site:
    """One position's plan (mutable; guarded by the scheduler's lock)."""

    name: str
    index: int
    x_um: float
    y_um: float
    z_um: float
    baseline_interval_s: float
    well: str | None = None
    interval_s: float = 0.0
    mode: str = "baseline"
    mode_since_s: float = 0.0
    mode_until_s: float | None = None
    next_due_s: float = 0.0
    last_frame_s: float | None = None
    frames_total: int = 0
    frames_in_mode: int = 0
    reimages: int = 0
    active: bool = True
    origin_xy_um: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if not self.interval_s:
            self.interval_s = self.baseline_interval_s
        self.origin_xy_um = (self.x_um, self.y_um)

    @property
    def fast(self) -> bool:
        return self.active and self.mode not in ("baseline", "skipped")


@dataclass(frozen=True)
class Verdict:
    """Outcome of :meth:`Scheduler.submit`."""

    accepted: bool
    reason: str = ""
    t_s: float = 0.0


@dataclass
class _ReimageJob:
    site: Site
    action: Reimage
    events: list[useq.MDAEvent] = field(default_factory=list)


class Scheduler:
    """Per-position plan and the event stream that realises it.

    Parameters
    ----------
    sites : sequence of Site
        The positions, in protocol order.
    channels : sequence of ChannelSpec
        Time-lapse channels (each frame of a position takes all of them).
    objective : ObjectiveSetting
        Time-lapse objective (re-applied on every time-lapse event, so a
        re-image at another objective never leaks into the time-lapse).
    objectives : dict of str to ObjectiveSetting
        Objectives a re-image may ask for.
    clock : Clock
        The run's clock (specimen seconds).
    duration_s : float
        No frame is started at or after this time.
    checker : LimitChecker
        The protocol's limits.
    analysis_channel : int
        Index of the channel analysed (marked in event metadata).
    log : callable, optional
        Receives one dict per decision the scheduler makes by itself
        (burst expiry, end of run).
    """

    def __init__(
        self,
        sites: Sequence[Site],
        channels: Sequence[ChannelSpec],
        objective: ObjectiveSetting,
        clock: Clock,
        duration_s: float,
        checker: LimitChecker,
        *,
        objectives: dict[str, ObjectiveSetting] | None = None,
        analysis_channel: int = 0,
        log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not sites:
            raise ValueError("a schedule needs at least one position")
        self._sites = {s.name: s for s in sites}
        self._order = list(sites)
        self.channels = tuple(channels)
        self.objective = objective
        self.objectives = dict(objectives or {})
        self.objectives.setdefault(objective.name, objective)
        self.clock = clock
        self.duration_s = float(duration_s)
        self.checker = checker
        self.analysis_channel = analysis_channel
        self._log = log or (lambda rec: None)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopped = False
        self._reimages: deque[_ReimageJob] = deque()
        self.light_used_s = 0.0
        self.frames_planned = 0
        self.reimages_total = 0
        self.stop_reason: str | None = None
        self._unconfirmed: dict[tuple[str, int, int, int], useq.MDAEvent] = {}
        self.on_missing: Callable[[useq.MDAEvent], None] | None = None
        self.frame_light_s = sum(c.exposure_ms for c in self.channels) / 1000.0

    # ------------------------------------------------------------------ queries

    @property
    def sites(self) -> list[Site]:
        return list(self._order)

    def site(self, name: str) -> Site:
        return self._sites[name]

    def snapshot(self) -> list[dict[str, Any]]:
        """A copy of every position's plan (for progress displays)."""
        with self._lock:
            return [
                {
                    "name": s.name,
                    "mode": s.mode if s.active else "skipped",
                    "interval_s": s.interval_s,
                    "frames": s.frames_total,
                    "next_due_s": s.next_due_s,
                    "reimages": s.reimages,
                }
                for s in self._order
            ]

    def context(self, position: str, now_s: float) -> PositionContext:
        """The position's plan as a policy sees it."""
        with self._lock:
            s = self._sites[position]
            return PositionContext(
                position=s.name,
                now_s=now_s,
                mode=s.mode if s.active else "skipped",
                interval_s=s.interval_s,
                baseline_interval_s=s.baseline_interval_s,
                mode_since_s=s.mode_since_s,
                frames_in_mode=s.frames_in_mode,
                frames_total=s.frames_total,
                stage_x_um=s.x_um,
                stage_y_um=s.y_um,
                reimages_done=s.reimages,
            )

    @property
    def stopped(self) -> bool:
        return self._stopped

    # ------------------------------------------------------------------ control

    def stop(self, reason: str = "cancelled") -> None:
        """End the event stream at the next event boundary (wakes any wait)."""
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self.stop_reason = self.stop_reason or reason
        self._wake.set()

    def _plan_view(self, s: Site | None, now: float) -> PlanView:
        return PlanView(
            now_s=now,
            light_used_s=self.light_used_s,
            bursts_active=sum(x.fast for x in self._order),
            position_in_burst=bool(s and s.fast),
            reimages_total=self.reimages_total + len(self._reimages),
            reimages_position=(s.reimages if s else 0),
            origin_xy_um=s.origin_xy_um if s else (0.0, 0.0),
            current_z_um=s.z_um if s else 0.0,
            baseline_frame_light_s=self.frame_light_s,
            known_position=s is not None,
        )

    def submit(self, action: Action) -> Verdict:
        """Check ``action`` against the limits and, if allowed, apply it to the plan."""
        with self._lock:
            now = self.clock.now_s()
            if self._stopped:
                return Verdict(False, f"run is ending ({self.stop_reason})", now)
            s = self._sites.get(action.position) if action.position is not None else None
            if isinstance(action, Stop):
                self._stopped = True
                self.stop_reason = f"stopped by decision: {action.reason or 'stop'}"
                self._wake.set()
                return Verdict(True, "", now)
            if s is not None and not s.active and not isinstance(action, Skip):
                return Verdict(False, f"position {s.name!r} is skipped", now)
            job_events: list[useq.MDAEvent] = []
            cost = 0.0
            if isinstance(action, Reimage) and s is not None:
                try:
                    job_events = self._reimage_events(s, action)
                except ValueError as exc:
                    return Verdict(False, str(exc), now)
                cost = sum((e.exposure or 0.0) for e in job_events) / 1000.0
            why = self.checker.check(action, self._plan_view(s, now), cost)
            if why is not None:
                return Verdict(False, why, now)
            assert s is not None  # every other action names a known position
            if isinstance(action, Retime):
                self._apply_retime(s, action, now)
            elif isinstance(action, Reposition):
                s.x_um, s.y_um = action.x_um, action.y_um
            elif isinstance(action, Skip):
                s.active = False
                s.mode = "skipped"
                s.mode_since_s = now
            elif isinstance(action, Reimage):
                self._reimages.append(_ReimageJob(s, action, job_events))
        self._wake.set()
        return Verdict(True, "", now)

    def _apply_retime(self, s: Site, a: Retime, now: float) -> None:
        if a.mode != s.mode:
            s.mode = a.mode
            s.mode_since_s = now
            s.frames_in_mode = 0
        s.interval_s = a.interval_s
        fast = a.mode != "baseline"
        duration = a.duration_s
        if fast and duration is None:
            duration = self.checker.limits.max_burst_s  # no burst runs unbounded
        s.mode_until_s = now + duration if (fast and duration is not None) else None
        base = s.last_frame_s if s.last_frame_s is not None else now
        s.next_due_s = max(now, base + s.interval_s)

    # ------------------------------------------------------------------ events

    def _meta(self, s: Site, **kw: Any) -> dict[str, Any]:
        return {"scopeloop": {"position": s.name, "well": s.well, **kw}}

    def _frame_events(self, s: Site, due: float) -> list[useq.MDAEvent]:
        t = s.frames_total
        names = tuple(c.config for c in self.channels)
        out = []
        for ci, ch in enumerate(self.channels):
            out.append(
                useq.MDAEvent(
                    index={"p": s.index, "t": t, "c": ci},
                    channel={"config": ch.config, "group": ch.group},
                    exposure=ch.exposure_ms,
                    x_pos=s.x_um,
                    y_pos=s.y_um,
                    z_pos=s.z_um,
                    pos_name=s.name,
                    properties=list(self.objective.properties) or None,
                    metadata=self._meta(
                        s,
                        image=f"{s.name}_timelapse",
                        kind="timelapse",
                        mode=s.mode,
                        t=t,
                        c=ci,
                        z=0,
                        size_c=len(names),
                        size_z=1,
                        channel_names=names,
                        objective=self.objective.name,
                        pixel_size_um=self.objective.pixel_size_um,
                        z_step_um=1.0,
                        planned_s=due,
                        analyse=ci == self.analysis_channel,
                    ),
                )
            )
        return out

    def _reimage_events(self, s: Site, a: Reimage) -> list[useq.MDAEvent]:
        obj = self.objective if a.objective is None else self.objectives.get(a.objective)
        if obj is None:
            raise ValueError(
                f"objective {a.objective!r} is not available (have {sorted(self.objectives)})"
            )
        by_name = {c.config: c for c in self.channels}
        if a.channels:
            chans = [
                by_name.get(n)
                or ChannelSpec(
                    config=n,
                    group=self.channels[0].group,
                    exposure_ms=self.channels[self.analysis_channel].exposure_ms,
                )
                for n in a.channels
            ]
        else:
            chans = [self.channels[self.analysis_channel]]
        nz = 1 if a.z_range_um <= 0 else math.floor(a.z_range_um / a.z_step_um + 1e-9) + 1
        z0 = s.z_um - (nz - 1) * a.z_step_um / 2
        t = s.reimages
        names = tuple(c.config for c in chans)
        out = []
        for ci, ch in enumerate(chans):
            for zi in range(nz):
                out.append(
                    useq.MDAEvent(
                        index={"p": s.index, "t": t, "c": ci, "z": zi},
                        channel={"config": ch.config, "group": ch.group},
                        exposure=a.exposure_ms or ch.exposure_ms,
                        x_pos=a.x_um,
                        y_pos=a.y_um,
                        z_pos=z0 + zi * a.z_step_um,
                        pos_name=s.name,
                        properties=list(obj.properties) or None,
                        metadata=self._meta(
                            s,
                            image=f"{s.name}_reimage",
                            kind="reimage",
                            mode="reimage",
                            t=t,
                            c=ci,
                            z=zi,
                            size_c=len(names),
                            size_z=nz,
                            channel_names=names,
                            objective=obj.name,
                            pixel_size_um=obj.pixel_size_um,
                            z_step_um=a.z_step_um,
                            planned_s=None,
                            analyse=False,
                            reason=a.reason,
                        ),
                    )
                )
        return out

    def _expire(self, now: float) -> None:
        for s in self._order:
            if s.fast and s.mode_until_s is not None and now >= s.mode_until_s:
                self._log(
                    {
                        "t_s": now,
                        "source": "scheduler",
                        "position": s.name,
                        "action": {
                            "type": "retime",
                            "position": s.name,
                            "interval_s": s.baseline_interval_s,
                            "mode": "baseline",
                        },
                        "accepted": True,
                        "reason": f"{s.mode} reached its duration: back to baseline",
                    }
                )
                s.mode = "baseline"
                s.mode_since_s = now
                s.mode_until_s = None
                s.frames_in_mode = 0
                s.interval_s = s.baseline_interval_s
                base = s.last_frame_s if s.last_frame_s is not None else now
                s.next_due_s = max(now, base + s.interval_s)

    def _end(self, reason: str) -> None:
        self._stopped = True
        self.stop_reason = self.stop_reason or reason
        self._log({"t_s": self.clock.now_s(), "source": "scheduler", "end": reason})

    def _next(self) -> tuple[list[useq.MDAEvent] | None, float]:
        """Events to run now, or (None, time to wait until). Caller holds the lock."""
        now = self.clock.now_s()
        self._expire(now)
        if self._reimages:
            job = self._reimages.popleft()
            cost = sum((e.exposure or 0.0) for e in job.events) / 1000.0
            if not self.checker.light_allows(self.light_used_s, cost):
                return [], now  # budget moved since acceptance: drop the job
            job.site.reimages += 1
            self.reimages_total += 1
            self.light_used_s += cost
            return job.events, now
        active = [s for s in self._order if s.active]
        if not active:
            self._end("every position was skipped")
            return None, math.inf
        s = min(active, key=lambda x: (x.next_due_s, x.index))
        due = s.next_due_s
        if due >= self.duration_s:
            self._end("duration reached")
            return None, math.inf
        if due > now:
            return None, due
        if not self.checker.light_allows(self.light_used_s, self.frame_light_s):
            self._end("light budget exhausted")
            return None, math.inf
        evs = self._frame_events(s, due)
        self.light_used_s += self.frame_light_s
        s.frames_total += 1
        s.frames_in_mode += 1
        s.last_frame_s = now
        nxt = due + s.interval_s
        s.next_due_s = nxt if nxt >= now else now  # late: catch up once, not in a rush
        self.frames_planned += len(evs)
        return evs, now

    def confirm(self, event: useq.MDAEvent) -> None:
        """The runner delivered ``event``'s frame (called from ``frameReady``)."""
        key = _key(event)
        if key is not None:
            with self._lock:
                self._unconfirmed.pop(key, None)

    def flush_missing(self) -> list[useq.MDAEvent]:
        """Events handed out whose frame never came (reported through ``on_missing``)."""
        with self._lock:
            missing = list(self._unconfirmed.values())
            self._unconfirmed.clear()
        if self.on_missing is not None:
            for ev in missing:
                self.on_missing(ev)
        return missing

    def events(self) -> Iterator[useq.MDAEvent]:
        """The event stream for ``core.mda.run``; ends at duration, budget, stop or skip-all."""
        while True:
            self.flush_missing()  # the runner is back for more: the last event is done
            with self._lock:
                if self._stopped:
                    return
                self._wake.clear()
                evs, wait_until = self._next()
            if evs is None:
                if self._stopped:
                    return
                # woken early by a submitted action or stop(); deadline-bounded wait
                self.clock.sleep_until(wait_until, cancel=self._wake)
                continue
            for ev in evs:
                if self._stopped:
                    return
                key = _key(ev)
                if key is not None:
                    with self._lock:
                        self._unconfirmed[key] = ev
                yield ev


def _key(ev: useq.MDAEvent) -> tuple[str, int, int, int] | None:
    m = ev.metadata.get("scopeloop")
    if not m:
        return None
    return (m["image"], int(m["t"]), int(m["c"]), int(m["z"]))
