"""`scopeloop segment`: label a folder of your own images with a segmenter.

Writes ``OUT/labels/<name>.tif`` (instance ids, as Fiji and napari read them)
beside a copy of each image in ``OUT/images/``: the folder ``scopeloop train
--data`` and ``scopeloop evaluate --folder`` take, once the masks are checked
and corrected (predict, correct, fine-tune). ``OUT/segmentation.json`` records
the segmenter, its options and what it found per image.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import BadInput, cli_errors, parse_diameter, require_weights

_TIFF = (".tif", ".tiff")


def segment(
    source: Annotated[
        Path,
        typer.Argument(
            help="A TIFF image, or a folder of them (a folder holding images/ is read from there).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Folder for labels/ (one TIFF of instance ids per image, same names), "
            "images/ (copies) and segmentation.json.",
        ),
    ],
    segmenter: Annotated[
        str, typer.Option("--segmenter", "-s", help="Segmenter: unet, classical, ...")
    ] = "unet",
    weights: Annotated[
        Path | None,
        typer.Option(
            "--weights",
            help="A trained model: U-Net weights from scopeloop train, or SEGMENTER=PATH "
            "(bioimageio=model.zip, cellpose=FILE, stardist=FOLDER).",
        ),
    ] = None,
    nucleus_diameter: Annotated[
        str | None,
        typer.Option(
            "--nucleus-diameter",
            metavar="PX|auto",
            help="U-Net: typical nucleus diameter in pixels (frames of larger nuclei than "
            "it was trained on are binned), or auto to measure it in each image.",
        ),
    ] = None,
    tta: Annotated[
        bool, typer.Option("--tta", help="U-Net: average over the image's flips (4 passes).")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace label files already in OUT/labels."),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, mps.")] = "auto",
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for torch.")
    ] = None,
) -> None:
    """Segment your own images: label TIFFs to check, correct and fine-tune on."""
    with cli_errors():
        files = _image_files(source)
        kind, options = _segmenter_options(segmenter, weights, nucleus_diameter, tta)
        labels_dir, images_dir = out / "labels", out / "images"
        names = [f"{p.stem}.tif" for p in files]
        taken = [
            f"{d.name}/{n}"
            for p, n in zip(files, names, strict=True)
            for d in (labels_dir, images_dir)
            if (d / n).exists() and not (d / n).samefile(p)
        ]
        if taken and not overwrite:
            raise BadInput(
                f"{out} already holds {len(taken)} files of these names "
                f"({', '.join(taken[:3])}{' ...' if len(taken) > 3 else ''}); corrected masks "
                "would be lost: give another --out, or --overwrite"
            )
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        import numpy as np
        from rich.progress import track

        from scopeloop.analysis.segmenter import get_segmenter
        from scopeloop.analysis.training import read_image, write_labels

        seg = get_segmenter(kind, device=device, **options)
        labels_dir.mkdir(parents=True, exist_ok=True)
        images_dir.mkdir(exist_ok=True)
        rows: list[dict[str, Any]] = []
        failed: list[str] = []
        record = {
            "segmenter": kind, "device": str(getattr(seg, "device", device)),
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
            "source": str(source), "images": rows, "failed": failed, "complete": False,
        }  # fmt: skip
        try:
            for path, name in track(list(zip(files, names, strict=True)), description="segment"):
                try:
                    image = read_image(path)
                except (ValueError, OSError) as exc:  # one bad file stops no other
                    failed.append(str(exc))
                    typer.echo(f"error: {exc}", err=True)
                    continue
                t0 = time.perf_counter()
                labels = seg.segment(image)
                row: dict[str, Any] = {
                    "image": name, "source": str(path),
                    "nuclei": len(np.unique(labels[labels > 0])),
                    "seconds": round(time.perf_counter() - t0, 3),
                }  # fmt: skip
                if (m := getattr(seg, "last_measure", None)) is not None:  # with "auto"
                    d = m["diameter_px"]
                    row.update(m, diameter_px=None if d is None else round(d, 1))
                write_labels(labels_dir / name, labels)
                copy = images_dir / name  # named as its mask: the folder readers pair by name
                if not (copy.exists() and copy.samefile(path)):  # not segmenting OUT in place
                    shutil.copy2(path, copy)
                rows.append(row)
            record["complete"] = True
        finally:  # stopped part-way (Ctrl-C, a failing segmenter): what was labelled is listed
            (out / "segmentation.json").write_text(json.dumps(record, indent=1) + "\n")
        nuclei = sum(r["nuclei"] for r in rows)
        typer.echo(f"segment: {len(rows)} images, {nuclei} nuclei; labels in {labels_dir}")
        if failed:
            raise BadInput(f"{len(failed)} of {len(files)} images could not be read (see above)")


def _image_files(source: Path) -> list[Path]:
    """The TIFF images ``source`` names, in name order."""
    if source.is_file():
        if source.suffix.lower() not in _TIFF:
            raise BadInput(f"{source}: not a TIFF image (.tif, .tiff)")
        return [source]
    if not source.is_dir():
        raise BadInput(f"{source}: no such file or folder")
    folder = source / "images" if (source / "images").is_dir() else source
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _TIFF and p.is_file())
    if not files:
        raise BadInput(f"{folder}: no .tif/.tiff images")
    stems = [p.stem for p in files]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise BadInput(f"{folder}: images {', '.join(twice)} have the same name as .tif and .tiff")
    return files


def _segmenter_options(
    segmenter: str, weights: Path | None, nucleus_diameter: str | None, tta: bool
) -> tuple[str, dict[str, Any]]:
    """The registry name and constructor options of the segmenter asked for."""
    from scopeloop.analysis.segmenter import parse_weights

    kind = segmenter
    options: dict[str, Any] = {}
    if weights is not None:
        require_weights("--weights", [weights])
        kind, path = parse_weights(weights)
        if segmenter not in ("unet", kind):
            raise BadInput(f"--weights {str(weights)!r} is a {kind} model, not {segmenter}")
        options["weights"] = path
    diameter = parse_diameter("--nucleus-diameter", nucleus_diameter)
    for given, option in ((diameter is not None, "--nucleus-diameter"), (tta, "--tta")):
        if given and kind != "unet":
            raise BadInput(f"{option} is a U-Net option, not one of {kind}")
    if diameter is not None:
        options["nucleus_diameter_px"] = diameter
    if tta:
        options["tta"] = True
    return kind, options
