"""Actions a policy may ask of the running acquisition.

The scheduler checks each against the protocol's limits before it reaches
hardware; a refused action is logged with the reason.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Action", "Reimage", "Reposition", "Retime", "Skip", "Stop"]


class _Action(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    position: str | None = Field(None, description="Target position; None means the whole run.")
    reason: str = Field("", description="Human-readable why, copied into the decision log.")


class Retime(_Action):
    """Image ``position`` every ``interval_s`` for ``duration_s`` (then back to baseline)."""

    type: Literal["retime"] = "retime"
    interval_s: float = Field(gt=0)
    duration_s: float | None = Field(None, gt=0, description="None: until changed again.")
    mode: str = "burst"


class Reposition(_Action):
    """Move ``position`` so that stage point (x_um, y_um) is centred from now on."""

    type: Literal["reposition"] = "reposition"
    x_um: float
    y_um: float


class Reimage(_Action):
    """One detailed look at (x_um, y_um): another objective, a z-stack, extra channels."""

    type: Literal["reimage"] = "reimage"
    x_um: float
    y_um: float
    objective: str | None = None
    z_range_um: float = Field(0.0, ge=0)
    z_step_um: float = Field(1.0, gt=0)
    channels: tuple[str, ...] = ()
    exposure_ms: float | None = Field(None, gt=0)


class Skip(_Action):
    """Stop imaging ``position`` (empty or uninformative)."""

    type: Literal["skip"] = "skip"


class Stop(_Action):
    """End the run early."""

    type: Literal["stop"] = "stop"


Action = Annotated[Retime | Reposition | Reimage | Skip | Stop, Field(discriminator="type")]
