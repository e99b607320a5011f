"""Detectors: typed biological events from tracked measurements (pixels only).

Each detector is built from its protocol entry (``scopeloop.models.detector_config``)
and sees every analysed frame of one position through a :class:`FrameContext`.
Detection kinds emitted:

- ``mitosis_onset``: a nucleus condenses (prophase), once per cell;
- ``mitosis_ongoing``: every later frame while that cell stays condensed;
- ``mitosis_abandoned``: an onset not followed by a division (false alarm, cell lost);
- ``division``: a track split into two daughters (end of anaphase/telophase);
- ``appearance`` / ``disappearance``: a new object (not a daughter) / a lost one;
- ``intensity_change``; ``confluence`` (every frame); ``abnormal_morphology``;
  ``motion`` (per track position and velocity).

Nothing here knows about the simulated specimen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from scopeloop.models.detections import Detection, FrameInfo
from scopeloop.models.detector_config import (
    AbnormalMorphologyDetectorConfig,
    AppearanceDetectorConfig,
    ConfluenceDetectorConfig,
    DetectorConfig,
    IntensityChangeDetectorConfig,
    MitosisDetectorConfig,
    MotionDetectorConfig,
)

from .measure import FrameMeasurements, stage_to_pixel
from .tracking import Tracker, TrackingResult

__all__ = [
    "Detector",
    "FrameContext",
    "StageClassifier",
    "build_detector",
    "register_stage_classifier",
]


@dataclass
class FrameContext:
    """Everything a detector may look at for one frame of one position."""

    info: FrameInfo
    image: NDArray[np.number]
    labels: NDArray[np.integer]
    meas: FrameMeasurements
    tracking: TrackingResult
    tracker: Tracker

    def detection(
        self,
        kind: str,
        x_um: float,
        y_um: float,
        *,
        track_id: int | None = None,
        score: float = 1.0,
        **evidence: float | int | str | bool | list[int] | None,
    ) -> Detection:
        return Detection(
            kind=kind,
            position=self.info.position,
            frame_index=self.info.frame_index,
            t_s=self.info.t_s,
            x_um=float(x_um),
            y_um=float(y_um),
            track_id=track_id,
            score=float(score),
            evidence={k: _plain(v) for k, v in evidence.items()},
        )


def _plain(v: object) -> object:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return None if not np.isfinite(v) else round(v, 4)  # JSON has no NaN
    return v


@runtime_checkable
class Detector(Protocol):
    """Turns one frame's tracked measurements into detections."""

    name: str

    def update(self, ctx: FrameContext) -> list[Detection]: ...


StageClassifier = Callable[
    [NDArray[np.number], NDArray[np.integer], FrameMeasurements], NDArray[np.float64]
]
"""``(image, labels, measurements) -> p_mitotic`` per measurement row (values 0..1)."""

_CLASSIFIERS: dict[str, Callable[[], StageClassifier]] = {}


def register_stage_classifier(name: str, factory: Callable[[], StageClassifier]) -> None:
    """Make a cell-stage classifier available to ``mitosis`` detectors as ``classifier: name``."""
    _CLASSIFIERS[name] = factory


def _cnn_stage_classifier(weights: str | None = None) -> StageClassifier:
    """The trained cell-stage CNN (``scopeloop train --what classifier``) as an onset hook:
    the shipped weights, or ``weights``."""
    from .classifier import StageClassifier as _StageCNN

    clf = _StageCNN(weights)

    def classify(
        image: NDArray[np.number], labels: NDArray[np.integer], meas: FrameMeasurements
    ) -> NDArray[np.float64]:
        p = clf.mitotic_probability(image, labels)
        return np.array([p.get(int(lab), 0.0) for lab in meas.label], dtype=np.float64)

    return classify


register_stage_classifier("cnn", _cnn_stage_classifier)


def _in_area(meas: FrameMeasurements, cfg: DetectorConfig) -> NDArray[np.bool_]:
    return (meas.area_um2 >= cfg.min_area_um2) & (meas.area_um2 <= cfg.max_area_um2)


@dataclass
class _Onset:
    track_id: int
    t_s: float
    ref_area_um2: float
    ref_intensity: float
    x_um: float
    y_um: float
    last_seen_t_s: float
    misses: int = 0


