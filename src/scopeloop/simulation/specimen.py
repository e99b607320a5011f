"""The virtual specimen: a multi-well plate of live, cycling, dividing cells.

Biology is simulated on a fixed grid of specimen time (``step_s``) in square
tiles of the plate that come into existence the first time anything looks at
them. Each tile's random numbers are keyed by (seed, tile, step), so a tile
evolves the same way whenever and in whatever order it is observed: two runs
with one seed see the same cells, and only the light they shine changes the
biology (bleaching, phototoxicity). That is what makes a smart plan and a
fixed plan comparable on one specimen.

Units: micrometres (stage coordinates) and specimen seconds since run start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import useq
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CellStage", "MitosisRecord", "Specimen", "SpecimenOptions"]

# How far apart sister chromatids start at anaphase, and how fast daughters part.
_SPLIT_OFFSET_UM = 0.8
_IDS_PER_TILE = 2048
_ANAPHASE_SPEED_UM_S = 0.6 / 60.0
_TELOPHASE_SPEED_UM_S = 0.25 / 60.0
#: nuclei closer than this fraction of their radii's sum are pushed apart
_CONTACT = 0.9


class CellStage:
    """Integer codes of the cell states the specimen tracks."""

    INTERPHASE = 0
    PROPHASE = 1
    METAPHASE = 2  # prometaphase + metaphase
    ANAPHASE = 3
    TELOPHASE = 4
    DYING = 5
    NAMES = ("interphase", "prophase", "metaphase", "anaphase", "telophase", "dying")


class SpecimenOptions(BaseModel):
    """Biology and plate layout of the virtual specimen (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    plate: str = Field("96-well", description="useq well-plate key, e.g. '96-well', '24-well'.")
    a1_center_xy_um: tuple[float, float] = (0.0, 0.0)
    well_densities_per_mm2: dict[str, float] = Field(
        default_factory=dict,
        description="Cells per mm^2 for named wells; others are drawn from the seed.",
    )
    empty_well_fraction: float = Field(0.15, ge=0, le=1)
    density_range_per_mm2: tuple[float, float] = (60.0, 900.0)
    cycle_h: float = Field(20.0, gt=0, description="Mean cell-cycle length, hours.")
    cycle_cv: float = Field(0.12, ge=0, le=1)
    prophase_min: float = Field(15.0, gt=0)
    metaphase_min: float = Field(20.0, gt=0)
    anaphase_min: float = Field(4.0, gt=0)
    telophase_min: float = Field(10.0, gt=0)
    nucleus_radius_um: float = Field(5.5, gt=0, description="G1 nucleus radius (equivalent).")
    speed_um_per_min: float = Field(0.4, ge=0, description="Typical migration speed.")
    persistence_min: float = Field(30.0, gt=0)
    death_rate_per_h: float = Field(0.004, ge=0)
    dying_min: float = Field(40.0, gt=0)
    arrival_rate_per_mm2_h: float = Field(2.0, ge=0, description="Cells settling from medium.")
    abnormal_fraction: float = Field(0.03, ge=0, le=1, description="Cells with aberrant nuclei.")
    # light: dose units are (seconds of exposure) x (objective irradiance) x (channel toxicity)
    dose_half_slowdown: float = Field(
        15.0, gt=0, description="Dose at which the cell cycle runs at half speed."
    )
    dose_arrest: float = Field(60.0, gt=0, description="Dose above which cells stop cycling.")
    dose_bleach: float = Field(60.0, gt=0, description="Dose that bleaches to 1/e.")
    fluor_recovery_h: float = Field(8.0, gt=0, description="Fluorophore turnover time.")
    focus_z_um: float = Field(0.0, description="Z of the cell layer at the A1 centre.")
    focus_tilt_um_per_mm: tuple[float, float] = Field(
        (0.0, 0.0), description="Plate tilt: change of the cell layer's Z per mm in x and y."
    )
    step_s: float = Field(60.0, gt=0, le=600, description="Simulation time step.")
    tile_um: float = Field(250.0, gt=20)


@dataclass(frozen=True)
class MitosisRecord:
    """Ground truth for one mitosis."""

    cell_id: int
    well: str
    x_um: float
    y_um: float
    onset_s: float
    metaphase_s: float | None = None
    anaphase_s: float | None = None
    end_s: float | None = None
    daughter_ids: tuple[int, ...] = ()


@dataclass
class _Cells:
    """Struct-of-arrays cell state for one tile."""

    id: NDArray[np.int64]
    x: NDArray[np.float64]
    y: NDArray[np.float64]
    vx: NDArray[np.float64]
    vy: NDArray[np.float64]
    stage: NDArray[np.int8]
    stage_t: NDArray[np.float64]  # seconds spent in current stage
    progress: NDArray[np.float64]  # interphase progress 0..1 (G1 -> G2)
    cycle_s: NDArray[np.float64]
    radius: NDArray[np.float64]  # G1 equivalent radius, um
    aspect: NDArray[np.float64]
    angle: NDArray[np.float64]
    fluor: NDArray[np.float64]  # unbleached fraction of the nuclear marker
    dose: NDArray[np.float64]
    abnormal: NDArray[np.bool_]
    shape_seed: NDArray[np.int64]
    spindle: NDArray[np.float64]  # division axis, radians
    sister: NDArray[np.int64]  # sister id for daughters still in ana/telophase, else 0

    FIELDS: ClassVar[tuple[str, ...]] = (
        "id",
        "x",
        "y",
        "vx",
        "vy",
        "stage",
        "stage_t",
        "progress",
        "cycle_s",
        "radius",
        "aspect",
        "angle",
        "fluor",
        "dose",
        "abnormal",
        "shape_seed",
        "spindle",
        "sister",
    )

    @classmethod
    def empty(cls) -> _Cells:
        kinds = {"id": np.int64, "stage": np.int8, "abnormal": np.bool_, "shape_seed": np.int64,
                     "sister": np.int64}  # fmt: skip
        return cls(**{f: np.zeros(0, dtype=kinds.get(f, np.float64)) for f in cls.FIELDS})

    def __len__(self) -> int:
        return len(self.id)

    def take(self, keep: NDArray[np.bool_] | NDArray[np.intp]) -> _Cells:
        return _Cells(**{f: getattr(self, f)[keep] for f in self.FIELDS})

    def extend(self, other: _Cells) -> None:
        for f in self.FIELDS:
            setattr(self, f, np.concatenate([getattr(self, f), getattr(other, f)]))


@dataclass
class _Tile:
    key: tuple[int, int]
    well: str
    well_index: int
    cx: float  # well centre
    cy: float
    radius_um: float
    density: float
    cells: _Cells
    t_s: float = 0.0
    step: int = 0
    next_local_id: int = 1  # 0 is background in label images
    open_mitoses: dict[int, int] = field(default_factory=dict)  # cell id -> record index


class Specimen:
    """A plate of live cells with ground truth.

    Parameters
    ----------
    seed : int
        Everything random about the specimen follows from it.
    options : SpecimenOptions, optional
        Plate layout and biology.
    """

    def __init__(self, seed: int = 0, options: SpecimenOptions | None = None) -> None:
        self.seed = int(seed)
        self.options = options or SpecimenOptions()
        try:
            self.plan = useq.WellPlatePlan(
                plate=self.options.plate,  # type: ignore[arg-type]  # useq accepts plate keys
                a1_center_xy=self.options.a1_center_xy_um,
            )
        except Exception as exc:
            raise ValueError(
                f"specimen plate {self.options.plate!r} is not a known useq well plate "
                f"(known: {', '.join(useq.registered_well_plates())})"
            ) from exc
        self.plate = self.plan.plate
        wells = list(self.plan.all_well_positions)
        self._well_names = [str(w.name) for w in wells]
        self._well_xy = np.array([[w.x, w.y] for w in wells], dtype=np.float64)
        self._well_radius_um = 0.5 * 1000.0 * min(self.plate.well_size)
        self._circular = bool(self.plate.circular_wells)
        unknown = set(self.options.well_densities_per_mm2) - set(self._well_names)
        if unknown:
            raise ValueError(
                f"well_densities_per_mm2 names wells {sorted(unknown)} that are not on a "
                f"{self.options.plate} plate"
            )
        self._densities = self._draw_densities()
        self._tiles: dict[tuple[int, int], _Tile] = {}
        self._mitoses: list[MitosisRecord] = []
        self._lock = threading.RLock()
        self.t_s = 0.0
        self.total_light_dose = 0.0

    # ------------------------------------------------------------------ layout

    def _draw_densities(self) -> dict[str, float]:
        rng = np.random.default_rng([self.seed, 0xD15])
        lo, hi = self.options.density_range_per_mm2
        out: dict[str, float] = {}
        for name in self._well_names:
            empty = rng.random() < self.options.empty_well_fraction
            dens = float(np.exp(rng.uniform(np.log(max(lo, 1e-3)), np.log(max(hi, lo + 1e-3)))))
            out[name] = 0.0 if empty else dens
        out.update(self.options.well_densities_per_mm2)
        return out

    @property
    def well_names(self) -> list[str]:
        return list(self._well_names)

    def well_density(self, name: str) -> float:
        """Initial cell density of a well, cells per mm^2 (0 for an empty well)."""
        if name not in self._densities:
            raise KeyError(f"no well {name!r} on a {self.options.plate} plate")
        return self._densities[name]

    def well_center_um(self, name: str) -> tuple[float, float]:
        i = self._well_names.index(name)
        return float(self._well_xy[i, 0]), float(self._well_xy[i, 1])

    def well_at(self, x_um: float, y_um: float) -> str | None:
        """Name of the well containing stage point (x, y), or None between wells."""
        d = self._well_xy - np.array([x_um, y_um])
        i = int(np.argmin(np.hypot(d[:, 0], d[:, 1])))
        if self._inside_well(np.array([x_um]), np.array([y_um]), *self._well_xy[i])[0]:
            return self._well_names[i]
        return None

    def _inside_well(
        self, x: NDArray[np.float64], y: NDArray[np.float64], cx: float, cy: float
    ) -> NDArray[np.bool_]:
        r = self._well_radius_um
        if self._circular:
            return np.asarray((x - cx) ** 2 + (y - cy) ** 2 < r * r)
        return np.asarray((np.abs(x - cx) < r) & (np.abs(y - cy) < r))

    def focus_z_um(self, x_um: float, y_um: float) -> float:
        """Z of the cell layer (best focus) under stage point (x, y)."""
        o = self.options
        ax, ay = o.a1_center_xy_um
        tx, ty = o.focus_tilt_um_per_mm
        return o.focus_z_um + tx * (x_um - ax) / 1000.0 + ty * (y_um - ay) / 1000.0

    # ------------------------------------------------------------------ tiles

    def _tile_keys(self, x0: float, y0: float, x1: float, y1: float) -> list[tuple[int, int]]:
        s = self.options.tile_um
        return [
            (i, j)
            for i in range(int(np.floor(x0 / s)), int(np.floor(x1 / s)) + 1)
            for j in range(int(np.floor(y0 / s)), int(np.floor(y1 / s)) + 1)
        ]

    def _get_tile(self, key: tuple[int, int]) -> _Tile | None:
        tile = self._tiles.get(key)
        if tile is not None:
            if tile.t_s < self.t_s:
                self._advance_tile(tile, self.t_s)
            return tile
        if key in self._tiles:
            return None
        s = self.options.tile_um
        tx, ty = (key[0] + 0.5) * s, (key[1] + 0.5) * s
        d = np.hypot(self._well_xy[:, 0] - tx, self._well_xy[:, 1] - ty)
        wi = int(np.argmin(d))
        # a tile belongs to the nearest well if it overlaps it at all
        if d[wi] > self._well_radius_um + s:
            self._tiles[key] = None  # type: ignore[assignment]
            return None
        name = self._well_names[wi]
        cx, cy = self._well_xy[wi]
        tile = _Tile(
            key=key, well=name, well_index=wi, cx=float(cx), cy=float(cy),
            radius_um=self._well_radius_um, density=self._densities[name],
            cells=_Cells.empty(),
        )  # fmt: skip
        rng = self._rng(tile, -1)
        area_mm2 = (s / 1000.0) ** 2
        n = rng.poisson(tile.density * area_mm2)
        x = key[0] * s + rng.uniform(0, s, n)
        y = key[1] * s + rng.uniform(0, s, n)
        keep = self._inside_well(x, y, tile.cx, tile.cy)
        cells = self._new_cells(tile, rng, x[keep], y[keep])
        # asynchronous population: uniform position in the cycle
        cells.progress = rng.uniform(0, 1, len(cells))
        tile.cells = cells
        self._tiles[key] = tile
        if self.t_s > 0:
            self._advance_tile(tile, self.t_s)
        return tile

    def _rng(self, tile: _Tile, step: int) -> np.random.Generator:
        k0 = tile.key[0] & 0xFFFFFFFF
        k1 = tile.key[1] & 0xFFFFFFFF
        return np.random.default_rng([self.seed, k0, k1, step + 1])

    def _new_ids(self, tile: _Tile, n: int) -> NDArray[np.int64]:
        # Deterministic ids, unique over a plate and fitting uint32 label images:
        # 20 bits of tile index (tiles 1024 apart would collide: far beyond any plate)
        # and 11 bits of per-tile serial number.
        tile_index = (tile.key[0] % 1024) * 1024 + (tile.key[1] % 1024)
        local = np.arange(tile.next_local_id, tile.next_local_id + n, dtype=np.int64)
        if tile.next_local_id + n > _IDS_PER_TILE:
            raise RuntimeError(
                f"more than {_IDS_PER_TILE} cells born in one {self.options.tile_um} um tile; "
                "use a smaller tile_um"
            )
        tile.next_local_id += n
        return np.asarray(tile_index * _IDS_PER_TILE + local, dtype=np.int64)

    def _new_cells(
        self,
        tile: _Tile,
        rng: np.random.Generator,
        x: NDArray[np.float64],
        y: NDArray[np.float64],
    ) -> _Cells:
        o = self.options
        n = len(x)
        abnormal = rng.random(n) < o.abnormal_fraction
        speed = o.speed_um_per_min / 60.0
        return _Cells(
            id=self._new_ids(tile, n),
            x=np.asarray(x, dtype=np.float64),
            y=np.asarray(y, dtype=np.float64),
            vx=rng.normal(0, speed, n),
            vy=rng.normal(0, speed, n),
            stage=np.zeros(n, np.int8),
            stage_t=np.zeros(n),
            progress=np.zeros(n),
            cycle_s=o.cycle_h * 3600 * np.exp(rng.normal(0, o.cycle_cv, n)),
            radius=o.nucleus_radius_um * rng.uniform(0.85, 1.15, n) * np.where(abnormal, 1.5, 1.0),
            aspect=rng.uniform(1.05, 1.5, n),
            angle=rng.uniform(0, np.pi, n),
            fluor=rng.uniform(0.7, 1.3, n),
            dose=np.zeros(n),
            abnormal=abnormal,
            shape_seed=rng.integers(0, 2**31, n),
            spindle=rng.uniform(0, np.pi, n),
            sister=np.zeros(n, np.int64),
        )

    # ------------------------------------------------------------------ time

    def advance_to(self, t_s: float) -> None:
        """Move the specimen to time ``t_s``.

        Tiles catch up lazily, when something looks at them (or asks for ground
        truth): a snap costs the biology of the tiles in view, not of the plate.
        Keyed random numbers make the result the same either way.
        """
        with self._lock:
            if t_s > self.t_s:
                self.t_s = float(t_s)

    def _sync_all(self) -> None:
        for tile in self._tiles.values():
            if tile is not None and tile.t_s < self.t_s:
                self._advance_tile(tile, self.t_s)

    def _advance_tile(self, tile: _Tile, t_s: float) -> None:
        dt = self.options.step_s
        while tile.t_s + dt <= t_s + 1e-9:
            self._step_tile(tile, self._rng(tile, tile.step), dt)
            tile.step += 1
            tile.t_s = tile.step * dt

    def _stage_duration(self, stage: NDArray[np.int8]) -> NDArray[np.float64]:
        o = self.options
        table = np.array(
            [np.inf, o.prophase_min, o.metaphase_min, o.anaphase_min, o.telophase_min, o.dying_min]
        )
        return np.asarray(table[stage] * 60.0)

    def _repel(self, tile: _Tile) -> None:
        """Push apart nuclei that overlap: cells in a monolayer touch but do not pass
        through one another. Separating daughters are left alone (they start as one).

        Deterministic (no random draws), so it leaves the tile's random stream as it
        was. Cells of neighbouring tiles do not push each other.
        """
        from scipy.spatial import cKDTree

        c = tile.cells
        free = (c.stage != CellStage.ANAPHASE) & (c.stage != CellStage.TELOPHASE)
        idx = np.flatnonzero(free)
        if len(idx) < 2:
            return
        r = c.radius[idx] * np.cbrt(1.0 + np.clip(c.progress[idx], 0, 1))
        xy = np.stack([c.x[idx], c.y[idx]], 1)
        pairs = cKDTree(xy).query_pairs(2 * _CONTACT * float(r.max()), output_type="ndarray")
        if not len(pairs):
            return
        i, j = pairs[:, 0], pairs[:, 1]
        d = xy[j] - xy[i]
        dist = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-6)
        overlap = _CONTACT * (r[i] + r[j]) - dist
        hit = overlap > 0
        if not hit.any():
            return
        push = (0.5 * overlap[hit] / dist[hit])[:, None] * d[hit]
        shift = np.zeros_like(xy)
        np.add.at(shift, i[hit], -push)
        np.add.at(shift, j[hit], push)
        nx, ny = xy[:, 0] + shift[:, 0], xy[:, 1] + shift[:, 1]
        inside = self._inside_well(nx, ny, tile.cx, tile.cy)
        c.x[idx] = np.where(inside, nx, c.x[idx])
        c.y[idx] = np.where(inside, ny, c.y[idx])

    def _step_tile(self, tile: _Tile, rng: np.random.Generator, dt: float) -> None:
        o = self.options
        c = tile.cells
        t_next = (tile.step + 1) * dt
        n = len(c)
        if n:
            # --- motion: persistent random walk; rounded mitotic cells sit still
            tau = o.persistence_min * 60.0
            speed = o.speed_um_per_min / 60.0
            moving = c.stage == CellStage.INTERPHASE
            kick = speed * np.sqrt(2 * dt / tau)
            c.vx += (-c.vx * dt / tau + kick * rng.standard_normal(n)) * moving
            c.vy += (-c.vy * dt / tau + kick * rng.standard_normal(n)) * moving
            nx, ny = c.x + c.vx * dt * moving, c.y + c.vy * dt * moving
            inside = self._inside_well(nx, ny, tile.cx, tile.cy)
            c.x = np.where(inside, nx, c.x)
            c.y = np.where(inside, ny, c.y)
            c.vx = np.where(inside, c.vx, -c.vx)
            c.vy = np.where(inside, c.vy, -c.vy)
            c.angle += rng.normal(0, 0.01, n) * moving
            # anaphase / telophase: daughters part along the spindle
            part = np.select(
                [c.stage == CellStage.ANAPHASE, c.stage == CellStage.TELOPHASE],
                [_ANAPHASE_SPEED_UM_S, _TELOPHASE_SPEED_UM_S],
                0.0,
            )
            c.x = c.x + part * dt * np.cos(c.spindle)
            c.y = c.y + part * dt * np.sin(c.spindle)
            self._repel(tile)

            # --- light: phototoxicity slows then arrests the cycle; fluorophore recovers
            rate = 1.0 / (1.0 + c.dose / o.dose_half_slowdown)
            rate = np.where(c.dose >= o.dose_arrest, 0.0, rate)
            c.fluor += (1.0 - c.fluor) * (dt / (o.fluor_recovery_h * 3600.0))
            interphase = c.stage == CellStage.INTERPHASE
            c.progress += np.where(interphase, dt / c.cycle_s * rate, 0.0)
            c.stage_t += dt

            # --- deaths (spontaneous, more likely for arrested cells)
            p_die = o.death_rate_per_h * dt / 3600.0 * np.where(c.dose >= o.dose_arrest, 10, 1)
            dies = interphase & (rng.random(n) < p_die)
            c.stage[dies] = CellStage.DYING
            c.stage_t[dies] = 0.0

            # --- cell-cycle transitions
            enter = interphase & ~dies & (c.progress >= 1.0)
            for i in np.flatnonzero(enter):
                c.stage[i] = CellStage.PROPHASE
                c.stage_t[i] = 0.0
                c.progress[i] = 1.0
                c.spindle[i] = rng.uniform(0, np.pi)
                tile.open_mitoses[int(c.id[i])] = len(self._mitoses)
                self._mitoses.append(
                    MitosisRecord(
                        cell_id=int(c.id[i]),
                        well=tile.well,
                        x_um=float(c.x[i]),
                        y_um=float(c.y[i]),
                        onset_s=t_next - dt + float(rng.uniform(0, dt)),
                    )
                )
            done = (c.stage != CellStage.INTERPHASE) & (
                c.stage_t >= self._stage_duration(c.stage) * (0.8 + 0.4 * self._jitter(c))
            )
            # snapshot the stages so a cell makes at most one transition per step
            was = c.stage.copy()
            for i in np.flatnonzero(done & (was == CellStage.PROPHASE)):
                c.stage[i] = CellStage.METAPHASE
                c.stage_t[i] = 0.0
                self._update_record(tile, int(c.id[i]), metaphase_s=t_next)
            remove = done & (was == CellStage.DYING)
            newborn: list[_Cells] = []
            for i in np.flatnonzero(done & (was == CellStage.METAPHASE)):
                remove[i] = True
                newborn.append(self._divide(tile, rng, c.take(np.array([i])), t_next))
            finished = done & (was == CellStage.ANAPHASE)
            c.stage[finished] = CellStage.TELOPHASE
            c.stage_t[finished] = 0.0
            for i in np.flatnonzero(done & (was == CellStage.TELOPHASE)):
                c.stage[i] = CellStage.INTERPHASE
                c.stage_t[i] = 0.0
                sister = int(c.sister[i])
                c.sister[i] = 0
                key = min(int(c.id[i]), sister) if sister else int(c.id[i])
                self._close_record(tile, key, t_next)
            if remove.any() or newborn:
                kept = c.take(~remove)
                for nb in newborn:
                    kept.extend(nb)
                tile.cells = kept

        # --- cells settling from the medium
        if tile.density > 0 and o.arrival_rate_per_mm2_h > 0:
            s = o.tile_um
            lam = o.arrival_rate_per_mm2_h * (s / 1000) ** 2 * dt / 3600.0
            k = rng.poisson(lam)
            if k:
                x = tile.key[0] * s + rng.uniform(0, s, k)
                y = tile.key[1] * s + rng.uniform(0, s, k)
                ok = self._inside_well(x, y, tile.cx, tile.cy)
                if ok.any():
                    new = self._new_cells(tile, rng, x[ok], y[ok])
                    new.progress = rng.uniform(0, 0.5, len(new))
                    tile.cells.extend(new)

    def _jitter(self, c: _Cells) -> NDArray[np.float64]:
        # deterministic per-cell duration jitter in [0, 1)
        return np.asarray(((c.shape_seed * 2654435761) % 1000) / 1000.0)

    def _divide(self, tile: _Tile, rng: np.random.Generator, parent: _Cells, t_s: float) -> _Cells:
        pid = int(parent.id[0])
        d = _Cells(**{f: np.repeat(getattr(parent, f), 2) for f in _Cells.FIELDS})
        d.id = self._new_ids(tile, 2)
        d.sister = d.id[::-1].copy()
        d.stage[:] = CellStage.ANAPHASE
        d.stage_t[:] = 0.0
        d.progress[:] = 0.0
        d.fluor *= rng.uniform(0.9, 1.1, 2)
        d.cycle_s = self.options.cycle_h * 3600 * np.exp(rng.normal(0, self.options.cycle_cv, 2))
        d.shape_seed = rng.integers(0, 2**31, 2)
        d.abnormal = rng.random(2) < self.options.abnormal_fraction * 0.5
        d.radius = self.options.nucleus_radius_um * rng.uniform(0.85, 1.15, 2)
        d.radius *= np.where(d.abnormal, 1.5, 1.0)
        axis = float(parent.spindle[0])
        # each daughter keeps its own direction of travel along the spindle
        d.spindle = np.array([axis, axis + np.pi])
        d.x = d.x + _SPLIT_OFFSET_UM * np.cos(d.spindle)
        d.y = d.y + _SPLIT_OFFSET_UM * np.sin(d.spindle)
        d.vx[:] = 0.0
        d.vy[:] = 0.0
        rec_i = tile.open_mitoses.pop(pid, None)
        if rec_i is not None:
            rec = self._mitoses[rec_i]
            self._mitoses[rec_i] = MitosisRecord(
                **{**rec.__dict__, "anaphase_s": t_s, "daughter_ids": tuple(int(i) for i in d.id)}
            )
            tile.open_mitoses[min(int(d.id[0]), int(d.id[1]))] = rec_i
        return d

    def _update_record(self, tile: _Tile, cell_id: int, **changes: float) -> None:
        i = tile.open_mitoses.get(cell_id)
        if i is not None:
            self._mitoses[i] = MitosisRecord(**{**self._mitoses[i].__dict__, **changes})

    def _close_record(self, tile: _Tile, key: int, t_s: float) -> None:
        i = tile.open_mitoses.pop(key, None)
        if i is not None:
            self._mitoses[i] = MitosisRecord(**{**self._mitoses[i].__dict__, "end_s": t_s})

    # ------------------------------------------------------------------ queries

    def mitoses(self) -> list[MitosisRecord]:
        """Every mitosis begun so far in any observed tile (ground truth)."""
        with self._lock:
            self._sync_all()
            return sorted(self._mitoses, key=lambda r: (r.onset_s, r.cell_id))

    def ground_truth(self) -> dict[str, object]:
        """JSON-ready ground truth of the run so far: mitoses, wells, light, options.

        Write it beside a simulated run: the biology depends on the light the
        run shone, so the seed alone cannot regenerate it exactly.
        """
        with self._lock:
            mitoses = [dict(m.__dict__) for m in self.mitoses()]
            for m in mitoses:
                m["daughter_ids"] = list(m["daughter_ids"])  # type: ignore[call-overload]
            observed = sorted({t.well for t in self._tiles.values() if t is not None})
            return {
                "seed": self.seed,
                "t_s": self.t_s,
                "options": self.options.model_dump(mode="json"),
                "total_light_dose": self.total_light_dose,
                "well_densities_per_mm2": {w: self._densities[w] for w in observed},
                "mitoses": mitoses,
            }

    def all_cells(self) -> _Cells:
        """Every cell of every tile simulated so far (creates no new tiles)."""
        with self._lock:
            self._sync_all()
            out = _Cells.empty()
            for tile in self._tiles.values():
                if tile is not None:
                    out.extend(tile.cells)
            return out

    def cells_in(
        self, x0: float, y0: float, x1: float, y1: float, margin_um: float = 40.0
    ) -> _Cells:
        """All cells whose centres lie in the box (plus ``margin_um``), at the current time."""
        with self._lock:
            out = _Cells.empty()
            for key in self._tile_keys(x0 - margin_um, y0 - margin_um, x1 + margin_um,
                                       y1 + margin_um):  # fmt: skip
                tile = self._get_tile(key)
                if tile is None or not len(tile.cells):
                    continue
                c = tile.cells
                sel = (
                    (c.x >= x0 - margin_um) & (c.x <= x1 + margin_um)
                    & (c.y >= y0 - margin_um) & (c.y <= y1 + margin_um)
                )  # fmt: skip
                if sel.any():
                    out.extend(c.take(sel))
            return out

    def illuminate(self, x0: float, y0: float, x1: float, y1: float, dose: float) -> int:
        """Shine ``dose`` on every cell in the box: phototoxic dose and bleaching.

        Returns the number of cells hit.
        """
        if dose <= 0:
            return 0
        hit = 0
        with self._lock:
            self.total_light_dose += dose
            bleach = float(np.exp(-dose / self.options.dose_bleach))
            for key in self._tile_keys(x0, y0, x1, y1):
                tile = self._get_tile(key)
                if tile is None or not len(tile.cells):
                    continue
                c = tile.cells
                sel = (c.x >= x0) & (c.x <= x1) & (c.y >= y0) & (c.y <= y1)
                c.dose[sel] += dose
                c.fluor[sel] *= bleach
                hit += int(sel.sum())
        return hit

    def labels(
        self,
        x_um: float,
        y_um: float,
        shape_yx: tuple[int, int],
        pixel_size_um: float,
    ) -> NDArray[np.uint32]:
        """Exact instance labels (label = cell id) of a field centred at (x_um, y_um)."""
        from .render import render_labels

        return render_labels(self, x_um, y_um, shape_yx, pixel_size_um)

    def stage_of(
        self, cell_id: int
    ) -> Literal["interphase", "prophase", "metaphase", "anaphase", "telophase", "dying", "gone"]:
        """Current stage name of a cell (ground truth), 'gone' if it no longer exists."""
        with self._lock:
            self._sync_all()
            for tile in self._tiles.values():
                if tile is None:
                    continue
                hit = np.flatnonzero(tile.cells.id == cell_id)
                if hit.size:
                    return CellStage.NAMES[int(tile.cells.stage[hit[0]])]  # type: ignore[return-value]
        return "gone"
