"""Optional segmenters from other projects: Cellpose, StarDist, bioimage.io models.

Each is imported only when asked for; when the package (or its weights) is
missing, the error says what to install. Models are never downloaded behind
the user's back here: Cellpose and StarDist fetch their pretrained weights
themselves on first use, as their own documentation describes.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from skimage.segmentation import relabel_sequential

from .segmenter import as_batch, select_device

__all__ = ["BioimageIOSegmenter", "CellposeSegmenter", "StarDistSegmenter"]


def _require(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the {what} segmenter needs the '{module.split('.')[0]}' package, which is not "
            f"installed here ({exc}); install it with: pip install 'scopeloop[{extra}]'"
        ) from None


def _relabel(lab: NDArray[Any]) -> NDArray[np.int32]:
    out, _, _ = relabel_sequential(np.asarray(lab).astype(np.int64))  # type: ignore[no-untyped-call]
    return out.astype(np.int32)  # type: ignore[no-any-return]


class CellposeSegmenter:
    """Cellpose (``pip install 'scopeloop[cellpose]'``).

    Cellpose 3: the ``nuclei`` model by default. Cellpose 4 has one generalist
    model and ignores ``model_type`` (it logs a warning saying so).

    Parameters
    ----------
    device : str
        ``"auto"`` or a torch device; Cellpose uses the GPU when it is CUDA.
    model_type : str
        Cellpose model name (``"nuclei"``, ``"cyto3"``, ...) or a path (``pretrained_model``).
    diameter : float, optional
        Typical object diameter in pixels (None: Cellpose estimates it).
    weights : path, optional
        A Cellpose model file (e.g. trained on your own data); overrides ``model_type``.
    """

    name = "cellpose"

    def __init__(
        self,
        device: str = "auto",
        model_type: str = "nuclei",
        diameter: float | None = None,
        weights: str | Path | None = None,
    ) -> None:
        models = _require("cellpose.models", "cellpose", "cellpose")
        self.device = select_device(device)
        gpu = self.device.startswith("cuda")
        model_type = str(weights) if weights is not None else model_type
        if Path(model_type).exists():
            self._model = models.CellposeModel(gpu=gpu, pretrained_model=model_type)
        else:
            try:
                self._model = models.CellposeModel(gpu=gpu, model_type=model_type)
            except TypeError:  # Cellpose 4 has one model and no model_type
                self._model = models.CellposeModel(gpu=gpu)
        self.diameter = diameter

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``(N, Y, X)`` (or ``(Y, X)``) frames into int32 instance labels."""
        batch, was_2d = as_batch(frames)
        out = []
        for f in batch:
            masks = self._model.eval(f.astype(np.float32), diameter=self.diameter)[0]
            out.append(_relabel(masks))
        arr = np.stack(out)
        return arr[0] if was_2d else arr


