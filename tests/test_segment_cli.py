"""`scopeloop segment`: a folder of the user's images in, label TIFFs out, ready to
correct and fine-tune on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile
from typer.testing import CliRunner

from scopeloop.analysis.segmenter import get_segmenter
from scopeloop.analysis.training import load_folder
from scopeloop.cli.main import app
from scopeloop.simulation.synthetic import test_set


def test_segment_labels_a_folder_and_keeps_going_past_a_bad_file(tmp_path: Path) -> None:
    samples = test_set("sparse", 2)
    src = tmp_path / "mine"
    src.mkdir()
    tifffile.imwrite(src / "a.tif", samples[0].image)
    tifffile.imwrite(src / "b.tiff", samples[1].image)
    colour = np.stack([samples[0].image, samples[0].image // 2, samples[0].image], axis=-1)
    tifffile.imwrite(src / "c.tif", colour)  # a colour RGB image: refused, named
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(src), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 2  # bad input, reported after the others were labelled
    assert f"{src / 'c.tif'}: a colour RGB image" in result.output
    assert "1 of 3 images could not be read" in result.output
    unet = get_segmenter("unet", device="cpu")
    for name, s in (("a.tif", samples[0]), ("b.tif", samples[1])):
        labels = tifffile.imread(out / "labels" / name)
        assert labels.dtype == np.uint16
        np.testing.assert_array_equal(labels, unet.segment(s.image))
        np.testing.assert_array_equal(tifffile.imread(out / "images" / name), s.image)
    record = json.loads((out / "segmentation.json").read_text())
    assert record["segmenter"] == "unet" and [r["image"] for r in record["images"]] == [
        "a.tif", "b.tif"
    ]  # fmt: skip
    assert record["images"][0]["nuclei"] == len(np.unique(unet.segment(samples[0].image))) - 1
    assert len(record["failed"]) == 1
    # the output is a folder to correct and fine-tune on: train --data reads it as pairs
    assert [p[0].shape for p in load_folder(out)] == [s.image.shape for s in samples]


def test_segment_never_overwrites_masks_unless_told(tmp_path: Path) -> None:
    s = test_set("crowded", 1)[0]
    tifffile.imwrite(tmp_path / "field.tif", s.image)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "field.tif"), "--out", str(out), "--device", "cpu"]
    assert CliRunner().invoke(app, args).exit_code == 0
    corrected = np.zeros_like(tifffile.imread(out / "labels" / "field.tif"))
    tifffile.imwrite(out / "labels" / "field.tif", corrected)  # the user's corrections
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "corrected masks would be lost" in again.output
    assert not tifffile.imread(out / "labels" / "field.tif").any()  # untouched
    # segmenting the output folder in place reads its images/ and needs --overwrite too
    in_place = ["segment", str(out), "--out", str(out), "--device", "cpu"]
    assert CliRunner().invoke(app, in_place).exit_code == 2
    result = CliRunner().invoke(
        app, [*in_place, "--overwrite", "-s", "unet", "--nucleus-diameter", "auto"]
    )
    assert result.exit_code == 0, result.output
    assert tifffile.imread(out / "labels" / "field.tif").max() > 50
    (row,) = json.loads((out / "segmentation.json").read_text())["images"]
    assert row["bin_factor"] == 1 and 8 < row["diameter_px"] < 44  # measured, not binned
    bad = CliRunner().invoke(app, [*args, "-s", "classical", "--nucleus-diameter", "68"])
    assert bad.exit_code == 2 and "--nucleus-diameter is a U-Net option" in bad.output
    missing = CliRunner().invoke(app, ["segment", str(tmp_path / "none"), "--out", str(out)])
    assert missing.exit_code == 2 and "no such file or folder" in missing.output


def test_a_segmenter_failing_part_way_leaves_the_record_of_what_was_labelled(
    tmp_path: Path,
) -> None:
    from scopeloop.analysis import segmenter as registry

    class FailsOnSecond:
        """A user's plug-in segmenter that raises on its second image."""

        device = "cpu"

        def __init__(self) -> None:
            self.calls = 0

        def segment(self, frames: np.ndarray) -> np.ndarray:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("plug-in failed")
            return (frames > frames.mean()).astype(np.int32)

    registry.register_segmenter("fails_on_second")(lambda device="cpu", **_: FailsOnSecond())
    try:
        for i, s in enumerate(test_set("sparse", 3)):
            tifffile.imwrite(tmp_path / f"f{i}.tif", s.image)
        out = tmp_path / "out"
        args = ["segment", str(tmp_path), "--out", str(out), "-s", "fails_on_second"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and "plug-in failed" in result.output
        record = json.loads((out / "segmentation.json").read_text())
        assert [r["image"] for r in record["images"]] == ["f0.tif"] and not record["complete"]
        assert (out / "labels" / "f0.tif").is_file() and not (out / "labels" / "f1.tif").exists()
    finally:
        registry._REGISTRY.pop("fails_on_second", None)
