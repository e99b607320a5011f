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
    """Cellpose (``pip install 'scopeloop[cellpose]'``); nuclei model by default.

    Parameters
    ----------
    device : str
        ``"auto"`` or a torch device; Cellpose uses the GPU when it is CUDA.
    model_type : str
        Cellpose model name (``"nuclei"``, ``"cyto3"``, ...) or a path (``pretrained_model``).
    diameter : float, optional
        Typical object diameter in pixels (None: Cellpose estimates it).
    """

    name = "cellpose"

    def __init__(
        self, device: str = "auto", model_type: str = "nuclei", diameter: float | None = None
    ) -> None:
        models = _require("cellpose.models", "cellpose", "cellpose")
        self.device = select_device(device)
        gpu = self.device.startswith("cuda")
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
    """

    name = "stardist"

    def __init__(self, device: str = "auto", model: str = "2D_versatile_fluo") -> None:
        sd = _require("stardist.models", "stardist", "stardist")
        csb = _require("csbdeep.utils", "stardist", "stardist")
        self.device = "cpu" if device == "auto" else device
        p = Path(model)
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
        connected components.
    """

    name = "bioimageio"

    def __init__(self, device: str = "auto", source: str | None = None) -> None:
        if not source:
            raise ValueError("the bioimageio segmenter needs source=<model id, URL or path>")
        self._bio = _require("bioimageio.core", "bioimageio", "bioimageio")
        self.device = select_device(device)
        self._model = self._bio.load_description(source)
        self._pipeline = self._bio.create_prediction_pipeline(self._model, devices=[self.device])

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``(N, Y, X)`` (or ``(Y, X)``) frames into int32 instance labels."""
        from scipy import ndimage

        batch, was_2d = as_batch(frames)
        out = []
        for f in batch:
            sample = self._bio.create_sample_for_model(self._model, inputs=[f.astype(np.float32)])
            res = self._pipeline.predict_sample_without_blocking(sample)
            arr = np.squeeze(np.asarray(next(iter(res.members.values())).data))
            if arr.ndim == 3:
                arr = arr[0]
            if np.issubdtype(arr.dtype, np.integer) or np.all(np.mod(arr, 1) == 0):
                out.append(_relabel(arr))
            else:
                out.append(ndimage.label(arr > 0.5)[0].astype(np.int32))
        res_arr = np.stack(out)
        return res_arr[0] if was_2d else res_arr
