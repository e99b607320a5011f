"""Protocols: what an adaptive experiment acquires, analyses, decides and may never do.

A protocol is a YAML file validated by the :class:`Protocol` model. Every model
is frozen and forbids unknown keys (a typo is an error, not a silently ignored
setting); units are in the field names. :func:`load_protocol` reports every
problem of a file as one line naming the file, the field, the value and what
was expected.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .detector_config import DetectorConfig
from .policy_config import BurstOnEventPolicyConfig, PolicyConfig

__all__ = [
    "AcquisitionSpec",
    "AnalysisSpec",
    "ChannelSpec",
    "GridSpec",
    "LimitsSpec",
    "PositionSpec",
    "Protocol",
    "ProtocolError",
    "SimulationSpec",
    "load_protocol",
    "protocol_json_schema",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChannelSpec(_Model):
    """One channel: a preset of a Micro-Manager config group and its exposure."""

    config: str = Field(min_length=1, description="Preset name, e.g. 'FITC'.")
    group: str = Field("Channel", min_length=1, description="Config group of the preset.")
    exposure_ms: float = Field(gt=0, le=60_000, description="Camera exposure, milliseconds.")


class PositionSpec(_Model):
    """An explicit stage position."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    x_um: float
    y_um: float
    z_um: float | None = Field(None, description="Focus; None keeps the run's start focus.")


class GridSpec(_Model):
    """A rows x columns tile grid around each well centre or position."""

    rows: int = Field(1, ge=1, le=50)
    columns: int = Field(1, ge=1, le=50)
    overlap_fraction: float = Field(
        0.0, ge=0, lt=1, description="Overlap between neighbouring fields (0.1 = 10 %)."
    )


class AcquisitionSpec(_Model):
    """The baseline time-lapse: where, what, how often and for how long."""

    plate: str = Field("96-well", description="useq well-plate key, e.g. '96-well'.")
    a1_center_xy_um: tuple[float, float] = Field(
        (0.0, 0.0), description="Stage coordinates of the centre of well A1."
    )
    wells: tuple[str, ...] = Field((), description="Well names, e.g. ['B3', 'C5'].")
    positions: tuple[PositionSpec, ...] = Field((), description="Explicit stage positions.")
    grid: GridSpec | None = Field(None, description="Tile each well/position into a grid.")
    channels: tuple[ChannelSpec, ...] = Field(min_length=1)
    objective: str | None = Field("10x", description="Objective preset; None keeps the current.")
    objective_group: str = Field("Objective", min_length=1)
    z_um: float | None = Field(None, description="Focus for all positions; None keeps current.")
    interval_s: float = Field(gt=0, description="Baseline interval between frames, seconds.")
    duration_s: float = Field(gt=0, description="Length of the experiment, seconds.")

    @model_validator(mode="after")
    def _where(self) -> AcquisitionSpec:
        if not self.wells and not self.positions:
            raise ValueError("give 'wells' or 'positions' (or both): nothing to image")
        try:
            import useq

            plan = useq.WellPlatePlan(
                plate=self.plate,  # type: ignore[arg-type]  # useq accepts plate keys
                a1_center_xy=self.a1_center_xy_um,
            )
        except Exception:
            import useq

            known = ", ".join(sorted(useq.registered_well_plates()))
            raise ValueError(f"plate {self.plate!r} is not a known well plate ({known})") from None
        names = {str(w.name) for w in plan.all_well_positions}
        bad = [w for w in self.wells if w not in names]
        if bad:
            raise ValueError(f"wells {bad} are not on a {self.plate} plate (e.g. 'A1', 'B3')")
        if len(set(self.wells)) != len(self.wells):
            raise ValueError("wells are listed more than once")
        pnames = [p.name for p in self.positions]
        if len(set(pnames)) != len(pnames) or set(pnames) & set(self.wells):
            raise ValueError("position names must be unique (and differ from well names)")
        if self.interval_s > self.duration_s:
            raise ValueError(
                f"interval_s ({self.interval_s:g}) is longer than duration_s ({self.duration_s:g})"
            )
        return self


class SimulationSpec(_Model):
    """Used only on the simulated microscope (ignored on real hardware)."""

    seed: int = Field(0, ge=0, description="Specimen seed: same seed, same cells.")
    time_scale: float = Field(
        100.0, gt=0, le=100_000, description="Specimen seconds per wall second."
    )
    fast_forward: bool = Field(
        False, description="Skip waits entirely (fixed-rate reference runs): compute-bound."
    )
    specimen: dict[str, Any] = Field(
        default_factory=dict,
        description="Specimen options (scopeloop.simulation.SpecimenOptions fields).",
    )


