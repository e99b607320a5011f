"""`scopeloop bench`: run the speed benchmarks, print figures, write JSON."""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import typer

from ._common import BadInput, cli_errors, parse_diameter, require_weights

# name -> module under scopeloop.bench exposing `run(quick: bool, device: str) -> dict`
BENCHMARKS = {
    "rendering": "scopeloop.bench.rendering",
    "segmentation": "scopeloop.bench.segmentation",
    "loop": "scopeloop.bench.loop",
}


def bench(
    names: list[str] = typer.Argument(None, help=f"Benchmarks to run: {', '.join(BENCHMARKS)}."),
    quick: bool = typer.Option(False, "--quick", help="Fewer repeats (smoke test)."),
    device: str = typer.Option("auto", help="Torch device for analysis benchmarks."),
    out: Path = typer.Option(Path("bench_results"), help="Folder for the JSON results."),
    weights: list[Path] = typer.Option(
        None,
        "--weights",
        help="Also time this trained model (segmentation; repeatable): U-Net weights, "
        "or SEGMENTER=PATH as for scopeloop evaluate.",
    ),
    tta: bool = typer.Option(
        False, "--tta", help="Also time each U-Net with test-time flip averaging (segmentation)."
    ),
    segmenters: list[str] = typer.Option(
        None,
        "--segmenter",
        "-s",
        help="Segmenters to time (segmentation; repeatable; default classical and unet).",
    ),
    nucleus_diameter: str | None = typer.Option(
        None,
        "--nucleus-diameter",
        metavar="PX|auto",
        help="Also time each U-Net as it runs for nuclei this many pixels wide: binned on the "
        "device when they are larger than it was trained on (segmentation). auto: as it "
        "runs measuring the nuclei in each call.",
    ),
) -> None:
    """Run speed benchmarks; print the figures and write one JSON file per benchmark."""
    with cli_errors():
        chosen = names or list(BENCHMARKS)
        unknown = [n for n in chosen if n not in BENCHMARKS]
        if unknown:
            raise BadInput(f"unknown benchmark {unknown[0]!r}; choose from {list(BENCHMARKS)}")
        weights = require_weights("--weights", weights)
        diameter = parse_diameter("--nucleus-diameter", nucleus_diameter)
        out.mkdir(parents=True, exist_ok=True)
        for name in chosen:
            try:
                module = importlib.import_module(BENCHMARKS[name])
            except ModuleNotFoundError as exc:
                typer.echo(f"{name}: not available ({exc})", err=True)
                continue
            options: dict[str, object] = {}
            params = inspect.signature(module.run).parameters
            if weights and "weights" in params:
                options["weights"] = weights
            if tta and "tta" in params:
                options["tta"] = True
            if segmenters and "segmenters" in params:
                options["segmenters"] = segmenters
            if diameter is not None and "nucleus_diameter_px" in params:
                options["nucleus_diameter_px"] = diameter
            result = module.run(quick=quick, device=device, **options)
            path = out / f"{name}.json"
            path.write_text(json.dumps(result, indent=2))
            typer.echo(f"{name}: results written to {path}")
