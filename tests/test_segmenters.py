"""The Segmenter seam: registry, device choice, classical baseline on known nuclei."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from skimage.draw import disk

from scopeloop.analysis.segmenter import (
    Segmenter,
    available_segmenters,
    get_segmenter,
    select_device,
)


def _nuclei_image(dtype: type = np.uint16, touching: bool = True) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(0)
    img = np.zeros((160, 160), np.float32)
    centres = [(40, 40), (120, 40), (40, 120), (120, 120)]
    if touching:
        centres += [(80, 72), (80, 92)]  # two nuclei touching side by side
    for cy, cx in centres:
        rr, cc = disk((cy, cx), 10, shape=img.shape)
        img[rr, cc] += 600
    img = rng.poisson(img + 50).astype(np.float32)
    if dtype == np.uint8:
        img = img / img.max() * 255
    return img.astype(dtype), len(centres)


def test_registry_lists_builtins_and_rejects_unknown() -> None:
    names = available_segmenters()
    assert {"classical", "unet"} <= set(names)
    with pytest.raises(ValueError, match="unknown segmenter 'nope'"):
        get_segmenter("nope")


def test_device_selection() -> None:
    import torch

    auto = select_device("auto")
    assert auto in {"cuda", "mps", "cpu"}
    assert select_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            select_device("cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        select_device("gpu0")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_classical_finds_each_nucleus_and_splits_touching(dtype: type) -> None:
    seg = get_segmenter("classical")
    assert isinstance(seg, Segmenter)
    img, n = _nuclei_image(dtype)
    labels = seg.segment(img)
    assert labels.dtype == np.int32 and labels.shape == img.shape
    assert labels.max() == n
    # the two touching nuclei get different labels
    assert labels[80, 70] != labels[80, 94] and labels[80, 70] > 0 and labels[80, 94] > 0


def test_classical_batched_equals_per_frame_and_empty_frame_is_empty() -> None:
    seg = get_segmenter("classical")
    a, _ = _nuclei_image()
    b = np.full_like(a, 100)
    batch = seg.segment(np.stack([a, b]))
    assert batch.shape == (2, *a.shape)
    np.testing.assert_array_equal(batch[0], seg.segment(a))
    assert batch[1].max() == 0


def test_classical_rejects_bad_options_and_shapes() -> None:
    with pytest.raises(ValueError, match="unknown option"):
        get_segmenter("classical", threshold=3)
    with pytest.raises(ValueError, match="shape"):
        get_segmenter("classical").segment(np.zeros((2, 2, 2, 2)))


@pytest.mark.parametrize("name", ["classical", "unet"])
def test_segmenters_refuse_nan_pixels_and_rgb_pictures_clearly(name: str) -> None:
    # one NaN made every per-frame statistic NaN: the U-Net returned no objects at all
    frames = np.ones((2, 32, 32), np.float32)
    frames[1, 5, 7] = np.nan
    frames[1, 9, 9] = np.inf
    with pytest.raises(ValueError, match=r"2 pixel\(s\) are NaN or infinite .*\(1, 5, 7\)"):
        get_segmenter(name, device="cpu").segment(frames)
    # an RGB picture is not 64 frames of 64x3 pixels
    with pytest.raises(ValueError, match=r"look like one RGB\(A\) image"):
        get_segmenter(name, device="cpu").segment(np.zeros((64, 64, 3), np.uint8))


def test_evaluate_cli_scores_segmenters_on_named_sets_and_a_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from scopeloop.analysis.training import write_folder
    from scopeloop.cli.main import app

    img, _ = _nuclei_image()
    lab = get_segmenter("classical").segment(img)  # a folder whose masks are exact for classical
    write_folder(tmp_path / "d", [(img, lab)])
    out = tmp_path / "scores.json"
    args = ["evaluate", "--segmenter", "classical", "--set", "sparse", "--n-images", "1"]
    res = CliRunner().invoke(app, [*args, "--folder", str(tmp_path / "d"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    scores = json.loads(out.read_text())["results"]["classical"]
    assert scores["d"]["ap"]["0.5"] == 1.0
    assert 0.0 <= scores["sparse"]["ap"]["0.9"] <= scores["sparse"]["ap"]["0.5"] <= 1.0
    bad = CliRunner().invoke(app, [*args[:3], "--set", "nope"])
    assert bad.exit_code == 2 and "unknown test set" in bad.output


def test_evaluate_cli_runs_on_the_cpu_threads_it_is_given() -> None:
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    before = torch.get_num_threads()
    args = ["evaluate", "-s", "classical", "--set", "sparse", "--n-images", "1", "--threads"]
    try:
        torch.set_num_threads(2)  # so that 1 is a change on any machine
        res = CliRunner().invoke(app, [*args, "1"])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    bad = CliRunner().invoke(app, [*args, "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output


def test_evaluate_cli_scores_weights_files_beside_the_shipped_unet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from scopeloop.analysis.training import save_unet
    from scopeloop.analysis.unet import UNet, default_weights_path
    from scopeloop.cli.main import app

    torch.manual_seed(0)
    untrained = save_unet(UNet((4, 4, 8, 8, 8)), tmp_path / "untrained.pt", {})
    out = tmp_path / "scores.json"
    args = ["evaluate", "-s", "unet", "--set", "sparse", "--n-images", "1", "--device", "cpu"]
    weights = ["--weights", str(default_weights_path()), "--weights", str(untrained)]
    res = CliRunner().invoke(app, [*args, *weights, "--json", str(out)])
    assert res.exit_code == 0, res.output
    # one image has nothing to resample: the paired comparison claims no interval
    assert "- (one image)" in res.output and "% of resamples" not in res.output
    # ... and neither do the per-set rows: no zero-width "0.812-0.812" interval
    assert not re.search(r"(\d\.\d{3})-\1", res.output), res.output
    scores = json.loads(out.read_text())["results"]
    shipped = scores[f"unet:{default_weights_path()}"]["sparse"]["ap"]["0.5"]
    assert shipped == scores["unet"]["sparse"]["ap"]["0.5"] > 0.5
    assert scores[f"unet:{untrained}"]["sparse"]["ap"]["0.5"] < shipped
    bad = CliRunner().invoke(app, [*args, "--weights", str(tmp_path / "none.pt")])
    assert bad.exit_code == 2 and "none.pt" in bad.output and "no such file" in bad.output


def test_evaluate_cli_scores_each_unet_with_and_without_flip_averaging(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    out = tmp_path / "scores.json"
    args = ["evaluate", "-s", "unet", "-s", "classical", "--set", "sparse", "--n-images", "1"]
    res = CliRunner().invoke(app, [*args, "--device", "cpu", "--tta", "--json", str(out)])
    assert res.exit_code == 0, res.output
    scores = json.loads(out.read_text())["results"]
    # the U-Net twice, side by side; classical has no such option
    assert list(scores) == ["unet", "unet+tta", "classical"]
    assert scores["unet+tta"]["sparse"]["ap"]["0.5"] > 0.5
    # with one set, the interval of the mean over sets is that set's interval
    lo, hi = scores["unet+tta"]["mean_ap50_ci95"]
    assert lo <= scores["unet+tta"]["mean_ap50_over_sets"] <= hi


def test_evaluate_cli_pools_draws_and_compares_segmenters_on_the_same_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from scopeloop.analysis.unet import default_weights_path
    from scopeloop.cli.main import app
    from scopeloop.evaluation.seg_eval import load_sets

    out = tmp_path / "scores.json"
    args = ["evaluate", "-s", "unet", "-s", "classical", "--set", "sparse", "--set", "crowded"]
    args += ["--weights", str(default_weights_path()), "--n-images", "1", "--seed", "2"]
    res = CliRunner().invoke(app, [*args, "--draws", "2", "--device", "cpu", "--json", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    scores = payload["results"]
    assert payload["draws"] == 2 and scores["unet"]["crowded"]["n_images"] == 2
    # the pooled images are draw 2's and draw 3's
    two = load_sets(["crowded"], 1, seed=2, draws=2)["crowded"]
    for (image, _), draw in zip(two, (2, 3), strict=True):
        assert (image == load_sets(["crowded"], 1, seed=draw)["crowded"][0][0]).all()
    shipped = scores[f"unet:{default_weights_path()}"]["paired"]
    # the same network against itself: no difference in any resample
    assert shipped["reference"] == "unet" and shipped["mean_ap50_diff"] == 0.0
    assert shipped["ci95"] == [0.0, 0.0] and shipped["share_ahead"] == 0.0
    classical = scores["classical"]["paired"]
    assert classical["mean_ap50_diff"] < 0 and classical["ci95"][1] < 0
    assert "Against unet, on the same images" in res.output


def test_bench_refuses_a_missing_weights_file_before_timing_anything(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    args = ["bench", "segmentation", "--weights", str(tmp_path / "wide.pt"), "--out", str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "wide.pt" in res.output and "no such file" in res.output
    assert not (tmp_path / "segmentation.json").exists()


def test_bench_times_the_binned_unet_beside_the_plain_one() -> None:
    from scopeloop.bench.segmentation import run

    result = run(quick=True, device="cpu", nucleus_diameter_px=68, sizes=(64,))
    rows = {(r["segmenter"], r["batch"]): r for r in result["results"]}
    assert {name for name, _ in rows} == {"classical", "unet", "unet@68px"}
    assert rows[("unet", 8)]["bin_factor"] == 1 and rows[("unet@68px", 8)]["bin_factor"] == 2
    assert all(r["size"] == 64 and r["frames_per_s"] > 0 for r in rows.values())
    assert result["nucleus_diameter_px"] == 68
    # measuring the nuclei in each call: the crowded frames' small nuclei are not binned
    result = run(
        quick=True, device="cpu", nucleus_diameter_px="auto", sizes=(64,), segmenters=["unet"]
    )
    assert [(r["segmenter"], r["bin_factor"]) for r in result["results"]][-1] == ("unet@auto", 1)


def test_microscope_sets_are_frames_of_the_specimen_with_their_labels() -> None:
    from scopeloop.evaluation.seg_eval import load_sets
    from scopeloop.simulation.microscope_set import MICROSCOPE_SETS, microscope_samples

    data = load_sets(["microscope", "sparse"], 1)
    assert list(data) == [*MICROSCOPE_SETS, "sparse"]
    # the 40x set's frames are larger, so that each holds more than a few nuclei
    assert data["microscope_40x"][0][0].shape == (512, 512)
    assert data["microscope_10x"][0][0].shape == data["sparse"][0][0].shape == (256, 256)
    (a,) = microscope_samples("microscope_10x", 1)
    (again,) = microscope_samples("microscope_10x", 1)
    (other,) = microscope_samples("microscope_10x", 1, seed=1)
    assert np.array_equal(a.image, again.image) and not np.array_equal(a.image, other.image)
    assert a.image.dtype == np.uint16 and a.labels.shape == a.image.shape
    ids = np.unique(a.labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, len(ids)))  # consecutive
    assert set(a.stages) == set(ids[1:].tolist()) and set(a.stages.values()) <= {0, 1, 2, 3}
    # the labels sit on the nuclei: brighter inside than out
    assert a.image[a.labels > 0].mean() > 1.5 * a.image[a.labels == 0].mean()
    with pytest.raises(ValueError, match=r"unknown test set 'microscope_60x'.*microscope_40x"):
        load_sets(["microscope_60x"], 1)


def test_evaluate_cli_bins_frames_whose_nuclei_outgrow_the_unet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    out = tmp_path / "scores.json"
    # 40x without binning: nuclei about 68 px across, over the 8-44 px the U-Net saw
    args = ["evaluate", "-s", "unet", "--set", "microscope_40x", "--n-images", "12"]
    res = CliRunner().invoke(
        app, [*args, "--device", "cpu", "--nucleus-diameter", "68", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    scores = payload["results"]["unet"]["microscope_40x"]
    assert payload["nucleus_diameter_px"] == 68 and scores["n_true"] >= 100
    assert scores["ap"]["0.5"] >= 0.8  # 0.83 binned, 0.52 unbinned
    # not told the diameter: measured in each frame, and binned where the nuclei need it
    res = CliRunner().invoke(
        app, [*args, "--device", "cpu", "--nucleus-diameter", "auto", "--json", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "nucleus diameter measured per image" in res.output
    auto = json.loads(out.read_text())["results"]["unet"]["microscope_40x"]
    assert auto["bin_factor"].count(2) >= 10 and auto["ap"]["0.5"] >= 0.8
    assert "hint:" not in res.output
    # not told: the scores say what was wrong, and a hint says what to give
    res = CliRunner().invoke(app, [*args, "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "hint: the nuclei of microscope_40x are" in res.output
    assert "give --nucleus-diameter" in res.output
    bad = CliRunner().invoke(app, [*args, "--nucleus-diameter", "big"])
    assert bad.exit_code == 2 and "give the diameter in pixels (e.g. 68) or auto" in bad.output


def test_a_test_set_holds_the_same_images_whatever_was_drawn_before_it() -> None:
    """Scores are compared across runs that draw different sets, in any order."""
    from scopeloop.evaluation.seg_eval import load_sets
    from scopeloop.simulation import nuclei

    nuclei._TEXTURES.clear()  # as in a fresh process
    alone = load_sets(["low_signal"], 10)["low_signal"]
    nuclei._TEXTURES.clear()
    after = load_sets(["sparse", "crowded", "low_signal"], 10)["low_signal"]
    for (img, lab), (img2, lab2) in zip(alone, after, strict=True):
        assert np.array_equal(lab, lab2)
        assert np.array_equal(img, img2)
