"""Protocol files: the shipped designs validate, bad files say what is wrong, schema is current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from scopeloop.acquisition import check_protocol
from scopeloop.cli.main import app
from scopeloop.models.protocol import Protocol, ProtocolError, load_protocol, protocol_json_schema

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "protocols").glob("*.yaml"))


def test_four_designs_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {"mitosis_burst", "hit_reimage", "follow_cell", "plate_triage"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_protocol_validates(path: Path) -> None:
    proto = load_protocol(path)
    assert proto.name == path.stem
    assert check_protocol(proto) == []
    assert proto.policies, "every shipped design makes decisions"
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


def test_mitosis_burst_is_the_experiment_the_issue_asks_for() -> None:
    p = load_protocol(ROOT / "protocols" / "mitosis_burst.yaml")
    acq = p.acquisition
    assert acq.duration_s == 12 * 3600 and len(acq.wells) >= 8
    assert 900 <= acq.interval_s <= 1200
    burst = p.policies[0]
    assert 120 <= burst.burst_interval_s <= 180  # type: ignore[union-attr]
    # 12 h of specimen time in a few minutes of wall time
    assert acq.duration_s / p.simulation.time_scale < 300


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _good() -> dict:
    return yaml.safe_load((ROOT / "protocols" / "mitosis_burst.yaml").read_text())


def test_errors_name_file_field_value_and_expectation(tmp_path: Path) -> None:
    data = _good()
    data["acquisition"]["channels"][0]["exposure_ms"] = -5
    data["acquisition"]["intervall_s"] = 10  # typo
    data["limits"]["max_concurrent_bursts"] = "many"
    path = _write(tmp_path, data)
    with pytest.raises(ProtocolError) as err:
        load_protocol(path)
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert all(line.startswith(str(path)) for line in lines)
    text = str(err.value)
    assert "acquisition.channels[0].exposure_ms" in text and "greater than 0" in text
    assert "(got -5)" in text
    assert "acquisition.intervall_s: unknown field" in text
    assert "limits.max_concurrent_bursts" in text and "'many'" in text


def test_unknown_detector_kind_and_bad_well(tmp_path: Path) -> None:
    data = _good()
    data["detectors"] = [{"kind": "mitosiss"}]
    with pytest.raises(ProtocolError, match=r"detectors\[0\].*mitosiss"):
        load_protocol(_write(tmp_path, data))
    data = _good()
    data["acquisition"]["wells"] = ["B2", "Z99"]
    with pytest.raises(ProtocolError, match=r"Z99.*not on a 96-well plate"):
        load_protocol(_write(tmp_path, data))


def test_policy_without_detector_is_reported(tmp_path: Path) -> None:
    data = _good()
    data["detectors"] = [{"kind": "confluence"}]
    proto = load_protocol(_write(tmp_path, data))
    problems = check_protocol(proto)
    assert problems and "mitosis_onset" in problems[0]


def test_cli_validate_exit_2_one_line_per_problem(tmp_path: Path) -> None:
    data = _good()
    data["acquisition"]["interval_s"] = 0
    data["simulation"]["speed"] = 3
    path = _write(tmp_path, data)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2, result.stderr
    assert any("acquisition.interval_s" in line and "(got 0)" in line for line in lines)
    assert any("simulation.speed: unknown field" in line for line in lines)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nacquisition: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(path)
    with pytest.raises(FileNotFoundError):
        load_protocol(tmp_path / "nope.yaml")


def test_bad_specimen_option_is_reported(tmp_path: Path) -> None:
    data = _good()
    data["simulation"]["specimen"]["cycle_hours"] = 10
    problems = check_protocol(load_protocol(_write(tmp_path, data)))
    assert any("simulation.specimen.cycle_hours" in p for p in problems)


def test_models_are_frozen_and_overrides_make_copies() -> None:
    p = load_protocol(ROOT / "protocols" / "mitosis_burst.yaml")
    with pytest.raises(ValidationError):
        p.acquisition.interval_s = 5  # type: ignore[misc]
    ref = p.with_overrides(policies=False, interval_s=150, fast_forward=True)
    assert ref.policies == () and ref.acquisition.interval_s == 150
    assert ref.simulation.fast_forward and not p.simulation.fast_forward
    assert p.policies


def test_schema_file_is_up_to_date() -> None:
    shipped = (ROOT / "docs" / "protocol.schema.json").read_text()
    assert shipped == protocol_json_schema(), (
        "docs/protocol.schema.json is stale: run "
        "`scopeloop validate --schema-out docs/protocol.schema.json`"
    )
    schema = json.loads(shipped)
    assert schema["additionalProperties"] is False
    assert set(Protocol.model_fields) <= set(schema["properties"])


def test_fine_tuned_weights_are_found_beside_the_protocol(tmp_path: Path) -> None:
    from scopeloop.acquisition.controller import RunController
    from scopeloop.analysis.training import save_unet
    from scopeloop.analysis.unet import UNet

    data = _good()
    (tmp_path / "my_weights").mkdir()
    weights = save_unet(UNet((4, 4, 8, 8, 8)), tmp_path / "my_weights" / "unet.pt", {})
    data["analysis"] = {
        **data.get("analysis", {}),
        "segmenter": "unet",
        "weights": "my_weights/unet.pt",
    }
    proto = load_protocol(_write(tmp_path, data))
    assert proto.analysis.weights == str(weights.resolve())
    # the run segments with them, not with the shipped weights
    seg = RunController(proto, core=None, out_dir=tmp_path / "run")._make_segmenter(0.65)  # type: ignore[arg-type]
    assert seg.weights_path == weights.resolve()  # type: ignore[attr-defined]
    assert seg.model.channels == (4, 4, 8, 8, 8)  # type: ignore[attr-defined]

    data["analysis"]["weights"] = "elsewhere/unet.pt"
    with pytest.raises(ProtocolError, match=r"analysis.weights: no weights file at .*elsewhere"):
        load_protocol(_write(tmp_path, data))
    data["analysis"] = {"segmenter": "classical", "weights": "my_weights/unet.pt"}
    with pytest.raises(ProtocolError, match="weights are for segmenters with a trained model"):
        load_protocol(_write(tmp_path, data))
    data["analysis"] = {"segmenter": "classical", "tta": True}
    with pytest.raises(ProtocolError, match=r"tta .* is a U-Net option, not 'classical'"):
        load_protocol(_write(tmp_path, data))
    data["analysis"] = {"segmenter": "unet", "weights": "my_weights/unet.pt", "tta": True}
    proto = load_protocol(_write(tmp_path, data))
    seg = RunController(proto, core=None, out_dir=tmp_path / "run")._make_segmenter(0.65)  # type: ignore[arg-type]
    assert seg.tta and seg.weights_path == weights.resolve()  # type: ignore[attr-defined]
    # 11 um nuclei at 40x (0.1625 um/px) are 68 px across: the U-Net bins frames by 2
    data["analysis"] = {"segmenter": "unet", "nucleus_diameter_um": 11.0}
    run = RunController(load_protocol(_write(tmp_path, data)), core=None, out_dir=tmp_path / "r")  # type: ignore[arg-type]
    assert run._make_segmenter(0.1625).bin_factor == 2  # type: ignore[attr-defined]
    assert run._make_segmenter(0.65).bin_factor == 1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="nucleus_diameter_um needs the pixel size"):
        run._make_segmenter(0.0)  # an uncalibrated objective
    data["analysis"] = {"segmenter": "classical", "nucleus_diameter_um": 11.0}
    with pytest.raises(ProtocolError, match=r"nucleus_diameter_um is a U-Net option"):
        load_protocol(_write(tmp_path, data))
    # "auto": the U-Net measures the nuclei and holds the measure; no pixel size needed
    data["analysis"] = {"segmenter": "unet", "nucleus_diameter_um": "auto"}
    run = RunController(load_protocol(_write(tmp_path, data)), core=None, out_dir=tmp_path / "a")  # type: ignore[arg-type]
    auto = run._make_segmenter(0.0)
    assert auto.auto_diameter and auto.hold_after == 3  # type: ignore[attr-defined]
    for bad in ("big", -11, 0, "11"):
        data["analysis"] = {"segmenter": "unet", "nucleus_diameter_um": bad}
        with pytest.raises(
            ProtocolError,
            match=r"analysis.nucleus_diameter_um: must be a positive number of micrometres "
            rf"or 'auto' \(got '?{bad}'?\)",
        ):
            load_protocol(_write(tmp_path, data))
    # other segmenters' models travel the same way: a StarDist model is a folder
    (tmp_path / "stardist_model").mkdir()
    data["analysis"] = {"segmenter": "stardist", "weights": "stardist_model"}
    sd = load_protocol(_write(tmp_path, data))
    assert sd.analysis.weights == str((tmp_path / "stardist_model").resolve())


def test_a_mitosis_detector_uses_the_stage_classifier_weights_beside_the_protocol(
    tmp_path: Path,
) -> None:
    import numpy as np
    import torch

    from scopeloop.analysis.classifier import STAGES, StageNet, save_classifier
    from scopeloop.analysis.detectors import MitosisDetector

    # weights that call every nucleus prophase, unlike the shipped ones
    net = StageNet()
    with torch.no_grad():
        net.head[-1].weight.zero_()
        net.head[-1].bias.copy_(torch.tensor([-9.0, 9.0, -9.0, -9.0]))
    weights = save_classifier(net, tmp_path / "mine" / "stage_classifier.pt", {})
    data = _good()
    (i,) = [k for k, d in enumerate(data["detectors"]) if d["kind"] == "mitosis"]
    data["detectors"][i] |= {"classifier": "cnn", "classifier_weights": "mine/stage_classifier.pt"}
    proto = load_protocol(_write(tmp_path, data))
    cfg = proto.detectors[i]
    assert cfg.classifier_weights == str(weights.resolve())  # type: ignore[union-attr]

    img = np.full((64, 64), 100.0, np.float32)
    labels = np.zeros((64, 64), np.int32)
    labels[10:20, 10:20], labels[40:52, 30:44] = 1, 2
    img[labels > 0] = 500.0

    class Meas:  # the rows the detector asks the classifier about
        label = np.array([1, 2])

    mine = MitosisDetector(cfg)._classifier  # type: ignore[arg-type]
    shipped = MitosisDetector(cfg.model_copy(update={"classifier_weights": None}))._classifier  # type: ignore[union-attr]
    assert mine is not None and shipped is not None and len(STAGES) == 4
    assert np.all(mine(img, labels, Meas) > 0.99)  # type: ignore[arg-type]
    assert np.all(shipped(img, labels, Meas) < 0.5)  # type: ignore[arg-type]
    # and the run's record names them
    from scopeloop.acquisition.controller import _stage_classifier_provenance
    from scopeloop.storage import file_sha256

    (record,) = _stage_classifier_provenance(proto.detectors)
    assert record["weights"] == str(weights.resolve())
    assert record["sha256"] == file_sha256(weights)

    data["detectors"][i]["classifier_weights"] = "elsewhere/stage_classifier.pt"
    with pytest.raises(ProtocolError, match=rf"detectors\[{i}\].classifier_weights: no weights"):
        load_protocol(_write(tmp_path, data))
    data["detectors"][i] |= {"classifier": None, "classifier_weights": "mine/stage_classifier.pt"}
    with pytest.raises(
        ProtocolError, match="classifier_weights are the CNN's; set classifier: cnn"
    ):
        load_protocol(_write(tmp_path, data))


def test_validate_refuses_weights_of_the_other_network_or_of_no_network(tmp_path: Path) -> None:
    import shutil

    from scopeloop.analysis.classifier import StageClassifier, default_classifier_path
    from scopeloop.analysis.unet import default_weights_path, load_unet

    # both networks' files are .pt files written by scopeloop train: easy to swap
    shutil.copy(default_weights_path(), tmp_path / "unet.pt")
    shutil.copy(default_classifier_path(), tmp_path / "stage_classifier.pt")
    (tmp_path / "notes.pt").write_text("not weights")
    data = _good()
    (i,) = [k for k, d in enumerate(data["detectors"]) if d["kind"] == "mitosis"]
    data["analysis"] |= {"segmenter": "unet", "weights": "stage_classifier.pt"}
    data["detectors"][i] |= {"classifier": "cnn", "classifier_weights": "unet.pt"}
    swapped = CliRunner().invoke(app, ["validate", str(_write(tmp_path, data))])
    assert swapped.exit_code == 2
    assert (
        "analysis.weights: " + str(tmp_path / "stage_classifier.pt") + ": these are "
        "stage-classifier weights, not U-Net weights; give them as a mitosis detector's "
        "classifier_weights"
    ) in swapped.output
    assert (
        f"detectors[{i}].classifier_weights: {tmp_path / 'unet.pt'}: these are U-Net weights, "
        "not stage-classifier weights"
    ) in swapped.output

    data["analysis"]["weights"] = "notes.pt"
    data["detectors"][i]["classifier_weights"] = "stage_classifier.pt"
    garbage = CliRunner().invoke(app, ["validate", str(_write(tmp_path, data))])
    assert garbage.exit_code == 2
    assert "analysis.weights: " + str(tmp_path / "notes.pt") + ": not a weights file" in (
        garbage.output
    )
    assert "classifier_weights" not in garbage.output  # the right file passes

    data["analysis"]["weights"] = "unet.pt"
    right = CliRunner().invoke(app, ["validate", str(_write(tmp_path, data))])
    assert right.exit_code == 0, right.output
    # the loaders themselves say the same to a script
    with pytest.raises(ValueError, match="these are U-Net weights, not stage-classifier"):
        StageClassifier(tmp_path / "unet.pt", device="cpu")
    with pytest.raises(ValueError, match=r"notes\.pt: not a weights file written by scopeloop"):
        load_unet(tmp_path / "notes.pt")
