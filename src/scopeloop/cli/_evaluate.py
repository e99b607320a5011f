"""`scopeloop evaluate`: score a run against ground truth, or score segmenters.

- ``scopeloop evaluate RUN`` scores a simulated run (mitoses caught, false
  triggers, light) and runs the two fixed plans on the same specimen seed for
  comparison; prints the three side by side and writes ``RUN/evaluation.json``.
- ``scopeloop evaluate --segmenter NAME [...]`` (no RUN) scores segmenters on
  generated test sets or a user folder of images and masks.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import BadInput, cli_errors, parse_diameter, require_weights


def evaluate(
    run: Annotated[
        Path | None,
        typer.Argument(help="Run folder to score (a simulated run). Omit with --segmenter."),
    ] = None,
    # --- run scoring
    no_reference: Annotated[
        bool,
        typer.Option("--no-reference", help="Score the run alone; skip the fixed plans."),
    ] = False,
    min_frames: Annotated[
        int | None,
        typer.Option(
            "--min-frames",
            min=1,
            help="Frames from onset to end of anaphase for a catch (default 5).",
        ),
    ] = None,
    json_out: Annotated[
        Path | None,
        typer.Option(
            "--json",
            help="Write the scores as JSON here (default RUN/evaluation.json; "
            "for segmenters, only when given).",
        ),
    ] = None,
    # --- segmenter scoring
    segmenter: Annotated[
        list[str] | None,
        typer.Option(
            "--segmenter", "-s", help="Segmenter to score (repeat for several), e.g. unet."
        ),
    ] = None,
    weights: Annotated[
        list[Path] | None,
        typer.Option(
            "--weights",
            help="A trained model to score as one more segmenter: U-Net weights from "
            "scopeloop train, or SEGMENTER=PATH (bioimageio=model.zip, cellpose=FILE, "
            "stardist=FOLDER); repeat to compare several.",
        ),
    ] = None,
    test_set: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Generated test set(s): sparse, crowded, low_signal, defocused (the default: "
            "all four), or frames of the simulated microscope's own renderer, "
            "microscope_4x/10x/20x/40x (microscope: all four objectives).",
        ),
    ] = None,
    folder: Annotated[
        Path | None,
        typer.Option("--folder", help="User folder with images/ and labels/ (TIFF) to score on."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps.")] = "auto",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch (default: torch's, one per core). Give each of "
            "several evaluations run at once its share: more threads than cores in all "
            "run several times slower.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Processes rendering the generated sets not yet in the render cache "
            "(default: one per CPU core; the images are the same whatever the number).",
        ),
    ] = None,
    n_images: Annotated[
        int | None, typer.Option("--n-images", min=1, help="Images per generated set.")
    ] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small sets, for a fast look.")] = False,
    tta: Annotated[
        bool,
        typer.Option(
            "--tta",
            help="Also score each U-Net with test-time flip averaging (4 passes per frame), "
            "beside the plain one.",
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Test-set seed offset (0 = the published sets).")
    ] = 0,
    draws: Annotated[
        int,
        typer.Option(
            "--draws",
            min=1,
            help="Pool --n-images from each of this many draws (--seed, --seed + 1, ...) per "
            "set: a larger sample. Two or more segmenters are also compared paired, on the "
            "same images.",
        ),
    ] = 1,
    nucleus_diameter: Annotated[
        str | None,
        typer.Option(
            "--nucleus-diameter",
            metavar="PX|auto",
            help="Typical nucleus diameter in pixels. The U-Net bins frames whose nuclei are "
            "larger than it was trained on (e.g. 68 for microscope_40x). auto: measured in "
            "each image (for images of unknown or mixed pixel sizes).",
        ),
    ] = None,
) -> None:
    """Score a simulated run against ground truth, or segmenters against exact labels."""
    with cli_errors():
        if run is None and not segmenter and not weights:
            raise BadInput("give a RUN folder to score, or --segmenter NAME to score segmenters")
        if run is not None and (segmenter or weights):
            raise BadInput("give either a RUN folder or --segmenter/--weights, not both")
        # an option of the other mode would be silently ignored: say so instead
        segmenter_only = {
            "--set": test_set, "--folder": folder, "--workers": workers,
            "--n-images": n_images, "--quick": quick, "--tta": tta, "--seed": seed,
            "--draws": draws != 1, "--nucleus-diameter": nucleus_diameter,
        }  # fmt: skip
        run_only = {"--no-reference": no_reference, "--min-frames": min_frames is not None}
        stray = [k for k, v in (segmenter_only if run else run_only).items() if v]
        if stray:
            verb = "apply" if len(stray) > 1 else "applies"
            mode = "segmenters, without a RUN folder" if run else "a RUN folder"
            raise BadInput(f"{', '.join(stray)} only {verb} when scoring {mode}")
        weights = require_weights("--weights", weights)
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        if segmenter or weights:
            _evaluate_segmenters(
                segmenters=list(segmenter or []),
                weights=weights,
                sets=list(test_set or []),
                folder=folder,
                device=device,
                n_images=n_images,
                json_out=json_out,
                quick=quick,
                workers=workers or os.cpu_count() or 1,
                seed=seed,
                draws=draws,
                tta=tta,
                nucleus_diameter_px=parse_diameter("--nucleus-diameter", nucleus_diameter),
            )
            return
        assert run is not None
        if not run.is_dir():
            raise BadInput(f"run folder {str(run)!r} does not exist")
        if not (run / "frames.jsonl").is_file():
            raise BadInput(f"{run} is not a run folder (no frames.jsonl)")
        from scopeloop.evaluation.run_scoring import MIN_FRAMES_FOR_CATCH

        frames = MIN_FRAMES_FOR_CATCH if min_frames is None else min_frames
        _evaluate_run(run, references=not no_reference, min_frames=frames, json_out=json_out)


def _evaluate_segmenters(**kwargs: Any) -> None:
    try:
        from scopeloop.evaluation.seg_eval import evaluate_segmenters_cli
    except ImportError as exc:
        raise BadInput(f"segmenter evaluation is not available in this build ({exc})") from None
    # Pass the options the segmentation evaluation knows about; refuse the others
    # clearly rather than silently ignoring them.
    params = inspect.signature(evaluate_segmenters_cli).parameters
    given = {k: v for k, v in kwargs.items() if v not in (None, [], False)}
    unknown = [k for k in given if k not in params]
    if unknown:
        raise BadInput(f"segmenter evaluation does not take option(s): {', '.join(unknown)}")
    evaluate_segmenters_cli(**{k: v for k, v in kwargs.items() if k in params})


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if pct:
        return f"{100 * v:.0f}%"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _evaluate_run(run: Path, *, references: bool, min_frames: int, json_out: Path | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from scopeloop.evaluation.run_scoring import compare_with_fixed_plans

    console = Console()
    result = compare_with_fixed_plans(
        run,
        references=references,
        min_frames=min_frames,
        progress=lambda line: console.print(f"[dim]running reference plan {line}[/dim]"),
    )
    plans = result["plans"]
    table = Table(
        title=f"{run.name}: mitoses caught (>= {min_frames} frames onset to anaphase end)"
    )
    table.add_column("")
    for p in plans:
        table.add_column(p["name"], justify="right")
    fast = next((p for p in plans if p["name"] == "fixed fast"), None)

    def row(label: str, key: str, pct: bool = False) -> None:
        table.add_row(label, *(_fmt(p.get(key), pct) for p in plans))

    row("mitoses in imaged fields", "mitoses_in_fields")
    row("caught", "caught")
    row("caught fraction", "caught_fraction", pct=True)
    row("bursts", "bursts")
    row("false triggers", "false_triggers")
    row("frames", "frames")
    row("illumination (s)", "illumination_s")
    row("specimen light dose", "specimen_dose")
    if fast is not None and fast["illumination_s"]:
        table.add_row(
            "light vs fixed fast",
            *(_fmt(p["illumination_s"] / fast["illumination_s"], pct=True) for p in plans),
        )
    if fast is not None and fast.get("specimen_dose"):
        table.add_row(
            "dose vs fixed fast",
            *(
                _fmt(
                    None
                    if p.get("specimen_dose") is None
                    else p["specimen_dose"] / fast["specimen_dose"],
                    pct=True,
                )
                for p in plans
            ),
        )
    console.print(table)
    sources = {p["ground_truth_source"] for p in plans}
    console.print(f"ground truth: {', '.join(sorted(sources))}")
    out = json_out if json_out is not None else run / "evaluation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    console.print(f"scores written to {out}")
