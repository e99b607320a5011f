"""`scopeloop tune`: extraction thresholds chosen again on other images, weights unchanged."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from scopeloop.analysis.metrics import pooled_ap, score_image
from scopeloop.analysis.training import (
    save_unet,
    split_pairs,
    synthetic_seeds,
    synthetic_seeds_record,
    write_folder,
)
from scopeloop.analysis.unet import UNet, UNetSegmenter, load_unet
from scopeloop.cli._tune import _record_validation
from scopeloop.cli.main import app
from scopeloop.simulation.synthetic import (
    TRAIN_RECIPE,
    Recipe,
    mixed_recipes,
    render_pairs,
    test_set,
)
from scopeloop.storage.run_info import file_sha256

SMALL = Recipe(radius_px=(4.0, 7.0), coverage=(0.2, 0.4), photons=(300.0, 1000.0))


def _ap50(weights: Path | None, samples: list) -> float:
    seg = UNetSegmenter(device="cpu", weights=weights)
    return pooled_ap([score_image(s.labels, seg.segment(s.image)) for s in samples], 0.5)


def test_cli_tunes_badly_set_thresholds_on_a_user_folder(tmp_path: Path) -> None:
    # shipped weights whose record asks for seeds and foreground far too strict
    model, meta = load_unet()
    meta.update(fg_threshold=0.9, seed_threshold=0.9, min_size_px=12)
    bad = save_unet(model, tmp_path / "bad" / "unet.pt", meta)
    samples = test_set("crowded", 3)
    write_folder(tmp_path / "data", [(x.image, x.labels) for x in samples])
    out = tmp_path / "tuned"
    args = ["tune", "--weights", str(bad), "--data", str(tmp_path / "data"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "fg_threshold 0.9 ->" in result.output
    n_nuclei = sum(int(s.labels.max()) for s in samples)
    assert f"3 images, {n_nuclei} nuclei" in result.output
    assert ("warning: thresholds chosen on" in result.output) == (n_nuclei < 500)
    tuned = json.loads((out / "unet.json").read_text())
    assert tuned["fg_threshold"] < 0.9 and tuned["seed_threshold"] < 0.9
    record = tuned["threshold_tuning"]
    assert record["retuned"]["adopted"] and "adopted" in result.output
    assert record["retuned"]["before"]["p_better"] >= 0.95
    assert record["retuned"]["before"]["fg_threshold"] == 0.9
    assert record["retuned"]["from"] == {"path": str(bad), "sha256": file_sha256(bad)}
    assert "scopeloop tune --weights" in record["retuned"]["command"]
    assert record["retuned"]["images"] == {
        "source": "folder", "folder": str(tmp_path / "data"), "n_pairs": 3
    }  # fmt: skip
    # the training run's own tuning is kept, whether or not the source was retuned before
    source = meta["threshold_tuning"]
    assert record["at_training"] == source.get("at_training", source)
    assert record["at_training"]["n_images"] == 300  # the training run's validation images
    # the segmenter built from the new file finds what the strict one missed, at least
    # as well as the shipped thresholds do (they are on the grid) ...
    before, after = _ap50(bad, samples), _ap50(out / "unet.pt", samples)
    assert after > before + 0.05 and after >= _ap50(None, samples), (before, after)
    assert (
        abs(after - record["ap50"]) < 1e-9
        and abs(before - record["retuned"]["before"]["ap50"]) < 1e-9
    )
    # ... with the very same network
    new_state = load_unet(out / "unet.pt")[0].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, new_state[key]), key


def test_one_large_image_is_resampled_as_tiles(tmp_path: Path) -> None:
    # one 512x768 field: the adoption rule needs units to resample, so it gets 6 tiles
    model, meta = load_unet()
    meta.update(fg_threshold=0.9, seed_threshold=0.9, min_size_px=12)
    bad = save_unet(model, tmp_path / "bad" / "unet.pt", meta)
    field = test_set("crowded", 1, shape=(512, 768))[0]
    write_folder(tmp_path / "data", [(field.image, field.labels)])
    out = tmp_path / "tuned"
    args = ["tune", "--weights", str(bad), "--data", str(tmp_path / "data"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    # nuclei counted on the whole field, not once per tile a nucleus is cut into
    n_nuclei = len(np.unique(field.labels)) - 1
    assert f"tune: 6 tiles of about 256 px, {n_nuclei} nuclei" in result.output
    retuned = json.loads((out / "unet.json").read_text())["threshold_tuning"]["retuned"]
    assert retuned["images"]["units"] == "tiles of about 256 px"
    assert retuned["adopted"] and retuned["before"]["p_better"] >= 0.95


def test_thresholds_no_better_on_the_images_are_kept(tmp_path: Path) -> None:
    # two clean fields the shipped thresholds already segment without a miss: other
    # settings tie at best, and a tie is no reason to change
    write_folder(tmp_path / "data", [(x.image, x.labels) for x in test_set("sparse", 2)])
    out = tmp_path / "tuned"
    args = ["tune", "--data", str(tmp_path / "data"), "--out", str(out), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "not clearly better: the thresholds are kept" in result.output
    shipped, tuned = load_unet()[1], json.loads((out / "unet.json").read_text())
    for key in ("fg_threshold", "seed_threshold", "min_confidence", "min_size_px"):
        assert tuned[key] == shipped[key] == tuned["threshold_tuning"][key], key
    record = tuned["threshold_tuning"]
    assert not record["retuned"]["adopted"] and record["retuned"]["before"]["p_better"] < 0.95
    assert record["best_on_grid"]["ap50"] == record["ap50"]  # a tie, recorded as such


def test_default_images_are_the_training_runs_own_validation_split(tmp_path: Path) -> None:
    seed, n = 4, 12
    meta = {
        "seed": seed,
        "split": {"train": 10, "validation": 1, "test": 1},
        "data": {
            "source": "synthetic", "seeds": synthetic_seeds_record(seed, n), "size_px": 40,
            "recipe": json.loads(json.dumps(asdict(SMALL))),  # lists, as in the record
        },
    }  # fmt: skip
    pairs, images = _record_validation(meta, tmp_path / "unet.pt", workers=1)
    # what the training run validated on: its images rendered and split as it did
    _, val, _ = split_pairs(
        render_pairs(synthetic_seeds(seed, n), (40, 40), 1, SMALL), 0.1, 0.1, seed
    )
    assert len(pairs) == len(val) == images["n_images"] == 1
    for (img, lab), (img_val, lab_val) in zip(pairs, val, strict=True):
        np.testing.assert_array_equal(img, img_val)
        np.testing.assert_array_equal(lab, lab_val)
    # a run that gave half its images to a regime: its validation image (index 1, odd)
    # was rendered in that regime
    meta["data"]["emphasis"] = ["blurred"]
    blurred, _ = _record_validation(meta, tmp_path / "unet.pt", workers=1)
    ((img_b, lab_b),) = render_pairs(
        [synthetic_seeds(seed, n)[1]], (40, 40), 1, mixed_recipes(2, SMALL, ["blurred"])[1:]
    )
    np.testing.assert_array_equal(blurred[0][0], img_b)
    np.testing.assert_array_equal(blurred[0][1], lab_b)
    assert not np.array_equal(img_b, pairs[0][0])
    del meta["data"]["emphasis"]
    # a run on another recipe renders other images
    meta["data"]["recipe"] = json.loads(json.dumps(asdict(TRAIN_RECIPE)))
    other, _ = _record_validation(meta, tmp_path / "unet.pt", workers=1)
    assert not np.array_equal(other[0][0], pairs[0][0])


def test_cli_refuses_to_guess_images_for_weights_trained_on_a_folder(tmp_path: Path) -> None:
    meta = {"seed": 0, "data": {"source": "folder", "folder": "/data/my_nuclei"}}
    weights = save_unet(UNet((4, 4, 8, 8, 8)), tmp_path / "unet.pt", meta)
    result = CliRunner().invoke(app, ["tune", "--weights", str(weights), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "trained on the folder /data/my_nuclei" in result.output
    assert "give --data" in result.output
    missing = CliRunner().invoke(app, ["tune", "--weights", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt: no such weights file" in missing.output
