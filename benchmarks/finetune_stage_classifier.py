"""Fine-tuning the stage classifier on a user's stage labels, scored on fields it never saw.

The user's situation with `scopeloop train --what classifier --data`: a marker
the shipped classifier was not trained for (a nuclear reporter that leaves the
nucleus in mitosis, so mitotic figures are dim; `reporter_lost_in_mitosis`)
and a few dozen annotated fields or fewer. Each draw of fields is a folder
(`images/`, `labels/`, `stages.csv` listing the mitoses), fine-tuned with each
training seed; every result is scored on the same held-out fields, beside the
shipped classifier, so the spread over draws and seeds shows how steady the
procedure is with so few fields.

    python benchmarks/finetune_stage_classifier.py OUT [--fields 12] [--draws 0,1,2,3]
        [--seeds 0] [--held-out 40] [--size 192] [--n-images 30] [--jobs 2]

Writes OUT/draw<D>/ (the folder), OUT/draw<D>_seed<S>/stage_classifier.pt and
.json, and OUT/scores.json; prints mitotic precision and recall per run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scopeloop.analysis.classifier import StageClassifier, stage_scores
from scopeloop.analysis.training import write_folder
from scopeloop.simulation.synthetic import reporter_lost_in_mitosis

FIELD_SEED = 7_200_000  # + 1000 * draw + i; held-out fields: 7_900_000 + i


def write_reporter_folder(root: Path, seeds: range, size: int) -> int:
    """Fields of the dimming reporter as a user folder, mitoses listed; returns their count."""
    fields = [reporter_lost_in_mitosis(seed, (size, size)) for seed in seeds]
    write_folder(root, [(s.image, s.labels) for s in fields], stages=[s.stages for s in fields])
    return sum(k > 0 for s in fields for k in s.stages.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--fields", type=int, default=12, help="annotated fields per folder")
    ap.add_argument("--draws", default="0,1,2,3", help="folders of other fields")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    ap.add_argument("--held-out", type=int, default=40, help="fields scored")
    ap.add_argument("--size", type=int, default=192, help="field side in pixels")
    ap.add_argument("--n-images", type=int, default=30, help="scopeloop train --n-images")
    ap.add_argument("--jobs", type=int, default=2, help="fine-tuning runs at once")
    args = ap.parse_args()

    draws = [int(d) for d in args.draws.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    for d in draws:
        base = FIELD_SEED + 1000 * d
        n = write_reporter_folder(args.out / f"draw{d}", range(base, base + args.fields), args.size)
        print(f"draw {d}: {args.fields} fields of {args.size}x{args.size}, {n} mitoses listed")

    def fine_tune(run: tuple[int, int]) -> None:
        d, seed = run
        cmd = [
            "scopeloop", "train", "--what", "classifier", "--data", str(args.out / f"draw{d}"),
            "--out", str(args.out / f"draw{d}_seed{seed}"), "--seed", str(seed),
            "--n-images", str(args.n_images), "--size", str(args.size),
            "--threads", "1", "--workers", "1",
        ]  # fmt: skip
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, capture_output=True)

    runs = [(d, s) for d in draws for s in seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(fine_tune, runs))

    held_out = []
    for i in range(args.held_out):
        s = reporter_lost_in_mitosis(7_900_000 + i, (args.size, args.size))
        held_out.append((s.image, s.labels, s.stages))
    scores: dict[str, Any] = {
        "shipped": stage_scores(StageClassifier(device="cpu").predict, held_out)
    }
    for d, s in runs:
        weights = args.out / f"draw{d}_seed{s}" / "stage_classifier.pt"
        clf = StageClassifier(weights, device="cpu")
        scores[f"draw{d}_seed{s}"] = stage_scores(clf.predict, held_out)
        record = json.loads(weights.with_suffix(".json").read_text())["training"]
        scores[f"draw{d}_seed{s}"]["epochs_run"] = record["epochs_run"]
    n_mitotic = scores["shipped"]["mitotic"]["n"]
    print(f"held out: {args.held_out} fields, {n_mitotic} mitotic nuclei")
    print(f"{'classifier':<16} {'precision':>9} {'recall':>7} {'prophase':>9} {'epochs':>6}")
    for name, sc in scores.items():
        m = sc["mitotic"]
        print(
            f"{name:<16} {m['precision']:9.3f} {m['recall']:7.3f} "
            f"{sc['prophase']['recall']:9.3f} {sc.get('epochs_run', ''):>6}"
        )
    (args.out / "scores.json").write_text(
        json.dumps({"args": vars(args), "scores": scores}, default=str, indent=1)
    )


if __name__ == "__main__":
    main()
