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
from scopeloop.analysis.training import write_folder
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


@pytest.mark.skipif(not default_classifier_path().is_file(), reason="no shipped weights")
def test_averaged_fine_tuning_runs_the_schedule_and_measures_its_own_batch_statistics() -> None:
    torch.set_num_threads(1)
    data = [(s.image, s.labels, s.stages) for s in make_samples(12, 300, (128, 128), MITOTIC_RICH)]
    shipped = StageClassifier(device="cpu").model
    # patience 0 stops a run at its first epoch without a new best; averaging runs on
    res = train_classifier(data, init=shipped, epochs=6, patience=0, seed=0, average=True)
    assert res.summary["epochs_run"] == 6
    assert res.summary["weights"]["averaged_epochs"] == [4, 6]
    assert np.isfinite(res.summary["weights"]["val_loss"])
    norms = [m for m in res.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m for m in shipped.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m, b in zip(norms, before, strict=True):
        # statistics of the averaged network, not the copy's, and its momentum kept
        assert not torch.allclose(m.running_mean, b.running_mean)
        assert m.momentum == b.momentum and m.num_batches_tracked > 0
    held_out = [_triple(s) for s in make_samples(8, 900, (192, 192), MITOTIC_RICH)]
    rep = stage_scores(StageClassifier(model=res.model, device="cpu").predict, held_out)
    assert rep["mitotic"]["recall"] > 0.8 and rep["mitotic"]["precision"] > 0.8, rep


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


def test_stage_folder_reads_the_table_and_explains_problems(tmp_path: Path) -> None:
    from scopeloop.analysis.training import load_stage_folder

    img, lab = _field()
    write_folder(tmp_path / "ok", [(img, lab)], stages=[{}])
    table = tmp_path / "ok" / "stages.csv"
    table.write_text("Image,Label,Stage\nfield_0.tif,4,Prophase\nfield_0,2,telophase\n")
    ((name, _, labels, stages),) = load_stage_folder(tmp_path / "ok")
    assert name == "field_0" and labels.shape == lab.shape
    assert stages == {1: 0, 2: 3, 3: 0, 4: 1}  # unlisted 1 and 3: interphase
    ((*_, listed),) = load_stage_folder(tmp_path / "ok", unlisted="ignore")
    assert listed == {2: 3, 4: 1}
    for text, message in [
        ("image,label,stage\nfield_0.tif,4,mitotic\n", r"line 2: stage 'mitotic'"),
        ("image,label,stage\nfield_0.tif,4,prophase\nfield_9.tif,1,prophase\n",
         r"line 3: image 'field_9.tif' is not in images/"),
        ("image,label,stage\nfield_0.tif,7,prophase\n", r"line 2: label 7 is not in the mask"),
        ("image,label,stage\nfield_0.tif,four,prophase\n", r"label 'four' is not an integer"),
        ("image,id,stage\nfield_0.tif,4,prophase\n", r"columns image,label,stage expected"),
    ]:  # fmt: skip
        table.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_stage_folder(tmp_path / "ok")
    table.unlink()
    with pytest.raises(FileNotFoundError, match=r"stages\.csv: no stage table"):
        load_stage_folder(tmp_path / "ok")


def _reporter_lost_in_mitosis(seed: int) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    from scopeloop.simulation.synthetic import reporter_lost_in_mitosis

    s = reporter_lost_in_mitosis(seed)
    return s.image, s.labels, s.stages


@pytest.mark.skipif(not default_classifier_path().is_file(), reason="no shipped weights")
def test_cli_fine_tunes_the_classifier_on_a_users_stage_labels(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    torch.set_num_threads(1)
    fields = [_reporter_lost_in_mitosis(7_000_000 + i) for i in range(40)]
    write_folder(tmp_path / "data", [f[:2] for f in fields], stages=[f[2] for f in fields])
    out = tmp_path / "clf"
    args = ["train", "--what", "classifier", "--data", str(tmp_path / "data"), "--out", str(out)]
    extra = ["--n-images", "30", "--size", "192", "--threads", "1", "--workers", "1"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    assert "fine-tuning the shipped classifier on 40 images" in result.output
    meta = json.loads((out / "stage_classifier.json").read_text())
    assert meta["data"]["user"]["n_images"] == 40 and meta["data"]["microscope_frames"]["n"] == 0
    assert "--unlisted-objects interphase" in meta["command"] and meta["init_from"]["command"]
    assert meta["training"]["test_ground_truth_masks_user"]["mitotic"]["n"] > 0
    # fine-tuning keeps the average of the schedule's second half (16 epochs)
    assert meta["training"]["weights"]["averaged_epochs"] == [9, 16]
    assert "weights averaged over epochs 9-16" in result.output
    held_out = [_reporter_lost_in_mitosis(7_100_000 + i) for i in range(8)]
    before = stage_scores(StageClassifier(device="cpu").predict, held_out)["mitotic"]
    after = stage_scores(
        StageClassifier(out / "stage_classifier.pt", device="cpu").predict, held_out
    )["mitotic"]
    assert before["n"] >= 100, before
    assert after["recall"] > before["recall"] + 0.1, (before, after)
    assert after["precision"] > before["precision"] - 0.05, (before, after)


def test_cli_checks_the_stage_table_before_training_anything(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    img, lab = _field()
    write_folder(tmp_path / "data", [(img, lab)] * 2, stages=[{4: 1}] * 2)
    (tmp_path / "data" / "stages.csv").write_text("image,label,stage\nfield_1.tif,4,mitosis\n")
    out = tmp_path / "w"
    args = ["train", "--what", "all", "--data", str(tmp_path / "data"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--steps", "2", "--threads", "1"])
    assert result.exit_code == 2
    assert "stages.csv line 2: stage 'mitosis'" in result.output
    assert not (out / "unet.pt").exists()  # refused before the U-Net trained
