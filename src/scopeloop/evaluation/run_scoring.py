"""Scoring a simulated run against the specimen's ground truth.

For an event-driven mitosis experiment (``mitosis_burst``):

- **caught**: a ground-truth mitosis inside an imaged field counts as caught
  when that field was imaged at least ``min_frames`` times between the
  mitosis' onset and the end of its anaphase (enough frames to see the
  condensation, the plate and the split);
- **false triggers**: bursts (runs of fast-mode frames of a position) during
  which no ground-truth mitosis was under way in the field;
- **light**: illumination seconds (sum of exposures) and the specimen's own
  dose (what bleaches and harms the cells).

The same specimen seed is then imaged by the two fixed plans a microscopist
would otherwise use (every position at the baseline interval, and every
position at the burst interval), with policies off and the clock in
fast-forward, and the three plans are scored the same way.

Inputs are read from the run folder: ``frames.jsonl`` (the frame journal:
per frame its image, time, stage position, pixel size, exposure), the
images' shapes from ``images/*.ome.zarr``, ``run.json`` (protocol, seed) and
``ground_truth.json`` (the specimen's record, written at the end of a
simulated run). Without ``ground_truth.json`` the ground truth is regenerated
from the seed, without the run's light (phototoxicity then is not reflected;
the result says so).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MIN_FRAMES_FOR_CATCH",
    "FrameRow",
    "MitosisScore",
    "PlanScore",
    "compare_with_fixed_plans",
    "load_ground_truth",
    "load_run_frames",
    "score_frames",
    "score_run",
]

#: frames from a mitosis's onset to the end of its anaphase for it to count as caught
MIN_FRAMES_FOR_CATCH = 5

# Keys the frame journal may use for one quantity (first match wins). The loop writes
# the first of each; the others keep older or hand-made runs readable.
_KEYS: dict[str, tuple[str, ...]] = {
    "t_s": ("t_s", "time_s", "specimen_t_s", "SimTime_s"),
    "x_um": ("stage_x_um", "x_um", "XPositionUm"),
    "y_um": ("stage_y_um", "y_um", "YPositionUm"),
    "pixel_size_um": ("pixel_size_um", "PixelSizeUm"),
    "exposure_ms": ("exposure_ms", "Exposure"),
    "position": ("position", "pos_name"),
    "mode": ("mode",),
    "channel": ("channel", "Channel"),
}


def _get(entry: Mapping[str, Any], name: str, default: Any = None) -> Any:
    for k in _KEYS[name]:
        if k in entry and entry[k] is not None:
            return entry[k]
        meta = entry.get("meta")
        if isinstance(meta, Mapping) and k in meta and meta[k] is not None:
            return meta[k]
    return default


@dataclass(frozen=True)
class FrameRow:
    """One acquired frame as scoring needs it."""

    image: str
    position: str
    mode: str
    t_s: float
    x_um: float
    y_um: float
    pixel_size_um: float
    shape_yx: tuple[int, int]
    exposure_ms: float

    def contains(self, x_um: float, y_um: float, margin_um: float = 0.0) -> bool:
        """Whether stage point (x, y) lies inside this frame's field (minus a margin)."""
        h, w = self.shape_yx
        half_w = 0.5 * w * self.pixel_size_um - margin_um
        half_h = 0.5 * h * self.pixel_size_um - margin_um
        return abs(x_um - self.x_um) <= half_w and abs(y_um - self.y_um) <= half_h


@dataclass
class MitosisScore:
    cell_id: int
    well: str
    x_um: float
    y_um: float
    onset_s: float
    anaphase_end_s: float
    position: str | None
    frames_in_window: int
    caught: bool
    first_burst_frame_s: float | None = None


@dataclass
class PlanScore:
    """Scores of one plan (adaptive run or a fixed reference)."""

    name: str
    frames: int
    timelapse_frames: int
    illumination_s: float
    specimen_dose: float | None
    duration_s: float
    mitoses_in_fields: int
    caught: int
    bursts: int
    false_triggers: int
    min_frames: int
    ground_truth_source: str
    mitoses: list[MitosisScore] = field(default_factory=list)
    burst_list: list[dict[str, Any]] = field(default_factory=list)

    @property
    def caught_fraction(self) -> float:
        return self.caught / self.mitoses_in_fields if self.mitoses_in_fields else math.nan

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["caught_fraction"] = None if math.isnan(self.caught_fraction) else self.caught_fraction
        return d


# ------------------------------------------------------------------ reading a run


