"""The ``Segmenter`` seam: batched frames in, instance label images out.

Every segmenter (the torch U-Net, the classical scikit-image pipeline, the
optional Cellpose / StarDist / bioimage.io adapters) satisfies one small
protocol, so the acquisition loop never knows which one it runs. Calls are
stateless: a segmenter served on another machine can stand in unchanged.

Segmenters register by name; a protocol file picks one with
``get_segmenter(name, device=...)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "Segmenter",
    "as_batch",
    "available_segmenters",
    "get_segmenter",
    "nonfinite_pixels",
    "parse_weights",
    "register_segmenter",
    "segmenter_entries",
    "select_device",
]


@runtime_checkable
class Segmenter(Protocol):
    """Turns a batch of frames into instance label images.

    Attributes
    ----------
    name : str
        Registry name (``"unet"``, ``"classical"``, ...).
    device : str
        Where the work runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Notes
    -----
    ``segment`` takes ``(N, Y, X)`` frames of any numeric dtype (uint8, uint16,
    float; any intensity range) and returns ``(N, Y, X)`` ``int32`` labels,
    0 = background, 1..K the objects of each frame. A 2-D ``(Y, X)`` frame gives
    a 2-D label image. A call keeps no state between frames.
    """

    name: str
    device: str

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``frames``; see the class notes for shapes and dtypes."""
        ...


SegmenterFactory = Callable[..., Segmenter]

# Built-ins are imported only when asked for, so picking "classical" never pulls
# in a network, and an adapter's heavy package is imported only when used.
_BUILTIN: dict[str, str] = {
    "classical": "scopeloop.analysis.classical:ClassicalSegmenter",
    "unet": "scopeloop.analysis.unet:UNetSegmenter",
    "cellpose": "scopeloop.analysis.adapters:CellposeSegmenter",
    "stardist": "scopeloop.analysis.adapters:StarDistSegmenter",
    "bioimageio": "scopeloop.analysis.adapters:BioimageIOSegmenter",
}
_REGISTRY: dict[str, SegmenterFactory] = {}


def register_segmenter(name: str) -> Callable[[SegmenterFactory], SegmenterFactory]:
    """Class/function decorator registering a segmenter factory under ``name``.

    The factory is called as ``factory(device=..., **options)``.
    """

    def deco(factory: SegmenterFactory) -> SegmenterFactory:
        _REGISTRY[name] = factory
        return factory

    return deco


def available_segmenters() -> list[str]:
    """Names that :func:`get_segmenter` accepts (adapters may still need a package)."""
    return sorted(set(_BUILTIN) | set(_REGISTRY))


def select_device(device: str = "auto") -> str:
    """Resolve ``"auto"`` to the best torch device here (cuda, then mps, then cpu).

    An explicit device is checked, so a typo or a missing GPU fails at set-up
    with a clear message rather than on the first frame.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(
            f"device {device!r} is not a torch device (use auto, cpu, cuda, cuda:N or mps)"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r} asked for, but MPS is not available here")
    return device


def get_segmenter(name: str, device: str = "auto", **options: Any) -> Segmenter:
    """Build the segmenter registered as ``name`` on ``device``.

    Parameters
    ----------
    name : str
        One of :func:`available_segmenters`.
    device : str
        ``"auto"`` (cuda, mps, cpu in that order) or an explicit torch device.
    **options
        Passed to the segmenter's constructor (e.g. ``weights=`` for ``unet``).

    Raises
    ------
    ValueError
        Unknown name or unusable device.
    ImportError
        An adapter whose package is not installed (the message says what to install).
    """
    factory = _REGISTRY.get(name)
    if factory is None:
        target = _BUILTIN.get(name)
        if target is None:
            raise ValueError(
                f"unknown segmenter {name!r}; choose from {', '.join(available_segmenters())}"
            )
        module_name, attr = target.split(":")
        factory = getattr(importlib.import_module(module_name), attr)
    return factory(device=device, **options)


def parse_weights(spec: str | Path) -> tuple[str, Path]:
    """``"[SEGMENTER=]PATH"`` -> (segmenter, path); a bare path is U-Net weights.

    e.g. ``bioimageio=model.zip`` (a bioimage.io package), ``cellpose=my_model``.
    """
    text = str(spec)
    name, sep, rest = text.partition("=")
    if sep and name in available_segmenters():
        return name, Path(rest)
    return "unet", Path(text)


def segmenter_entries(
    names: Sequence[str],
    weights: Sequence[str | Path] = (),
    tta: bool = False,
    nucleus_diameter_px: float | str | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, registry name, options)`` for ``names`` plus one segmenter per
    weights entry (see :func:`parse_weights`), labelled ``<segmenter>:<path>``, so
    several trained models can be compared side by side.

    With ``tta``, every U-Net entry is followed by the same network with
    test-time flip averaging, labelled ``<label>+tta``. ``nucleus_diameter_px``
    goes to every U-Net (it bins frames whose nuclei are larger than it was
    trained on).
    """
    out: list[tuple[str, str, dict[str, Any]]] = [(n, n, {}) for n in names]
    for spec in weights:
        kind, path = parse_weights(spec)
        out.append((f"{kind}:{path}", kind, {"weights": path}))
    if nucleus_diameter_px is not None:
        out = [
            (label, kind, {**opts, "nucleus_diameter_px": nucleus_diameter_px})
            if kind == "unet" else (label, kind, opts)
            for label, kind, opts in out
        ]  # fmt: skip
    if not tta:
        return out
    with_tta: list[tuple[str, str, dict[str, Any]]] = []
    for label, kind, options in out:
        with_tta.append((label, kind, options))
        if kind == "unet":
            with_tta.append((f"{label}+tta", kind, {**options, "tta": True}))
    return with_tta


def nonfinite_pixels(image: NDArray[Any]) -> str | None:
    """Where a float image holds NaN or infinite pixels, in words; None when it holds none.

    Such pixels (from registration or stitching, say) make every per-frame
    statistic NaN, so a segmenter would silently return nothing.
    """
    if not np.issubdtype(image.dtype, np.floating):
        return None
    bad = ~np.isfinite(image)
    if not bad.any():
        return None
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    return (
        f"{int(bad.sum())} pixel(s) are NaN or infinite (the first at index {first}); "
        "replace them first, e.g. with numpy.nan_to_num"
    )


def as_batch(frames: NDArray[Any]) -> tuple[NDArray[Any], bool]:
    """``(frames as (N, Y, X), was_2d)``; rejects other shapes and NaN pixels, saying where."""
    arr = np.asarray(frames)
    if arr.ndim not in (2, 3):
        raise ValueError(f"segmenters take (Y, X) or (N, Y, X) frames, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[-2] > 4:
        raise ValueError(
            f"frames of shape {arr.shape} look like one RGB(A) image (Y, X, colour), not "
            "(N, Y, X) frames; pass one channel, e.g. image[..., 0]"
        )
    problem = nonfinite_pixels(arr)
    if problem:
        raise ValueError(f"frames of shape {arr.shape}: {problem}")
    return (arr[None], True) if arr.ndim == 2 else (arr, False)
