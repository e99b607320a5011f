"""`scopeloop run`: run a protocol on the simulated microscope (default) or a real one."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import EXIT_FAILURE, BadInput, cli_errors


def _fmt_t(s: float) -> str:
    h, rem = divmod(int(s), 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}"


def _table(st: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for col in ("position", "mode", "interval", "frames", "re-images"):
        t.add_column(col)
    for p in st["positions"][:24]:
        style = (
            "yellow"
            if p["mode"] not in ("baseline", "skipped")
            else ("dim" if p["mode"] == "skipped" else "")
        )
        t.add_row(
            p["name"],
            p["mode"],
            f"{p['interval_s']:g} s",
            str(p["frames"]),
            str(p["reimages"]),
            style=style,
        )
    return t


def run(
    protocol: Annotated[Path, typer.Argument(help="Protocol YAML file (see protocols/).")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Micro-Manager config; default: the simulated microscope."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run folder (default runs/<protocol>_<date-time>)."),
    ] = None,
    no_policies: Annotated[
        bool,
        typer.Option("--no-policies", help="Fixed plan: acquire (and analyse) without decisions."),
    ] = False,
    interval_s: Annotated[
        float | None, typer.Option("--interval", help="Override the baseline interval, s.")
    ] = None,
    duration_s: Annotated[
        float | None, typer.Option("--duration", help="Override the duration, s.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the specimen seed (simulator).")
    ] = None,
    time_scale: Annotated[
        float | None,
        typer.Option("--time-scale", help="Override specimen seconds per wall second (simulator)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No live progress.")] = False,
) -> None:
    """Run PROTOCOL: acquire, analyse and decide; Ctrl-C stops cleanly leaving a readable run."""
    with cli_errors():
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from scopeloop.acquisition import RunController
        from scopeloop.acquisition.controller import _default_out
        from scopeloop.microscope import make_core
        from scopeloop.models.protocol import load_protocol

        if not protocol.is_file():
            raise BadInput(f"protocol file {str(protocol)!r} does not exist")
        proto = load_protocol(protocol).with_overrides(
            policies=not no_policies,
            interval_s=interval_s,
            duration_s=duration_s,
            seed=seed,
            time_scale=time_scale,
        )
        core = make_core(config)
        run_dir = out or _default_out(proto.name)
        ctrl = RunController(proto, core, run_dir, protocol_path=protocol, config_path=config)
        console = Console(stderr=True)
        result: dict[str, Any] = {}

        done = threading.Event()

        def _go() -> None:
            try:
                result["summary"] = ctrl.run()
            except BaseException as exc:
                result["error"] = exc
            finally:
                done.set()

        worker = threading.Thread(target=_go, name="scopeloop-run", daemon=True)
        worker.start()
        bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[clock]}"),
            TimeElapsedColumn(),
            console=console,
        )
        task = bar.add_task(proto.name, total=proto.acquisition.duration_s, clock="")
        try:
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                # an Event, not Thread.join: a join interrupted by Ctrl-C may lie
                while not done.wait(0.25):
                    if quiet:
                        continue
                    st = ctrl.stats()
                    budget = st["light_budget_s"]
                    light = f"{st['light_used_s']:.2f} s" + (f" / {budget:g} s" if budget else "")
                    bar.update(
                        task,
                        completed=min(st["t_s"], st["duration_s"]),
                        clock=(
                            f"t={_fmt_t(st['t_s'])}  frames {st['frames']}  analysed "
                            f"{st['analysed']} (dropped {st['dropped']})  decisions "
                            f"{st['accepted']} ok / {st['refused']} refused  light {light}"
                        ),
                    )
                    live.update(Group(bar, _table(st)))
        except KeyboardInterrupt:
            console.print("[yellow]stopping: finishing the current frame and closing the run…")
            ctrl.cancel("interrupted (Ctrl-C)")
            done.wait(120)
        if "error" in result:
            raise result["error"]
        s = result.get("summary")
        if s is None:
            raise RuntimeError("the run did not finish within its deadline")
        lat = (
            f"median {s.latency_ms_median:.0f} ms, p95 {s.latency_ms_p95:.0f} ms"
            if s.latency_ms_median is not None
            else "no decisions"
        )
        budget = f" of {s.light_budget_s:g} s budget" if s.light_budget_s else ""
        console.print(
            f"[bold]{s.protocol}[/bold] ended: {s.stop_reason} after {_fmt_t(s.specimen_time_s)} "
            f"specimen time ({s.wall_s:.0f} s wall)\n"
            f"  frames {s.frames_written} stored, {s.frames_missing} missing; analysed "
            f"{s.frames_analysed}, dropped {s.analysis_dropped}, "
            f"analysis errors {s.analysis_errors}\n"
            f"  decisions {s.accepted} accepted, {s.refused} refused; re-images {s.reimages}; "
            f"skipped positions {s.skipped_positions}; frame-to-decision latency {lat}\n"
            f"  light {s.light_used_s:.2f} s{budget}"
            + (f"; specimen dose {s.specimen_light_dose:.2f}" if s.specimen_light_dose else "")
            + _nucleus_size_line(s.nucleus_size)
            + f"\n  run folder: {s.run_dir}"
        )
        if s.error:
            console.print(f"[red]error: {s.error}")
        if s.stop_reason.startswith("interrupted"):
            raise typer.Exit(130)
        if s.stop_reason.startswith("error"):
            raise typer.Exit(EXIT_FAILURE)


def _nucleus_size_line(measure: dict[str, Any] | None) -> str:
    """With analysis.nucleus_diameter_um "auto": what the U-Net measured and how it binned."""
    if measure is None:
        return ""
    d = measure.get("diameter_px")
    um = f" ({measure['diameter_um']:.1f} um)" if measure.get("diameter_um") else ""
    size = f"{d:.0f} px{um}" if d is not None else "not measured (no nucleus found)"
    f = int(measure.get("bin_factor", 1))
    how = f"frames binned {f}x{f}" if f > 1 else "frames as they are"
    held = "held" if measure.get("held") else "still measuring each frame"
    return f"\n  nuclei {size}: {how} ({held})"