def _image_shapes(run_dir: Path) -> dict[str, tuple[int, int]]:
    shapes: dict[str, tuple[int, int]] = {}
    images = run_dir / "images"
    if not images.is_dir():
        return shapes
    for img in sorted(images.glob("*.ome.zarr")):
        arr_meta = img / "0" / "zarr.json"
        try:
            meta = json.loads(arr_meta.read_text(encoding="utf-8"))
            shape = meta["shape"]
            shapes[img.name.removesuffix(".ome.zarr")] = (int(shape[-2]), int(shape[-1]))
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return shapes


def load_run_frames(run_dir: str | Path) -> list[FrameRow]:
    """Every written frame of a run, from its frame journal.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` has no ``frames.jsonl``.
    ValueError
        If journal entries lack a time or stage position.
    """
    run = Path(run_dir)
    journal = run / "frames.jsonl"
    if not journal.is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no frames.jsonl)")
    shapes = _image_shapes(run)
    rows: list[FrameRow] = []
    for n, line in enumerate(journal.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a kill
        if e.get("status") != "written":
            continue
        image = str(e.get("image", ""))
        t = _get(e, "t_s")
        x, y = _get(e, "x_um"), _get(e, "y_um")
        if t is None or x is None or y is None:
            raise ValueError(
                f"{journal}:{n}: frame entry has no time or stage position "
                f"(keys: {sorted(e)}); cannot score"
            )
        position = _get(e, "position")
        mode = _get(e, "mode")
        if position is None or mode is None:
            # image names are "<position>_<mode>"
            position, _, mode = image.rpartition("_") if "_" in image else (image, "", "")
        shape = shapes.get(image)
        if shape is None:
            sh = e.get("shape_yx") or e.get("shape")
            shape = (int(sh[-2]), int(sh[-1])) if sh else (512, 512)
        rows.append(
            FrameRow(
                image=image,
                position=str(position),
                mode=str(mode or "baseline"),
                t_s=float(t),
                x_um=float(x),
                y_um=float(y),
                pixel_size_um=float(_get(e, "pixel_size_um", 1.0)),
                shape_yx=shape,
                exposure_ms=float(_get(e, "exposure_ms", 0.0)),
            )
        )
    rows.sort(key=lambda r: r.t_s)
    return rows


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder (empty dict when absent)."""
    p = Path(run_dir) / "run.json"
    if not p.is_file():
        return {}
    return dict(json.loads(p.read_text(encoding="utf-8")))


def load_ground_truth(
    run_dir: str | Path, frames: Sequence[FrameRow] | None = None
) -> tuple[dict[str, Any], str]:
    """The specimen ground truth of a run and where it came from.

    Uses ``ground_truth.json`` when the run wrote one; otherwise regenerates the
    specimen from the seed in ``run.json`` over the run's fields and duration
    (without the run's light).
    """
    run = Path(run_dir)
    gt_path = run / "ground_truth.json"
    if gt_path.is_file():
        return dict(json.loads(gt_path.read_text(encoding="utf-8"))), "recorded"
    info = read_run_info(run)
    seed = _seed_of(info)
    if seed is None:
        raise ValueError(
            f"{run}: no ground_truth.json and no simulation seed in run.json; "
            "only simulated runs can be scored"
        )
    from scopeloop.simulation import Specimen, SpecimenOptions

    opts = _specimen_options(info)
    spec = Specimen(seed, SpecimenOptions(**opts))
    frames = list(frames) if frames is not None else load_run_frames(run)
    seen: set[tuple[float, float, float, tuple[int, int]]] = set()
    for f in frames:
        key = (round(f.x_um, 1), round(f.y_um, 1), f.pixel_size_um, f.shape_yx)
        if key not in seen:
            seen.add(key)
            spec.labels(f.x_um, f.y_um, f.shape_yx, f.pixel_size_um)  # creates the tiles
    spec.advance_to(max((f.t_s for f in frames), default=0.0))
    return spec.ground_truth(), "regenerated from seed (without the run's light)"


def _seed_of(info: Mapping[str, Any]) -> int | None:
    for path in (("seed",), ("simulation", "seed"), ("protocol", "simulation", "seed")):
        cur: Any = info
        for k in path:
            cur = cur.get(k) if isinstance(cur, Mapping) else None
        if cur is not None:
            return int(cur)
    return None


def _specimen_options(info: Mapping[str, Any]) -> dict[str, Any]:
    proto = info.get("protocol")
    if isinstance(proto, Mapping):
        sim = proto.get("simulation")
        if isinstance(sim, Mapping) and isinstance(sim.get("specimen"), Mapping):
            return dict(sim["specimen"])
    return {}


# ------------------------------------------------------------------ scoring


def _bursts(
    frames: Sequence[FrameRow], burst_modes: Iterable[str]
) -> list[tuple[str, float, float, list[FrameRow]]]:
    """Runs of consecutive fast-mode frames per position: (position, start, end, frames)."""
    modes = set(burst_modes)
    by_pos: dict[str, list[FrameRow]] = defaultdict(list)
    for f in frames:
        by_pos[f.position].append(f)
    out = []
    for pos, rows in by_pos.items():
        current: list[FrameRow] = []
        for f in sorted(rows, key=lambda r: r.t_s):
            if f.mode in modes:
                current.append(f)
            elif f.mode == "baseline" and current:
                out.append((pos, current[0].t_s, current[-1].t_s, current))
                current = []
        if current:
            out.append((pos, current[0].t_s, current[-1].t_s, current))
    return out


def score_frames(
    name: str,
    frames: Sequence[FrameRow],
    ground_truth: Mapping[str, Any],
    *,
    min_frames: int = MIN_FRAMES_FOR_CATCH,
    burst_modes: Iterable[str] = ("burst",),
    timelapse_modes: Iterable[str] = ("baseline", "burst"),
    ground_truth_source: str = "recorded",
    edge_margin_um: float = 5.0,
) -> PlanScore:
    """Score one plan's frames against the specimen's ground truth.

    Parameters
    ----------
    name : str
        Label of the plan in tables ("adaptive", "fixed slow", ...).
    frames : sequence of FrameRow
        Every frame the plan acquired.
    ground_truth : mapping
        ``Specimen.ground_truth()`` of the run.
    min_frames : int
        Frames needed between onset and the end of anaphase for a catch.
    burst_modes : modes that count as bursts (for false triggers).
    timelapse_modes : modes whose frames count towards catching a mitosis.
    edge_margin_um : float
        A mitosis must lie this far inside a field to count as in it.
    """
    tl_modes = set(timelapse_modes)
    opts = ground_truth.get("options", {}) or {}
    anaphase_s = 60.0 * float(opts.get("anaphase_min", 4.0))
    t_end = max((f.t_s for f in frames), default=0.0)
    tl = [f for f in frames if f.mode in tl_modes]
    by_pos: dict[str, list[FrameRow]] = defaultdict(list)
    for f in tl:
        by_pos[f.position].append(f)
    bursts = _bursts(frames, burst_modes)
    first_burst: dict[str, list[float]] = defaultdict(list)
    for pos, start, _, _ in bursts:
        first_burst[pos].append(start)

    scored: list[MitosisScore] = []
    for m in ground_truth.get("mitoses", []):
        onset = float(m["onset_s"])
        if m.get("anaphase_s") is None:
            continue  # not through anaphase yet: cannot be judged
        ana_end = float(m["anaphase_s"]) + anaphase_s
        if onset < 0 or ana_end > t_end:
            continue  # outside the run's time
        x, y = float(m["x_um"]), float(m["y_um"])
        best_pos, best_n = None, -1
        for pos, rows in by_pos.items():
            window = [f for f in rows if onset <= f.t_s <= ana_end]
            near = [f for f in rows if abs(f.t_s - onset) <= 6 * 3600]
            if not near or not any(f.contains(x, y, edge_margin_um) for f in near):
                continue
            n = sum(f.contains(x, y, edge_margin_um) for f in window)
            if n > best_n:
                best_pos, best_n = pos, n
        if best_pos is None:
            continue  # never in an imaged field
        starts = [s for s in first_burst.get(best_pos, []) if onset <= s <= ana_end]
        scored.append(
            MitosisScore(
                cell_id=int(m["cell_id"]),
                well=str(m.get("well", "")),
                x_um=x,
                y_um=y,
                onset_s=onset,
                anaphase_end_s=ana_end,
                position=best_pos,
                frames_in_window=best_n,
                caught=best_n >= min_frames,
                first_burst_frame_s=min(starts) if starts else None,
            )
        )

    burst_list = []
    false_triggers = 0
    mitoses = ground_truth.get("mitoses", [])
    for pos, start, stop, rows in bursts:
        f0 = rows[0]
        hits = [
            int(m["cell_id"])
            for m in mitoses
            if float(m["onset_s"]) <= stop
            and (m.get("end_s") is None or float(m["end_s"]) >= start)
            and f0.contains(float(m["x_um"]), float(m["y_um"]))
        ]
        false_triggers += not hits
        burst_list.append(
            {
                "position": pos,
                "start_s": start,
                "end_s": stop,
                "frames": len(rows),
                "mitoses": hits,
                "false_trigger": not hits,
            }
        )

    dose = ground_truth.get("total_light_dose")
    return PlanScore(
        name=name,
        frames=len(frames),
        timelapse_frames=len(tl),
        illumination_s=sum(f.exposure_ms for f in frames) / 1000.0,
        specimen_dose=None if dose is None else float(dose),
        duration_s=t_end,
        mitoses_in_fields=len(scored),
        caught=sum(s.caught for s in scored),
        bursts=len(bursts),
        false_triggers=false_triggers,
        min_frames=min_frames,
        ground_truth_source=ground_truth_source,
        mitoses=scored,
        burst_list=burst_list,
    )


def score_run(
    run_dir: str | Path, name: str = "adaptive", min_frames: int = MIN_FRAMES_FOR_CATCH
) -> PlanScore:
    """Score a run folder against its ground truth (recorded or regenerated)."""
    frames = load_run_frames(run_dir)
    if not frames:
        raise ValueError(f"{run_dir}: the run holds no frames")
    gt, source = load_ground_truth(run_dir, frames)
    return score_frames(name, frames, gt, min_frames=min_frames, ground_truth_source=source)


# ------------------------------------------------------------------ against fixed plans


def _burst_interval(protocol: Any) -> float | None:
    for p in protocol.policies:
        if getattr(p, "kind", None) == "burst_on_event":
            return float(p.burst_interval_s)
    return None


def compare_with_fixed_plans(
    run_dir: str | Path,
    *,
    work_dir: str | Path | None = None,
    min_frames: int = MIN_FRAMES_FOR_CATCH,
    references: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Score a run and, on the same specimen seed, the two fixed plans it replaces.

    The fixed plans are the run's protocol with policies (and analysis) off, at
    the baseline interval ("fixed slow") and at the burst interval ("fixed
    fast"), for as long as the run lasted, on a fresh simulated microscope with
    the clock in fast-forward (no waiting).

    Parameters
    ----------
    run_dir : path
        The adaptive run's folder.
    work_dir : path, optional
        Where the reference runs go; default ``<run_dir>/references``.
    min_frames : int
        Frames between onset and end of anaphase that make a catch.
    references : bool
        False scores the run alone.
    progress : callable, optional
        Called with a line of text as each plan starts.

    Returns
    -------
    dict
        ``{"run": ..., "plans": [PlanScore.to_json(), ...], "ratios": {...}}``.
    """
    from scopeloop.models.protocol import Protocol

    run = Path(run_dir)
    adaptive = score_run(run, "adaptive", min_frames=min_frames)
    plans = [adaptive]
    info = read_run_info(run)
    if references:
        if "protocol" not in info:
            raise ValueError(f"{run}: run.json has no protocol; cannot run the fixed plans")
        protocol = Protocol.model_validate(info["protocol"])
        # The fixed plans are what a microscopist would run without scopeloop: no light
        # budget cuts them short (that is the cost being compared).
        protocol = protocol.model_copy(
            update={"limits": protocol.limits.model_copy(update={"light_budget_s": None})}
        )
        seed = _seed_of(info)
        baseline = float(protocol.acquisition.interval_s)
        burst = _burst_interval(protocol)
        # Cover the same span as the run (it may have been stopped early).
        duration = min(protocol.acquisition.duration_s, adaptive.duration_s + baseline)
        out_root = Path(work_dir) if work_dir is not None else run / "references"
        variants = [("fixed slow", baseline)]
        if burst is not None:
            variants.append(("fixed fast", burst))
        from scopeloop.acquisition import run_protocol

        for name, interval in variants:
            if progress is not None:
                progress(f"{name}: every {interval:g} s for {duration / 3600:.1f} h")
            summary = run_protocol(
                protocol,
                out_dir=out_root / name.replace(" ", "_"),
                policies=False,
                analysis=False,
                interval_s=interval,
                duration_s=duration,
                seed=seed,
                fast_forward=True,
                # Fast-forward jumps the clock over waits, but compute time still runs at
                # time_scale: at 1x a slow, loaded machine cannot make a fixed plan late.
                time_scale=1.0,
            )
            plans.append(score_run(summary.run_dir, name, min_frames=min_frames))
    result: dict[str, Any] = {
        "run": str(run),
        "run_plan_name": "adaptive",
        "min_frames": min_frames,
        "plans": [p.to_json() for p in plans],
    }
    fast = next((p for p in plans if p.name == "fixed fast"), None)
    if fast is not None and fast.illumination_s > 0:
        result["light_vs_fixed_fast"] = adaptive.illumination_s / fast.illumination_s
        if fast.specimen_dose and adaptive.specimen_dose is not None:
            result["dose_vs_fixed_fast"] = adaptive.specimen_dose / fast.specimen_dose
    return result
