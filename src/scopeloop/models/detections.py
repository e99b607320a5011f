"""What the analysis knows about a frame, and what it reports back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Detection", "FrameInfo"]


class FrameInfo(BaseModel):
    """Where and when a frame was taken, as measured (not as planned)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    position: str = Field(description="Position name in the protocol (e.g. 'B03').")
    mode: str = Field("baseline", description="Acquisition mode: baseline, burst, reimage...")
    frame_index: int = Field(description="Index of this frame within its position and mode.")
    t_s: float = Field(description="Specimen time of acquisition, seconds since run start.")
    arrival_wall_s: float = Field(0.0, description="time.perf_counter() when frameReady fired.")
    stage_x_um: float
    stage_y_um: float
    z_um: float = 0.0
    pixel_size_um: float
    objective: str = ""
    channel: str = ""
    exposure_ms: float = 0.0


class Detection(BaseModel):
    """A typed biological event found in the pixels of one position."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(description="mitosis_onset, division, appearance, intensity_change, ...")
    position: str
    frame_index: int
    t_s: float
    x_um: float = Field(description="Stage X of the object's centre, micrometres.")
    y_um: float = Field(description="Stage Y of the object's centre, micrometres.")
    track_id: int | None = None
    score: float = 1.0
    evidence: dict[str, Any] = Field(default_factory=dict)