class MitosisDetector:
    """Mitosis onset at prophase (condensation) and division (track split).

    The hand-written rule compares each nucleus with its own recent past
    (brighter, smaller) and with the field (brighter than the median nucleus),
    and checks it is round; brightening against its own past is required, plus
    enough of the other cues (``min_votes``). A registered stage classifier
    can replace the rule (``classifier``).
    """

    def __init__(self, cfg: MitosisDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._onsets: dict[int, _Onset] = {}
        self._recent: list[tuple[float, float, float]] = []  # (t_s, x, y) of onsets/divisions
        self._classifier: StageClassifier | None = None
        if cfg.classifier is not None:
            factory = _CLASSIFIERS.get(cfg.classifier)
            if factory is None:
                known = ", ".join(sorted(_CLASSIFIERS)) or "none registered"
                raise ValueError(
                    f"detectors: mitosis.classifier {cfg.classifier!r} is not a registered "
                    f"stage classifier (known: {known})"
                )
            weights = cfg.classifier_weights  # only with "cnn", checked by the config
            self._classifier = factory() if weights is None else _cnn_stage_classifier(weights)

    def _near_recent(self, t_s: float, x: float, y: float, radius_um: float = 25.0) -> bool:
        return any(
            t_s - t0 < self.cfg.cooldown_s and np.hypot(x - x0, y - y0) < radius_um
            for t0, x0, y0 in self._recent
        )

    def update(self, ctx: FrameContext) -> list[Detection]:
        cfg = self.cfg
        meas, tr_res, tracker = ctx.meas, ctx.tracking, ctx.tracker
        t = ctx.info.t_s
        out: list[Detection] = []
        self._recent = [r for r in self._recent if t - r[0] < cfg.cooldown_s]

        for div in tr_res.divisions:
            onset = self._onsets.pop(div.parent, None)
            self._recent.append((t, div.x_um, div.y_um))
            if cfg.division:
                out.append(
                    ctx.detection(
                        "division",
                        div.x_um,
                        div.y_um,
                        track_id=div.parent,
                        daughters=list(div.daughters),
                        onset_seen=onset is not None,
                        since_onset_s=None if onset is None else t - onset.t_s,
                    )
                )

        ok = _in_area(meas, cfg)
        n = len(meas)
        field_i = float(np.median(meas.net_mean_intensity[ok])) if ok.any() else 0.0
        field_area = float(np.median(meas.area_um2[ok])) if ok.any() else 0.0
        p_mitotic = None
        if self._classifier is not None and n:
            p_mitotic = np.asarray(self._classifier(ctx.image, ctx.labels, meas), dtype=float)

        present = {int(tid) for tid in tr_res.track_ids}
        # A mitotic cell whose track broke (e.g. sharp change at metaphase) keeps its onset:
        # the new track nearby adopts it rather than firing a second onset.
        orphans = [o for tid, o in self._onsets.items() if tid not in present]

        for i in range(n):
            if not ok[i]:
                continue
            tid = int(tr_res.track_ids[i])
            track = tracker.tracks[tid]
            x, y = float(meas.x_um[i]), float(meas.y_um[i])
            inten = float(meas.net_mean_intensity[i])
            area = float(meas.area_um2[i])
            circ = float(meas.circularity[i])
            history = [p for p in list(track.points)[:-1] if t - p.t_s <= cfg.history_s]

            if tid not in self._onsets and len(history) == 0 and orphans:
                near = [o for o in orphans if np.hypot(o.x_um - x, o.y_um - y) < 20.0]
                if near:
                    o = near[0]
                    orphans.remove(o)
                    del self._onsets[o.track_id]
                    o.track_id = tid
                    self._onsets[tid] = o

            onset = self._onsets.get(tid)
            if onset is not None:
                onset.x_um, onset.y_um, onset.last_seen_t_s = x, y, t
                i_ratio = inten / onset.ref_intensity
                a_ratio = area / onset.ref_area_um2
                # Still condensed: brighter than before onset and not back to full size.
                condensed = i_ratio >= 1.0 + 0.5 * (cfg.min_intensity_ratio - 1) and a_ratio <= 1.05
                onset.misses = 0 if condensed else onset.misses + 1
                if onset.misses >= cfg.confirm_misses:
                    out.append(self._abandon(ctx, onset, "not condensed any more"))
                elif t - onset.t_s > cfg.max_onset_to_division_s:
                    out.append(self._abandon(ctx, onset, "no division"))
                elif condensed and cfg.onset:
                    out.append(
                        ctx.detection(
                            "mitosis_ongoing",
                            x,
                            y,
                            track_id=tid,
                            score=min(1.0, i_ratio / cfg.min_intensity_ratio),
                            since_onset_s=t - onset.t_s,
                            intensity_ratio=i_ratio,
                            area_ratio=a_ratio,
                        )
                    )
                continue

            # Daughters and cells next to a recent division/onset do not start a new mitosis.
            if track.origin == "division" and t - track.born_t_s < cfg.cooldown_s:
                continue
            if len(history) == 0 and self._near_recent(t, x, y):
                continue

            fired = False
            evidence: dict[str, float | int | str | bool | list[int] | None] = {}
            score = 0.0
            field_ratio = inten / field_i if field_i > 0 else 1.0
            if p_mitotic is not None:
                score = float(p_mitotic[i])
                fired = (
                    score >= cfg.classifier_min_score
                    and field_ratio >= cfg.classifier_min_field_ratio
                )
                evidence = {"rule": "classifier", "p_mitotic": score, "field_ratio": field_ratio}
                ref_i = float(np.median([p.intensity for p in history])) if history else inten
                ref_a = float(np.median([p.area_um2 for p in history])) if history else area
            elif len(history) >= cfg.min_track_frames:
                ref_i = float(np.median([p.intensity for p in history]))
                ref_a = float(np.median([p.area_um2 for p in history]))
                ref_c = float(np.median([p.circularity for p in history]))
                i_ratio = inten / max(ref_i, 1e-6)
                a_ratio = area / max(ref_a, 1e-6)
                cues = {
                    "brighter": i_ratio >= cfg.min_intensity_ratio,
                    "smaller": a_ratio <= cfg.max_area_ratio,
                    "round": circ >= cfg.min_circularity and circ >= ref_c - 0.02,
                    "field_bright": field_ratio >= cfg.min_field_intensity_ratio,
                }
                votes = sum(cues.values())
                last = history[-1]
                jump = float(np.hypot(x - last.x_um, y - last.y_um))
                strong = (
                    i_ratio >= cfg.strong_intensity_ratio
                    and field_ratio >= cfg.bright_override_ratio
                )
                # A neighbour sliding over a nucleus also makes it look brighter and
                # smaller (overlap adds light and hides part of the outline): a
                # condensing nucleus pulls away from its neighbours, so it must not touch
                # another object unless the brightening is beyond any overlap.
                fired = (
                    (
                        cues["brighter"]
                        and cues["smaller"]
                        and votes >= cfg.min_votes
                        and jump <= cfg.max_jump_um
                        and not meas.touches_other_at(i)
                    )
                    or strong
                ) and meas.solidity_at(i) >= cfg.min_solidity
                score = float(np.clip(0.5 * (i_ratio - 1) / (cfg.min_intensity_ratio - 1), 0, 1))
                evidence = {
                    "rule": "condensation",
                    "intensity_ratio": i_ratio,
                    "area_ratio": a_ratio,
                    "circularity": circ,
                    "solidity": float(meas.solidity[i]),  # NaN when not needed
                    "field_ratio": field_ratio,
                    "votes": votes,
                    "strong": strong,
                    "jump_um": jump,
                    "history_frames": len(history),
                }
            else:
                # No history yet (first frame, or a cell that just came in): a nucleus far
                # brighter than its neighbours, round and not larger than them is in mitosis.
                ref_i, ref_a = field_i, field_area
                fired = (
                    n >= 3
                    and not meas.touches_border[i]
                    and field_ratio >= cfg.bright_override_ratio
                    and circ >= cfg.min_circularity
                    and area <= field_area
                    and meas.solidity_at(i) >= cfg.min_solidity
                    and not meas.touches_other_at(i)
                )
                score = 0.5 if fired else 0.0
                evidence = {"rule": "field_bright", "field_ratio": field_ratio, "circularity": circ}

            if fired and cfg.onset:
                self._onsets[tid] = _Onset(tid, t, max(ref_a, 1e-6), max(ref_i, 1e-6), x, y, t)
                self._recent.append((t, x, y))
                out.append(
                    ctx.detection("mitosis_onset", x, y, track_id=tid, score=score, **evidence)
                )
            elif fired:
                self._onsets[tid] = _Onset(tid, t, max(ref_a, 1e-6), max(ref_i, 1e-6), x, y, t)
                self._recent.append((t, x, y))

        # Onsets whose cell has not been seen for a while are abandoned (false alarm,
        # cell left the field).
        for o in [o for o in self._onsets.values() if t - o.last_seen_t_s > cfg.lost_after_s]:
            out.append(self._abandon(ctx, o, "cell lost"))
        return out

    def _abandon(self, ctx: FrameContext, onset: _Onset, why: str) -> Detection:
        """Drop an onset that did not lead to a division; its lineage cools down."""
        self._onsets.pop(onset.track_id, None)
        return ctx.detection(
            "mitosis_abandoned",
            onset.x_um,
            onset.y_um,
            track_id=onset.track_id,
            reason=why,
            since_onset_s=ctx.info.t_s - onset.t_s,
        )


class AppearanceDetector:
    """New objects (not daughters) that persist, away from the image border."""

    def __init__(self, cfg: AppearanceDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._reported: set[int] = set()

    def update(self, ctx: FrameContext) -> list[Detection]:
        cfg, meas = self.cfg, ctx.meas
        out: list[Detection] = []
        if ctx.tracking.frame == 0:
            return out  # everything is "new" on the first frame
        h, w = meas.shape_yx
        margin_px = cfg.edge_margin_um / meas.pixel_size_um
        ok = _in_area(meas, cfg)
        for i, tid in enumerate(ctx.tracking.track_ids):
            track = ctx.tracker.tracks[int(tid)]
            if not ok[i] or track.origin != "appearance" or int(tid) in self._reported:
                continue
            if len(track) < cfg.min_frames:
                continue
            first = track.points[0]
            r, c = stage_to_pixel(
                first.x_um,
                first.y_um,
                meas.shape_yx,
                ctx.info.stage_x_um,
                ctx.info.stage_y_um,
                meas.pixel_size_um,
            )
            if min(r, c, h - 1 - r, w - 1 - c) < margin_px:
                continue  # came in across the border
            self._reported.add(int(tid))
            out.append(
                ctx.detection(
                    "appearance",
                    meas.x_um[i],
                    meas.y_um[i],
                    track_id=int(tid),
                    area_um2=meas.area_um2[i],
                    frames=len(track),
                )
            )
        if cfg.report_disappearance:
            for tid in ctx.tracking.disappeared:
                track = ctx.tracker.tracks[tid]
                if track.last_border:
                    continue
                out.append(
                    ctx.detection(
                        "disappearance",
                        track.last.x_um,
                        track.last.y_um,
                        track_id=tid,
                        frames=len(track),
                    )
                )
        return out


class IntensityChangeDetector:
    """A tracked object's mean intensity changes against its own recent history."""

    def __init__(self, cfg: IntensityChangeDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._above: set[int] = set()

    def update(self, ctx: FrameContext) -> list[Detection]:
        cfg, meas = self.cfg, ctx.meas
        ok = _in_area(meas, cfg)
        out: list[Detection] = []
        for i, tid in enumerate(ctx.tracking.track_ids):
            tid = int(tid)
            history = list(ctx.tracker.tracks[tid].points)[:-1][-cfg.history_frames :]
            if not ok[i] or len(history) < cfg.min_track_frames:
                continue
            ref = float(np.median([p.intensity for p in history]))
            ratio = float(meas.net_mean_intensity[i]) / max(ref, 1e-6)
            up = ratio >= cfg.min_ratio
            down = ratio <= 1.0 / cfg.min_ratio
            hit = {"increase": up, "decrease": down, "either": up or down}[cfg.direction]
            if hit and tid not in self._above:
                out.append(
                    ctx.detection(
                        "intensity_change",
                        meas.x_um[i],
                        meas.y_um[i],
                        track_id=tid,
                        score=min(1.0, abs(np.log(ratio)) / np.log(cfg.min_ratio) / 2),
                        intensity_ratio=ratio,
                    )
                )
                self._above.add(tid)
            elif not hit:
                self._above.discard(tid)
        return out


class ConfluenceDetector:
    """Field occupancy every frame (count, density, covered fraction)."""

    def __init__(self, cfg: ConfluenceDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind

    def update(self, ctx: FrameContext) -> list[Detection]:
        meas = ctx.meas
        ok = _in_area(meas, self.cfg)
        covered = float(meas.area_um2[ok].sum()) / meas.field_area_um2
        if (
            self.cfg.min_confluence_fraction is not None
            and covered < self.cfg.min_confluence_fraction
        ):
            return []
        count = int(ok.sum())
        return [
            ctx.detection(
                "confluence",
                ctx.info.stage_x_um,
                ctx.info.stage_y_um,
                score=covered,
                count=count,
                covered_fraction=covered,
                density_per_mm2=count / (meas.field_area_um2 * 1e-6),
                median_area_um2=float(np.median(meas.area_um2[ok])) if count else 0.0,
            )
        ]


class AbnormalMorphologyDetector:
    """Irregular, elongated or oversized nuclei, once per track."""

    def __init__(self, cfg: AbnormalMorphologyDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind
        self._streak: dict[int, int] = {}
        self._reported: set[int] = set()

    def update(self, ctx: FrameContext) -> list[Detection]:
        cfg, meas = self.cfg, ctx.meas
        ok = _in_area(meas, cfg)
        out: list[Detection] = []
        if not ok.any():
            return out
        med_area = float(np.median(meas.area_um2[ok]))
        seen: set[int] = set()
        for i, tid in enumerate(ctx.tracking.track_ids):
            tid = int(tid)
            if not ok[i] or meas.touches_border[i]:
                continue  # clipped outlines look irregular
            reasons = []
            if meas.solidity_at(i) < cfg.max_solidity:
                reasons.append("irregular")
            if meas.eccentricity[i] > cfg.max_eccentricity:
                reasons.append("elongated")
            if med_area > 0 and meas.area_um2[i] > cfg.max_area_ratio_to_field * med_area:
                reasons.append("oversized")
            if not reasons:
                continue
            seen.add(tid)
            self._streak[tid] = self._streak.get(tid, 0) + 1
            if self._streak[tid] >= cfg.min_track_frames and tid not in self._reported:
                self._reported.add(tid)
                out.append(
                    ctx.detection(
                        "abnormal_morphology",
                        meas.x_um[i],
                        meas.y_um[i],
                        track_id=tid,
                        score=1.0 - float(meas.solidity[i]) + 0.5 * len(reasons) / 3,
                        reasons=",".join(reasons),
                        solidity=meas.solidity[i],
                        eccentricity=meas.eccentricity[i],
                        area_um2=meas.area_um2[i],
                    )
                )
        self._streak = {k: v for k, v in self._streak.items() if k in seen}
        return out


class MotionDetector:
    """Per-track position and velocity, for following cells."""

    def __init__(self, cfg: MotionDetectorConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name or cfg.kind

    def update(self, ctx: FrameContext) -> list[Detection]:
        cfg, meas = self.cfg, ctx.meas
        ok = _in_area(meas, cfg)
        out: list[Detection] = []
        for i, tid in enumerate(ctx.tracking.track_ids):
            if not ok[i]:
                continue
            track = ctx.tracker.tracks[int(tid)]
            vx, vy = track.velocity_um_per_min()
            speed = float(np.hypot(vx, vy))
            if speed < cfg.min_speed_um_per_min:
                continue
            out.append(
                ctx.detection(
                    "motion",
                    meas.x_um[i],
                    meas.y_um[i],
                    track_id=int(tid),
                    score=speed,
                    vx_um_per_min=vx,
                    vy_um_per_min=vy,
                    area_um2=meas.area_um2[i],
                    intensity=meas.net_mean_intensity[i],
                    frames=len(track),
                )
            )
        return out


_BUILDERS: dict[str, Callable[..., Detector]] = {
    "mitosis": MitosisDetector,
    "appearance": AppearanceDetector,
    "intensity_change": IntensityChangeDetector,
    "confluence": ConfluenceDetector,
    "abnormal_morphology": AbnormalMorphologyDetector,
    "motion": MotionDetector,
}


def build_detector(cfg: DetectorConfig) -> Detector:
    """A fresh detector (with its own per-position state) for one protocol entry."""
    return _BUILDERS[cfg.kind](cfg)
