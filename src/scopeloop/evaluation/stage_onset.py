"""Does a stage caller catch mitosis at onset? The CNN against the hand rule.

A time-lapse of one field of the simulated specimen is rendered (the same
camera as the simulated microscope, 10x, every ``interval_s``). At every frame
each caller labels each nucleus of the ground-truth label image (so the
segmenter's errors are kept out of this comparison) as interphase or a
mitotic stage. Scored against the specimen's ground truth:

- onset recall: fraction of mitoses whose mother nucleus is called mitotic
  within the first ``k_frames`` frames from its onset (prophase start);
- call precision: of the "this nucleus entered mitosis" calls (first mitotic
  call of a nucleus after a non-mitotic frame), the fraction made while the
  nucleus really was in mitosis (prophase to telophase);
- the median delay from onset to the first call, in frames.

Each caller is also scored with persistence (``*_2frames``: a nucleus counts
as mitotic only when called so in two consecutive frames), as a detector would
use it to suppress one-frame flickers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scopeloop.analysis.classifier import MITOTIC, StageClassifier, rule_stage
from scopeloop.simulation.render import CHANNELS, OBJECTIVES, render_frame
from scopeloop.simulation.specimen import CellStage, Specimen, SpecimenOptions

__all__ = ["onset_scores"]

Caller = Callable[[NDArray[Any], NDArray[np.integer]], dict[int, tuple[str, float]]]


def onset_scores(
    *,
    hours: float = 12.0,
    interval_s: float = 300.0,
    k_frames: int = 3,
    density_per_mm2: float = 1500.0,
    size: int = 512,
    seed: int = 0,
    classifier: StageClassifier | None = None,
    min_probability: float = 0.9,
) -> dict[str, Any]:
    """Onset recall, call precision and delay of the CNN and of the hand rule."""
    sp = Specimen(seed, SpecimenOptions(well_densities_per_mm2={"A1": density_per_mm2}))
    obj, ch = OBJECTIVES["10x"], CHANNELS["FITC"]
    px = obj.pixel_size_um
    half = size * px / 2
    rng = np.random.default_rng(seed)
    clf = classifier or StageClassifier(device="cpu")
    callers: dict[str, Caller] = {"cnn": clf.predict, "rule": rule_stage}
    # the CNN also with a stricter call: P(mitotic) >= min_probability
    strict = f"cnn_p{min_probability:g}"
    calls: dict[str, list[set[int]]] = {k: [] for k in [*callers, strict]}
    true_mitotic: list[set[int]] = []
    times: list[float] = []
    present: list[set[int]] = []
    mitotic_codes = {
        CellStage.PROPHASE,
        CellStage.METAPHASE,
        CellStage.ANAPHASE,
        CellStage.TELOPHASE,
    }
    n = int(hours * 3600 / interval_s) + 1
    for f in range(n):
        t = f * interval_s
        sp.advance_to(t)
        img = render_frame(
            sp, x_um=0.0, y_um=0.0, z_um=sp.focus_z_um(0.0, 0.0), shape_yx=(size, size),
            binning=1, objective=obj, channel=ch, exposure_ms=30.0, light_on=True, rng=rng,
        )  # fmt: skip
        lab = sp.labels(0.0, 0.0, (size, size), px).astype(np.int64)
        cells = sp.cells_in(-half, -half, half, half, margin_um=0.0)
        true_mitotic.append(
            {int(i) for i, s in zip(cells.id, cells.stage, strict=True) if int(s) in mitotic_codes}
        )
        ids = set(np.unique(lab[lab > 0]).tolist())
        present.append(ids)
        times.append(t)
        for name, call in callers.items():
            res = call(img, lab)
            calls[name].append({i for i, (stage, _) in res.items() if stage in MITOTIC})
        p_mit = clf.mitotic_probability(img, lab)
        calls[strict].append({i for i, p in p_mit.items() if p >= min_probability})
    # persistence, as a detector would use it: mitotic in two consecutive frames
    for name in list(calls):
        seq = calls[name]
        calls[f"{name}_2frames"] = [seq[0] & set()] + [
            seq[f] & seq[f - 1] for f in range(1, len(seq))
        ]
    t_arr = np.array(times)
    records = [
        r for r in sp.mitoses()
        if r.onset_s <= t_arr[-1] - k_frames * interval_s
        and abs(r.x_um) < half - 10 and abs(r.y_um) < half - 10
    ]  # fmt: skip
    out: dict[str, Any] = {
        "hours": hours, "interval_s": interval_s, "k_frames": k_frames, "frames": n,
        "mitoses": len(records), "field_px": size, "objective": "10x", "seed": seed,
    }  # fmt: skip
    for name in calls:
        caught, delays = 0, []
        for r in records:
            f0 = int(np.searchsorted(t_arr, r.onset_s))
            hit = [f for f in range(f0, min(f0 + k_frames, n)) if r.cell_id in calls[name][f]]
            if hit:
                caught += 1
            later = [f for f in range(f0, n) if r.cell_id in calls[name][f]]
            if later:
                delays.append(later[0] - f0)
        good = bad = 0
        for f in range(n):
            prev = calls[name][f - 1] if f else set()
            for cid in calls[name][f] - prev:
                if cid in true_mitotic[f]:
                    good += 1
                else:
                    bad += 1
        out[name] = {
            "onset_recall": caught / max(len(records), 1),
            "call_precision": good / max(good + bad, 1),
            "false_calls": bad,
            "median_delay_frames": float(np.median(delays)) if delays else None,
        }
    return out
