"""Adapters to other projects' models: a clear message without the package, and a
real bioimage.io model package (the shipped U-Net, exported) run end to end where
bioimageio.core is installed (``pip install 'scopeloop[bioimageio]'``)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scopeloop.analysis.metrics import score_image
from scopeloop.analysis.segmenter import get_segmenter, parse_weights
from scopeloop.cli.main import app
from scopeloop.simulation.synthetic import test_set

_PACKAGES = {"cellpose": "cellpose", "stardist": "stardist", "bioimageio": "bioimageio.core"}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.parametrize("name", sorted(_PACKAGES))
def test_an_adapter_without_its_package_says_what_to_install(name: str) -> None:
    if _installed(_PACKAGES[name]):
        pytest.skip(f"{_PACKAGES[name]} is installed here")
    with pytest.raises(ImportError, match=rf"pip install 'scopeloop\[{name}\]'"):
        get_segmenter(name, device="cpu", weights="model")


def test_weights_entries_name_their_segmenter() -> None:
    zipped = Path("models/nuclei.zip")
    assert parse_weights(f"bioimageio={zipped}") == ("bioimageio", zipped)
    assert parse_weights("runs/a=b/unet.pt") == ("unet", Path("runs/a=b/unet.pt"))
    bad = CliRunner().invoke(app, ["evaluate", "--weights", "classical=x.pt", "--quick"])
    assert bad.exit_code == 2 and "classical segmenter has no weights" in bad.output


def _export_shipped_unet(folder: Path) -> Path:
    """The shipped U-Net's foreground map as a bioimage.io model package (torchscript)."""
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5 as bmz

    from scopeloop.analysis.unet import load_unet

    class Foreground(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net(x)[:, :1])

    net, _ = load_unet()
    model = Foreground(net).eval()
    traced = torch.jit.trace(model, torch.rand(1, 1, 64, 64))
    traced.save(str(folder / "weights.pt"))
    image = test_set("sparse", 1)[0].image.astype(np.float32)[None, None]
    lo, hi = np.percentile(image, (1, 99.8))
    with torch.no_grad():
        expected = traced(torch.from_numpy(((image - lo) / (hi - lo + 1e-6)).astype(np.float32)))
        expected = expected.numpy()
    np.save(folder / "input.npy", image)
    np.save(folder / "output.npy", expected)
    (folder / "README.md").write_text("# Nuclei foreground\nscopeloop U-Net foreground map.\n")
    yx = [bmz.AxisId("y"), bmz.AxisId("x")]
    descr = bmz.ModelDescr(
        name="scopeloop nuclei foreground",
        description="Foreground probability of fluorescent nuclei",
        authors=[bmz.Author(name="scopeloop")],
        cite=[bmz.CiteEntry(text="U-Net", doi=bmz.Doi("10.1007/978-3-319-24574-4_28"))],
        license=bmz.LicenseId("MIT"),
        documentation=bmz.FileDescr(source=folder / "README.md"),
        inputs=[
            bmz.InputTensorDescr(
                id=bmz.TensorId("raw"),
                axes=[
                    bmz.BatchAxis(),
                    bmz.ChannelAxis(channel_names=[bmz.Identifier("nuclei")]),
                    *(
                        bmz.SpaceInputAxis(id=a, size=bmz.ParameterizedSize(min=16, step=16))
                        for a in yx
                    ),
                ],
                test_tensor=bmz.FileDescr(source=folder / "input.npy"),
                data=bmz.IntervalOrRatioDataDescr(type="float32"),
                preprocessing=[
                    bmz.ScaleRangeDescr(
                        kwargs=bmz.ScaleRangeKwargs(
                            axes=yx, min_percentile=1.0, max_percentile=99.8, eps=1e-6
                        )
                    )
                ],
            )
        ],
        outputs=[
            bmz.OutputTensorDescr(
                id=bmz.TensorId("foreground"),
                axes=[
                    bmz.BatchAxis(),
                    bmz.ChannelAxis(channel_names=[bmz.Identifier("foreground")]),
                    *(
                        bmz.SpaceOutputAxis(
                            id=a, size=bmz.SizeReference(tensor_id=bmz.TensorId("raw"), axis_id=a)
                        )
                        for a in yx
                    ),
                ],
                test_tensor=bmz.FileDescr(source=folder / "output.npy"),
                data=bmz.IntervalOrRatioDataDescr(type="float32"),
            )
        ],
        weights=bmz.WeightsDescr(
            torchscript=bmz.TorchscriptWeightsDescr(
                source=folder / "weights.pt",
                pytorch_version=bmz.Version(torch.__version__.split("+")[0]),
            )
        ),
    )
    return Path(save_bioimageio_package(descr, output_path=folder / "nuclei.zip"))


# torchscript is the weights format every bioimage.io consumer reads; torch now warns on it
@pytest.mark.filterwarnings("ignore:`torch.jit.*:FutureWarning")
# bioimageio.spec leaves the package's files open when it writes and reads the zip
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_bioimage_io_model_package_segments_frames_of_any_size(tmp_path: Path) -> None:
    pytest.importorskip("bioimageio.core")
    package = _export_shipped_unet(tmp_path)
    seg = get_segmenter("bioimageio", device="cpu", weights=package)
    samples = test_set("sparse", 2)
    labels = seg.segment(np.stack([s.image for s in samples]))
    assert labels.shape == (2, 256, 256) and labels.dtype == np.int32
    for s, lab in zip(samples, labels, strict=True):
        assert score_image(s.labels, lab).ap[0.5] > 0.7  # the model's own normalisation applied
    # a frame size the model does not accept (multiples of 16) is padded, then cropped back
    odd = seg.segment(samples[0].image[:250, :230])
    assert odd.shape == (250, 230)
    assert score_image(samples[0].labels[:250, :230], odd).ap[0.5] > 0.7
    # and it is scored from the CLI beside the shipped U-Net
    out = tmp_path / "scores.json"
    args = ["evaluate", "--set", "sparse", "--n-images", "1", "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--weights", f"bioimageio={package}", "--json", str(out)])
    assert res.exit_code == 0, res.output
    scores = json.loads(out.read_text())["results"][f"bioimageio:{package}"]
    assert scores["sparse"]["ap"]["0.5"] > 0.7
