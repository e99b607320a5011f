"""Policy configurations: how detections become actions on the acquisition.

A protocol lists policies under ``policies:``; each entry is picked by its
``kind``. Policies only *ask*; the scheduler checks every action against the
protocol's limits (light budget, max burst length, travel, re-image count).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "BurstOnEventPolicyConfig",
    "FollowCellPolicyConfig",
    "PolicyConfig",
    "ReimageOnHitPolicyConfig",
    "TriagePolicyConfig",
]


class _PolicyBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(None, description="Optional label in logs; defaults to its kind.")


class BurstOnEventPolicyConfig(_PolicyBase):
    """Event-driven acquisition: image a position fast while an event runs.

    Hysteresis as in event-driven acquisition (EDA): a detection of a
    ``trigger_kinds`` kind with score at least ``min_score`` switches the position
    to ``burst_interval_s``. It goes back to its baseline interval once the event
    is over (an ``end_kinds`` detection followed by ``post_end_s`` of imaging, or
    no trigger evidence for ``quiet_s``), but never before ``min_fast_frames`` fast
    frames and always after ``max_burst_s``.
    """

    kind: Literal["burst_on_event"] = "burst_on_event"
    trigger_kinds: tuple[str, ...] = Field(("mitosis_onset",), min_length=1)
    sustain_kinds: tuple[str, ...] = Field(
        ("mitosis_ongoing",), description="Detections that say a started event is still running."
    )
    end_kinds: tuple[str, ...] = Field(
        ("division", "mitosis_abandoned"), description="Detections that mean the event is over."
    )
    match_radius_um: float = Field(
        30.0, gt=0, description="Sustain/end evidence this close to an event belongs to it."
    )
    mode: str = Field("burst", min_length=1, description="Mode name of burst frames.")
    min_score: float = Field(0.5, ge=0)
    burst_interval_s: float = Field(120.0, gt=0, description="Fast interval during a burst.")
    min_fast_frames: int = Field(
        5, ge=1, description="Fast frames taken before a burst may end (hysteresis)."
    )
    post_end_s: float = Field(
        0.0, ge=0, description="Keep imaging fast this long after the event's end is seen."
    )
    quiet_s: float = Field(
        900.0,
        gt=0,
        description="An event with no trigger or sustain evidence for this long is over.",
    )
    max_burst_s: float = Field(
        4800.0, gt=0, description="Hard upper bound on one burst (safety against stuck events)."
    )
    refractory_s: float = Field(
        0.0, ge=0, description="After a burst ends, ignore new triggers at that position this long."
    )

    @model_validator(mode="after")
    def _check_times(self) -> BurstOnEventPolicyConfig:
        if self.max_burst_s < self.burst_interval_s * self.min_fast_frames:
            raise ValueError(
                f"max_burst_s ({self.max_burst_s}) is shorter than min_fast_frames "
                f"({self.min_fast_frames}) x burst_interval_s ({self.burst_interval_s})"
            )
        return self


class ReimageOnHitPolicyConfig(_PolicyBase):
    """Guided acquisition: centre a hit and take one detailed look at it."""

    kind: Literal["reimage_on_hit"] = "reimage_on_hit"
    trigger_kinds: tuple[str, ...] = Field(("mitosis_onset",), min_length=1)
    min_score: float = Field(0.5, ge=0)
    objective: str | None = Field(
        "40x", description="Objective preset for the look; None keeps the current one."
    )
    z_range_um: float = Field(10.0, ge=0, description="Total z-stack range (0 = single plane).")
    z_step_um: float = Field(1.0, gt=0)
    channels: tuple[str, ...] = Field(
        (), description="Channel presets for the look; empty uses the baseline channel."
    )
    exposure_ms: float | None = Field(None, gt=0)
    max_per_position: int = Field(3, ge=1, description="Re-images per position for the whole run.")
    cooldown_s: float = Field(
        600.0, ge=0, description="Minimum time between re-images of one position."
    )
    min_separation_um: float = Field(
        15.0, ge=0, description="Do not re-image the same spot (within this distance) twice."
    )


class FollowCellPolicyConfig(_PolicyBase):
    """Keep chosen moving cells centred by moving the stage."""

    kind: Literal["follow_cell"] = "follow_cell"
    trigger_kinds: tuple[str, ...] = Field(
        ("motion",), min_length=1, description="Detections carrying a track's position."
    )
    select: Literal["nearest_center", "largest", "brightest"] = Field(
        "nearest_center", description="How the cell to follow is chosen on the first frame."
    )
    n_cells: int = Field(
        1, ge=1, description="Follow this many cells; the stage keeps their centroid centred."
    )
    deadband_um: float = Field(
        5.0, ge=0, description="Do not move while the target is within this of the centre."
    )
    max_step_um: float = Field(50.0, gt=0, description="Largest single stage move.")
    reselect_on_loss: bool = Field(
        True, description="When a followed track is lost, pick a new one by the same rule."
    )


class TriagePolicyConfig(_PolicyBase):
    """Stop spending light on empty or sparse positions after a first look."""

    kind: Literal["triage"] = "triage"
    after_frames: int = Field(
        1, ge=1, description="Judge a position after this many of its frames."
    )
    min_count: int | None = Field(
        5, ge=0, description="Skip positions with fewer objects than this (median over frames)."
    )
    min_confluence_fraction: float | None = Field(
        None, ge=0, le=1, description="Skip positions covered less than this fraction."
    )

    @model_validator(mode="after")
    def _some_threshold(self) -> TriagePolicyConfig:
        if self.min_count is None and self.min_confluence_fraction is None:
            raise ValueError("triage needs min_count or min_confluence_fraction (or both)")
        return self


PolicyConfig = Annotated[
    BurstOnEventPolicyConfig
    | ReimageOnHitPolicyConfig
    | FollowCellPolicyConfig
    | TriagePolicyConfig,
    Field(discriminator="kind"),
]
"""One policy entry of a protocol, chosen by ``kind``."""
