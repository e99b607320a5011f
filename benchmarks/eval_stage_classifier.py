"""Stage classifiers side by side on held-out nuclei of both renderers.

    python benchmarks/eval_stage_classifier.py [--weights A.pt --weights B.pt]
        [--n-synthetic 60] [--n-microscope 40] [--data DIR [--unlisted-objects ignore]]
        [--out bench_results/stage_classifier.json]

Each nucleus of the ground-truth label images is classified, so segmentation
errors stay out. Two sources:

- ``synthetic``: the training generator's recipe for the classifier, from
  seeds no training command here uses (900,000 + i);
- ``microscope``: the published simulated-microscope test sets (10x, 20x
  and 40x frames of the living specimen; training frames come from other
  seeds, see ``microscope_training_samples``);
- ``folder`` (with ``--data``): your own stage-labelled images (``images/``,
  ``labels/`` and ``stages.csv``, as for ``scopeloop train --data``), e.g.
  fields held out of fine-tuning, to compare the shipped and your weights.

Prints mitotic-vs-interphase precision and recall and per-stage recall for
the shipped weights (or each ``--weights``) and the hand rule; writes JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from scopeloop.analysis.classifier import STAGES, StageClassifier, rule_stage, stage_scores
from scopeloop.simulation.microscope_set import STAGE_SETS, microscope_samples
from scopeloop.simulation.synthetic import CLASSIFIER_RECIPE, make_sample

Triple = tuple[Any, Any, dict[int, int]]  # image, labels, {label: stage id}


def _sources(
    n_synthetic: int, n_microscope: int, folder: Path | None, unlisted: str
) -> dict[str, list[Triple]]:
    per = -(-n_microscope // len(STAGE_SETS))  # rounded up; 0 for none
    synthetic = [
        make_sample(900_000 + i, (256, 256), CLASSIFIER_RECIPE) for i in range(n_synthetic)
    ]
    microscope = [s for name in STAGE_SETS for s in microscope_samples(name, per)]
    out = {
        "synthetic": [(s.image, s.labels, s.stages) for s in synthetic],
        "microscope": [(s.image, s.labels, s.stages) for s in microscope],
    }
    if folder is not None:
        from scopeloop.analysis.training import load_stage_folder

        out["folder"] = [(i, lab, st) for _, i, lab, st in load_stage_folder(folder, unlisted)]
    return {k: v for k, v in out.items() if v}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, action="append", default=None)
    ap.add_argument("--n-synthetic", type=int, default=60)
    ap.add_argument("--n-microscope", type=int, default=60)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--unlisted-objects", choices=["interphase", "ignore"], default="interphase")
    ap.add_argument("--out", type=Path, default=Path("bench_results/stage_classifier.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = _sources(args.n_synthetic, args.n_microscope, args.data, args.unlisted_objects)
    callers: dict[str, Any] = {"rule": rule_stage}
    for w in args.weights or [None]:
        callers[str(w) if w else "shipped"] = StageClassifier(w, device="cpu").predict
    results: dict[str, Any] = {
        "n_images": {k: len(v) for k, v in data.items()},
        "n_mitotic": {k: sum(v > 0 for *_, st in d for v in st.values()) for k, d in data.items()},
    }
    print(f"held-out images {results['n_images']}, mitotic nuclei {results['n_mitotic']}")
    head = ("classifier", "source", "mitotic P", "mitotic R", *[f"{s[:5]} R" for s in STAGES])
    print("{:>40} {:>10} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}".format(*head))
    for name, call in callers.items():
        for src, triples in data.items():
            rep = stage_scores(call, triples)
            results.setdefault(name, {})[src] = rep
            recalls = [rep[s]["recall"] for s in STAGES]
            print(
                f"{name[-40:]:>40} {src:>10} {rep['mitotic']['precision']:9.3f} "
                f"{rep['mitotic']['recall']:9.3f} " + " ".join(f"{r:8.3f}" for r in recalls)
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
