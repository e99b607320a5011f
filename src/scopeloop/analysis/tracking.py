"""Frame-to-frame linking of segmented objects into tracks.

Objects are linked by an optimal one-to-one assignment
(``scipy.optimize.linear_sum_assignment``) on a cost that combines centroid
distance in stage micrometres (so stage moves do not break tracks) with mask
overlap when consecutive frames share a pixel grid. What stays unmatched is
explained, in order, as a division (one track becomes two daughters), an
appearance, or a disappearance (after ``max_gap_frames`` missed frames).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from .measure import FrameMeasurements

__all__ = ["Division", "Track", "TrackPoint", "Tracker", "TrackingResult"]

_FORBIDDEN = 1e6


@dataclass(frozen=True)
class TrackPoint:
    """One observation of a track."""

    frame: int
    t_s: float
    x_um: float
    y_um: float
    area_um2: float
    intensity: float  # background-subtracted mean intensity
    circularity: float
    eccentricity: float
    solidity: float
    field_intensity: float  # median object intensity of that frame, for field-relative cues


@dataclass
class Track:
    """A linked object over time. ``parent`` is set for daughters of a division."""

    id: int
    born_frame: int
    born_t_s: float
    origin: str  # "first_frame", "appearance" or "division"
    parent: int | None = None
    children: tuple[int, ...] = ()
    points: deque[TrackPoint] = field(default_factory=lambda: deque(maxlen=64))
    missed: int = 0
    ended: bool = False
    ended_by: str | None = None  # "division" or "disappearance"
    last_label: int = 0
    last_border: bool = False

    @property
    def last(self) -> TrackPoint:
        return self.points[-1]

    def __len__(self) -> int:
        return len(self.points)

    def velocity_um_per_min(self) -> tuple[float, float]:
        """Velocity over the last two observations (0, 0 with fewer)."""
        if len(self.points) < 2:
            return 0.0, 0.0
        a, b = self.points[-2], self.points[-1]
        dt_min = (b.t_s - a.t_s) / 60.0
        if dt_min <= 0:
            return 0.0, 0.0
        return (b.x_um - a.x_um) / dt_min, (b.y_um - a.y_um) / dt_min


@dataclass(frozen=True)
class Division:
    """Track ``parent`` ended by splitting into ``daughters``."""

    parent: int
    daughters: tuple[int, int]
    x_um: float
    y_um: float


@dataclass
class TrackingResult:
    """Outcome of linking one frame."""

    frame: int
    t_s: float
    track_ids: NDArray[np.int64]  # per measurement row
    divisions: list[Division]
    appeared: list[int]
    disappeared: list[int]


class Tracker:
    """Links objects of consecutive frames of one position.

    Parameters
    ----------
    max_speed_um_per_min : float
        Fastest credible cell motion; with the frame interval it bounds the
        link distance.
    min_link_um, max_link_um : float
        Floor and ceiling of the link distance whatever the interval.
    max_gap_frames : int
        A track missed this many consecutive frames ends (disappearance).
    """

    def __init__(
        self,
        max_speed_um_per_min: float = 1.5,
        min_link_um: float = 8.0,
        max_link_um: float = 40.0,
        max_gap_frames: int = 1,
    ) -> None:
        self.max_speed_um_per_min = max_speed_um_per_min
        self.min_link_um = min_link_um
        self.max_link_um = max_link_um
        self.max_gap_frames = max_gap_frames
        self.tracks: dict[int, Track] = {}
        self._next_id = 1
        self._frame = -1
        self._prev_t: float | None = None
        self._prev_labels: NDArray[np.integer] | None = None
        self._prev_grid: tuple[float, float, float, tuple[int, int]] | None = None

    @property
    def active(self) -> list[Track]:
        return [t for t in self.tracks.values() if not t.ended]

    def _new_track(self, t_s: float, origin: str, parent: int | None = None) -> Track:
        tr = Track(
            id=self._next_id, born_frame=self._frame, born_t_s=t_s, origin=origin, parent=parent
        )
        self.tracks[tr.id] = tr
        self._next_id += 1
        return tr

    def _link_distance(self, dt_s: float, missed: int) -> float:
        d = self.max_speed_um_per_min * max(dt_s, 0.0) / 60.0 * (1 + missed)
        return float(np.clip(d, self.min_link_um, self.max_link_um))

    def update(
        self,
        meas: FrameMeasurements,
        t_s: float,
        labels: NDArray[np.integer] | None = None,
        grid: tuple[float, float, float] | None = None,
    ) -> TrackingResult:
        """Link the objects of a new frame to the existing tracks.

        Parameters
        ----------
        meas : FrameMeasurements
            Objects of the new frame.
        t_s : float
            Specimen time of the frame.
        labels : array, optional
            The frame's label image; with ``grid`` it enables overlap costs.
        grid : (stage_x_um, stage_y_um, pixel_size_um), optional
            Where the frame's pixel grid lies; overlap is only used when it equals
            the previous frame's.
        """
        self._frame += 1
        frame = self._frame
        dt = 0.0 if self._prev_t is None else t_s - self._prev_t
        n = len(meas)
        ids = np.zeros(n, dtype=np.int64)
        field_i = float(np.median(meas.net_mean_intensity)) if n else 0.0
        candidates = list(self.active)
        divisions: list[Division] = []
        appeared: list[int] = []
        disappeared: list[int] = []

        overlap = None
        this_grid = None if grid is None else (*grid, meas.shape_yx)
        if (
            labels is not None
            and this_grid is not None
            and self._prev_labels is not None
            and self._prev_grid == this_grid
            and candidates
            and n
        ):
            overlap = self._iou(self._prev_labels, labels, candidates, meas)

        matched_track = np.full(n, -1, dtype=np.int64)  # index into candidates
        if candidates and n:
            px = np.array([t.last.x_um for t in candidates])
            py = np.array([t.last.y_um for t in candidates])
            d = np.hypot(px[:, None] - meas.x_um[None, :], py[:, None] - meas.y_um[None, :])
            maxd = np.array([self._link_distance(dt, t.missed) for t in candidates])
            cost = d / maxd[:, None]
            if overlap is not None:
                # Overlap is the stronger evidence when the grid is shared.
                cost = np.where(overlap > 0, 0.5 * cost * (1.0 - overlap), cost)
                allowed = (d <= maxd[:, None]) | (overlap > 0.2)
            else:
                allowed = d <= maxd[:, None]
            cost = np.where(allowed, cost, _FORBIDDEN)
            r, c = linear_sum_assignment(cost)
            for ti, oi in zip(r, c, strict=True):
                if cost[ti, oi] < _FORBIDDEN:
                    matched_track[oi] = ti

        matched_idx = {int(ti) for ti in matched_track if ti >= 0}
        # Divisions: a (recently seen) track plus two nearby objects that are each smaller
        # than it was, one possibly its own match, the other unmatched.
        unmatched_obj = [i for i in range(n) if matched_track[i] < 0]
        division_objs: dict[int, tuple[int, int]] = {}  # track index -> object pair
        if unmatched_obj and candidates:
            division_objs = self._find_divisions(candidates, meas, matched_track, unmatched_obj)

        for ti, tr in enumerate(candidates):
            if ti in division_objs:
                a, b = division_objs[ti]
                tr.ended, tr.ended_by = True, "division"
                kids = []
                for oi in (a, b):
                    kid = self._new_track(t_s, "division", parent=tr.id)
                    ids[oi] = kid.id
                    matched_track[oi] = -2  # consumed by the division
                    kids.append(kid.id)
                tr.children = (kids[0], kids[1])
                divisions.append(
                    Division(
                        parent=tr.id,
                        daughters=(kids[0], kids[1]),
                        x_um=float((meas.x_um[a] + meas.x_um[b]) / 2),
                        y_um=float((meas.y_um[a] + meas.y_um[b]) / 2),
                    )
                )
            elif ti in matched_idx:
                oi = int(np.flatnonzero(matched_track == ti)[0])
                ids[oi] = tr.id
                tr.missed = 0
            else:
                tr.missed += 1
                if tr.missed > self.max_gap_frames:
                    tr.ended, tr.ended_by = True, "disappearance"
                    disappeared.append(tr.id)

        for oi in range(n):
            if ids[oi] == 0:
                origin = "first_frame" if frame == 0 or self._prev_t is None else "appearance"
                tr = self._new_track(t_s, origin)
                ids[oi] = tr.id
                if origin == "appearance":
                    appeared.append(tr.id)

        for oi in range(n):
            tr = self.tracks[int(ids[oi])]
            tr.points.append(
                TrackPoint(
                    frame=frame,
                    t_s=t_s,
                    x_um=float(meas.x_um[oi]),
                    y_um=float(meas.y_um[oi]),
                    area_um2=float(meas.area_um2[oi]),
                    intensity=float(meas.net_mean_intensity[oi]),
                    circularity=float(meas.circularity[oi]),
                    eccentricity=float(meas.eccentricity[oi]),
                    solidity=float(meas.solidity[oi]),
                    field_intensity=field_i,
                )
            )
            tr.last_label = int(meas.label[oi])
            tr.last_border = bool(meas.touches_border[oi])

        late = self._late_divisions(frame, t_s, ids, meas)
        for div in late:
            divisions.append(div)
            appeared[:] = [a for a in appeared if a not in div.daughters]

        # Forget long-ended tracks so memory stays bounded over an overnight run.
        if len(self.tracks) > 5000:
            for tid in [t.id for t in self.tracks.values() if t.ended][: len(self.tracks) - 4000]:
                del self.tracks[tid]

        self._prev_t = t_s
        self._prev_labels = labels
        self._prev_grid = this_grid
        return TrackingResult(frame, t_s, ids, divisions, appeared, disappeared)

    def _late_divisions(
        self, frame: int, t_s: float, ids: NDArray[np.int64], meas: FrameMeasurements
    ) -> list[Division]:
        """Divisions recognised a frame or two late.

        Right after anaphase the two daughters can still touch or overlap, so one
        keeps the parent's track and the other shows up as an "appearance" with an
        odd, partly hidden outline. Once both look alike, re-label: the parent track
        ends at the frame the sister appeared, and both continue as daughters.
        """
        out: list[Division] = []
        row_of = {int(t): i for i, t in enumerate(ids)}
        for sis in [t for t in self.tracks.values() if not t.ended and t.origin == "appearance"]:
            age = frame - sis.born_frame
            if not 0 <= age <= 2 or sis.id not in row_of:
                continue
            b = row_of[sis.id]
            best: tuple[float, Track] | None = None
            for tr in self.tracks.values():
                if tr.ended or tr is sis or tr.id not in row_of or tr.origin == "division":
                    continue
                before = [p for p in tr.points if p.frame < sis.born_frame]
                if len(before) < 2:
                    continue
                a = row_of[tr.id]
                ref_area = before[-1].area_um2
                d = float(np.hypot(meas.x_um[a] - meas.x_um[b], meas.y_um[a] - meas.y_um[b]))
                reach = max(4.0 * np.sqrt(ref_area / np.pi), self.min_link_um)
                aa, ab = meas.area_um2[a], meas.area_um2[b]
                ia, ib = meas.net_mean_intensity[a], meas.net_mean_intensity[b]
                if (
                    d <= reach
                    and min(aa, ab) >= 0.6 * max(aa, ab)
                    and min(ia, ib) >= 0.6 * max(ia, ib)
                    and max(aa, ab) <= 1.1 * ref_area
                    # daughters are much smaller than the parent was in interphase; two
                    # interphase neighbours (one reappearing from behind the other) are not
                    and max(aa, ab) <= 0.7 * max(p.area_um2 for p in before)
                    and (best is None or d < best[0])
                ):
                    best = (d, tr)
            if best is None:
                continue
            parent = best[1]
            kid = self._new_track(sis.born_t_s, "division", parent=parent.id)
            kid.born_frame = sis.born_frame
            # Points from the sister's first frame on belong to the daughter, not the parent.
            while parent.points and parent.points[-1].frame >= sis.born_frame:
                kid.points.appendleft(parent.points.pop())
            kid.last_label, kid.last_border = parent.last_label, parent.last_border
            parent.ended, parent.ended_by = True, "division"
            parent.children = (kid.id, sis.id)
            sis.origin, sis.parent = "division", parent.id
            ids[row_of[parent.id]] = kid.id
            row_of[kid.id] = row_of.pop(parent.id)
            a = row_of[kid.id]
            out.append(
                Division(
                    parent=parent.id,
                    daughters=(kid.id, sis.id),
                    x_um=float((meas.x_um[a] + meas.x_um[b]) / 2),
                    y_um=float((meas.y_um[a] + meas.y_um[b]) / 2),
                )
            )
        return out

    def _find_divisions(
        self,
        candidates: list[Track],
        meas: FrameMeasurements,
        matched_track: NDArray[np.int64],
        unmatched_obj: list[int],
    ) -> dict[int, tuple[int, int]]:
        found: dict[int, tuple[int, int]] = {}
        used: set[int] = set()
        # Prefer the most recently seen, largest parents.
        order = sorted(range(len(candidates)), key=lambda i: candidates[i].missed)
        for ti in order:
            tr = candidates[ti]
            if len(tr) == 0:
                continue
            p = tr.last
            # The parent's size: its last area, or the median of its last three when the
            # last view was partly hidden (a neighbour pressed against a metaphase plate).
            refs = {p.area_um2, float(np.median([q.area_um2 for q in list(tr.points)[-3:]]))}
            own = {int(o) for o in np.flatnonzero(matched_track == ti)}
            pool = sorted(own) + [o for o in unmatched_obj if o not in used]
            if len(pool) < 2:
                continue
            # Daughters separate by at most about two parent diameters.
            reach = max(2.0 * 2.0 * np.sqrt(max(refs) / np.pi), self.min_link_um)
            best: tuple[float, int, int] | None = None
            for i_a in range(len(pool)):
                for i_b in range(i_a + 1, len(pool)):
                    a, b = pool[i_a], pool[i_b]
                    if a in used or b in used:
                        continue
                    if a not in own and b not in own and own:
                        continue  # the parent's own match must be one of the daughters
                    if (a not in own and matched_track[a] >= 0) or (
                        b not in own and matched_track[b] >= 0
                    ):
                        continue
                    aa, ab = meas.area_um2[a], meas.area_um2[b]
                    mx, my = (meas.x_um[a] + meas.x_um[b]) / 2, (meas.y_um[a] + meas.y_um[b]) / 2
                    if np.hypot(mx - p.x_um, my - p.y_um) > reach / 2:
                        continue
                    if np.hypot(meas.x_um[a] - meas.x_um[b], meas.y_um[a] - meas.y_um[b]) > reach:
                        continue
                    if min(aa, ab) < 0.25 * max(aa, ab):
                        continue
                    # each daughter smaller than the parent, together about its size
                    if not any(
                        max(aa, ab) <= 0.9 * ref and 0.4 * ref <= aa + ab <= 2.2 * ref
                        for ref in refs
                    ):
                        continue
                    ia, ib = meas.net_mean_intensity[a], meas.net_mean_intensity[b]
                    if min(ia, ib) < 0.5 * max(ia, ib):
                        continue  # daughters look alike
                    score = float(np.hypot(mx - p.x_um, my - p.y_um))
                    if best is None or score < best[0]:
                        best = (score, a, b)
            if best is not None:
                found[ti] = (best[1], best[2])
                used.update((best[1], best[2]))
        return found

    @staticmethod
    def _iou(
        prev: NDArray[np.integer],
        cur: NDArray[np.integer],
        candidates: list[Track],
        meas: FrameMeasurements,
    ) -> NDArray[np.float64]:
        """IoU between each candidate's last mask and each current object."""
        both = (prev > 0) & (cur > 0)
        out = np.zeros((len(candidates), len(meas)), dtype=np.float64)
        if not both.any():
            return out
        prev_lab = {t.last_label: i for i, t in enumerate(candidates) if t.missed == 0}
        cur_lab = {int(lab): j for j, lab in enumerate(meas.label)}
        pairs, inter = np.unique(
            np.stack([prev[both].astype(np.int64), cur[both].astype(np.int64)]),
            axis=1,
            return_counts=True,
        )
        prev_area = dict(zip(*np.unique(prev[prev > 0], return_counts=True), strict=True))
        cur_area = dict(zip(*np.unique(cur[cur > 0], return_counts=True), strict=True))
        for (pl, cl), k in zip(pairs.T, inter, strict=True):
            i = prev_lab.get(int(pl))
            j = cur_lab.get(int(cl))
            if i is None or j is None:
                continue
            out[i, j] = k / (prev_area[pl] + cur_area[cl] - k)
        return out