class AnalysisSpec(_Model):
    """Real-time analysis of every time-lapse frame."""

    enabled: bool = Field(True, description="False: acquire only (fixed plans).")
    segmenter: str = Field("unet", min_length=1, description="'unet', 'classical', ...")
    weights: str | None = Field(
        None,
        min_length=1,
        description="The trained model the segmenter loads, relative to the protocol file: "
        "U-Net weights from `scopeloop train` (e.g. fine-tuned on your own masks), a "
        "bioimage.io package (rdf.yaml or zip), a Cellpose model file or a StarDist model "
        "folder. None: the shipped U-Net weights, or the adapter's own default model.",
    )
    tta: bool = Field(
        False,
        description="U-Net only: average its maps over the frame and three flips (test-time "
        "augmentation). A little more accurate, four network passes per frame: for a GPU, "
        "or when frames come slowly.",
    )
    nucleus_diameter_um: Annotated[float, Field(gt=0)] | Literal["auto"] | None = Field(
        None,
        description="U-Net only: typical nucleus diameter in micrometres (e.g. 11 for HeLa "
        "H2B-GFP). With the objective's pixel size it tells the U-Net when nuclei are "
        "larger than it was trained on (over 44 px across, e.g. 40x or 60x without "
        "binning); frames are then binned for the analysis. 'auto': the U-Net measures "
        "the nuclei in the first frames that show enough of them and holds the median of "
        "three such measures for the rest of the run (no pixel size needed; logged in "
        "decisions.jsonl). None: frames as they come.",
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'.")
    channel: str | None = Field(
        None, description="Channel preset analysed (the nuclear marker); None: the first."
    )
    inbox_size: int = Field(
        8, ge=1, le=1024, description="Frames waiting for analysis before stale ones drop."
    )

    @field_validator("nucleus_diameter_um", mode="before")
    @classmethod
    def _diameter_or_auto(cls, v: Any) -> Any:
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if v is None or v == "auto" or (number and v > 0):  # NaN is not > 0
            return v
        raise ValueError("must be a positive number of micrometres or 'auto'")

    @model_validator(mode="after")
    def _options_fit_the_segmenter(self) -> AnalysisSpec:
        if self.weights is not None and self.segmenter == "classical":
            raise ValueError(
                "weights are for segmenters with a trained model (unet, bioimageio, cellpose, "
                "stardist), not 'classical' (remove analysis.weights or change "
                "analysis.segmenter)"
            )
        for key, what, given in (
            ("tta", "tta (test-time flip averaging)", self.tta),
            ("nucleus_diameter_um", "nucleus_diameter_um", self.nucleus_diameter_um is not None),
        ):
            if given and self.segmenter != "unet":
                raise ValueError(
                    f"{what} is a U-Net option, not {self.segmenter!r} "
                    f"(remove analysis.{key} or use analysis.segmenter: unet)"
                )
        return self


class LimitsSpec(_Model):
    """Hard limits: no action may make the acquisition exceed them."""

    light_budget_s: float | None = Field(
        None, gt=0, description="Total illumination (sum of exposures), seconds; None: no cap."
    )
    max_burst_s: float = Field(
        7200.0, gt=0, description="Longest time one position may stay in a fast mode."
    )
    max_concurrent_bursts: int = Field(4, ge=0, description="Positions in a fast mode at once.")
    min_interval_s: float = Field(30.0, gt=0, description="Fastest interval any action may set.")
    stage_x_range_um: tuple[float, float] | None = Field(
        None, description="Allowed stage X travel (min, max); None: no limit."
    )
    stage_y_range_um: tuple[float, float] | None = Field(
        None, description="Allowed stage Y travel (min, max); None: no limit."
    )
    z_range_um: tuple[float, float] = Field(
        (-200.0, 200.0), description="Allowed focus range (min, max)."
    )
    max_reimages: int = Field(20, ge=0, description="Re-images in the whole run.")
    max_reimages_per_position: int = Field(3, ge=0)
    max_reposition_um: float = Field(
        500.0, gt=0, description="Farthest a position may drift from where it started."
    )

    @model_validator(mode="after")
    def _ranges(self) -> LimitsSpec:
        for name in ("stage_x_range_um", "stage_y_range_um", "z_range_um"):
            r = getattr(self, name)
            if r is not None and r[0] >= r[1]:
                raise ValueError(f"{name} must be (min, max) with min < max, got {list(r)}")
        return self


class Protocol(_Model):
    """An adaptive live-cell experiment."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    acquisition: AcquisitionSpec
    simulation: SimulationSpec = Field(default_factory=SimulationSpec)  # type: ignore[arg-type]
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)  # type: ignore[arg-type]
    detectors: tuple[DetectorConfig, ...] = ()
    policies: tuple[PolicyConfig, ...] = ()
    limits: LimitsSpec = Field(default_factory=LimitsSpec)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _consistent(self) -> Protocol:
        # Wiring between detectors and policies is checked one layer up
        # (scopeloop.acquisition.check_protocol), where the policies live.
        problems: list[str] = []
        if self.policies and not self.analysis.enabled:
            problems.append("policies need analysis.enabled: true")
        chans = [c.config for c in self.acquisition.channels]
        if self.analysis.channel is not None and self.analysis.channel not in chans:
            problems.append(
                f"analysis.channel {self.analysis.channel!r} is not an acquisition channel {chans}"
            )
        for i, p in enumerate(self.policies):
            if isinstance(p, BurstOnEventPolicyConfig) and p.burst_interval_s < (
                self.limits.min_interval_s
            ):
                problems.append(
                    f"policies[{i}].burst_interval_s ({p.burst_interval_s:g}) is below "
                    f"limits.min_interval_s ({self.limits.min_interval_s:g})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def with_overrides(
        self,
        *,
        policies: bool = True,
        interval_s: float | None = None,
        duration_s: float | None = None,
        fast_forward: bool | None = None,
        seed: int | None = None,
        time_scale: float | None = None,
        analysis: bool | None = None,
    ) -> Protocol:
        """A copy for a variant run (e.g. a fixed-rate reference plan with policies off)."""
        acq = self.acquisition.model_copy(
            update={
                k: v
                for k, v in (("interval_s", interval_s), ("duration_s", duration_s))
                if v is not None
            }
        )
        sim = self.simulation.model_copy(
            update={
                k: v
                for k, v in (
                    ("fast_forward", fast_forward),
                    ("seed", seed),
                    ("time_scale", time_scale),
                )
                if v is not None
            }
        )
        data = self.model_dump(mode="python")
        data["acquisition"] = acq.model_dump(mode="python")
        data["simulation"] = sim.model_dump(mode="python")
        if not policies or analysis is False:
            data["policies"] = ()
        if analysis is not None:
            data["analysis"] = {**data["analysis"], "enabled": analysis}
        return Protocol.model_validate(data)


class ProtocolError(ValueError):
    """A protocol file is invalid; ``str(err)`` has one line per problem."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("function-after", "tagged-union") or "[" in str(part):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def format_validation_error(exc: ValidationError) -> list[str]:
    """One readable line per problem: field path, what was expected, the value given."""
    lines = []
    errs = exc.errors()
    locs = [tuple(e["loc"]) for e in errs]
    for err in errs:
        here = tuple(err["loc"])
        if any(len(o) > len(here) and o[: len(here)] == here for o in locs):
            continue  # a container's complaint caused by one of its items: report the item
        loc = _loc(here)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field (not part of the protocol; check the spelling)")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required field is missing")
        elif err["type"] == "union_tag_invalid":
            lines.append(f"{loc}: {msg}")
        else:
            lines.append(f"{loc}: {msg} (got {_short(err.get('input'))})")
    return lines


def load_protocol(path: str | Path) -> Protocol:
    """Read and validate a protocol YAML (or JSON) file.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ProtocolError
        If the file is not valid YAML or not a valid protocol; the message has
        one line per problem naming the file, the field, the value and what was
        expected.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"protocol file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProtocolError(str(p), [f"{where}not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise ProtocolError(
            str(p), [f"expected a mapping of protocol fields, got {type(data).__name__}"]
        )
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(str(p), format_validation_error(exc)) from None
    # weights relative to the protocol file, so a protocol and its weights travel together
    if protocol.analysis.weights is not None:
        w = _beside(p, protocol.analysis.weights, "analysis.weights", folder_ok=True)
        analysis = protocol.analysis.model_copy(update={"weights": w})
        protocol = protocol.model_copy(update={"analysis": analysis})
    detectors = list(protocol.detectors)
    for i, det in enumerate(detectors):
        clf = getattr(det, "classifier_weights", None)
        if clf is not None:
            w = _beside(p, clf, f"detectors[{i}].classifier_weights", folder_ok=False)
            detectors[i] = det.model_copy(update={"classifier_weights": w})
    return protocol.model_copy(update={"detectors": tuple(detectors)})


def _beside(protocol_file: Path, value: str, field: str, folder_ok: bool) -> str:
    """``value``, a weights path relative to ``protocol_file``, made absolute; refused
    when nothing is there (a folder is accepted when ``folder_ok``: StarDist models)."""
    w = (protocol_file.parent / value).resolve()
    if not (w.exists() if folder_ok else w.is_file()):
        raise ProtocolError(
            str(protocol_file), [f"{field}: no weights file at {str(w)!r} (got {value!r})"]
        )
    return str(w)


def protocol_json_schema() -> str:
    """The JSON Schema of protocol files (for editors), as formatted JSON text."""
    schema = Protocol.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "scopeloop protocol"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
