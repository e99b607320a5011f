"""The protocol's hard limits, checked before any action reaches hardware.

:meth:`LimitChecker.check` returns ``None`` when an action is allowed, or a
one-line reason why it is refused; the scheduler logs the reason with the
refused action. The light budget is also enforced frame by frame by the
scheduler (:meth:`LimitChecker.light_allows`), so no sequence of accepted
actions can exceed it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scopeloop.models.actions import Action, Reimage, Reposition, Retime, Skip, Stop
from scopeloop.models.protocol import LimitsSpec

__all__ = ["LimitChecker", "PlanView"]


@dataclass(frozen=True)
class PlanView:
    """What the checker needs to know about the run's current plan."""

    now_s: float
    light_used_s: float
    bursts_active: int
    position_in_burst: bool
    reimages_total: int
    reimages_position: int
    origin_xy_um: tuple[float, float]
    current_z_um: float
    baseline_frame_light_s: float
    known_position: bool


class LimitChecker:
    """Checks actions against :class:`~scopeloop.models.protocol.LimitsSpec`."""

    def __init__(self, limits: LimitsSpec) -> None:
        self.limits = limits

    def light_allows(self, used_s: float, cost_s: float) -> bool:
        """Whether spending ``cost_s`` more illumination stays within the budget."""
        budget = self.limits.light_budget_s
        return budget is None or used_s + cost_s <= budget + 1e-9

    def _xy(self, x: float, y: float, origin: tuple[float, float]) -> str | None:
        lim = self.limits
        if not (math.isfinite(x) and math.isfinite(y)):
            return f"stage target ({x}, {y}) um is not a finite position"
        if lim.stage_x_range_um is not None and not (
            lim.stage_x_range_um[0] <= x <= lim.stage_x_range_um[1]
        ):
            rng = list(lim.stage_x_range_um)
            return f"stage x {x:.1f} um is outside limits.stage_x_range_um {rng}"
        if lim.stage_y_range_um is not None and not (
            lim.stage_y_range_um[0] <= y <= lim.stage_y_range_um[1]
        ):
            rng = list(lim.stage_y_range_um)
            return f"stage y {y:.1f} um is outside limits.stage_y_range_um {rng}"
        d = math.hypot(x - origin[0], y - origin[1])
        if d > lim.max_reposition_um:
            return (
                f"target is {d:.0f} um from the position's start, more than "
                f"limits.max_reposition_um ({lim.max_reposition_um:g})"
            )
        return None

    def check(self, action: Action, plan: PlanView, reimage_light_s: float = 0.0) -> str | None:
        """``None`` if ``action`` is allowed now, else why it is refused."""
        lim = self.limits
        if isinstance(action, Stop):
            return None
        if action.position is None:
            return f"{action.type} needs a position"
        if not plan.known_position:
            return f"unknown position {action.position!r}"
        if isinstance(action, Skip):
            return None
        if isinstance(action, Retime):
            fast = action.mode != "baseline"
            if action.interval_s < lim.min_interval_s:
                return (
                    f"interval {action.interval_s:g} s is below limits.min_interval_s "
                    f"({lim.min_interval_s:g} s)"
                )
            if fast and action.duration_s is not None and action.duration_s > lim.max_burst_s:
                return (
                    f"burst of {action.duration_s:g} s is longer than limits.max_burst_s "
                    f"({lim.max_burst_s:g} s)"
                )
            if (
                fast
                and not plan.position_in_burst
                and (plan.bursts_active >= lim.max_concurrent_bursts)
            ):
                return (
                    f"{plan.bursts_active} positions are already in a fast mode "
                    f"(limits.max_concurrent_bursts = {lim.max_concurrent_bursts})"
                )
            if fast and not self.light_allows(plan.light_used_s, plan.baseline_frame_light_s):
                return "light budget exhausted"
            return None
        if isinstance(action, Reposition):
            return self._xy(action.x_um, action.y_um, plan.origin_xy_um)
        if isinstance(action, Reimage):
            if plan.reimages_total >= lim.max_reimages:
                return f"limits.max_reimages ({lim.max_reimages}) reached"
            if plan.reimages_position >= lim.max_reimages_per_position:
                return (
                    f"limits.max_reimages_per_position ({lim.max_reimages_per_position}) "
                    "reached for this position"
                )
            why = self._xy(action.x_um, action.y_um, plan.origin_xy_um)
            if why:
                return why
            half = action.z_range_um / 2
            lo, hi = plan.current_z_um - half, plan.current_z_um + half
            if lo < lim.z_range_um[0] or hi > lim.z_range_um[1]:
                return (
                    f"z-stack {lo:.1f}..{hi:.1f} um leaves limits.z_range_um {list(lim.z_range_um)}"
                )
            if not self.light_allows(plan.light_used_s, reimage_light_s):
                budget = lim.light_budget_s
                return (
                    f"re-image needs {reimage_light_s:.2f} s of light; "
                    f"{(budget or 0) - plan.light_used_s:.2f} s left of limits.light_budget_s"
                )
            return None
        return f"unknown action {action!r}"  # pragma: no cover
