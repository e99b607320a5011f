"""Detector configurations: which biological events the analysis looks for.

A protocol lists detectors under ``detectors:``; each entry is picked by its
``kind``. Thresholds are expressed relative to what a microscopist measures by
eye (ratios to the object's own recent history, micrometres, minutes), so that
one protocol works across objectives and cameras.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AbnormalMorphologyDetectorConfig",
    "AppearanceDetectorConfig",
    "ConfluenceDetectorConfig",
    "DetectorConfig",
    "IntensityChangeDetectorConfig",
    "MitosisDetectorConfig",
    "MotionDetectorConfig",
]


class _DetectorBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(
        None, description="Optional label for this detector in logs; defaults to its kind."
    )
    min_area_um2: float = Field(
        8.0, ge=0, description="Objects smaller than this (debris, noise) are ignored."
    )
    max_area_um2: float = Field(
        2000.0, gt=0, description="Objects larger than this (clumps, artefacts) are ignored."
    )

    @model_validator(mode="after")
    def _area_range(self) -> _DetectorBase:
        if self.max_area_um2 <= self.min_area_um2:
            raise ValueError(
                f"max_area_um2 ({self.max_area_um2}) must be greater than "
                f"min_area_um2 ({self.min_area_um2})"
            )
        return self


class MitosisDetectorConfig(_DetectorBase):
    """Mitosis onset (prophase condensation) and division (one track becomes two).

    Onset fires when a tracked nucleus condenses relative to its own recent
    history: brighter (``min_intensity_ratio``), smaller (``max_area_ratio``) and
    round (``min_circularity``), and is among the bright objects of the field
    (``min_field_intensity_ratio`` to the field's median object). Scores from an
    optional stage classifier (``classifier``) can replace the hand-written rule.
    """

    kind: Literal["mitosis"] = "mitosis"
    onset: bool = Field(True, description="Report mitosis_onset (prophase) detections.")
    division: bool = Field(True, description="Report division detections (track splits).")
    history_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "Span of the track's own past (median) used as its interphase reference; "
            "in time, not frames, so fast bursts do not shorten it."
        ),
    )
    min_track_frames: int = Field(
        1,
        ge=1,
        description=(
            "A track needs this many past frames before onset can fire (1: from the second "
            "frame, so cells entering mitosis early in a run are not missed)."
        ),
    )
    min_intensity_ratio: float = Field(
        1.25, gt=1.0, description="Mean intensity / the track's reference mean intensity."
    )
    max_area_ratio: float = Field(
        0.9, gt=0, le=1.5, description="Area / the track's reference area (condensation)."
    )
    min_circularity: float = Field(
        0.8, ge=0, le=1.0, description="4*pi*area/perimeter^2 of the condensed nucleus."
    )
    min_field_intensity_ratio: float = Field(
        1.2, ge=0, description="Mean intensity / the median object's mean intensity in the frame."
    )
    min_solidity: float = Field(
        0.88,
        ge=0,
        le=1,
        description="A condensing nucleus stays convex; crescents are occlusions by neighbours.",
    )
    min_votes: int = Field(
        3,
        ge=2,
        le=4,
        description=(
            "How many of the four cues (brighter and smaller than its own past, round, "
            "bright in the field) must agree; brighter and smaller are always required "
            "(brightening at constant size is a neighbour crossing over, not condensation)."
        ),
    )
    bright_override_ratio: float = Field(
        1.8,
        gt=1.0,
        description=(
            "A new track (no history) this many times brighter than the field's median "
            "object and round counts as already in mitosis."
        ),
    )
    strong_intensity_ratio: float = Field(
        2.5,
        gt=1.0,
        description=(
            "Brightening against its own past this strong (more than two overlapping "
            "interphase nuclei can give), with a bright, convex object, fires without the "
            "size cue (the reference may be spoiled by an earlier occlusion)."
        ),
    )
    max_jump_um: float = Field(
        8.0,
        gt=0,
        description=(
            "A nucleus that moved more than this since the previous frame is not called "
            "condensing (a rounding cell stays put; a jump is a tracking swap)."
        ),
    )
    cooldown_s: float = Field(
        3600.0, ge=0, description="A track (and its lineage) fires onset at most once per this."
    )
    confirm_misses: int = Field(
        2,
        ge=1,
        description=(
            "An onset is abandoned (mitosis_abandoned) when the cell is not condensed on this "
            "many consecutive later frames: a false alarm ends its burst quickly."
        ),
    )
    max_onset_to_division_s: float = Field(
        3000.0,
        gt=0,
        description="An onset with no division after this long is abandoned (mitosis_abandoned).",
    )
    lost_after_s: float = Field(
        1800.0, gt=0, description="An onset whose cell is not seen for this long is abandoned."
    )
    classifier: str | None = Field(
        None, description="Name of a registered stage classifier; None uses the rule."
    )
    classifier_weights: str | None = Field(
        None,
        description="With classifier: cnn, stage classifier weights from `scopeloop train "
        "--what classifier` (e.g. fine-tuned on your own stage labels), relative to the "
        "protocol file. None: the shipped weights.",
    )
    classifier_min_score: float = Field(
        0.9,
        ge=0,
        le=1,
        description="P(mitotic) from the classifier at which an onset fires. At 0.9 the shipped "
        "CNN keeps 96 % of onsets at 0.91 precision on the simulated microscope; at 0.5 it "
        "keeps all at 0.74.",
    )
    classifier_min_field_ratio: float = Field(
        1.0,
        ge=0,
        description="With a classifier, an onset also needs the nucleus at least this bright "
        "relative to the field's median nucleus: condensing chromatin is bright, while dim "
        "pieces of a nucleus the segmenter cut apart can look mitotic to the classifier.",
    )

    @model_validator(mode="after")
    def _weights_for_the_cnn(self) -> MitosisDetectorConfig:
        if self.classifier_weights is not None and self.classifier != "cnn":
            raise ValueError(
                f"classifier_weights are the CNN's; set classifier: cnn (got classifier: "
                f"{self.classifier!r}) or remove classifier_weights"
            )
        return self


class AppearanceDetectorConfig(_DetectorBase):
    """A new object (not from a division) that stays for ``min_frames`` frames."""

    kind: Literal["appearance"] = "appearance"
    min_frames: int = Field(2, ge=1, description="Frames the new object must persist.")
    edge_margin_um: float = Field(
        10.0, ge=0, description="Ignore objects entering across the image border."
    )
    report_disappearance: bool = Field(
        False, description="Also report tracks that vanish inside the field (e.g. cell death)."
    )


class IntensityChangeDetectorConfig(_DetectorBase):
    """A tracked object's mean intensity changes by a ratio against its own history."""

    kind: Literal["intensity_change"] = "intensity_change"
    direction: Literal["increase", "decrease", "either"] = "increase"
    min_ratio: float = Field(
        1.5, gt=1.0, description="Change factor (new/old for increase, old/new for decrease)."
    )
    history_frames: int = Field(3, ge=1)
    min_track_frames: int = Field(2, ge=1)


class ConfluenceDetectorConfig(_DetectorBase):
    """Field occupancy: object count, density and covered fraction, every frame."""

    kind: Literal["confluence"] = "confluence"
    min_confluence_fraction: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Report only when covered fraction is at least this; None: every frame.",
    )


