"""An HTML report of one run: what was acquired, what was decided, what it cost.

Sections: a summary table; per-position timelines of the frame interval and
mode, with ground-truth mitoses (caught or missed) when the run is simulated;
a histogram of frame-to-decision latency; the light spent over time against
fixed-rate plans; the decision log. Plots are PNGs embedded in one
self-contained HTML file.

matplotlib is needed (``pip install 'scopeloop[report]'``); it is imported
only here, with the non-interactive Agg backend.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scopeloop.storage.decision_log import read_decisions

from .run_scoring import (
    FrameRow,
    PlanScore,
    load_ground_truth,
    load_run_frames,
    read_run_info,
    score_frames,
)

__all__ = ["write_report"]

_MODE_COLOURS = {"baseline": "#4477aa", "burst": "#ee6677", "reimage": "#228833"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "the run report needs matplotlib: pip install 'scopeloop[report]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _timelines(
    plt: Any,
    frames: Sequence[FrameRow],
    decisions: Sequence[dict[str, Any]],
    score: PlanScore | None,
    max_positions: int = 24,
) -> str:
    by_pos: dict[str, list[FrameRow]] = defaultdict(list)
    for f in frames:
        by_pos[f.position].append(f)
    positions = sorted(by_pos)[:max_positions]
    fig, axes = plt.subplots(
        len(positions), 1, figsize=(10, 1.3 * len(positions) + 0.8), sharex=True, squeeze=False
    )
    for ax, pos in zip(axes[:, 0], positions, strict=True):
        rows = sorted(by_pos[pos], key=lambda r: r.t_s)
        tl = [r for r in rows if r.mode != "reimage"]
        # interval since the previous time-lapse frame, coloured by the frame's mode
        for prev, cur in itertools.pairwise(tl):
            ax.plot(
                [cur.t_s / 3600.0],
                [max(cur.t_s - prev.t_s, 1.0) / 60.0],
                "o",
                ms=2.5,
                color=_MODE_COLOURS.get(cur.mode, "#999999"),
            )
        for r in rows:
            if r.mode == "reimage":
                ax.axvline(r.t_s / 3600.0, color=_MODE_COLOURS["reimage"], lw=0.6, alpha=0.5)
        if score is not None:
            for m in score.mitoses:
                if m.position == pos:
                    ax.axvspan(
                        m.onset_s / 3600.0,
                        m.anaphase_end_s / 3600.0,
                        color="#228833" if m.caught else "#cc3311",
                        alpha=0.25,
                        lw=0,
                    )
        for d in decisions:
            act = d.get("action", {})
            if d.get("position") == pos and act.get("type") == "retime" and d.get("accepted"):
                ax.axvline(
                    float(d.get("t_s", 0.0)) / 3600.0,
                    color="#ee6677" if act.get("mode") != "baseline" else "#4477aa",
                    lw=0.7,
                    ls="--",
                )
        ax.set_yscale("log")
        ax.set_ylabel(pos, rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("specimen time (h)")
    fig.suptitle(
        "Interval between frames (min, log) per position; blue baseline, red burst, "
        "green lines re-images; shaded: ground-truth mitoses (green caught, red missed)",
        fontsize=8,
    )
    out = _png(fig)
    plt.close(fig)
    return out


def _latency(plt: Any, decisions: Sequence[dict[str, Any]]) -> str | None:
    lat = [float(d["latency_ms"]) for d in decisions if d.get("latency_ms") is not None]
    if not lat:
        return None
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(lat, bins=min(40, max(5, len(lat) // 2)), color="#4477aa")
    lat_sorted = sorted(lat)
    p50 = lat_sorted[len(lat) // 2]
    p95 = lat_sorted[min(len(lat) - 1, int(0.95 * len(lat)))]
    ax.axvline(p50, color="k", lw=1, label=f"median {p50:.1f} ms")
    ax.axvline(p95, color="k", lw=1, ls="--", label=f"95th pct {p95:.1f} ms")
    ax.set_xlabel("frame arrival to action in schedule (ms)")
    ax.set_ylabel("decisions")
    ax.legend(fontsize=8)
    out = _png(fig)
    plt.close(fig)
    return out


def _light(
    plt: Any,
    frames: Sequence[FrameRow],
    references: dict[str, float],
    fixed_rates: dict[str, float],
) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    rows = sorted(frames, key=lambda r: r.t_s)
    cum, t = 0.0, []
    ys = []
    for r in rows:
        cum += r.exposure_ms / 1000.0
        t.append(r.t_s / 3600.0)
        ys.append(cum)
    ax.plot(t, ys, color="#ee6677", label="this run")
    t_end = rows[-1].t_s if rows else 0.0
    for (name, rate), ls in zip(fixed_rates.items(), ("--", ":"), strict=False):
        ax.plot(
            [0, t_end / 3600.0], [0, rate * t_end], color="#4477aa", ls=ls, label=f"{name} (plan)"
        )
    for name, total in references.items():
        ax.plot([t_end / 3600.0], [total], "s", label=f"{name} (measured)")
    ax.set_xlabel("specimen time (h)")
    ax.set_ylabel("illumination (s, cumulative)")
    ax.legend(fontsize=7)
    out = _png(fig)
    plt.close(fig)
    return out


def _fixed_rates(frames: Sequence[FrameRow], info: dict[str, Any]) -> dict[str, float]:
    """Illumination seconds per specimen second of fixed plans with this run's fields."""
    proto = info.get("protocol") or {}
    acq = proto.get("acquisition") or {}
    base = acq.get("interval_s")
    burst = None
    for p in proto.get("policies") or ():
        if p.get("kind") == "burst_on_event":
            burst = p.get("burst_interval_s")
            break
    positions = {f.position for f in frames}
    tl = [f for f in frames if f.mode != "reimage"]
    if not tl:
        return {}
    per_frame_s = sum(f.exposure_ms for f in tl) / 1000.0 / len(tl)
    out = {}
    if base:
        out["fixed slow"] = len(positions) * per_frame_s / float(base)
    if burst:
        out["fixed fast"] = len(positions) * per_frame_s / float(burst)
    return out


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    ground_truth: bool = True,
    max_decisions: int = 300,
) -> Path:
    """Write the HTML report of a run folder; returns its path.

    Parameters
    ----------
    run_dir : path
        The run folder (``frames.jsonl``, ``decisions.jsonl``, ``run.json``).
    out : path, optional
        Where to write; default ``<run_dir>/report.html``.
    ground_truth : bool
        Score against the simulated specimen's ground truth when there is one.
    max_decisions : int
        Rows of the decision log shown.
    """
    run = Path(run_dir)
    frames = load_run_frames(run)
    if not frames:
        raise ValueError(f"{run}: the run holds no frames; nothing to report")
    info = read_run_info(run)
    records = read_decisions(run) if (run / "decisions.jsonl").is_file() else []
    # actions decided (accepted or refused); the log also notes the run's end, its
    # summary and what the segmenter measured, which are not decisions
    decisions = [d for d in records if isinstance(d.get("action"), dict)]
    sizes = [d["nucleus_size"] for d in records if isinstance(d.get("nucleus_size"), dict)]
    score: PlanScore | None = None
    gt_note = "real microscope or ground truth not requested: no scoring"
    if ground_truth:
        try:
            gt, source = load_ground_truth(run, frames)
        except ValueError:
            gt = None
        if gt is not None:
            score = score_frames("this run", frames, gt, ground_truth_source=source)
            gt_note = f"ground truth: {source}"
    evaluation_path = run / "evaluation.json"
    references: dict[str, float] = {}
    ref_rows: list[list[str]] = []
    if evaluation_path.is_file():
        ev = json.loads(evaluation_path.read_text(encoding="utf-8"))
        for plan in ev.get("plans", []):
            if plan.get("name") != ev.get("run_plan_name", "adaptive"):
                references[plan["name"]] = float(plan["illumination_s"])
            ref_rows.append(
                [
                    plan["name"],
                    _fmt(plan.get("caught_fraction")),
                    f"{plan.get('caught')}/{plan.get('mitoses_in_fields')}",
                    _fmt(plan.get("false_triggers")),
                    _fmt(plan.get("illumination_s")),
                    _fmt(plan.get("specimen_dose")),
                ]
            )

    plt = _pyplot()
    timeline_png = _timelines(plt, frames, decisions, score)
    latency_png = _latency(plt, decisions)
    light_png = _light(plt, frames, references, _fixed_rates(frames, info))

    modes: dict[str, int] = defaultdict(int)
    for f in frames:
        modes[f.mode] += 1
    accepted = sum(bool(d.get("accepted")) for d in decisions)
    summary = [
        ["run", str(run)],
        ["protocol", (info.get("protocol") or {}).get("name", "-")],
        ["positions", len({f.position for f in frames})],
        ["frames", f"{len(frames)} (" + ", ".join(f"{k} {v}" for k, v in modes.items()) + ")"],
        ["specimen time", f"{frames[-1].t_s / 3600:.2f} h"],
        ["illumination", f"{sum(f.exposure_ms for f in frames) / 1000:.2f} s"],
        [
            "decisions",
            f"{len(decisions)} ({accepted} accepted, {len(decisions) - accepted} refused)",
        ],
        ["scoring", gt_note],
    ]
    if sizes:
        summary.append(["nuclei (measured by the segmenter)", _nucleus_size(sizes[-1])])
    if score is not None:
        summary += [
            [
                "mitoses caught",
                f"{score.caught}/{score.mitoses_in_fields} ({_fmt(score.caught_fraction)}) "
                f"with >= {score.min_frames} frames from onset to end of anaphase",
            ],
            ["bursts / false triggers", f"{score.bursts} / {score.false_triggers}"],
            ["specimen light dose", _fmt(score.specimen_dose)],
        ]
    dec_rows = [
        [
            _fmt(float(d.get("t_s", 0.0)) / 60.0),
            d.get("position", "-"),
            d.get("source", "-"),
            (d.get("action") or {}).get("type", "-"),
            "yes" if d.get("accepted") else "no",
            d.get("reason", ""),
            _fmt(d.get("latency_ms")),
        ]
        for d in decisions[:max_decisions]
    ]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>scopeloop run report: {html.escape(run.name)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "img{max-width:100%}</style></head><body>",
        f"<h1>Run report: {html.escape(run.name)}</h1>",
        _table(summary, ["", ""]),
    ]
    if ref_rows:
        parts += [
            "<h2>Against fixed plans (same specimen seed)</h2>",
            _table(
                ref_rows,
                ["plan", "caught", "caught / in fields", "false triggers", "light (s)", "dose"],
            ),
        ]
    parts += [
        "<h2>Timelines</h2>",
        f"<img src='data:image/png;base64,{timeline_png}'>",
        "<h2>Light</h2>",
        f"<img src='data:image/png;base64,{light_png}'>",
    ]
    if latency_png:
        parts += [
            "<h2>Frame-to-decision latency</h2>",
            f"<img src='data:image/png;base64,{latency_png}'>",
        ]
    if score is not None and score.mitoses:
        parts += [
            "<h2>Ground-truth mitoses in imaged fields</h2>",
            _table(
                [
                    [
                        m.cell_id,
                        m.position,
                        _fmt(m.onset_s / 60),
                        _fmt(m.anaphase_end_s / 60),
                        m.frames_in_window,
                        "yes" if m.caught else "no",
                        _fmt(None if m.first_burst_frame_s is None else m.first_burst_frame_s / 60),
                    ]
                    for m in score.mitoses
                ],
                [
                    "cell",
                    "position",
                    "onset (min)",
                    "anaphase end (min)",
                    "frames",
                    "caught",
                    "burst from (min)",
                ],
            ),
        ]
    parts += [
        f"<h2>Decisions (first {min(len(decisions), max_decisions)} of {len(decisions)})</h2>",
        _table(dec_rows, ["t (min)", "position", "policy", "action", "accepted", "why", "ms"]),
        "</body></html>",
    ]
    path = Path(out) if out is not None else run / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def _nucleus_size(size: dict[str, Any]) -> str:
    """The segmenter's own measure of the nuclei, as the decision log last noted it."""
    d, f = size.get("diameter_px"), int(size.get("bin_factor", 1))
    um = f" ({size['diameter_um']:.1f} um)" if size.get("diameter_um") else ""
    what = f"{d:.0f} px{um}" if d is not None else "none found"
    how = f"binned {f}x{f}" if f > 1 else "as they are"
    held = "held" if size.get("held") else "measured per frame"
    return f"{what}; frames analysed {how}, {held}"
