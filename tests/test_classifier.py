"""Cell-stage classifier: crops, the hand rule, training, shipped weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scopeloop.analysis.classifier import (
    STAGES,
    StageClassifier,
    default_classifier_path,
    object_crops,
    rule_stage,
    stage_scores,
    train_classifier,
)
from scopeloop.simulation.synthetic import TRAIN_RECIPE, SyntheticSample, make_samples

MITOTIC_RICH = dataclasses.replace(
    TRAIN_RECIPE, mitotic_fraction=(0.3, 0.4), radius_px=(7.0, 10.0), empty_probability=0.0,
    photons=(200.0, 1000.0), defocus_px=(0.0, 0.5), coverage=(0.1, 0.2),
)  # fmt: skip


def _triple(s: SyntheticSample) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    return s.image, s.labels, s.stages


def _field() -> tuple[np.ndarray, np.ndarray]:
    img = np.full((80, 80), 100.0, np.float32)
    lab = np.zeros((80, 80), np.int32)
    yy, xx = np.mgrid[:80, :80]
    for i, (cy, cx) in enumerate([(15, 15), (15, 60), (60, 15)], start=1):
        m = (yy - cy) ** 2 + ((xx - cx) / 1.4) ** 2 < 64
        lab[m], img[m] = i, 600
    m = (yy - 60) ** 2 + (xx - 60) ** 2 < 25  # small, round and bright: condensing
    lab[m], img[m] = 4, 1800
    return img, lab


def test_crops_are_size_normalised_with_relative_measurements() -> None:
    img, lab = _field()
    c = object_crops(img, lab)
    assert c.crops.shape == (4, 2, 32, 32) and list(c.ids) == [1, 2, 3, 4]
    assert c.intensity_ratio[3] > 2.5 and c.area_ratio[3] < 0.5
    assert c.crops[0, 1, 16, 16] == 1.0  # the object's own mask at the centre


def test_rule_calls_bright_compact_round_object_prophase() -> None:
    img, lab = _field()
    stages = rule_stage(img, lab)
    assert stages[4][0] == "prophase"
    assert {stages[i][0] for i in (1, 2, 3)} == {"interphase"}


def test_short_classifier_training_and_predict_format() -> None:
    torch.set_num_threads(1)
    data = [(s.image, s.labels, s.stages) for s in make_samples(12, 300, (128, 128), MITOTIC_RICH)]
    sources = ["generator"] * 6 + ["other"] * 6
    res = train_classifier(data, sources=sources, epochs=3, seed=0)
    clf = StageClassifier(model=res.model, device="cpu")
    img, lab, _ = data[0]
    pred = clf.predict(img, lab)
    assert set(pred) == set(np.unique(lab[lab > 0]).tolist())
    assert all(s in STAGES and 0 <= p <= 1 for s, p in pred.values())
    assert "mitotic" in res.summary["test_ground_truth_masks"]
    # scores per source of the held-out images, beside the pooled ones
    per_source = [k for k in res.summary if k.startswith("test_ground_truth_masks_")]
    assert per_source and {k.rsplit("_", 1)[1] for k in per_source} <= {"generator", "other"}
    with pytest.raises(ValueError, match="2 sources given for 12 images"):
        train_classifier(data, sources=sources[:2], epochs=1)


def test_microscope_training_frames_cover_every_objective_and_are_not_test_frames() -> None:
    from scopeloop.simulation.microscope_set import (
        MICROSCOPE_SETS,
        microscope_samples,
        microscope_training_samples,
    )

    frames = microscope_training_samples(4, seed=0, shape=(96, 96))
    mags = [f.params["objective_magnification"] for f in frames]
    assert sorted(mags) == [4, 10, 20, 40]
    for name, f in zip(MICROSCOPE_SETS, frames, strict=True):
        (published,) = microscope_samples(name, 1, shape=(96, 96))
        assert not np.array_equal(f.image, published.image)
        assert set(f.stages) == set(np.unique(f.labels[f.labels > 0]).tolist())


@pytest.mark.skipif(not default_classifier_path().is_file(), reason="no shipped weights")
def test_shipped_classifier_finds_mitotic_figures_better_than_chance() -> None:
    samples = make_samples(12, 900, (192, 192), MITOTIC_RICH)  # ~180 mitotic figures
    rep = stage_scores(StageClassifier(device="cpu").predict, [_triple(s) for s in samples])
    assert rep["mitotic"]["recall"] > 0.8 and rep["mitotic"]["precision"] > 0.8, rep


def test_cli_trains_the_classifier_on_both_renderers_and_records_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    out = tmp_path / "clf"
    args = ["train", "--what", "classifier", "--out", str(out), "--n-images", "60"]
    extra = ["--size", "96", "--microscope-frames", "3", "--threads", "1", "--workers", "1"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    assert "rendered 3 simulated-microscope frames" in result.output
    meta = json.loads((out / "stage_classifier.json").read_text())
    assert "--microscope-frames 3" in meta["command"]
    frames = meta["data"]["microscope_frames"]
    assert frames["n"] == 3 and frames["set_seed_offset"] >= 1000
    assert meta["training"]["n_objects"]["train"] > 0
    StageClassifier(out / "stage_classifier.pt", device="cpu")  # loads


@pytest.mark.skipif(not default_classifier_path().is_file(), reason="no shipped weights")
def test_shipped_classifier_does_not_call_the_simulated_microscopes_interphase_mitotic() -> None:
    from scopeloop.simulation.microscope_set import microscope_samples

    samples = microscope_samples("microscope_10x", 8, shape=(512, 512))  # test seeds
    rep = stage_scores(StageClassifier(device="cpu").predict, [_triple(s) for s in samples])
    assert rep["mitotic"]["n"] >= 15, rep
    # a classifier trained on the generator alone called four interphase nuclei of the
    # specimen mitotic for every real mitotic one here (precision 0.2)
    assert rep["mitotic"]["precision"] > 0.6 and rep["mitotic"]["recall"] > 0.6, rep