class AbnormalMorphologyDetectorConfig(_DetectorBase):
    """Rare nuclear shapes: irregular (low solidity), elongated or oversized nuclei."""

    kind: Literal["abnormal_morphology"] = "abnormal_morphology"
    max_solidity: float = Field(
        0.85, gt=0, le=1, description="Below this solidity a nucleus is called irregular."
    )
    max_eccentricity: float = Field(
        0.95, gt=0, le=1, description="Above this eccentricity a nucleus is called elongated."
    )
    max_area_ratio_to_field: float = Field(
        2.5, gt=1, description="Area above this multiple of the field's median area."
    )
    min_track_frames: int = Field(
        1, ge=1, description="Persist this many frames before reporting (1 = immediately)."
    )


class MotionDetectorConfig(_DetectorBase):
    """Per-track position and velocity (for following cells)."""

    kind: Literal["motion"] = "motion"
    min_speed_um_per_min: float = Field(
        0.0, ge=0, description="Report tracks at least this fast; 0 reports every track."
    )


DetectorConfig = Annotated[
    MitosisDetectorConfig
    | AppearanceDetectorConfig
    | IntensityChangeDetectorConfig
    | ConfluenceDetectorConfig
    | AbnormalMorphologyDetectorConfig
    | MotionDetectorConfig,
    Field(discriminator="kind"),
]
"""One detector entry of a protocol, chosen by ``kind``."""
