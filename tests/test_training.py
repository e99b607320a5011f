"""Training: targets, a short run that learns, fine-tuning from a user folder via the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from typer.testing import CliRunner

from scopeloop.analysis.training import (
    _augment,
    _crop,
    _mirrored_out,
    _pick_images,
    _prepare,
    _val_batches,
    load_folder,
    pixel_weights,
    save_unet,
    split_folder,
    train_unet,
    unet_targets,
    widen_unet,
    write_folder,
)
from scopeloop.analysis.unet import UNet, flip_averaged, load_unet, normalise_frames
from scopeloop.cli.main import app
from scopeloop.simulation.synthetic import (
    EMPHASES,
    TRAIN_RECIPE,
    Recipe,
    make_sample,
    make_samples,
    mixed_recipes,
    render_pairs,
)

SMALL = Recipe(radius_px=(5.0, 8.0), coverage=(0.15, 0.3), empty_probability=0.0)


def test_targets_peak_at_each_centre_and_split_touching_nuclei() -> None:
    lab = np.zeros((20, 30), np.int32)
    lab[2:12, 2:12] = 1
    lab[2:12, 12:22] = 2  # touching
    fg, centre = unet_targets(lab)
    assert fg.sum() == 200
    for i in (1, 2):
        assert centre[lab == i].max() == pytest.approx(1.0)
    # the shared boundary is low centre-ness, so the two seeds are apart
    assert centre[7, 11] < 0.3 and centre[7, 12] < 0.3


def test_loss_weighs_the_gap_between_touching_nuclei_and_small_objects() -> None:
    lab = np.zeros((40, 60), np.int32)
    lab[5:25, 5:25] = 1
    lab[5:25, 26:46] = 2  # a 1-px gap from nucleus 1
    lab[32:35, 52:55] = 3  # a tiny object (9 px), far from the others
    w = pixel_weights(lab)
    # the gap and the rims on both sides of it weigh more than the nuclei's insides
    assert w[15, 25] > 3 * w[15, 15]
    assert w[15, 24] > 3 * w[15, 15] and w[15, 26] > 3 * w[15, 35]
    # where the two nuclei do not face each other nothing changes
    assert w[15, 5] == w[15, 15] and w[0, 0] == 1.0 and w[38, 2] == 1.0
    # the tiny object and the background just around it outweigh the large ones' insides,
    # so drawing it too large costs as much as drawing it too small
    assert w[33, 53] > 2 * w[15, 15] and w[33, 51] == w[33, 53] and w[38, 53] == 1.0
    assert w.max() <= 8.0 and pixel_weights(np.zeros((5, 5), np.int32)).max() == 1.0


def test_a_nucleus_cut_by_a_crop_edge_is_taught_as_the_object_a_frame_cut_there_shows() -> None:
    # at test time a nucleus cut by the frame is a labelled object of its own, down to
    # a sliver; a crop must teach it so, or the network learns to leave edge nuclei out
    yy, xx = np.mgrid[:128, :320]
    lab = (((yy - 64) ** 2 + (xx - 60) ** 2) <= 30**2).astype(np.int32)
    lab[((yy - 64) ** 2 + (xx - 250) ** 2) <= 30**2] = 2
    image = np.where(lab > 0, 900, 100).astype(np.uint16)
    prepared = _prepare([(image, lab)])[0]
    rng = np.random.default_rng(0)
    slivers = 0
    for _ in range(300):
        crop = _crop(prepared, 128, rng)
        fg, centre, weight = crop[1], crop[2], crop[3]
        parts, n = ndimage.label(fg > 0)
        for i in range(1, n + 1):
            part = parts == i
            if part.sum() < 16:
                continue  # a column one pixel wide: all outline, no inside to centre
            # every visible part of a nucleus has its own centre, however little is left
            assert centre[part].max() == pytest.approx(1.0)
            if part.sum() < 120:  # a sliver: weighted up as the small object it is
                slivers += 1
                assert weight[part].min() > 1.0
    assert slivers >= 5  # the crops did cut nuclei down to slivers
    # validation tiles (two, meeting at x = 192 - 128 = 64, through nucleus 1) likewise
    tiles = torch.cat(_val_batches([prepared], 128)).numpy()
    for tile in tiles:
        parts, n = ndimage.label(tile[1] > 0)
        assert n >= 1
        assert all(tile[2][parts == i].max() == pytest.approx(1.0) for i in range(1, n + 1))


def test_a_strip_narrower_than_a_crop_is_mirrored_into_separate_nuclei() -> None:
    yy, xx = np.mgrid[:100, :128]
    lab = (((yy - 90) ** 2 + (xx - 64) ** 2) <= 12**2).astype(np.int32)  # cut by the bottom
    image = np.where(lab > 0, 900, 100).astype(np.uint16)
    crop = _crop(_prepare([(image, lab)])[0], 128, np.random.default_rng(0))
    # the nucleus and its mirror image meet at the edge: two centres, split between them
    assert crop[2][:99, 64].max() == pytest.approx(1.0)
    assert crop[2][100:, 64].max() == pytest.approx(1.0)
    assert crop[2][99, 64] < 0.3 and crop[2][100, 64] < 0.3
    # a field under half a crop is mirrored over and over: still one object per copy
    short = _prepare([(image[70:100], lab[70:100])])[0]
    mirrored = _mirrored_out(short, 128)[1]
    ids = np.unique(mirrored)[1:]
    assert len(ids) >= 4  # 30 rows -> 128: the nucleus and at least three mirror images
    assert all(ndimage.label(mirrored == i)[1] == 1 for i in ids)


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ),
    ],
)
def test_short_training_run_reduces_validation_loss(device: str) -> None:
    torch.set_num_threads(1)
    samples = make_samples(6, 50, (64, 64), SMALL)
    pairs = [(s.image, s.labels) for s in samples]
    torch.manual_seed(0)  # the model's initial weights must not depend on earlier tests
    res = train_unet(
        pairs[:5], pairs[5:], model=UNet((8, 8, 16, 16, 16)), steps=30, batch_size=4,
        crop=64, lr=1e-2, eval_every=10, patience=10, seed=0, device=device,
    )  # fmt: skip
    losses = [h["val_loss"] for h in res.history]
    assert len(losses) == 3
    assert min(losses[1:]) < losses[0] * 0.95, losses
    assert res.best_val_loss == min(losses)


def test_a_student_learns_the_teachers_maps() -> None:
    torch.set_num_threads(1)
    pairs = [(s.image, s.labels) for s in make_samples(6, 50, (64, 64), SMALL)]
    torch.manual_seed(1)
    teacher = UNet((8, 8, 16, 16, 16)).eval()  # any network: its maps are what it sees

    def student(**kw: object) -> UNet:
        torch.manual_seed(0)
        return train_unet(
            pairs[:5],
            pairs[5:],
            model=UNet((8, 8, 16, 16, 16)),
            steps=40,
            batch_size=4,
            crop=64,
            lr=1e-2,
            eval_every=40,
            patience=10,
            seed=0,
            **kw,  # type: ignore[arg-type]
        ).model

    frames = torch.from_numpy(np.stack([img for img, _ in pairs]).astype(np.float32))
    x = normalise_frames(frames).unsqueeze(1)
    plain_net, distilled_net = student(), student(teacher=teacher, distill=1.0)
    with torch.no_grad():
        target = torch.sigmoid(teacher(x))
        plain, distilled = (
            float((torch.sigmoid(net.eval()(x)) - target).abs().mean())
            for net in (plain_net, distilled_net)
        )
    assert distilled < 0.5 * plain, (distilled, plain)
    with pytest.raises(ValueError, match="distill"):
        train_unet(pairs[:5], pairs[5:], teacher=teacher, distill=0.0, steps=1)


def test_weight_averaging_keeps_the_mean_of_the_checked_weights_at_a_steady_rate() -> None:
    torch.set_num_threads(1)
    pairs = [(s.image, s.labels) for s in make_samples(6, 50, (64, 64), SMALL)]
    torch.manual_seed(0)
    net = UNet((8, 8, 16, 16, 16))
    seen: list[dict[str, torch.Tensor]] = []

    def snapshot(rec: dict[str, float]) -> None:  # the weights that train, at each check
        seen.append({k: v.detach().clone() for k, v in net.state_dict().items()})

    res = train_unet(
        pairs[:5], pairs[5:], model=net, steps=60, batch_size=4, crop=64, lr=1e-2,
        eval_every=10, patience=10, seed=0, average=True, progress=snapshot,
    )  # fmt: skip
    assert len(seen) == 6 and res.n_averaged == res.best_step // 10 >= 1
    kept = res.model.state_dict()
    for key in ("down.0.0.weight", "down.0.1.running_mean", "up.0.0.weight"):
        mean = torch.stack([w[key].float() for w in seen[: res.n_averaged]]).mean(0)
        torch.testing.assert_close(kept[key].float(), mean, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(kept[k], seen[-1][k]) for k in kept)  # not the last weights
    rates = [h["lr"] for h in res.history]
    assert rates == [pytest.approx(1e-2)] * 6  # no decay: the average needs a wandering path
    plain = train_unet(
        pairs[:5], pairs[5:], model=UNet((8, 8, 16, 16, 16)), steps=60, batch_size=4,
        crop=64, lr=1e-2, eval_every=10, patience=10, seed=0,
    )  # fmt: skip
    assert plain.n_averaged == 0 and plain.history[-1]["lr"] < 0.1 * 1e-2


def _tiny_unet_run(out: Path) -> list[str]:
    """A seconds-long ``scopeloop train`` of a tiny U-Net on six small images."""
    return [
        "train", "--what", "unet", "--out", str(out), "--n-images", "6", "--size", "64",
        "--steps", "2", "--batch", "2", "--crop", "64", "--threads", "1", "--workers", "1",
        "--channels", "4,4,8,8,8",
    ]  # fmt: skip


def test_cli_averages_weights_on_request_and_records_how_many(tmp_path: Path) -> None:
    out = tmp_path / "averaged"
    args = [*_tiny_unet_run(out), "--steps", "4", "--eval-every", "2", "--average"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["training"]["weights_averaged"] in (1, 2)
    assert meta["command"].split().count("--average") == 1  # a flag, rerunnable as written
    assert "--average True" not in meta["command"]


def test_a_student_taught_the_flip_averaged_maps_learns_them_in_one_pass() -> None:
    torch.set_num_threads(1)
    pairs = [(s.image, s.labels) for s in make_samples(6, 50, (64, 64), SMALL)]
    torch.manual_seed(1)
    teacher = UNet((8, 8, 16, 16, 16)).eval()
    frames = torch.from_numpy(np.stack([img for img, _ in pairs]).astype(np.float32))
    x = normalise_frames(frames).unsqueeze(1)
    with torch.no_grad():
        one_pass = torch.sigmoid(teacher(x))
        averaged = flip_averaged(teacher, x)
        # the average does not depend on which way the frame lies; one pass does
        assert torch.allclose(flip_averaged(teacher, x.flip(-1)), averaged.flip(-1), atol=1e-6)
        assert not torch.allclose(torch.sigmoid(teacher(x.flip(-1))), one_pass.flip(-1))

    def student(flips: bool) -> UNet:
        torch.manual_seed(0)
        return train_unet(
            pairs[:5], pairs[5:], model=UNet((8, 8, 16, 16, 16)), steps=40, batch_size=4,
            crop=64, lr=1e-2, eval_every=40, patience=10, seed=0, teacher=teacher,
            distill=1.0, teacher_flips=flips,
        ).model  # fmt: skip

    students = [student(flips).eval() for flips in (False, True)]
    with torch.no_grad():
        plain, flipped = (
            float((torch.sigmoid(net(x)) - averaged).abs().mean()) for net in students
        )
    assert flipped < plain, (flipped, plain)


def test_cli_distils_a_teacher_and_records_it(tmp_path: Path) -> None:
    teacher = save_unet(UNet((8, 8, 16, 16, 16)), tmp_path / "wide" / "unet.pt", {"seed": 0})
    out = tmp_path / "student"
    args = _tiny_unet_run(out)
    result = CliRunner().invoke(app, [*args, "--teacher", str(teacher), "--distill", "0.7"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["distilled_from"]["share"] == 0.7 and len(meta["distilled_from"]["sha256"]) == 64
    assert f"--teacher {teacher}" in meta["command"] and "--distill 0.7" in meta["command"]
    assert meta["distilled_from"]["flip_averaged"] is False
    flips = CliRunner().invoke(app, [*args, "--teacher", str(teacher), "--teacher-flips"])
    assert flips.exit_code == 0, flips.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["distilled_from"]["flip_averaged"] is True and "--teacher-flips" in meta["command"]
    alone = CliRunner().invoke(app, [*args, "--teacher-flips"])
    assert alone.exit_code == 2 and "give --teacher too" in alone.output
    missing = CliRunner().invoke(app, [*args, "--teacher", str(tmp_path / "nope.pt")])
    assert missing.exit_code == 2 and "nope.pt: no such weights file" in missing.output


def test_augmentation_turns_and_flips_image_and_targets_alike() -> None:
    rng = np.random.default_rng(0)
    batch = torch.zeros(64, 4, 16, 16)
    batch[:, 1:] = torch.from_numpy(rng.random((64, 3, 16, 16)))  # maps with no symmetry
    ys, xs = rng.integers(0, 16, 64), rng.integers(0, 16, 64)
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        batch[i, 0, y, x] = 1.0  # one marked pixel in the image
    noise = torch.Generator().manual_seed(0)
    out = _augment(list(batch.numpy()), np.random.default_rng(1), noise)
    assert out.shape == batch.shape
    seen = set()
    for before, after in zip(batch, out, strict=True):
        # the maps are one of the eight turns and flips of the originals ...
        variants = [torch.rot90(before, k, (1, 2)) for k in range(4)]
        variants += [v.flip(2) for v in variants]
        match = [j for j, v in enumerate(variants) if torch.equal(v[1:], after[1:])]
        assert len(match) == 1
        seen.add(match[0])
        # ... and the image went the same way (its brightest pixel is the marked one)
        marked = variants[match[0]][0]
        assert int(after[0].argmax()) == int(marked.argmax())
    assert seen == set(range(8))  # every turn and flip occurs
    assert not torch.equal(out[:, 0], batch[:, 0])  # intensities changed


def test_rendering_in_several_processes_gives_the_same_images() -> None:
    seeds = [11, 12, 13, 14, 15]
    one = render_pairs(seeds, (48, 48), workers=1)
    two = render_pairs(seeds, (48, 48), workers=2)
    assert len(one) == len(two) == 5
    for (img1, lab1), (img2, lab2) in zip(one, two, strict=True):
        np.testing.assert_array_equal(img1, img2)
        np.testing.assert_array_equal(lab1, lab2)
    assert not np.array_equal(one[0][0], one[1][0])


def test_a_change_to_the_nuclei_leaves_illumination_and_export_of_each_image_alone() -> None:
    # test sets stay comparable when the specimen's rendering changes: the shot noise
    # takes a varying count of random numbers, so nothing after it may share its stream
    brighter = replace(TRAIN_RECIPE, texture=(0.6, 0.9), brightness_spread=(0.8, 1.0))
    before = make_samples(40, 500, (64, 64), TRAIN_RECIPE)
    after = make_samples(40, 500, (64, 64), brighter)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(before, after, strict=True))
    for a, b in zip(before, after, strict=True):
        for key in ("uint8", "vignetting", "haze", "defocus_px", "photons"):
            assert a.params[key] == b.params[key], key
    assert 5 < sum(a.params["uint8"] for a in before) < 35  # both exports occur


def _fields(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(s.image, s.labels) for s in make_samples(n, 70, (64, 64), SMALL)]


def test_load_folder_pairs_by_name_and_explains_problems(tmp_path: Path) -> None:
    write_folder(tmp_path / "ok", _fields(2))
    pairs = load_folder(tmp_path / "ok")
    assert len(pairs) == 2 and pairs[0][0].shape == pairs[0][1].shape
    (tmp_path / "ok" / "labels" / "field_1.tif").unlink()
    with pytest.raises(FileNotFoundError, match=r"no label file for image.*field_1"):
        load_folder(tmp_path / "ok")
    with pytest.raises(FileNotFoundError, match="images/ and labels/"):
        load_folder(tmp_path)
    img = tifffile.imread(tmp_path / "ok" / "images" / "field_0.tif").astype(np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "ok" / "images" / "field_0.tif", img)
    tifffile.imwrite(tmp_path / "ok" / "labels" / "field_1.tif", np.zeros((64, 64), np.uint16))
    with pytest.raises(ValueError, match=r"field_0\.tif: 1 pixel\(s\) are NaN .*\(3, 4\)"):
        load_folder(tmp_path / "ok")
    # grey saved as RGB (as the DSB2018 nuclei are) is read as grey; colour is refused
    grey = make_samples(1, 70, (64, 64), SMALL)[0].image.astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    tifffile.imwrite(tmp_path / "ok" / "images" / "field_0.tif", rgb)
    assert np.array_equal(load_folder(tmp_path / "ok")[0][0], grey)
    rgb[..., 1] //= 2
    tifffile.imwrite(tmp_path / "ok" / "images" / "field_0.tif", rgb)
    with pytest.raises(ValueError, match=r"field_0\.tif: a colour RGB image"):
        load_folder(tmp_path / "ok")


def test_validation_covers_the_whole_of_each_validation_image() -> None:
    # one large image: its validation tiles hold every nucleus, not one corner's
    sample = make_samples(1, 5, (300, 520), SMALL)[0]
    tiles = torch.cat(_val_batches(_prepare([(sample.image, sample.labels)]), 128))
    assert tiles.shape == (3 * 5, 4, 128, 128)  # ceil(300/128) x ceil(520/128), none padded
    centres = tiles[:, 2].flatten(1).amax(1) > 0.9
    assert centres.sum() >= 12  # nuclei all over the image, not in one crop
    # a strip narrower than a crop is padded across and still tiled along
    strip = _prepare([(sample.image[:100], sample.labels[:100])])
    assert torch.cat(_val_batches(strip, 128)).shape == (5, 4, 128, 128)
    # beyond the cap, an evenly spaced subset
    assert len(torch.cat(_val_batches(_prepare([(sample.image, sample.labels)]), 128, 6))) == 6


def test_training_crops_come_from_each_image_in_proportion_to_its_area() -> None:
    sizes = [(512, 512), (64, 64), (64, 64), (128, 64)]
    prepared = _prepare([(np.ones(s, np.uint16), np.zeros(s, np.int32)) for s in sizes])
    picks = _pick_images(prepared, 20_000, np.random.default_rng(0))
    share = np.bincount(picks, minlength=4) / len(picks)
    expected = np.array([512 * 512, 64 * 64, 64 * 64, 128 * 64]) / (512 * 512 + 4 * 64 * 64)
    assert np.allclose(share, expected, atol=0.01)  # the large image: 94 %, not a quarter


def test_written_folder_reads_back_in_order_with_its_mitoses(tmp_path: Path) -> None:
    from scopeloop.analysis.training import load_stage_folder

    pairs = [
        (np.full((8, 8), i, np.uint16), np.eye(8, dtype=np.int32) * (i + 1)) for i in range(12)
    ]
    stages = [{i + 1: i % 4} for i in range(12)]
    write_folder(tmp_path / "f", pairs, stages=stages)
    back = load_folder(tmp_path / "f")  # field_02 before field_10, as written
    assert [int(img[0, 0]) for img, _ in back] == list(range(12))
    assert all(np.array_equal(lab, pairs[i][1]) for i, (_, lab) in enumerate(back))
    read = load_stage_folder(tmp_path / "f")
    assert [st for *_, st in read] == stages  # mitoses listed, interphase by default


def test_a_small_folder_is_split_by_tiles_and_keeps_two_for_validation() -> None:
    big = [(np.zeros((1100, 1030), np.uint16), np.zeros((1100, 1030), np.int32))] * 2
    train, val, test, how = split_folder(big, seed=0)
    # 4 x 4 tiles per image, none under 256 px, all pixels used once
    assert how.startswith("tiles") and len(train) + len(val) + len(test) == 32
    assert min(min(t[0].shape) for t in train + val + test) >= 256
    assert sum(t[0].size for t in train + val + test) == 2 * 1100 * 1030
    assert len(val) >= 4 and len(test) >= 4
    small = [(np.full((64, 64), i, np.uint16), np.zeros((64, 64), np.int32)) for i in range(8)]
    train, val, test, how = split_folder(small, seed=0)
    assert how == "images" and (len(train), len(val), len(test)) == (6, 2, 0)
    held = {int(v[0][0, 0]) for v in val}
    assert not held & {int(t[0][0, 0]) for t in train}  # validation images are not trained on
    assert [len(x) for x in split_folder(small[:3], seed=0)[:3]] == [2, 1, 0]
    many = small + small[:4]
    assert [len(x) for x in split_folder(many, seed=0)[:3]] == [8, 2, 2]


def _fine_tune(data: Path, init: Path, out: Path, *options: str) -> Any:
    """``scopeloop train --data`` of a tiny U-Net from ``init``, quickly (batch 2, 64 px
    crops, one thread), with ``options`` (steps, seed) added."""
    args = ["train", "--what", "unet", "--data", str(data), "--init", str(init)]
    args += ["--out", str(out), "--batch", "2", "--crop", "64", "--threads", "1"]
    return CliRunner().invoke(app, [*args, *options])


def test_cli_fine_tunes_from_a_user_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "data", _fields(4))
    init = save_unet(UNet((8, 8, 16, 16, 16)), tmp_path / "init.pt", {"note": "start"})
    out = tmp_path / "w"
    result = _fine_tune(tmp_path / "data", init, out, "--steps", "12", "--seed", "3")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["seed"] == 3 and meta["data"]["source"] == "folder"
    assert "--data" in meta["command"] and meta["data"]["n_pairs"] == 4
    # four small fields: one validates, none is spent on a one-image test score
    assert meta["data"]["split_by"] == "images" and "no test split" in result.output
    assert meta["split"] == {"train": 3, "validation": 1, "test": 0}
    assert "touch" in meta["training"]["loss"]  # the record says how the loss was weighted
    assert "crop" in meta["training"]["targets"]  # and that targets come from each crop
    # the JSON record says how to rebuild and use the network, as the weights file does
    assert meta["channels"] == [8, 8, 16, 16, 16]
    assert meta["min_confidence"] == meta["threshold_tuning"]["min_confidence"]
    model, stored = load_unet(out / "unet.pt")
    assert stored["channels"] == [8, 8, 16, 16, 16] and model.channels == (8, 8, 16, 16, 16)
    assert (out / "unet.pt").stat().st_size < 5e6


def test_folder_of_larger_nuclei_is_fine_tuned_binned_and_the_weights_bin_alike(
    tmp_path: Path,
) -> None:
    from scopeloop.analysis.training import bin_pairs, masks_nucleus_diameter_px
    from scopeloop.analysis.unet import UNetSegmenter

    # fields of nuclei 10-16 px across shown 5x larger: over the 44 px trained on
    k = np.ones((5, 5), np.uint16)
    fields = [(np.kron(i, k), np.kron(m, k).astype(m.dtype)) for i, m in _fields(4)]
    assert 44 < masks_nucleus_diameter_px(fields) < 80
    img, lab = fields[0]
    binned, binned_lab = bin_pairs([(img[:255, :254], lab[:255, :254])], 2)[0]
    assert binned.shape == binned_lab.shape == (127, 127)  # the part-filled bins dropped
    assert binned[10, 20] == pytest.approx(img[20:22, 40:42].mean())
    assert binned_lab[10, 20] == lab[21, 41]  # each bin's centre pixel
    write_folder(tmp_path / "data", fields)
    init = save_unet(UNet((8, 8, 16, 16, 16)), tmp_path / "init.pt", {"note": "start"})
    out = tmp_path / "w"
    result = _fine_tune(tmp_path / "data", init, out, "--steps", "4", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "binned 2x2 for training" in result.output
    data = json.loads((out / "unet.json").read_text())["data"]
    assert data["bin_factor"] == 2 and 44 < data["nucleus_diameter_px"] < 80
    # used without a diameter, the weights bin frames as their folder was; told one, not
    assert UNetSegmenter(device="cpu", weights=out / "unet.pt").bin_factor == 2
    assert (
        UNetSegmenter(device="cpu", weights=out / "unet.pt", nucleus_diameter_px=20).bin_factor == 1
    )
    # retuning the thresholds on such a folder scores them binned, as the weights run
    tuned = CliRunner().invoke(
        app,
        [
            "tune", "--weights", str(out / "unet.pt"), "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "t"), "--threads", "1",
        ],
    )  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert "images binned 2x2" in tuned.output
    images = json.loads((tmp_path / "t" / "unet.json").read_text())["threshold_tuning"]
    assert images["retuned"]["images"]["bin_factor"] == 2
    # a folder of nuclei in range is fine-tuned as it is
    write_folder(tmp_path / "in_range", _fields(4))
    again = _fine_tune(tmp_path / "in_range", init, tmp_path / "w2", "--steps", "2")
    assert again.exit_code == 0, again.output
    assert "binned" not in again.output
    assert json.loads((tmp_path / "w2" / "unet.json").read_text())["data"]["bin_factor"] == 1
    assert UNetSegmenter(device="cpu", weights=tmp_path / "w2" / "unet.pt").bin_factor == 1


def test_cli_trains_a_network_of_the_requested_width(tmp_path: Path) -> None:
    out = tmp_path / "wide"
    args = [
        "train", "--what", "unet", "--out", str(out), "--n-images", "6", "--size", "64",
        "--steps", "4", "--batch", "2", "--crop", "64", "--threads", "1",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--channels", "4,8,8,16,16"])
    assert result.exit_code == 0, result.output
    model, meta = load_unet(out / "unet.pt")
    assert model.channels == (4, 8, 8, 16, 16) and "--channels 4,8,8,16,16" in meta["command"]
    bad = CliRunner().invoke(app, [*args, "--channels", "16,32,wide"])
    assert bad.exit_code == 2 and "--channels '16,32,wide'" in bad.output


def test_cli_draws_synthetic_nuclei_from_the_requested_radius_range(tmp_path: Path) -> None:
    out = tmp_path / "small"
    args = _tiny_unet_run(out)
    result = CliRunner().invoke(app, [*args, "--radius-px", "2.5,5"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["data"]["recipe"]["radius_px"] == [2.5, 5.0]
    assert "--radius-px 2.5,5" in meta["command"]
    # the rendered images follow the recipe: small nuclei only
    small = Recipe(radius_px=(2.5, 5.0), empty_probability=0.0)
    ((_, lab),) = render_pairs([11], (96, 96), 1, small)
    ((_, usual),) = render_pairs([11], (96, 96), 1, Recipe(empty_probability=0.0))
    assert np.median(np.bincount(lab.ravel())[1:]) < np.pi * 5.5**2
    assert np.median(np.bincount(lab.ravel())[1:]) < np.median(np.bincount(usual.ravel())[1:])
    for bad in ("2.5", "6,3", "0,4"):
        refused = CliRunner().invoke(app, [*args, "--radius-px", bad])
        assert refused.exit_code == 2 and f"--radius-px '{bad}'" in refused.output


def test_cli_gives_half_the_synthetic_images_to_the_requested_regimes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scopeloop.simulation.render_cache as render_cache

    rendered: list[tuple[list[int], list[Recipe]]] = []
    real_render = render_cache.render_in_processes

    def recording_render(fn, jobs, workers):  # type: ignore[no-untyped-def]
        rendered.append(([seed for seed, _, _ in jobs], [recipe for _, _, recipe in jobs]))
        return real_render(fn, jobs, workers)

    monkeypatch.setattr(render_cache, "render_in_processes", recording_render)
    # a cache of its own, empty, also when run without conftest.py (gpu_check.sh)
    monkeypatch.setenv(render_cache.CACHE_ENV, str(tmp_path / "render-cache"))
    out = tmp_path / "emphasis"
    args = _tiny_unet_run(out)
    result = CliRunner().invoke(app, [*args, "--emphasis", "dense,blurred"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["data"]["emphasis"] == ["dense", "blurred"]
    assert "--emphasis dense,blurred" in meta["command"]
    # the run's own six images: even ones keep the whole recipe, odd ones are dense and
    # blurred in turn, and each is rendered with its own recipe
    [(seeds, recipes)] = rendered
    assert recipes == mixed_recipes(6, TRAIN_RECIPE, ("dense", "blurred"))
    assert recipes[0::2] == [TRAIN_RECIPE] * 3 and TRAIN_RECIPE not in recipes[1::2]
    params = [make_sample(s, (64, 64), r).params for s, r in zip(seeds, recipes, strict=True)]
    assert all(p["coverage"] >= 0.3 for p in params[1::4])
    assert all(p["defocus_px"] >= 2.0 and p["haze"] >= 0.2 for p in params[3::4])
    per_seed = render_pairs(seeds[:2], (64, 64), 1, recipes[:2])
    assert not np.array_equal(per_seed[1][0], render_pairs(seeds[1:2], (64, 64), 1)[0][0])
    for name, ranges in EMPHASES.items():  # each inside the training recipe's ranges
        for key, (lo, hi) in ranges.items():
            wide = getattr(TRAIN_RECIPE, key)
            assert wide[0] <= lo < hi <= wide[1], (name, key)
    for bad in ("crowded", "dense,dense"):
        refused = CliRunner().invoke(app, [*args, "--emphasis", bad])
        assert refused.exit_code == 2 and f"--emphasis '{bad}'" in refused.output
    folder = CliRunner().invoke(
        app, ["train", "--what", "unet", "--data", str(tmp_path), "--emphasis", "dense"]
    )
    assert folder.exit_code == 2 and "--emphasis shapes the U-Net's synthetic images" in (
        folder.output
    )


def test_a_widened_network_computes_what_the_trained_one_did_and_then_learns() -> None:
    torch.manual_seed(0)
    narrow = UNet((4, 4, 8, 8, 8))
    with torch.no_grad():  # trained-looking batch-norm statistics, not the identity
        for m in narrow.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.2, 0.2)
    narrow.eval()
    wide = widen_unet(narrow, (8, 8, 16, 16, 32), seed=1)
    assert wide.channels == (8, 8, 16, 16, 32)
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(
        p.numel() for p in narrow.parameters()
    )
    x = torch.randn(2, 1, 48, 64)
    with torch.no_grad():
        torch.testing.assert_close(wide(x), narrow(x))
    # the new filters are live: one optimisation step changes the outputs
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    wide.train()
    wide(x).square().mean().backward()  # type: ignore[no-untyped-call]
    opt.step()
    wide.eval()
    with torch.no_grad():
        assert not torch.allclose(wide(x), narrow(x))
    with pytest.raises(ValueError, match="can only widen"):
        widen_unet(narrow, (2, 4, 8, 8, 8))


def test_cli_widens_the_starting_network_on_request(tmp_path: Path) -> None:
    init = save_unet(UNet((4, 4, 8, 8, 8)), tmp_path / "init" / "unet.pt", {"seed": 0})
    args = [
        "train", "--what", "unet", "--init", str(init), "--n-images", "6", "--size", "64",
        "--steps", "2", "--batch", "2", "--crop", "64", "--threads", "1",
    ]  # fmt: skip
    out = tmp_path / "wide"
    result = CliRunner().invoke(app, [*args, "--out", str(out), "--channels", "8,8,16,16,16"])
    assert result.exit_code == 0, result.output
    model, meta = load_unet(out / "unet.pt")
    assert model.channels == (8, 8, 16, 16, 16)
    assert meta["init_from"]["widened_from"] == [4, 4, 8, 8, 8]
    bad = CliRunner().invoke(app, [*args, "--out", str(out), "--channels", "2,4,8,8,8"])
    assert bad.exit_code == 2 and "can only widen" in bad.output


def test_cli_rejects_bad_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path), "--what", "unet"])
    assert result.exit_code == 2
    assert "images/ and labels/" in result.output


def test_cli_fine_tunes_on_one_large_image_and_refuses_one_small(tmp_path: Path) -> None:
    # one annotated 512x512 field is four tiles: enough to train on and validate
    sample = make_samples(1, 71, (512, 512), SMALL)[0]
    write_folder(tmp_path / "large", [(sample.image, sample.labels)])
    write_folder(tmp_path / "small", [(sample.image[:256, :256], sample.labels[:256, :256])])
    init = save_unet(UNet((8, 8, 16, 16, 16)), tmp_path / "init.pt", {"note": "start"})
    args = ["train", "--what", "unet", "--init", str(init), "--steps", "4", "--batch", "2"]
    args += ["--crop", "64", "--threads", "1"]
    out = tmp_path / "w"
    result = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "large"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "unet.json").read_text())
    assert meta["data"]["split_by"] == "tiles of about 256 px"
    assert meta["split"] == {"train": 3, "validation": 1, "test": 0}
    small = tmp_path / "small"
    result = CliRunner().invoke(app, [*args, "--data", str(small), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert f"{small}: 1 image/label pair (256x256) is too little" in result.output
    assert "one image of at least 512 px" in result.output
