"""`scopeloop train`: train the U-Net and the stage classifier, or fine-tune on your own masks."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import BadInput, cli_errors, command_line, training_versions


def _parse_channels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        widths = tuple(int(v) for v in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 5 or min(widths) < 1:  # the U-Net has five levels
        raise BadInput(f"--channels {text!r}: give five positive integers, e.g. 16,32,64,128,256")
    return widths


def _parse_emphasis(text: str | None) -> tuple[str, ...]:
    from scopeloop.simulation.synthetic import EMPHASES

    names = tuple(t.strip() for t in (text or "").split(",") if t.strip())
    for name in names:
        if name not in EMPHASES:
            raise BadInput(f"--emphasis {text!r}: {name!r} is not one of {', '.join(EMPHASES)}")
    if len(set(names)) != len(names):
        raise BadInput(f"--emphasis {text!r}: each regime once")
    return names


def _parse_radius(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        lo = hi = -1.0
    if not 0.5 <= lo < hi:
        raise BadInput(
            f"--radius-px {text!r}: give the smallest and largest nucleus radius in pixels, "
            "e.g. 2.5,22 (smallest at least 0.5, below the largest)"
        )
    return lo, hi


def train(
    out: Annotated[
        Path, typer.Option("--out", help="Folder for unet.pt / stage_classifier.pt.")
    ] = Path("scopeloop_weights"),
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Fine-tune on a folder with images/ and labels/ TIFFs (matching file "
            "names; Fiji or napari label exports): the U-Net on the masks, the classifier "
            "on the nuclei listed in its stages.csv (columns image,label,stage).",
        ),
    ] = None,
    what: str = typer.Option("all", help="What to train: unet, classifier or all."),
    init: Annotated[
        Path | None,
        typer.Option("--init", help="U-Net weights to start from (default: shipped, with --data)."),
    ] = None,
    n_images: int = typer.Option(600, help="Synthetic training images (without --data)."),
    size: int = typer.Option(256, help="Synthetic image size in pixels."),
    steps: int = typer.Option(3000, help="Maximum optimisation steps."),
    minutes: float = typer.Option(12.0, help="Wall-clock budget for the U-Net, minutes."),
    batch: int = typer.Option(8, help="Batch size."),
    crop: int = typer.Option(128, help="Training crop size in pixels (multiple of 16)."),
    lr: float | None = typer.Option(
        None, help="Peak learning rate (default 2e-3, 5e-4 fine-tuning)."
    ),
    patience: int = typer.Option(6, help="Validations without improvement before stopping."),
    eval_every: int | None = typer.Option(
        None, help="Validate every this many steps (default: steps / 10, at most 100)."
    ),
    channels: str | None = typer.Option(
        None,
        help="U-Net feature channels per level, finest first, comma-separated "
        "(default 8,16,32,64,128). With --init or --data: widen the starting network "
        "to these, keeping what it computes.",
    ),
    radius_px: str | None = typer.Option(
        None,
        help="U-Net on synthetic images: nucleus radius range in pixels, MIN,MAX "
        "(log-uniform; default 4,22). Lower MIN for small nuclei, e.g. 4x overviews.",
    ),
    emphasis: str | None = typer.Option(
        None,
        help="U-Net on synthetic images: give half the images to these regimes, "
        "comma-separated: dense (touching clusters), blurred (defocus 2-4 px and haze), "
        "dim (5-30 photons), small (radii 4-8 px). Their ranges lie inside the training "
        "recipe's.",
    ),
    teacher: Annotated[
        Path | None,
        typer.Option(
            "--teacher",
            help="U-Net weights to distil (e.g. a wider network trained on a GPU): the "
            "U-Net learns from its maps as well as from the exact labels.",
        ),
    ] = None,
    distill: float = typer.Option(
        0.5, min=0.0, max=1.0, help="With --teacher: the teacher's share of the targets."
    ),
    teacher_flips: bool = typer.Option(
        False,
        "--teacher-flips",
        help="With --teacher: the teacher's maps averaged over each crop and its three "
        "flips (what --tta scores), so one pass learns them. The teacher may be the "
        "--init weights themselves.",
    ),
    average: bool = typer.Option(
        False,
        "--average",
        help="U-Net: stochastic weight averaging. The learning rate stays at its peak and "
        "the weights at every validation check are averaged; the average is the model "
        "validated and saved. For a stage from trained weights (--init).",
    ),
    seed: int = typer.Option(0, help="Random seed (data, split, initialisation)."),
    threads: int = typer.Option(2, help="CPU threads for torch."),
    workers: int | None = typer.Option(
        None,
        min=1,
        help="Processes rendering the synthetic images (default: one per CPU core; "
        "the images are the same whatever the number).",
    ),
    device: str = typer.Option("cpu", help="Torch device to train on (cpu, cuda, mps, auto)."),
    microscope_frames: int | None = typer.Option(
        None,
        min=0,
        help="Classifier: frames of the simulated microscope's own renderer added to the "
        "synthetic images (its specimen's cell cycle; 512x512 at 10x, 20x and 40x; "
        "0 for none). Default 600, or 0 with --data.",
    ),
    unlisted_objects: str = typer.Option(
        "interphase",
        help="Classifier with --data: nuclei of the masks not listed in stages.csv are "
        "interphase (annotate the mitoses only) or 'ignore'd.",
    ),
) -> None:
    """Train the segmentation U-Net and the cell-stage classifier.

    Without --data, both are trained on domain-randomized synthetic nuclei with
    exact labels. With --data DIR, the U-Net is fine-tuned on your own images
    and masks. The command, seed and data recipe are written next to the weights.
    """
    with cli_errors():
        import torch

        from scopeloop.analysis.segmenter import select_device

        if what not in {"unet", "classifier", "all"}:
            raise BadInput(f"--what {what!r}: choose unet, classifier or all")
        if unlisted_objects not in {"interphase", "ignore"}:
            raise BadInput(f"--unlisted-objects {unlisted_objects!r}: choose interphase or ignore")
        if microscope_frames is None:
            microscope_frames = 0 if data is not None else 600
        if crop % 16:
            raise BadInput(f"--crop {crop}: must be a multiple of 16")
        widths = _parse_channels(channels)
        radius = _parse_radius(radius_px)
        emphases = _parse_emphasis(emphasis)
        if teacher is not None:
            if what == "classifier":
                raise BadInput("--teacher is for the U-Net; drop it with --what classifier")
            if not teacher.is_file():
                raise BadInput(f"--teacher {teacher}: no such weights file")
            if distill <= 0.0:
                raise BadInput(f"--distill {distill}: must be above 0 with --teacher")
        elif teacher_flips:
            raise BadInput("--teacher-flips averages a teacher's maps; give --teacher too")
        for given, name in ((radius, "--radius-px"), (emphases, "--emphasis")):
            if given and (data is not None or what == "classifier"):
                raise BadInput(
                    f"{name} shapes the U-Net's synthetic images; drop it with "
                    "--data or --what classifier"
                )
        # the stage table is read and checked before anything trains
        from scopeloop.analysis.training import STAGE_TABLE, load_stage_folder

        stage_folder = None
        if (
            data is not None
            and what != "unet"
            and (what == "classifier" or (data / STAGE_TABLE).is_file())
        ):
            stage_folder = load_stage_folder(data, unlisted_objects)
        torch.set_num_threads(max(1, threads))
        dev = select_device(device)
        out.mkdir(parents=True, exist_ok=True)
        command = command_line(
            {
                "out": out, "data": data, "what": what, "init": init, "n_images": n_images,
                "size": size, "steps": steps, "minutes": minutes, "batch": batch, "crop": crop,
                "lr": lr, "patience": patience, "eval_every": eval_every, "channels": channels,
                "radius_px": radius_px, "emphasis": emphasis, "teacher": teacher,
                "distill": distill if teacher is not None else None,
                "teacher_flips": teacher_flips,
                "average": average, "seed": seed,
                "threads": threads,
                "device": device,
                "microscope_frames": microscope_frames if what != "unet" else None,
                "unlisted_objects": (
                    unlisted_objects if data is not None and what != "unet" else None
                ),
            }
        )  # fmt: skip
        common = {"command": command, "seed": seed, "versions": training_versions()}
        if what in {"unet", "all"}:
            _train_unet(
                out, data, init, n_images, size, steps, minutes, batch, crop, lr, patience,
                eval_every, seed, dev, common, widths, workers or os.cpu_count() or 1, radius,
                teacher=teacher, distill=distill, teacher_flips=teacher_flips,
                emphasis=emphases, average=average,
            )  # fmt: skip
        if what in {"classifier", "all"}:
            if data is not None and stage_folder is None:
                typer.echo(
                    f"classifier: {data} has no {STAGE_TABLE}; the shipped classifier is kept "
                    "(list the stages of annotated nuclei there to fine-tune it)"
                )
                return
            _train_classifier(
                out, n_images, size, seed, dev, common, microscope_frames,
                workers or os.cpu_count() or 1, data, stage_folder, unlisted_objects,
            )  # fmt: skip


def _train_unet(
    out: Path,
    data: Path | None,
    init: Path | None,
    n_images: int,
    size: int,
    steps: int,
    minutes: float,
    batch: int,
    crop: int,
    lr: float | None,
    patience: int,
    eval_every: int | None,
    seed: int,
    device: str,
    common: dict[str, Any],
    widths: tuple[int, ...] | None = None,
    workers: int = 1,
    radius: tuple[float, float] | None = None,
    teacher: Path | None = None,
    distill: float = 0.5,
    teacher_flips: bool = False,
    emphasis: tuple[str, ...] = (),
    average: bool = False,
) -> None:
    from scopeloop.analysis.metrics import aggregate, score_image
    from scopeloop.analysis.training import (
        FOLDER_TILE_PX,
        LOSS_RECORD,
        SYNTHETIC_SPLIT,
        TARGETS_RECORD,
        bin_to_trained_range,
        folder_units,
        load_folder,
        save_unet,
        split_folder,
        split_pairs,
        synthetic_seeds,
        synthetic_seeds_record,
        train_unet,
        tune_thresholds,
    )
    from scopeloop.analysis.unet import UNet, UNetSegmenter, load_unet, trained_diameter_px

    model = None
    init_meta: dict[str, Any] | None = None
    recipe: dict[str, Any]
    if data is not None:
        model, init_meta = _start_from(init, widths, seed)  # None -> shipped weights
        # nuclei larger than the network was trained on: fine-tuned binned, as it will run
        pairs, diameter, f = bin_to_trained_range(load_folder(data), init_meta)
        binned = f" (binned {f}x{f})" if f > 1 else ""
        if len(folder_units(pairs)[0]) < 2:  # one image of 512 px or more is cut into tiles
            shape = "x".join(map(str, pairs[0][0].shape)) if pairs else ""
            raise BadInput(
                f"{data}: {len(pairs)} image/label pair ({shape}{binned}) is too little to "
                f"fine-tune on: give at least 2 pairs, or one image of at least "
                f"{2 * FOLDER_TILE_PX * f} px along a side"
            )
        if f > 1:
            typer.echo(
                f"unet: {data}: nuclei {diameter:.0f} px across (median of the masks), over "
                f"the {trained_diameter_px(init_meta):.0f} px the network was trained on: "
                f"images and masks binned {f}x{f} for training, and the weights bin frames "
                "the same way unless given another nucleus diameter"
            )
        train_p, val_p, test_p, split_by = split_folder(pairs, seed)
        typer.echo(
            f"unet: {data}: {len(pairs)} images, split by {split_by}: train {len(train_p)}, "
            f"validation {len(val_p)}, test {len(test_p)}"
        )
        recipe = {
            "source": "folder", "folder": str(data), "n_pairs": len(pairs), "split_by": split_by,
            "nucleus_diameter_px": None if diameter != diameter else round(diameter, 2),
            "bin_factor": f,
        }  # fmt: skip
        peak_lr = lr if lr is not None else 5e-4
    else:
        from scopeloop.simulation.render_cache import cache_dir, render_pairs_cached
        from scopeloop.simulation.synthetic import TRAIN_RECIPE, mixed_recipes

        t0 = time.perf_counter()
        train_recipe = (
            TRAIN_RECIPE if radius is None else dataclasses.replace(TRAIN_RECIPE, radius_px=radius)
        )
        # train, validation and test images come from disjoint seed ranges
        all_pairs, from_cache = render_pairs_cached(
            synthetic_seeds(seed, n_images), (size, size), workers,
            mixed_recipes(n_images, train_recipe, emphasis),
        )  # fmt: skip
        train_p, val_p, test_p = split_pairs(all_pairs, *SYNTHETIC_SPLIT, seed)
        cached = f", {from_cache} from the cache in {cache_dir()}" if from_cache else ""
        typer.echo(
            f"unet: rendered {n_images} synthetic images in {time.perf_counter() - t0:.0f} s "
            f"(train {len(train_p)}, validation {len(val_p)}, test {len(test_p)}{cached})"
        )
        if init is not None:
            model, init_meta = _start_from(init, widths, seed)
        elif widths is not None:
            import torch

            torch.manual_seed(seed)
            model = UNet(widths)
        recipe = {
            "source": "synthetic", "generator": "scopeloop.simulation.synthetic.make_sample",
            "seeds": synthetic_seeds_record(seed, n_images), "size_px": size,
            "recipe": dataclasses.asdict(train_recipe),
        }  # fmt: skip
        if emphasis:  # the odd images' regimes, in turn (mixed_recipes)
            recipe["emphasis"] = list(emphasis)
        peak_lr = lr if lr is not None else 2e-3

    def progress(rec: dict[str, float]) -> None:
        typer.echo(
            f"unet: step {int(rec['step']):5d}  train loss {rec['train_loss']:.4f}  "
            f"val loss {rec['val_loss']:.4f}  ({rec['seconds']:.0f} s)"
        )

    teacher_net = load_unet(teacher)[0] if teacher is not None else None
    res = train_unet(
        train_p, val_p, model=model, steps=steps, batch_size=batch, crop=crop, lr=peak_lr,
        eval_every=eval_every or max(10, min(100, steps // 10)), patience=patience,
        max_seconds=minutes * 60, seed=seed, device=device, progress=progress,
        teacher=teacher_net, distill=distill, teacher_flips=teacher_flips, average=average,
    )  # fmt: skip
    # extraction thresholds chosen on the validation images, then fixed for the test split
    tuned = tune_thresholds(res.model, val_p, device=device)
    typer.echo(
        f"unet: thresholds fg {tuned['fg_threshold']}, seed {tuned['seed_threshold']}, "
        f"object confidence {tuned['min_confidence']}, objects from {tuned['min_size_px']} px "
        f"(validation AP@0.5 {tuned['ap50']:.3f})"
    )
    seg = UNetSegmenter(
        device=device, model=res.model, fg_threshold=tuned["fg_threshold"],
        seed_threshold=tuned["seed_threshold"], min_size_px=tuned["min_size_px"],
        min_confidence=tuned["min_confidence"],
    )  # fmt: skip
    scores = [score_image(lab, seg.segment(img)) for img, lab in test_p]
    test = aggregate(scores) if scores else {}
    meta = {
        **common,
        "data": recipe,
        "split": {"train": len(train_p), "validation": len(val_p), "test": len(test_p)},
        "training": {
            "steps_run": res.steps_run, "best_step": res.best_step,
            "best_val_loss": res.best_val_loss, "stopped_early": res.stopped_early,
            "seconds": round(res.seconds, 1), "batch": batch, "crop": crop, "lr": peak_lr,
            "weights_averaged": res.n_averaged,
            "device": device, "augmentations": "flips, rot90, gamma, gain/offset, gaussian noise",
            "loss": LOSS_RECORD,
            "targets": TARGETS_RECORD,
        },
        "test_split_scores": {"ap": test.get("ap"), "f1": test.get("f1")},
        "fg_threshold": tuned["fg_threshold"], "seed_threshold": tuned["seed_threshold"],
        "min_size_px": tuned["min_size_px"], "min_confidence": tuned["min_confidence"],
        "threshold_tuning": tuned,
    }  # fmt: skip
    if teacher is not None:
        from scopeloop.storage.run_info import file_sha256

        meta["distilled_from"] = {
            "path": str(teacher), "sha256": file_sha256(teacher), "share": distill,
            "flip_averaged": teacher_flips,
        }  # fmt: skip
    if init_meta:
        # the run this one started from, so the whole chain can be reproduced
        meta["init_from"] = {k: v for k, v in init_meta.items() if k != "channels"}
    path = save_unet(res.model, out / "unet.pt", meta)  # and unet.json beside it
    ap50 = (test.get("ap") or {}).get("0.5")
    tested = (
        f"test AP@0.5 {ap50:.3f}"
        if ap50 is not None
        else "no test split (score it on other annotated fields with scopeloop evaluate)"
    )
    typer.echo(
        f"unet: saved {path} ({path.stat().st_size / 1e6:.1f} MB); best step {res.best_step}, "
        + tested
    )


def _start_from(
    init: Path | None, widths: tuple[int, ...] | None, seed: int
) -> tuple[Any, dict[str, Any]]:
    """Load the starting U-Net, widened to ``widths`` when they are given."""
    from scopeloop.analysis.training import widen_unet
    from scopeloop.analysis.unet import load_unet

    model, meta = load_unet(init)
    if widths is not None and widths != tuple(model.channels):
        narrow = list(model.channels)  # from the network itself: older records lack it
        try:
            model = widen_unet(model, widths, seed=seed)
        except ValueError as exc:
            raise BadInput(f"--channels {','.join(map(str, widths))}: {exc}") from None
        meta = {**meta, "widened_from": narrow}
    return model, meta


def _train_classifier(
    out: Path,
    n_images: int,
    size: int,
    seed: int,
    device: str,
    common: dict[str, Any],
    microscope_frames: int,
    workers: int,
    data_dir: Path | None = None,
    stage_folder: list[tuple[str, Any, Any, dict[int, int]]] | None = None,
    unlisted: str = "interphase",
) -> None:
    """Train the stage classifier on rendered images, or fine-tune the shipped one on
    ``stage_folder`` (the stage-labelled nuclei of ``data_dir``) with rendered images
    beside them (drawn as often as the user's, so that no stage the user did not
    annotate is forgotten)."""
    try:
        from scopeloop.analysis.classifier import (
            StageClassifier,
            default_classifier_path,
            save_classifier,
            train_classifier,
        )
    except ImportError as exc:  # pragma: no cover - present in this build
        raise BadInput(f"the stage classifier is not available: {exc}") from None
    from scopeloop.simulation.microscope_set import (
        STAGE_SETS,
        TRAINING_SEED_OFFSET,
        microscope_training_samples,
    )
    from scopeloop.simulation.synthetic import CLASSIFIER_RECIPE, STAGES, make_sample

    n = max(40, n_images // 3)
    samples = [
        make_sample(seed * 1_000_003 + 500_000 + i, (size, size), CLASSIFIER_RECIPE)
        for i in range(n)
    ]
    sources = ["synthetic"] * n
    # the specimen's own nuclei (its cell cycle, nuclei pressed against each other, dying
    # cells) next to the generator's: without them the classifier calls many interphase
    # nuclei of the simulated microscope mitotic
    t0 = time.perf_counter()
    samples += microscope_training_samples(microscope_frames, seed, (512, 512), workers, STAGE_SETS)
    sources += ["microscope"] * microscope_frames
    if microscope_frames:
        typer.echo(
            f"classifier: rendered {microscope_frames} simulated-microscope frames "
            f"in {time.perf_counter() - t0:.0f} s"
        )
    data = [(s.image, s.labels, s.stages) for s in samples]
    init, lr = None, 3e-3
    user: dict[str, Any] = {}
    init_from: dict[str, Any] | None = None
    if stage_folder is not None:
        import json

        import numpy as np

        data += [(img, lab, stages) for _, img, lab, stages in stage_folder]
        sources += ["user"] * len(stage_folder)
        counts = np.bincount(
            [k for *_, st in stage_folder for k in st.values()], minlength=len(STAGES)
        )
        user = {
            "folder": str(data_dir), "n_images": len(stage_folder), "unlisted_objects": unlisted,
            "nuclei": dict(zip(STAGES, counts.tolist(), strict=True)),
        }  # fmt: skip
        typer.echo(
            f"classifier: fine-tuning the shipped classifier on {len(stage_folder)} images of "
            f"{data_dir} ({', '.join(f'{n} {name}' for name, n in user['nuclei'].items())})"
        )
        init, lr = StageClassifier(device="cpu").model, 1e-3
        shipped = json.loads(default_classifier_path().with_suffix(".json").read_text())
        init_from = {k: shipped.get(k) for k in ("command", "seed", "data")}
    # fine-tuning keeps the average of the schedule's second half: with a few dozen
    # fields, the epoch their validation loss picks is chance (docs: fine-tuning)
    res = train_classifier(
        data, sources=sources, init=init, lr=lr, seed=seed, device=device,
        progress=typer.echo, average=stage_folder is not None,
    )  # fmt: skip
    if "weights" in res.summary:
        first, last = res.summary["weights"]["averaged_epochs"]
        typer.echo(
            f"classifier: weights averaged over epochs {first}-{last} (val loss "
            f"{res.summary['weights']['val_loss']:.4f}; best single epoch "
            f"{res.summary['best_val_loss']:.4f})"
        )
    meta = {
        **common,
        "stages": list(STAGES),
        "data": {
            "source": "synthetic" + (" + simulated microscope" if microscope_frames else ""),
            "seeds": f"{seed} * 1000003 + 500000 + [0, {n})",
            "size_px": size, "recipe": dataclasses.asdict(CLASSIFIER_RECIPE),
            "microscope_frames": {
                "n": microscope_frames, "sets": list(STAGE_SETS), "size_px": 512,
                "set_seed_offset": TRAINING_SEED_OFFSET + seed,
            },
        },
        "training": {**res.summary, "lr": lr},
    }  # fmt: skip
    if init_from is not None:
        meta["data"]["user"] = user
        meta["init_from"] = init_from
    path = save_classifier(res.model, out / "stage_classifier.pt", meta)  # and its .json
    typer.echo(f"classifier: saved {path} ({path.stat().st_size / 1e6:.2f} MB)")
