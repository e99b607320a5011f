"""`scopeloop tune`: choose a U-Net's instance-extraction thresholds again, weights unchanged.

The thresholds (foreground, seed, object confidence, smallest object) are tuned
at training on the validation images. They are worth tuning again when the
images change but the network need not: your own annotated images, or the
synthetic generator after a rendering fix. The network runs once per image;
only the extraction is repeated per setting, so this takes minutes, not hours.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import BadInput, cli_errors, command_line, training_versions

#: fewer annotated nuclei than this choose thresholds by chance as much as by fit
FEW_NUCLEI = 500
#: share of paired bootstrap resamples of the images the best setting must win to be adopted
CLEARLY_BETTER = 0.95


def tune(
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="U-Net weights to tune (default: the shipped ones)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A folder with images/ and labels/ TIFFs (matching file names) to tune on. "
            "Default: the validation images of the weights' own synthetic training run, "
            "rendered again by the current generator.",
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for the tuned unet.pt and unet.json.")
    ] = Path("scopeloop_weights"),
    device: str = typer.Option("cpu", help="Torch device (cpu, cuda, mps, auto)."),
    threads: int = typer.Option(2, help="CPU threads for torch."),
    workers: int | None = typer.Option(
        None, min=1, help="Processes rendering synthetic images (default: one per CPU core)."
    ),
) -> None:
    """Tune the U-Net's instance-extraction thresholds on annotated images.

    Writes a copy of the weights (the tensors unchanged) whose record holds the
    new thresholds, the images they were tuned on and the thresholds before.
    """
    with cli_errors():
        import torch

        from scopeloop.analysis.segmenter import select_device
        from scopeloop.analysis.training import (
            bin_to_trained_range,
            folder_units,
            load_folder,
            save_unet,
            tune_thresholds,
        )
        from scopeloop.analysis.unet import EXTRACTION_DEFAULTS, default_weights_path, load_unet
        from scopeloop.storage.run_info import file_sha256

        source = weights if weights is not None else default_weights_path()
        if not source.is_file():
            raise BadInput(f"--weights {source}: no such weights file")
        model, meta = load_unet(source)
        torch.set_num_threads(max(1, threads))
        dev = select_device(device)
        if data is not None:
            # larger nuclei than the network was trained on: tuned binned, as it runs
            whole, diameter, f = bin_to_trained_range(load_folder(data), meta)
            images = {"source": "folder", "folder": str(data), "n_pairs": len(whole)}
            if f > 1:
                images.update(nucleus_diameter_px=round(diameter, 2), bin_factor=f)
                typer.echo(f"tune: nuclei {diameter:.0f} px across: images binned {f}x{f}")
            # the adoption rule resamples units: one or two large images would give it
            # nothing to resample, so a small folder is scored as tiles, as train splits it
            pairs, units_are = folder_units(whole)
            if units_are != "images":
                images["units"] = units_are
        else:
            whole, images = _record_validation(meta, source, workers or os.cpu_count() or 1)
            pairs = whole
        # counted on whole images: a nucleus cut by a tile edge is one nucleus
        n_nuclei = _count_nuclei(whole)
        if not pairs:
            raise BadInput(f"{data}: no image/label pairs to tune on")
        units = str(images.get("units", "images"))
        typer.echo(f"tune: {len(pairs)} {units}, {n_nuclei} nuclei ({_describe(images)})")
        if n_nuclei < FEW_NUCLEI:
            typer.echo(
                f"tune: warning: thresholds chosen on {n_nuclei} nuclei may not carry over to "
                "other images (tuned on tiles of half a real image, 80 nuclei, they lowered "
                f"the other half's AP@0.5); below {FEW_NUCLEI} nuclei fine-tuning "
                "(scopeloop train --data) is the better step",
                err=True,
            )
        current = {k: meta.get(k, default) for k, default in EXTRACTION_DEFAULTS.items()}
        tuned = tune_thresholds(model, pairs, device=dev, current=current)
        before = tuned.pop("current")
        # the best of a grid on the same images always looks better: a change must win
        # in nearly every resample of the images, or the thresholds stay as they were
        adopted = before["p_better"] >= CLEARLY_BETTER
        chosen = tuned if adopted else current
        for key in EXTRACTION_DEFAULTS:
            typer.echo(f"tune: {key} {current[key]} -> {chosen[key]}")
        verdict = "adopted" if adopted else "not clearly better: the thresholds are kept"
        typer.echo(
            f"tune: AP@0.5 on these images {before['ap50']:.4f} at the current thresholds, "
            f"{tuned['ap50']:.4f} at the best setting, which scores higher in "
            f"{before['p_better']:.0%} of resamples of the images; {verdict} "
            "(judge the result on other images with `scopeloop evaluate --weights`)"
        )
        previous = meta.pop("threshold_tuning", None) or {}
        meta.pop("channels", None)
        command = command_line(
            {"weights": weights, "data": data, "out": out, "device": device}, "tune"
        )
        meta.update({key: chosen[key] for key in EXTRACTION_DEFAULTS})
        meta["threshold_tuning"] = {
            **tuned,
            **{key: chosen[key] for key in EXTRACTION_DEFAULTS},
            "ap50": tuned["ap50"] if adopted else before["ap50"],
            "best_on_grid": {
                **{key: tuned[key] for key in EXTRACTION_DEFAULTS},
                "ap50": tuned["ap50"],
            },
            "retuned": {
                "adopted": adopted,
                "command": command,
                "from": {"path": str(source), "sha256": file_sha256(source)},
                "images": images,
                "before": before,
                "versions": training_versions(),
            },
            # the tuning of the training run itself, kept through any later retuning
            "at_training": previous.get("at_training", previous),
        }
        path = save_unet(model, out / "unet.pt", meta)
        typer.echo(f"tune: saved {path}")


def _count_nuclei(pairs: list[tuple[Any, Any]]) -> int:
    """Labelled nuclei in image/label pairs (each mask's ids other than 0)."""
    import numpy as np

    return sum(len(np.unique(lab)) - int((lab == 0).any()) for _, lab in pairs)


def _record_validation(
    meta: dict[str, Any], source: Path, workers: int
) -> tuple[list[Any], dict[str, Any]]:
    """The validation images of the synthetic run recorded in ``meta``, rendered again."""
    from scopeloop.analysis.training import (
        SYNTHETIC_SPLIT,
        split_pairs,
        synthetic_seeds,
        synthetic_seeds_record,
    )
    from scopeloop.simulation.render_cache import render_pairs_cached
    from scopeloop.simulation.synthetic import Recipe, mixed_recipes

    data = meta.get("data") or {}
    if data.get("source") != "synthetic":
        where = f" on the folder {data['folder']}" if "folder" in data else ""
        raise BadInput(
            f"{source}: trained{where}, not on synthetic images; give --data with "
            "annotated images to tune on"
        )
    seed = int(meta["seed"])
    n_images = sum(meta["split"].values())
    if data.get("seeds") != synthetic_seeds_record(seed, n_images):
        raise BadInput(
            f"{source}: the record's synthetic seeds {data.get('seeds')!r} are not those "
            "of a scopeloop train run; give --data with annotated images to tune on"
        )
    # a record from an older generator may lack newer ranges: those take their defaults
    fields = {f.name for f in dataclasses.fields(Recipe)}
    ranges: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in data["recipe"].items() if k in fields
    }
    recipe = Recipe(**ranges)
    # the run's own split, drawn on indices so only its validation images are rendered
    _, val_idx, _ = split_pairs(list(range(n_images)), *SYNTHETIC_SPLIT, seed)
    seeds = synthetic_seeds(seed, n_images)
    size = int(data["size_px"])
    recipes = mixed_recipes(n_images, recipe, data.get("emphasis", ()))
    pairs, _ = render_pairs_cached(
        [seeds[i] for i in val_idx], (size, size), workers, [recipes[i] for i in val_idx]
    )
    images = {
        "source": "synthetic validation split", "seeds": data["seeds"], "split_seed": seed,
        "n_images": len(pairs), "size_px": size, "generator": data.get("generator"),
    }  # fmt: skip
    return pairs, images


def _describe(images: dict[str, Any]) -> str:
    if images["source"] == "folder":
        return f"the folder {images['folder']}"
    return (
        f"the training run's validation split of seeds {images['seeds']}, rendered by the "
        "current generator"
    )