class StarDistSegmenter:
    """StarDist 2D (``pip install 'scopeloop[stardist]'``); ``2D_versatile_fluo`` by default.

    Parameters
    ----------
    device : str
        Accepted for the common interface (StarDist runs on TensorFlow's own device).
    model : str
        A pretrained StarDist name or a folder of a trained model.
    weights : path, optional
        The folder of a trained StarDist model; overrides ``model``.
    """

    name = "stardist"

    def __init__(
        self,
        device: str = "auto",
        model: str = "2D_versatile_fluo",
        weights: str | Path | None = None,
    ) -> None:
        sd = _require("stardist.models", "stardist", "stardist")
        csb = _require("csbdeep.utils", "stardist", "stardist")
        self.device = "cpu" if device == "auto" else device
        p = Path(weights if weights is not None else model)
        if p.is_dir():
            self._model = sd.StarDist2D(None, name=p.name, basedir=str(p.parent))
        else:
            self._model = sd.StarDist2D.from_pretrained(model)
        self._normalize = csb.normalize

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``(N, Y, X)`` (or ``(Y, X)``) frames into int32 instance labels."""
        batch, was_2d = as_batch(frames)
        out = []
        for f in batch:
            lab, _ = self._model.predict_instances(self._normalize(f.astype(np.float32), 1, 99.8))
            out.append(_relabel(lab))
        arr = np.stack(out)
        return arr[0] if was_2d else arr


class BioimageIOSegmenter:
    """A bioimage.io model giving instance labels (``pip install 'scopeloop[bioimageio]'``).

    Parameters
    ----------
    device : str
        ``"auto"`` or a torch device.
    source : str
        Model id, URL or path of an ``rdf.yaml`` / zip, as bioimageio.core accepts.
        The model's first output is taken as instance labels when integer-valued,
        else as a foreground probability that is thresholded at 0.5 and split into
        connected components. The model's own pre-processing (normalisation) applies.
        Frames whose size the model does not accept are padded (reflected) to the
        next size it does, and its output cropped back; models of one fixed input
        size are run tile by tile.
    weights : path, optional
        Same as ``source`` (the name the protocol and the CLI use for a model file).
    """

    name = "bioimageio"

    def __init__(
        self, device: str = "auto", source: str | None = None, weights: str | Path | None = None
    ) -> None:
        source = str(weights) if weights is not None and not source else source
        if not source:
            raise ValueError(
                "the bioimageio segmenter needs a model: source=<model id, URL or path> "
                "(analysis.weights in a protocol)"
            )
        bio = _require("bioimageio.core", "bioimageio", "bioimageio")
        spec = _require("bioimageio.core.digest_spec", "bioimageio", "bioimageio")
        self.device = select_device(device)
        try:  # raises on anything that is not a valid model description
            self._model = bio.load_model_description(source)
        except ValueError as exc:
            raise ValueError(f"bioimageio source {source!r} could not be loaded: {exc}") from None
        if len(self._model.inputs) != 1:
            raise ValueError(
                f"bioimageio model {source!r} has {len(self._model.inputs)} inputs; "
                "a segmenter needs a model of one image input"
            )
        self._input_id = self._model.inputs[0].id
        self._axes = list(spec.get_axes_infos(self._model.inputs[0]))
        self._create_sample = spec.create_sample_for_model
        self._pipeline = bio.create_prediction_pipeline(self._model, devices=[self.device])

    def _accepted(self, axis: str, n: int) -> int | None:
        """The smallest size >= n the model accepts along ``axis`` (None: fixed, smaller)."""
        info = next((a for a in self._axes if str(a.id) == axis), None)
        if info is None or isinstance(info.size, int) or info.size is None:
            return n
        lo = int(info.size.min or 1)
        step = info.size.step
        if n <= lo:
            return lo
        if step:
            return lo + -(-(n - lo) // int(step)) * int(step)
        return n if info.size.max is None or n <= info.size.max else None

    def _predict(self, frame: NDArray[np.float32], key: int) -> NDArray[Any]:
        h, w = frame.shape
        ph, pw = self._accepted("y", h), self._accepted("x", w)
        if ph is None or pw is None:  # a fixed-size model: the library tiles the frame
            sample = self._create_sample(self._model, inputs={self._input_id: frame}, sample_id=key)
            res = self._pipeline.predict_sample_with_blocking(sample)
        else:
            padded = np.pad(frame, ((0, ph - h), (0, pw - w)), mode="reflect")
            sample = self._create_sample(
                self._model, inputs={self._input_id: padded}, sample_id=key
            )
            res = self._pipeline.predict_sample_without_blocking(sample)
        data = next(iter(res.members.values())).data  # xarray, dims named by the model
        plane = data.isel({d: 0 for d in data.dims if str(d) not in ("y", "x")})
        arr = np.asarray(plane.transpose("y", "x"))
        return arr[:h, :w]

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``(N, Y, X)`` (or ``(Y, X)``) frames into int32 instance labels."""
        from scipy import ndimage

        batch, was_2d = as_batch(frames)
        out = []
        for i, f in enumerate(batch):
            arr = self._predict(f.astype(np.float32), i)
            if np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0):
                out.append(_relabel(arr))
            else:
                out.append(ndimage.label(arr > 0.5)[0].astype(np.int32))
        res_arr = np.stack(out)
        return res_arr[0] if was_2d else res_arr
