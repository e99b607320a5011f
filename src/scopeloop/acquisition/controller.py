"""The run's lifecycle: set up, acquire, analyse, decide, and always end safe.

:class:`RunController` is the runner side of scopeloop. It takes an existing
core (the simulated microscope or a real one), turns a protocol into a
:class:`~scopeloop.acquisition.scheduler.Scheduler`, runs
``core.mda.run(scheduler.events())`` on an acquisition thread, stores every
frame as it arrives, hands time-lapse frames to the
:class:`~scopeloop.acquisition.worker.AnalysisWorker`, and whatever happens
(error, Ctrl-C, cancel) closes the shutter, stops any sequence, closes the
store and flushes the decision log.

>>> from scopeloop.acquisition import run_protocol
>>> summary = run_protocol("protocols/mitosis_burst.yaml", out_dir="runs/demo")
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import useq
from psygnal import Signal, SignalGroup
from pymmcore_plus import CMMCorePlus

from scopeloop.clock import Clock
from scopeloop.decisions.policies import build_policies, check_policy_detectors
from scopeloop.models.detections import FrameInfo
from scopeloop.models.protocol import Protocol, load_protocol
from scopeloop.storage import DecisionLog, FrameRecord, ZarrRunStore, file_sha256, write_run_info

from .limits import LimitChecker
from .scheduler import ObjectiveSetting, Scheduler, Site
from .worker import AnalysisWorker, FrameItem, SegmenterLike

__all__ = [
    "RunController",
    "RunSignals",
    "RunState",
    "RunSummary",
    "check_protocol",
    "run_protocol",
]

logger = logging.getLogger("scopeloop")

# Every wait has a deadline: how long the acquisition thread may take to wind
# down after a stop, and how long analysis may take to finish its current frame.
STOP_DEADLINE_S = 60.0
WORKER_DEADLINE_S = 30.0
# A frame whose measured stage position is farther than this from the plan is misplaced.
MISPLACED_UM = 5.0
# With analysis.nucleus_diameter_um "auto": sure measures whose median is held.
AUTO_DIAMETER_MEASURES = 3


class RunState(str, Enum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    DONE = "done"


class RunSignals(SignalGroup):
    """Signals of a run; each docstring says which thread emits it."""

    stateChanged = Signal(str)
    """New :class:`RunState` value; emitted by whichever thread changed it
    (the caller of ``run``/``cancel``/``set_paused``)."""

    frameStored = Signal(object)
    """:class:`FrameInfo` of a frame just written to the store; emitted on the
    acquisition thread (keep handlers fast: they delay the next frame)."""

    decisionLogged = Signal(dict)
    """A decision record as written to ``decisions.jsonl``; emitted on the
    analysis thread (policy decisions) or the acquisition thread (scheduler)."""

    finished = Signal(object)
    """The :class:`RunSummary`; emitted once, by the thread that called ``run``."""


@dataclass
class RunSummary:
    """What a run did, in numbers a microscopist checks first."""

    run_dir: str
    protocol: str
    stop_reason: str
    positions: int
    frames_written: int
    frames_missing: int
    frames_analysed: int
    analysis_dropped: int
    analysis_errors: int
    decisions: int
    accepted: int
    refused: int
    light_used_s: float
    light_budget_s: float | None
    specimen_time_s: float
    wall_s: float
    latency_ms_median: float | None
    latency_ms_p95: float | None
    analysis_ms_median: float | None
    reimages: int
    skipped_positions: int
    specimen_light_dose: float | None = None
    frames_misplaced: int = 0
    #: with analysis.nucleus_diameter_um "auto", what the U-Net measured and chose last
    nucleus_size: dict[str, Any] | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_protocol(protocol: Protocol) -> list[str]:
    """Problems a protocol has beyond its own fields (detector/policy wiring, specimen).

    Returns one readable line per problem; empty when the protocol is sound.
    """
    problems = check_policy_detectors(protocol.detectors, protocol.policies)
    if protocol.simulation.specimen:
        from pydantic import ValidationError

        from scopeloop.models.protocol import format_validation_error
        from scopeloop.simulation import SpecimenOptions

        try:
            SpecimenOptions(**protocol.simulation.specimen)
        except ValidationError as exc:
            problems += [f"simulation.specimen.{p}" for p in format_validation_error(exc)]
    return problems + _weights_problems(protocol)


def _weights_problems(protocol: Protocol) -> list[str]:
    """Weights files that hold something else than the network they are given for (the
    two networks' files look alike), found before the run rather than at its start."""
    given: list[tuple[str, str, str]] = []
    if protocol.analysis.segmenter == "unet" and protocol.analysis.weights is not None:
        given.append(("analysis.weights", protocol.analysis.weights, "unet"))
    for i, det in enumerate(protocol.detectors):
        clf = getattr(det, "classifier_weights", None)
        if clf is not None:
            given.append((f"detectors[{i}].classifier_weights", clf, "stage_classifier"))
    if not given:
        return []
    from scopeloop.analysis.weights_file import read_weights

    problems = []
    for field, path, kind in given:
        try:
            read_weights(path, kind)
        except (OSError, ValueError) as exc:
            problems.append(f"{field}: {exc}")
    return problems


def _percentile(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


class RunController:
    """Runs one protocol on one core.

    Parameters
    ----------
    protocol : Protocol
        The experiment.
    core : CMMCorePlus
        A loaded core (``scopeloop.microscope.make_core()`` for the simulator).
    out_dir : path
        The run folder (created; must be empty or absent).
    segmenter : object, optional
        Anything with ``segment(frames) -> labels``; by default the protocol's
        ``analysis.segmenter`` from the segmenter registry.
    protocol_path, config_path : path, optional
        Recorded (with their hashes) in ``run.json``.
    """

    def __init__(
        self,
        protocol: Protocol,
        core: CMMCorePlus,
        out_dir: str | Path,
        *,
        segmenter: SegmenterLike | None = None,
        protocol_path: str | Path | None = None,
        config_path: str | Path | None = None,
    ) -> None:
        self.protocol = protocol
        self.core = core
        self.run_dir = Path(out_dir)
        self.protocol_path = protocol_path
        self.config_path = config_path
        self._segmenter = segmenter
        self.signals = RunSignals()
        self._lock = threading.Lock()
        self._state = RunState.IDLE
        self.scheduler: Scheduler | None = None
        self.worker: AnalysisWorker | None = None
        self.store: ZarrRunStore | None = None
        self.log: DecisionLog | None = None
        self.clock: Clock | None = None
        self._world: Any = None
        self._error: BaseException | None = None
        self._wall0 = 0.0
        self.store_errors = 0
        self._acquired = threading.Event()  # set when the acquisition thread has ended
        self.frames_misplaced = 0

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> RunState:
        return self._state

    def _set_state(self, new: RunState) -> None:
        with self._lock:
            if self._state == new:
                return
            self._state = new
        self.signals.stateChanged.emit(new.value)

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop at the next event boundary (any thread); the run still ends safe."""
        with self._lock:
            if self._state not in (RunState.RUNNING, RunState.PAUSED):
                return
        self._set_state(RunState.CANCELLING)
        if self.scheduler is not None:
            self.scheduler.stop(reason)
        if self.core.mda.is_running():
            self.core.mda.cancel()

    def set_paused(self, paused: bool) -> None:
        """Hold (or resume) acquisition; specimen time goes on, as it does on a real plate."""
        with self._lock:
            ok = self._state in (RunState.RUNNING, RunState.PAUSED)
        if not ok:
            return
        self.core.mda.set_paused(paused)
        self._set_state(RunState.PAUSED if paused else RunState.RUNNING)

    def stats(self) -> dict[str, Any]:
        """Live figures for progress displays (any thread)."""
        sch, wk, st, lg = self.scheduler, self.worker, self.store, self.log
        return {
            "state": self._state.value,
            "t_s": self.clock.now_s() if self.clock else 0.0,
            "duration_s": self.protocol.acquisition.duration_s,
            "frames": st.frames_written if st else 0,
            "missing": st.frames_missing if st else 0,
            "analysed": wk.processed if wk else 0,
            "dropped": wk.dropped if wk else 0,
            "decisions": lg.n_written if lg else 0,
            "accepted": lg.n_accepted if lg else 0,
            "refused": lg.n_refused if lg else 0,
            "light_used_s": sch.light_used_s if sch else 0.0,
            "light_budget_s": self.protocol.limits.light_budget_s,
            "positions": sch.snapshot() if sch else [],
        }

    # ------------------------------------------------------------------ set-up

    def _objectives(self) -> tuple[ObjectiveSetting, dict[str, ObjectiveSetting]]:
        core, acq = self.core, self.protocol.acquisition
        group = acq.objective_group
        from scopeloop.microscope import pixel_size_um

        binning = 1
        cam = core.getCameraDevice()
        if cam and core.hasProperty(cam, "Binning"):
            binning = int(float(core.getProperty(cam, "Binning")))
        out: dict[str, ObjectiveSetting] = {}
        if group in core.getAvailableConfigGroups():
            pix = {
                pc: {tuple(map(str, d)) for d in core.getPixelSizeConfigData(pc)}
                for pc in core.getAvailablePixelSizeConfigs()
            }
            for preset in core.getAvailableConfigs(group):
                props = tuple((d, p, v) for d, p, v in core.getConfigData(group, preset))
                key = {tuple(map(str, t)) for t in props}
                px = next(
                    (
                        core.getPixelSizeUmByID(pc) * binning
                        for pc, data in pix.items()
                        if data == key
                    ),
                    0.0,
                )
                out[preset] = ObjectiveSetting(preset, props, float(px))
        if acq.objective is not None:
            if acq.objective not in out:
                raise ValueError(
                    f"acquisition.objective {acq.objective!r} is not a preset of config group "
                    f"{group!r} on this microscope (have {sorted(out) or 'none'})"
                )
            obj = out[acq.objective]
        else:
            current = core.getCurrentConfig(group) if out else ""
            obj = out.get(current) or ObjectiveSetting(current or "current", (), 0.0)
        if obj.pixel_size_um <= 0:
            # the objective is set first so that the pixel size is the one it gives
            for d, p, v in obj.properties:
                core.setProperty(d, p, v)
            obj = ObjectiveSetting(obj.name, obj.properties, pixel_size_um(core))
        return obj, out

    def _sites(self, objective: ObjectiveSetting) -> list[Site]:
        acq = self.protocol.acquisition
        try:
            z_now = float(self.core.getPosition() or 0.0) if self.core.getFocusDevice() else 0.0
        except Exception:
            z_now = 0.0
        z_default = acq.z_um if acq.z_um is not None else z_now
        centres: list[tuple[str, float, float, float, str | None]] = []
        if acq.wells:
            plan = useq.WellPlatePlan(
                plate=acq.plate,  # type: ignore[arg-type]
                a1_center_xy=acq.a1_center_xy_um,
            )
            xy = {
                str(w.name): (float(w.x or 0.0), float(w.y or 0.0)) for w in plan.all_well_positions
            }
            for w in acq.wells:
                centres.append((w, *xy[w], z_default, w))
        for p in acq.positions:
            centres.append(
                (p.name, p.x_um, p.y_um, p.z_um if p.z_um is not None else z_default, None)
            )
        offsets = [(0.0, 0.0)]
        if acq.grid is not None and acq.grid.rows * acq.grid.columns > 1:
            fov_x = self.core.getImageWidth() * objective.pixel_size_um
            fov_y = self.core.getImageHeight() * objective.pixel_size_um
            sx, sy = (
                fov_x * (1 - acq.grid.overlap_fraction),
                fov_y * (1 - acq.grid.overlap_fraction),
            )
            r, c = acq.grid.rows, acq.grid.columns
            offsets = [
                ((j - (c - 1) / 2) * sx, (i - (r - 1) / 2) * sy) for i in range(r) for j in range(c)
            ]
        sites: list[Site] = []
        for name, x, y, z, well in centres:
            for k, (dx, dy) in enumerate(offsets):
                label = name if len(offsets) == 1 else f"{name}_{k}"
                sites.append(Site(label, len(sites), x + dx, y + dy, z, acq.interval_s, well=well))
        return sites

    def _make_segmenter(self, pixel_size_um: float) -> SegmenterLike:
        if self._segmenter is not None:
            return self._segmenter
        an = self.protocol.analysis
        try:
            from scopeloop.analysis.segmenter import get_segmenter
        except ImportError as exc:  # pragma: no cover - the analysis package is part of scopeloop
            raise RuntimeError(f"no segmenter available: {exc}") from exc
        options: dict[str, object] = {"weights": an.weights} if an.weights is not None else {}
        if an.tta:
            options["tta"] = True
        if an.nucleus_diameter_um == "auto":
            options["nucleus_diameter_px"] = "auto"
            # one objective and specimen for the whole time-lapse: measured in the first
            # frames that show enough nuclei, then held (see UNetSegmenter hold_after)
            options["hold_after"] = AUTO_DIAMETER_MEASURES
        elif an.nucleus_diameter_um is not None:
            if not pixel_size_um > 0:
                raise ValueError(
                    "analysis.nucleus_diameter_um needs the pixel size, and the microscope "
                    "reports none for this objective (calibrate it in the config's pixel "
                    "size presets, or remove analysis.nucleus_diameter_um)"
                )
            options["nucleus_diameter_px"] = an.nucleus_diameter_um / pixel_size_um
        return get_segmenter(an.segmenter, device=an.device, **options)

    def _write_log(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)
            self.signals.decisionLogged.emit(record)

    # ------------------------------------------------------------------ the frame path

    def _on_frame(self, img: np.ndarray, event: useq.MDAEvent, meta: Any) -> None:
        arrival = time.perf_counter()
        m = event.metadata.get("scopeloop")
        if not m or self.store is None or self.scheduler is None or self.clock is None:
            return
        self.scheduler.confirm(event)
        t_s = self.clock.now_s()
        pos = meta.get("position") or {} if isinstance(meta, dict) else {}
        x = float(pos.get("x", event.x_pos or 0.0))
        y = float(pos.get("y", event.y_pos or 0.0))
        z = float(pos.get("z", event.z_pos or 0.0))
        channel = event.channel.config if event.channel else ""
        # pymmcore-plus only logs a failed stage move and snaps anyway: a frame taken
        # away from its planned place is stored (flagged) but never analysed.
        misplaced = (
            event.x_pos is not None
            and event.y_pos is not None
            and math.hypot(x - event.x_pos, y - event.y_pos) > MISPLACED_UM
        )
        exposure = float(event.exposure or 0.0)
        rec = FrameRecord(
            image=m["image"],
            t=int(m["t"]),
            c=int(m["c"]),
            z=int(m["z"]),
            size_c=int(m["size_c"]),
            size_z=int(m["size_z"]),
            channel_names=tuple(m["channel_names"]),
            pixel_size_um=float(m["pixel_size_um"]),
            z_step_um=float(m["z_step_um"]),
            meta={
                "position": m["position"],
                "mode": m["mode"],
                "t_s": round(t_s, 3),
                "planned_s": m["planned_s"],
                "x_um": x,
                "y_um": y,
                "z_um": z,
                "channel": channel,
                "exposure_ms": exposure,
                "objective": m["objective"],
                "pixel_size_um": m["pixel_size_um"],
                "wall_s": round(arrival - self._wall0, 4),
                **({"misplaced": True} if misplaced else {}),
            },
        )
        try:
            self.store.write_frame(rec, img)
        except Exception:
            self.store_errors += 1
            logger.exception("could not store frame %s", rec)
        info = FrameInfo(
            position=m["position"],
            mode=m["mode"],
            frame_index=int(m["t"]),
            t_s=t_s,
            arrival_wall_s=arrival,
            stage_x_um=x,
            stage_y_um=y,
            z_um=z,
            pixel_size_um=float(m["pixel_size_um"]),
            objective=m["objective"],
            channel=channel,
            exposure_ms=exposure,
        )
        if misplaced:
            self.frames_misplaced += 1
        elif m.get("analyse") and self.worker is not None:
            self.worker.put(FrameItem(img, info, m["image"], int(m["t"])))
        self.signals.frameStored.emit(info)

    def _on_missing(self, event: useq.MDAEvent) -> None:
        m = event.metadata["scopeloop"]
        if self.store is not None:
            self.store.record_missing(
                m["image"], int(m["t"]), int(m["c"]), int(m["z"]), "no frame from the camera"
            )

    # ------------------------------------------------------------------ run

    def run(self) -> RunSummary:
        """Run the protocol to its end (blocking); Ctrl-C ends it cleanly.

        Returns
        -------
        RunSummary
            Also written to ``run.json``.
        """
        with self._lock:
            if self._state != RunState.IDLE:
                raise RuntimeError(f"a RunController runs once; this one is {self._state.value}")
        problems = check_protocol(self.protocol)
        if problems:
            raise ValueError("\n".join(problems))
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise FileExistsError(
                f"run folder {str(self.run_dir)!r} already exists and is not empty; "
                "choose another --out"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._set_state(RunState.RUNNING)
        self._wall0 = time.perf_counter()
        proto, core = self.protocol, self.core
        thread: threading.Thread | None = None
        interrupted = False
        run_info: dict[str, Any] = {}
        try:
            from scopeloop.simulation import is_simulated, world_of

            sim = proto.simulation
            if is_simulated(core):
                self._world = world_of(core)
                options = {
                    "plate": proto.acquisition.plate,
                    "a1_center_xy_um": proto.acquisition.a1_center_xy_um,
                    **sim.specimen,
                }
                self._world.reset(
                    seed=sim.seed,
                    time_scale=sim.time_scale,
                    fast_forward=sim.fast_forward,
                    options=options,
                )
                self.clock = self._world.clock
            else:
                self.clock = Clock(1.0)
            objective, objectives = self._objectives()
            sites = self._sites(objective)
            lim = proto.limits
            outside = [
                f"{s.name} ({s.x_um:.0f}, {s.y_um:.0f}) um"
                for s in sites
                if (
                    lim.stage_x_range_um
                    and not lim.stage_x_range_um[0] <= s.x_um <= lim.stage_x_range_um[1]
                )
                or (
                    lim.stage_y_range_um
                    and not lim.stage_y_range_um[0] <= s.y_um <= lim.stage_y_range_um[1]
                )
            ]
            if outside:
                raise ValueError(
                    f"positions outside the protocol's stage limits: {', '.join(outside)}"
                )
            self.store = ZarrRunStore(self.run_dir)
            self.log = DecisionLog(self.run_dir / "decisions.jsonl")
            chans = [c.config for c in proto.acquisition.channels]
            a_idx = chans.index(proto.analysis.channel) if proto.analysis.channel else 0
            self.scheduler = Scheduler(
                sites,
                proto.acquisition.channels,
                objective,
                self.clock,
                proto.acquisition.duration_s,
                LimitChecker(proto.limits),
                objectives=objectives,
                analysis_channel=a_idx,
                log=self._write_log,
            )
            self.scheduler.on_missing = self._on_missing
            model_hash, model_meta = None, None
            if proto.analysis.enabled:
                seg = self._make_segmenter(objective.pixel_size_um)
                model_hash, model_meta = _model_provenance(seg)
                warm_up = getattr(seg, "warm_up", None)
                if warm_up is not None:  # GPU kernels compiled now, not on the first frame
                    warm_up(self.core.getImageHeight(), self.core.getImageWidth())
                from scopeloop.analysis.pipeline import PositionAnalyzer

                detectors = proto.detectors
                self.worker = AnalysisWorker(
                    seg,
                    lambda _pos: PositionAnalyzer(detectors),
                    build_policies(proto.policies),
                    self.scheduler,
                    self._write_log,
                    write_labels=self.store.write_labels,
                    maxsize=proto.analysis.inbox_size,
                )
            run_info = {
                "protocol_name": proto.name,
                "protocol": proto.model_dump(mode="json"),
                "protocol_file": str(self.protocol_path) if self.protocol_path else None,
                "protocol_sha256": file_sha256(self.protocol_path),
                "microscope_config": str(self.config_path) if self.config_path else None,
                "microscope_config_sha256": file_sha256(self.config_path),
                "simulated": self._world is not None,
                "seed": sim.seed if self._world is not None else None,
                "time_scale": self.clock.time_scale,
                "segmenter": getattr(self.worker.segmenter, "name", None) if self.worker else None,
                "segmenter_device": getattr(self.worker.segmenter, "device", None)
                if self.worker
                else None,
                "model_sha256": model_hash,
                "model_meta": model_meta,
                "stage_classifiers": _stage_classifier_provenance(proto.detectors),
                "positions": [
                    {"name": s.name, "x_um": s.x_um, "y_um": s.y_um, "z_um": s.z_um, "well": s.well}
                    for s in sites
                ],
                "objective": {"name": objective.name, "pixel_size_um": objective.pixel_size_um},
                "started_local": datetime.now().isoformat(timespec="seconds"),
            }
            write_run_info(self.run_dir / "run.json", run_info)
            if self.worker is not None:
                self.worker.start()
            # specimen time starts now, with the model loaded: at a simulated 1000x, the
            # seconds a segmenter takes to load would otherwise pass as the first half hour
            # of the experiment, unimaged (nothing has rendered the specimen since the reset)
            self.clock.reset(0.0)
            events = self.scheduler.events()
            thread = threading.Thread(
                target=self._acquire, args=(events,), name="scopeloop-acquisition", daemon=True
            )
            with _Connected(core, self._on_frame):
                thread.start()
                # Wait on an Event, not Thread.join: a join interrupted by Ctrl-C can
                # leave the thread looking finished while it still runs (CPython).
                while not self._acquired.is_set():
                    try:
                        self._acquired.wait(0.1)
                    except KeyboardInterrupt:
                        interrupted = True
                        self.cancel("interrupted (Ctrl-C)")
                        break
                if not self._acquired.wait(STOP_DEADLINE_S):
                    logger.error("acquisition did not stop within %s s", STOP_DEADLINE_S)
        except BaseException as exc:
            self._error = exc
            if isinstance(exc, KeyboardInterrupt):
                interrupted = True
        finally:
            summary = self._teardown(thread, run_info)
        if self._error is not None and not interrupted:
            raise self._error
        return summary

    def _acquire(self, events: Any) -> None:
        try:
            self.core.mda.run(events)
        except BaseException as exc:  # surfaced by run() after a safe teardown
            self._error = exc
            if self.scheduler is not None:
                self.scheduler.stop(f"error: {exc}")
        finally:
            self._acquired.set()

    def _teardown(self, thread: threading.Thread | None, run_info: dict[str, Any]) -> RunSummary:
        core, sch, worker, store = self.core, self.scheduler, self.worker, self.store

        def stop_scheduler() -> None:
            if sch is not None:
                sch.stop()

        def cancel_mda() -> None:
            if core.mda.is_running():
                core.mda.cancel()

        def join_acquisition() -> None:
            if thread is not None and thread.ident is not None:
                self._acquired.wait(STOP_DEADLINE_S)

        def stop_analysis() -> None:
            if worker is not None and not worker.stop(WORKER_DEADLINE_S):
                logger.error("analysis did not stop within %s s", WORKER_DEADLINE_S)

        def close_shutter() -> None:
            if core.getShutterDevice():
                core.setShutterOpen(False)

        def stop_sequence() -> None:
            if core.isSequenceRunning():
                core.stopSequenceAcquisition()

        def journal_gaps() -> None:
            if sch is not None:
                sch.flush_missing()

        def close_store() -> None:
            if store is not None:
                store.close()

        # in this order: no new events, hardware idle, analysis ended, then files closed
        steps = [
            ("stop scheduler", stop_scheduler),
            ("cancel MDA", cancel_mda),
            ("join acquisition", join_acquisition),
            ("stop analysis", stop_analysis),
            ("close shutter", close_shutter),
            ("stop sequence", stop_sequence),
            ("journal gaps", journal_gaps),
            ("close store", close_store),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:
                logger.exception("while ending the run (%s)", what)
        summary = self._summary()
        try:
            if self._world is not None:
                import json

                (self.run_dir / "ground_truth.json").write_text(
                    json.dumps(self._world.specimen.ground_truth(), indent=1, default=str)
                )
        except Exception:
            logger.exception("could not write ground truth")
        try:
            if self.log is not None:
                self.log.write(
                    {"t_s": summary.specimen_time_s, "source": "run", "summary": summary.as_dict()}
                )
                self.log.close()
        except Exception:
            logger.exception("could not close the decision log")
        try:
            if run_info:
                write_run_info(
                    self.run_dir / "run.json",
                    {
                        **run_info,
                        "finished_local": datetime.now().isoformat(timespec="seconds"),
                        "summary": summary.as_dict(),
                    },
                )
        except Exception:
            logger.exception("could not write run.json")
        self._set_state(RunState.DONE)
        self.signals.finished.emit(summary)
        return summary

    def _summary(self) -> RunSummary:
        sch, wk, st, lg = self.scheduler, self.worker, self.store, self.log
        lat = [x * 1000 for x in wk.latencies_s] if wk else []
        ana = [x * 1000 for x in wk.analysis_s] if wk else []
        reason = (sch.stop_reason if sch else None) or "not started"
        err = None
        if self._error is not None and not isinstance(self._error, KeyboardInterrupt):
            err = f"{type(self._error).__name__}: {self._error}"
            reason = f"error: {err}" if not reason.startswith("error") else reason
        if isinstance(self._error, KeyboardInterrupt):
            reason = "interrupted (Ctrl-C)"
        dose = None
        if self._world is not None:
            dose = float(self._world.specimen.total_light_dose)
        return RunSummary(
            run_dir=str(self.run_dir),
            protocol=self.protocol.name,
            stop_reason=reason,
            positions=len(sch.sites) if sch else 0,
            frames_written=st.frames_written if st else 0,
            frames_missing=st.frames_missing if st else 0,
            frames_analysed=wk.processed if wk else 0,
            analysis_dropped=wk.dropped if wk else 0,
            analysis_errors=wk.errors if wk else 0,
            decisions=(lg.n_accepted + lg.n_refused) if lg else 0,
            accepted=lg.n_accepted if lg else 0,
            refused=lg.n_refused if lg else 0,
            light_used_s=round(sch.light_used_s, 4) if sch else 0.0,
            light_budget_s=self.protocol.limits.light_budget_s,
            specimen_time_s=round(self.clock.now_s(), 1) if self.clock else 0.0,
            wall_s=round(time.perf_counter() - self._wall0, 2),
            latency_ms_median=round(statistics.median(lat), 2) if lat else None,
            latency_ms_p95=round(_percentile(lat, 95) or 0.0, 2) if lat else None,
            analysis_ms_median=round(statistics.median(ana), 2) if ana else None,
            reimages=sch.reimages_total if sch else 0,
            skipped_positions=sum(not s.active for s in sch.sites) if sch else 0,
            specimen_light_dose=dose,
            frames_misplaced=self.frames_misplaced,
            nucleus_size=wk.nucleus_size if wk else None,
            error=err or (wk.first_error if wk and wk.errors else None),
        )


class _Connected:
    """Connect ``frameReady`` for the duration of a run (and always disconnect)."""

    def __init__(self, core: CMMCorePlus, slot: Any) -> None:
        self.core, self.slot = core, slot

    def __enter__(self) -> None:
        self.core.mda.events.frameReady.connect(self.slot)

    def __exit__(self, *exc: object) -> None:
        self.core.mda.events.frameReady.disconnect(self.slot)


def _stage_classifier_provenance(detectors: Sequence[Any]) -> list[dict[str, Any]]:
    """Weights file and SHA-256 of each mitosis detector's stage CNN."""
    out = []
    for det in detectors:
        if getattr(det, "classifier", None) == "cnn":
            from scopeloop.analysis.classifier import default_classifier_path

            path = det.classifier_weights or str(default_classifier_path())
            out.append(
                {"detector": det.name or det.kind, "weights": path, "sha256": file_sha256(path)}
            )
    return out


def _model_provenance(seg: Any) -> tuple[str | None, dict[str, Any] | None]:
    """SHA-256 of a segmenter's weights (and its recipe metadata), when it has any."""
    meta = getattr(seg, "meta", None)
    meta = dict(meta) if isinstance(meta, dict) else None
    for attr in ("model_hash", "weights_sha256"):
        value = getattr(seg, attr, None)
        if isinstance(value, str):
            return value, meta
    path = getattr(seg, "weights_path", None)
    if path is None and getattr(seg, "name", None) == "unet" and getattr(seg, "meta", None):
        try:
            from scopeloop.analysis.unet import default_weights_path

            path = default_weights_path()
        except Exception:
            path = None
    try:
        return (file_sha256(path) if path else None), meta
    except OSError:
        return None, meta


def _default_out(name: str) -> Path:
    return Path("runs") / f"{name}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_protocol(
    protocol: Protocol | str | Path,
    core: CMMCorePlus | None = None,
    out_dir: str | Path | None = None,
    *,
    config: str | Path | None = None,
    policies: bool = True,
    analysis: bool | None = None,
    interval_s: float | None = None,
    duration_s: float | None = None,
    seed: int | None = None,
    time_scale: float | None = None,
    fast_forward: bool | None = None,
    segmenter: SegmenterLike | None = None,
    controller_hook: Any = None,
) -> RunSummary:
    """Run a protocol, as ``scopeloop run`` does, and return its summary.

    Parameters
    ----------
    protocol : Protocol or path
        The protocol (or its YAML file).
    core : CMMCorePlus, optional
        An existing core; by default one is made from ``config``
        (the simulated microscope when ``config`` is None).
    out_dir : path, optional
        Run folder; default ``runs/<protocol>_<date-time>``.
    policies : bool
        False runs the plan without decisions (a fixed-rate reference plan).
    analysis : bool, optional
        False also skips segmentation (acquire only); None follows the protocol.
    interval_s, duration_s, seed, time_scale, fast_forward : optional
        Override the protocol's baseline interval, duration, specimen seed,
        time scale and fast-forward (reference runs on the simulated clock).
    segmenter : object, optional
        Use this segmenter instead of the protocol's.
    controller_hook : callable, optional
        Called with the :class:`RunController` before it runs (to connect
        signals or keep a handle for ``cancel``).
    """
    path: Path | None = None
    if not isinstance(protocol, Protocol):
        path = Path(protocol)
        protocol = load_protocol(path)
    protocol = protocol.with_overrides(
        policies=policies,
        interval_s=interval_s,
        duration_s=duration_s,
        fast_forward=fast_forward,
        seed=seed,
        time_scale=time_scale,
        analysis=analysis,
    )
    if core is None:
        from scopeloop.microscope import make_core

        core = make_core(config)
    ctrl = RunController(
        protocol,
        core,
        out_dir if out_dir is not None else _default_out(protocol.name),
        segmenter=segmenter,
        protocol_path=path,
        config_path=config,
    )
    if controller_hook is not None:
        controller_hook(ctrl)
    return ctrl.run()
