"""A compact torch U-Net segmenter with instance extraction on the same device.

The network predicts two maps per pixel: foreground probability and a
*centre-ness* (distance to the nucleus outline, normalised to 1 at each
nucleus' centre). Instances come from those maps without leaving the device:

1. seeds = foreground pixels with centre-ness above a threshold; connected
   seed regions get one id each by iterated 3x3 maxima of int32 pixel indices
   with pointer jumping (a GPU connected-components labelling);
2. the ids grow into the foreground in descending order of centre-ness
   (a flooding, watershed-like propagation, again by 3x3 maxima);
3. objects below a minimum size or a minimum mean foreground probability
   (out-of-focus blobs the network is unsure of) are dropped and ids made
   consecutive per frame with one ``torch.unique``.

Nuclei larger than any the network was trained on (a high-magnification
objective without binning) are segmented on frames mean-binned by an integer
factor, given the typical nucleus diameter; the labels are scaled back up on
the device. Only the final int32 label images are copied to the host. On CUDA
the network runs in half precision with channels-last memory and the
propagation steps run as compiled, fused kernels; on CPU it is the same code,
eager, in float32. Input frames of any dtype and intensity range are normalised per frame
by percentiles (1st -> 0, 99.8th -> 1).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .intensity import clip_hot_pixels, frame_percentiles
from .segmenter import as_batch, select_device
from .weights_file import read_weights

__all__ = [
    "AUTO_DIAMETER",
    "EXTRACTION_DEFAULTS",
    "UNet",
    "UNetSegmenter",
    "bin_factor",
    "clip_hot_pixels",
    "default_weights_path",
    "extract_instances",
    "fold_batchnorm",
    "load_unet",
    "median_diameter_px",
    "normalise_frames",
    "recorded_diameter_px",
    "trained_diameter_px",
]

#: instance-extraction settings a weights record holds, with the values used when it does not
EXTRACTION_DEFAULTS: dict[str, Any] = {
    "fg_threshold": 0.5, "seed_threshold": 0.55, "min_confidence": 0.0, "min_size_px": 12,
}  # fmt: skip
#: channels per level; 4 down-samplings, so inputs are padded to a multiple of 16
DEFAULT_CHANNELS = (8, 16, 32, 64, 128)
_MULTIPLE = 16
#: nucleus radius range of the training images when the weights do not record it
_TRAINED_RADIUS_PX = (4.0, 22.0)
#: ``nucleus_diameter_px`` value that has the segmenter measure the nuclei in each call
AUTO_DIAMETER = "auto"
#: smallest binned frame side a diameter probe runs on (a few nuclei across at most)
_MIN_PROBE_PX = 64
#: objects a full-resolution measure needs to count towards a held diameter: a few
#: objects may be one large nucleus the network cut into pieces
_HOLD_MIN_OBJECTS = 10


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with a foreground and a centre-ness output (logits).

    Parameters
    ----------
    channels : sequence of int
        Feature channels per level, finest first.
    """

    def __init__(self, channels: tuple[int, ...] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.down = nn.ModuleList()
        c_prev = 1
        for c in self.channels:
            self.down.append(_Block(c_prev, c))
            c_prev = c
        self.up = nn.ModuleList(
            _Block(self.channels[i + 1] + self.channels[i], self.channels[i])
            for i in reversed(range(len(self.channels) - 1))
        )
        self.head = nn.Conv2d(self.channels[0], 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 1, H, W)`` normalised frames -> ``(N, 2, H, W)`` logits (H, W multiples of 16)."""
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self._up_block(block, x, skip)
        out: Tensor = self.head(x)
        return out

    @staticmethod
    def _up_block(block: nn.Module, up: Tensor, skip: Tensor) -> Tensor:
        out: Tensor = block(torch.cat([up, skip], dim=1))
        return out


def fold_batchnorm(model: UNet) -> UNet:
    """An inference copy of ``model`` with each batch norm folded into its convolution.

    The same function, with one full pass over every feature map less per layer
    (a tenth of the network's GPU time at 2048x2048). ``model`` is left as it is.
    """
    folded = copy.deepcopy(model).eval()
    for block in [*folded.down, *folded.up]:
        for i, layer in enumerate(block):
            if isinstance(layer, nn.BatchNorm2d):
                conv = block[i - 1]
                assert isinstance(conv, nn.Conv2d)
                block[i - 1] = fuse_conv_bn_eval(conv, layer)
                block[i] = nn.Identity()
    return folded


class _SplitUp(nn.Module):
    """An up block whose first convolution reads the upsampled and the skip features
    as two convolutions summed, instead of one over their concatenation."""

    def __init__(self, block: nn.Module, c_up: int) -> None:
        super().__init__()
        assert isinstance(block, nn.Sequential)
        conv = block[0]
        assert isinstance(conv, nn.Conv2d)
        c_out, c_in = conv.out_channels, conv.in_channels
        self.from_up = nn.Conv2d(c_up, c_out, 3, padding=1, bias=conv.bias is not None)
        self.from_skip = nn.Conv2d(c_in - c_up, c_out, 3, padding=1, bias=False)
        with torch.no_grad():
            self.from_up.weight.copy_(conv.weight[:, :c_up])
            self.from_skip.weight.copy_(conv.weight[:, c_up:])
            if conv.bias is not None:
                assert self.from_up.bias is not None
                self.from_up.bias.copy_(conv.bias)
        self.rest = nn.Sequential(*list(block)[1:])

    def forward(self, up: Tensor, skip: Tensor) -> Tensor:
        h = self.from_up(up)
        h += self.from_skip(skip)  # a convolution's output: not needed for its backward
        out: Tensor = self.rest(h)
        return out


class SplitUNet(UNet):
    """An inference copy of a :class:`UNet` that never concatenates feature maps.

    A 3x3 convolution over ``cat([up, skip])`` is the sum of one over ``up`` and
    one over ``skip`` with the weights split by input channel, so each up
    block's first convolution runs as two: the same function (to float
    rounding), without writing and reading the concatenated map, the largest
    at full resolution. On this CPU the concatenations in channels-last memory
    were a fifth of a 2048x2048 frame's time (``benchmarks/unet_stages.py``
    times both).
    """

    def __init__(self, model: UNet) -> None:
        nn.Module.__init__(self)  # the layers are the model's, not new ones
        model = copy.deepcopy(model).eval()
        self.channels = model.channels
        self.down = model.down
        ups = list(reversed(range(len(self.channels) - 1)))
        self.up = nn.ModuleList(
            _SplitUp(block, self.channels[i + 1]) for block, i in zip(model.up, ups, strict=True)
        )
        self.head = model.head

    @staticmethod
    def _up_block(block: nn.Module, up: Tensor, skip: Tensor) -> Tensor:
        out: Tensor = block(up, skip)
        return out


def normalise_frames(
    frames: Tensor, lo_pct: float = 1.0, hi_pct: float = 99.8, clean: bool = True
) -> Tensor:
    """Per-frame percentile normalisation of ``(N, H, W)`` frames to float32.

    Hot pixels are replaced first (:func:`clip_hot_pixels`), unless ``clean`` is
    False (frames that already were).
    """
    x = clip_hot_pixels(frames.float()) if clean else frames.float()
    lo, hi = frame_percentiles(x, lo_pct, hi_pct)
    return (x - lo) / torch.clamp(hi - lo, min=1e-6)


def flip_averaged(forward: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Sigmoid maps of ``forward`` on ``x`` and its three flips (left-right,
    up-down, both), each flipped back, averaged: float32, shaped like the maps.

    Flips are their own inverse, so the average sees every pixel from four
    orientations and no longer depends on which way the frame lies."""
    prob = torch.sigmoid(forward(x).float())
    for dims in ((-1,), (-2,), (-2, -1)):
        prob = prob + torch.sigmoid(forward(x.flip(dims)).float()).flip(dims)
    return prob / 4


def _max3x3(x: Tensor) -> Tensor:
    """3x3 neighbourhood maximum of non-negative ``(N, 1, H, W)`` maps (zero outside).

    From shifted views: element-wise maxima, which the compiled GPU steps fuse
    into one kernel and which on CPU are tens of times faster than torch's
    stride-1 max-pooling.
    """
    p = F.pad(x, (1, 1, 1, 1))
    r = torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])
    return torch.maximum(torch.maximum(r[..., :-2], r[..., 1:-1]), r[..., 2:])


def _cc_steps(labels: Tensor, mask: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``k`` steps of connected-component labelling on pixel-index ids.

    Each pixel takes its neighbours' max id, then the id held by the pixel its id
    names (pointer jumping: that pixel is in the same region and holds at least
    as high an id), so ids cross a region in steps that grow with the log of its
    width, not with the width. Each region ends labelled with its highest pixel
    index. Returns the labels before and after the last step.
    """
    n = labels.shape[0]
    before = labels
    for _ in range(k):
        # unmasked pixels are zeroed after the jump; the pixel an id names is masked
        flat = _max3x3(labels).reshape(n, -1)
        jumped = flat.gather(1, (flat - 1).clamp(min=0).long()).view_as(labels) * mask
        before, labels = labels, jumped
    return before, labels


def _grow_steps(labels: Tensor, allowed: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """``k`` flooding steps: unlabelled ``allowed`` pixels take their neighbours' max id.
    Returns the labels before and after the last step."""
    before = labels
    for _ in range(k):
        before, labels = labels, torch.where((labels == 0) & allowed, _max3x3(labels), labels)
    return before, labels


#: step functions compiled for CUDA, made on first use
_COMPILED: dict[Any, Any] = {}


def _compiler_disabled() -> bool:
    """Whether torch.compile is switched off for this process (``TORCH_COMPILE_DISABLE``)."""
    try:
        import torch._dynamo.config as dynamo_config
    except ImportError:  # pragma: no cover - a torch without dynamo compiles nothing
        return True
    return bool(getattr(dynamo_config, "disable", False))


def _run_steps(
    step: Any, labels: Tensor, mask: Tensor, k: int, compiled: bool
) -> tuple[Tensor, Tensor]:
    """``step(labels, mask, k)``, compiled when asked (and possible).

    Eager, one step is several kernels, each a full pass over the frame; at
    2048x2048 and over a hundred steps per frame that is most of the segmentation
    time on a GPU. Compiled (torch.compile, Triton), a step is one or two fused
    kernels. Shapes are symbolic, so one compilation serves every frame size
    (and one more every batch of more than one frame).
    """
    if not compiled:
        return step(labels, mask, k)  # type: ignore[no-any-return]
    fn = _COMPILED.get(step)
    if fn is None and _compiler_disabled():
        # torch.compile would hand back the eager steps without a word
        warnings.warn(
            "compiled instance extraction is disabled (TORCH_COMPILE_DISABLE=1); the eager "
            "steps run, several times slower on a GPU",
            RuntimeWarning,
            stacklevel=2,
        )
        fn = _COMPILED[step] = step
    if fn is None:
        fn = _COMPILED[step] = torch.compile(step, dynamic=True)
    try:
        return fn(labels, mask, k)  # type: ignore[no-any-return]
    except Exception as exc:  # no Triton or compiler here: the eager steps, same result
        warnings.warn(
            f"compiled instance extraction unavailable ({type(exc).__name__}: {exc}); "
            "using eager steps",
            RuntimeWarning,
            stacklevel=2,
        )
        _COMPILED[step] = step
        return step(labels, mask, k)  # type: ignore[no-any-return]


def _capture_graph(device: torch.device, body: Any, warm_ups: int = 1) -> tuple[Any, Any]:
    """``body()`` captured as a CUDA graph, and what it returned during the capture.

    It runs ``warm_ups`` times on a side stream first, as CUDA graphs ask:
    compilation, cuDNN's algorithm choice and allocations happen outside it."""
    side = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warm_ups):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = body()
    return graph, out


class _GraphedSteps:
    """``k`` propagation steps of one shape captured in one CUDA graph.

    A replay is one launch instead of the steps' kernels (and, compiled, their
    guards); it also computes whether the last step changed anything and writes
    the new labels back into its own input, so replays follow one another with
    one read of that flag (a device sync) each, as the plain loop checks. Off
    CUDA nothing is captured and a replay runs the same body eagerly (what the
    CPU tests check against the plain loop).
    """

    @torch.inference_mode()
    def __init__(self, step: Any, labels: Tensor, mask: Tensor, k: int, compiled: bool) -> None:
        self.labels, self.mask = labels.clone(), mask.clone()
        self._step, self._k, self._compiled = step, k, compiled
        self.changed = torch.ones((), dtype=torch.bool, device=labels.device)
        self.graph: Any = None
        if labels.is_cuda:  # each call copies its labels in, so the warm-up's write is moot
            self.graph = _capture_graph(labels.device, self._body)[0]

    def _body(self) -> None:
        before, after = _run_steps(self._step, self.labels, self.mask, self._k, self._compiled)
        self.changed = (before != after).any()
        self.labels.copy_(after)

    @torch.inference_mode()
    def __call__(self, labels: Tensor, mask: Tensor, replays: int) -> Tensor:
        self.labels.copy_(labels)
        self.mask.copy_(mask)
        for _ in range(replays):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._body()
            if not bool(self.changed):
                break
        return self.labels.clone()


#: captured propagation runs, per step function, shape, device and step count
_GRAPHS: dict[tuple[Any, ...], _GraphedSteps] = {}
#: captures kept per cache: each holds its own device memory (a network's holds every
#: activation of its frame shape), so a folder of many frame sizes must not pile them up
_GRAPHS_KEPT = 8


def _cached(cache: dict[Any, Any], key: Any, make: Any) -> Any:
    """``cache[key]``, made by ``make()`` if missing; the oldest entry goes when full."""
    if key not in cache:
        if len(cache) >= _GRAPHS_KEPT:
            del cache[next(iter(cache))]
        cache[key] = make()
    return cache[key]


def _propagate(
    step: Any,
    labels: Tensor,
    mask: Tensor,
    max_iter: int,
    compiled: bool,
    check_every: int = 4,
    graphs: bool = False,
) -> Tensor:
    """Repeat ``step`` until the labels stop changing (checked every few steps,
    each check a device sync): a step that changes nothing has reached the end.
    ``graphs``: on CUDA, each run of ``check_every`` steps is a replayed CUDA graph."""
    replays = -(-max_iter // check_every)
    if graphs and labels.is_cuda:
        key = (step, tuple(labels.shape), labels.device, check_every, compiled)
        runner = _cached(
            _GRAPHS, key, lambda: _GraphedSteps(step, labels, mask, check_every, compiled)
        )
        return runner(labels, mask, replays)  # type: ignore[no-any-return]
    for _ in range(replays):
        before, labels = _run_steps(step, labels, mask, check_every, compiled)
        if torch.equal(before, labels):
            break
    return labels


def _connected_components(
    mask: Tensor, max_iter: int, compiled: bool = False, check_every: int = 4, graphs: bool = False
) -> Tensor:
    """Label 8-connected regions of a ``(N, 1, H, W)`` bool mask (ids = max pixel index + 1)."""
    n, _, h, w = mask.shape
    # int32 ids: exact for any frame (float32 would merge ids above 2**24, i.e. frames
    # over ~2900x2900 once seedless objects are offset by the frame's pixel count)
    idx = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.int32).view(1, 1, h, w)
    labels = torch.where(mask, idx.expand(n, 1, h, w), idx.new_zeros(()))
    return _propagate(_cc_steps, labels, mask, max_iter, compiled, check_every, graphs)


def extract_instances(
    fg_prob: Tensor,
    centre: Tensor,
    *,
    fg_threshold: float = 0.5,
    seed_threshold: float = 0.55,
    levels: int = 3,
    min_size_px: int = 12,
    min_confidence: float = 0.0,
    max_iter: int = 256,
    compiled: bool = False,
    check_every: int = 4,
    graphs: bool = False,
) -> Tensor:
    """Instance labels from foreground and centre-ness maps, on their device.

    Parameters
    ----------
    fg_prob, centre : (N, H, W) float tensors in [0, 1]
    fg_threshold : float
        Foreground probability above which a pixel belongs to a nucleus.
    seed_threshold : float
        Centre-ness above which a foreground pixel is part of a nucleus' seed.
    levels : int
        Flooding levels between the seed threshold and the outline. Three score as
        six did (AP@0.5 within 0.0003 on the test sets) in a quarter fewer steps.
    min_size_px : int
        Smaller objects are dropped.
    min_confidence : float
        Objects whose mean foreground probability is lower are dropped.
    max_iter : int
        Cap on propagation steps per stage (a safety net; convergence is checked).
    compiled : bool
        Run the propagation steps as fused compiled kernels (for CUDA; the
        labels are the same).
    check_every : int
        Propagation steps between convergence checks (each a device sync); the
        labels are the same for any value.
    graphs : bool
        On CUDA, replay each run of ``check_every`` steps as a captured CUDA graph
        (one launch instead of the steps' kernels; captured once per frame shape,
        the labels are the same). Ignored for tensors on other devices.

    Returns
    -------
    (N, H, W) int32 tensor, ids 1..K per frame, 0 = background.
    """
    n, h, w = fg_prob.shape
    fg = (fg_prob > fg_threshold).unsqueeze(1)
    c = centre.float().unsqueeze(1) * fg
    run: dict[str, Any] = {
        "max_iter": max_iter,
        "compiled": compiled,
        "check_every": check_every,
        "graphs": graphs,
    }
    labels = _connected_components(fg & (c > seed_threshold), **run)
    for t in torch.linspace(seed_threshold, 0.0, levels + 1)[1:].tolist():
        allowed = fg & (c > t) if t > 0 else fg
        labels = _propagate(_grow_steps, labels, allowed, **run)
    # foreground no seed reached (nuclei cut by the frame edge, faint specks): their own
    # objects, with ids above every seeded one
    rest = fg & (labels == 0)
    orphans = _connected_components(rest, **run)
    labels = torch.where(rest, orphans + h * w, labels)
    # consecutive ids per frame, small objects dropped, in one unique over the batch
    hw1 = 2 * h * w + 1
    key = labels.view(n, -1).long() + torch.arange(n, device=labels.device).view(n, 1) * hw1
    uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    keep = ((uniq % hw1) != 0) & (counts >= min_size_px)
    if min_confidence > 0:
        # background pixels all share one id; their sums go to spare bins instead, so
        # millions of GPU threads do not queue on one address (5 ms at 2048x2048)
        spare = 1024
        target = inverse.view(-1)
        pixel = torch.arange(target.numel(), device=target.device)
        target = torch.where(labels.view(-1) == 0, len(uniq) + pixel % spare, target)
        fg_sum = torch.zeros(len(uniq) + spare, device=labels.device, dtype=torch.float32)
        fg_sum.scatter_add_(0, target, fg_prob.reshape(-1).float())
        keep &= fg_sum[: len(uniq)] >= min_confidence * counts
    frame_of = uniq // hw1
    cum = torch.cumsum(keep.long(), 0)
    first = torch.searchsorted(uniq, torch.arange(n, device=uniq.device) * hw1)
    base = torch.where(first > 0, cum[(first - 1).clamp(min=0)], torch.zeros_like(first))
    new_id = torch.where(keep, cum - base[frame_of], torch.zeros_like(cum))
    return new_id[inverse].view(n, h, w).to(torch.int32)


def trained_diameter_px(meta: dict[str, Any]) -> float:
    """The largest nucleus diameter the weights' training images held (44 px shipped).

    Weights fine-tuned on a user folder were fine-tuned at the scale of the weights
    they started from (a folder of larger nuclei is binned to it), so their record,
    which has no synthetic recipe, defers to that of ``init_from``."""
    data = meta.get("data")
    recipe = data.get("recipe") if isinstance(data, dict) else None  # none for user folders
    if isinstance(recipe, dict) and "radius_px" in recipe:
        return 2 * float(recipe["radius_px"][1])
    parent = meta.get("init_from")
    return trained_diameter_px(parent) if isinstance(parent, dict) else 2 * _TRAINED_RADIUS_PX[1]


def bin_factor(nucleus_diameter_px: float | None, meta: dict[str, Any]) -> int:
    """Integer binning that brings nuclei of this diameter into the trained size range.

    1 when the diameter is unknown or within the range. Never less than 1: smaller
    nuclei than the range are segmented as they are (interpolating a frame up
    smooths its pixel noise into something the network never saw).
    """
    if nucleus_diameter_px is None:
        return 1
    if not nucleus_diameter_px > 0:
        raise ValueError(f"nucleus_diameter_px must be positive, got {nucleus_diameter_px!r}")
    return max(1, math.ceil(nucleus_diameter_px / trained_diameter_px(meta)))


def recorded_diameter_px(meta: dict[str, Any]) -> float | None:
    """The nucleus diameter of the folder the weights were fine-tuned on binned (its
    images were over the trained range, see ``scopeloop train --data``), else None.
    Such weights bin frames the same way unless told another diameter."""
    data = meta.get("data")
    if isinstance(data, dict) and int(data.get("bin_factor", 1)) > 1:
        return float(data["nucleus_diameter_px"])
    return None


def median_diameter_px(labels: Tensor) -> float:
    """Equivalent diameter of the median object of ``(N, H, W)`` labels, pooled over
    the frames (nan when there is none): one host sync."""
    return _objects(labels)[0]


def _objects(labels: Tensor) -> tuple[float, int]:
    """(median equivalent diameter, number) of the objects of ``(N, H, W)`` labels."""
    n, h, w = labels.shape
    keyed = labels.long() + (torch.arange(n, device=labels.device) * (h * w + 1)).view(n, 1, 1)
    ids, areas = torch.unique(keyed[labels > 0], return_counts=True)
    if not len(ids):
        return math.nan, 0
    return 2 * math.sqrt(float(areas.float().median()) / math.pi), len(ids)


def default_weights_path() -> Path:
    """The weights shipped inside the package."""
    return Path(str(resources.files("scopeloop.analysis") / "weights" / "unet.pt"))


def load_unet(path: str | Path | None = None) -> tuple[UNet, dict[str, Any]]:
    """Load a U-Net and its metadata (training recipe, thresholds) from ``path``.

    ``None`` loads the shipped weights.
    """
    p = Path(path) if path is not None else default_weights_path()
    if not p.is_file():
        raise FileNotFoundError(
            f"U-Net weights not found at {p}; train them with `scopeloop train` "
            "or pass weights=PATH"
        )
    state, meta = read_weights(p, "unet")
    model = UNet(tuple(meta.get("channels", DEFAULT_CHANNELS)))
    model.load_state_dict(state)
    model.eval()
    return model, meta


class UNetSegmenter:
    """The torch U-Net behind the :class:`~scopeloop.analysis.segmenter.Segmenter` protocol.

    Parameters
    ----------
    device : str
        ``"auto"`` (cuda, mps, cpu) or an explicit torch device.
    weights : path, optional
        A weights file written by ``scopeloop train`` (default: the shipped one).
    half : bool, optional
        Half-precision network (default: on for CUDA, off elsewhere).
    fg_threshold, seed_threshold, min_size_px, min_confidence : optional
        Instance-extraction settings (defaults from the weights' metadata).
    model : UNet, optional
        An in-memory model (used by training); overrides ``weights``.
    tta : bool
        Test-time augmentation: average the maps over the frame and its three
        flips (left-right, up-down, both). Four network passes per frame for a
        small accuracy gain; the flips are run one after another, so memory
        stays that of one pass.
    nucleus_diameter_px : float or "auto", optional
        Typical nucleus diameter in the frames. Nuclei larger than the training
        images held (diameter above 44 px for the shipped weights, e.g. 40x
        without binning) are segmented on frames mean-binned by the smallest
        integer factor that brings them into range (:attr:`bin_factor`);
        labels come back at full resolution. None: frames as they are (or, for
        weights fine-tuned on a folder of larger nuclei, binned as that folder
        was: :func:`recorded_diameter_px`).
        ``"auto"``: measured in each call from the network's own objects, in
        coarse probes and at full resolution, for images of unknown pixel size;
        the call's frames share one binning (:attr:`last_diameter_px`,
        :attr:`last_bin_factor`).
    hold_after : int, optional
        With ``"auto"``, for a stream of frames of one specimen and objective (a
        time-lapse): after this many calls gave a sure measure (a coarse probe saw
        large nuclei, or the full-resolution pass found at least 10 objects, not
        specks near the smallest size kept), the
        median of those measures is held (:attr:`held_diameter_px`) and later
        calls are segmented at its binning without measuring. An empty frame, or
        one large nucleus cut into pieces, then cannot unbin a frame of a run of
        40x frames, and in-range frames stop paying for the probes. None: measure
        in every call.
    compiled : bool, optional
        Instance extraction as fused compiled kernels (default: on for CUDA,
        where it is most of the time per frame otherwise; needs Triton, and falls
        back to the eager steps with a warning without it). The first frame of a
        new shape pays the compilation: call :meth:`warm_up` before acquiring.
    channels_last : bool, optional
        The network in channels-last memory (default: on for CUDA and CPU). On
        CPU a frame takes 1.3x (512x512) to 1.6x (2048x2048) less time than in
        the default layout (oneDNN's blocked convolutions); the maps differ by
        float rounding only (``benchmarks/unet_stages.py --device cpu``).
    split_skips : bool, optional
        Run each up block's first convolution as two, over the upsampled and the
        skip features, summed (:class:`SplitUNet`), instead of over their
        concatenation (default: on for CPU, where it makes the network 1.4x
        faster at 2048x2048; off elsewhere until timed there). The same maps to
        float rounding.
    cuda_graphs : bool
        CUDA only: the network and each run of propagation steps are captured as
        CUDA graphs, once per frame shape, and replayed (one launch each instead
        of their many kernels; the labels are the same). Off by default until
        timed against the plain path on a GPU (``benchmarks/unet_stages.py``).
    """

    name = "unet"

    def __init__(
        self,
        device: str = "auto",
        weights: str | Path | None = None,
        half: bool | None = None,
        fg_threshold: float | None = None,
        seed_threshold: float | None = None,
        min_size_px: int | None = None,
        min_confidence: float | None = None,
        model: UNet | None = None,
        tta: bool = False,
        nucleus_diameter_px: float | str | None = None,
        hold_after: int | None = None,
        compiled: bool | None = None,
        cuda_graphs: bool = False,
        channels_last: bool | None = None,
        split_skips: bool | None = None,
    ) -> None:
        self.tta = bool(tta)
        self.device = select_device(device)
        self._dev = torch.device(self.device)
        if cuda_graphs and self._dev.type != "cuda":
            raise ValueError(f"cuda_graphs=True needs a CUDA device, not {self.device!r}")
        self.cuda_graphs = bool(cuda_graphs)
        #: captured network graphs per input shape and dtype: (graph, input, output)
        self._net_graphs: dict[tuple[Any, ...], tuple[Any, Tensor, Tensor]] = {}
        meta: dict[str, Any]
        #: the weights file in use (None for an in-memory model); run provenance hashes it
        self.weights_path: Path | None = None
        if model is not None:
            net, meta = model, {}
        else:
            net, meta = load_unet(weights)
            self.weights_path = Path(weights) if weights is not None else default_weights_path()
        self.meta = meta
        if isinstance(nucleus_diameter_px, str) and nucleus_diameter_px != AUTO_DIAMETER:
            raise ValueError(
                f"nucleus_diameter_px must be a number of pixels or {AUTO_DIAMETER!r}, "
                f"got {nucleus_diameter_px!r}"
            )
        #: the nucleus diameter is measured in each call (``nucleus_diameter_px="auto"``)
        self.auto_diameter = nucleus_diameter_px == AUTO_DIAMETER
        diameter = None if isinstance(nucleus_diameter_px, str) else nucleus_diameter_px
        if nucleus_diameter_px is None:  # weights fine-tuned binned bin as they learnt
            diameter = recorded_diameter_px(meta)
        #: frames are mean-binned by this factor before the network (1: not at all;
        #: with :attr:`auto_diameter`, chosen per call: :attr:`last_bin_factor`)
        self.bin_factor = bin_factor(diameter, meta)
        self.trained_diameter_px = trained_diameter_px(meta)
        #: the binning the last call used, and with :attr:`auto_diameter` the nucleus
        #: diameter it measured (nan: no nucleus found)
        self.last_bin_factor = self.bin_factor
        self.last_diameter_px: float | None = None
        if hold_after is not None and not (self.auto_diameter and hold_after >= 1):
            raise ValueError(
                f"hold_after={hold_after!r}: a number of calls (1 or more) after which an "
                f"'auto' nucleus diameter is held; it needs nucleus_diameter_px='auto'"
            )
        self.hold_after = hold_after
        #: sure measures so far, in full-resolution pixels (see ``hold_after``)
        self.sure_measures: list[float] = []
        #: with ``hold_after``, the diameter held once enough calls measured it
        self.held_diameter_px: float | None = None
        self.half = (self._dev.type == "cuda") if half is None else half
        self.channels_last = (
            self._dev.type in ("cuda", "cpu") if channels_last is None else bool(channels_last)
        )
        self.compiled = (self._dev.type == "cuda") if compiled is None else bool(compiled)
        self.split_skips = self._dev.type == "cpu" if split_skips is None else bool(split_skips)
        folded = fold_batchnorm(net)
        inference: nn.Module = SplitUNet(folded) if self.split_skips else folded
        inference = inference.to(self._dev)
        if self.channels_last:
            inference = inference.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if self.half:
            inference = inference.half()
        #: the inference network (batch norms folded; a :class:`SplitUNet` with ``split_skips``)
        self.model: nn.Module = inference
        given: dict[str, Any] = {
            "fg_threshold": fg_threshold, "seed_threshold": seed_threshold,
            "min_confidence": min_confidence, "min_size_px": min_size_px,
        }  # fmt: skip
        settings = {
            k: given[k] if given[k] is not None else meta.get(k, default)
            for k, default in EXTRACTION_DEFAULTS.items()
        }
        self.fg_threshold = settings["fg_threshold"]
        self.seed_threshold = settings["seed_threshold"]
        self.min_size_px = settings["min_size_px"]
        self.min_confidence = settings["min_confidence"]

    @torch.inference_mode()
    def predict_maps(self, frames: Tensor, cleaned: bool = False) -> tuple[Tensor, Tensor]:
        """``(N, H, W)`` frames on the device -> (foreground prob, centre-ness), float32.

        ``cleaned``: hot pixels already replaced (:func:`clip_hot_pixels`)."""
        x = normalise_frames(frames, clean=not cleaned).unsqueeze(1)
        h, w = x.shape[-2:]
        ph, pw = (-h) % _MULTIPLE, (-w) % _MULTIPLE
        if ph or pw:
            # mirrored, not repeated, edge pixels: a repeated noisy edge row becomes
            # streaks the network takes for nuclei; mirroring needs pad < frame size
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.half:
            x = x.half()
        if not self.tta:
            prob = torch.sigmoid(self._forward(x).float())
        else:
            # in the padded frame, so the crop below is the same for every flip
            prob = flip_averaged(self._forward, x)
        prob = prob[..., :h, :w]
        return prob[:, 0], prob[:, 1]

    def _forward(self, x: Tensor) -> Tensor:
        """The network's logits; with :attr:`cuda_graphs`, a replayed capture whose
        output buffer the next call overwrites (callers use it at once)."""
        if not self.cuda_graphs:
            return self.model(x)  # type: ignore[no-any-return]
        key = (tuple(x.shape), x.dtype, x.is_contiguous(memory_format=torch.channels_last))
        entry: tuple[Any, Tensor, Tensor] = _cached(self._net_graphs, key, lambda: self._capture(x))
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, x: Tensor) -> tuple[Any, Tensor, Tensor]:
        """The network captured for frames shaped like ``x``: (graph, input, output)."""
        static_in = x.clone()
        graph, static_out = _capture_graph(x.device, lambda: self.model(static_in), warm_ups=3)
        return graph, static_in, static_out

    def segment_tensor(self, frames: Tensor) -> Tensor:
        """Device-side path: ``(N, H, W)`` tensor -> ``(N, H, W)`` int32 labels tensor."""
        return self._segment(frames)[0]

    @torch.inference_mode()
    def _segment(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Labels, and the float32 frames they were found in with hot pixels replaced
        (at full resolution, before any binning)."""
        cleaned = clip_hot_pixels(frames.float())
        if self.auto_diameter and self.held_diameter_px is None:
            diameter, self.last_bin_factor, labels, sure = self._estimate(cleaned)
            self.last_diameter_px = diameter
            if sure and self.hold_after is not None:
                self._count_towards_hold(diameter)
        else:
            labels = self._segment_binned(cleaned, self.bin_factor)
            self.last_bin_factor = self.bin_factor
        return labels, cleaned

    def _count_towards_hold(self, diameter: float) -> None:
        self.sure_measures.append(diameter)
        if self.hold_after is not None and len(self.sure_measures) >= self.hold_after:
            # the median: one probe that took two touching nuclei for one is outvoted
            held = float(np.median(self.sure_measures))
            self.held_diameter_px = held
            self.bin_factor = bin_factor(held, self.meta)

    def _segment_binned(self, cleaned: Tensor, f: int, full_size: bool = True) -> Tensor:
        """Labels of cleaned frames segmented after mean-binning by ``f`` (at the
        binned size unless ``full_size``: see :meth:`_full_size`)."""
        x = cleaned
        h, w = cleaned.shape[-2:]
        if f > 1:  # as a camera bins: mean of f x f pixels (edge pixels repeated to fill)
            x = F.pad(x.unsqueeze(1), (0, (-w) % f, 0, (-h) % f), mode="replicate")
            x = F.avg_pool2d(x, f).squeeze(1)
        fg, centre = self.predict_maps(x, cleaned=True)
        labels = extract_instances(
            fg,
            centre,
            fg_threshold=float(self.fg_threshold),
            seed_threshold=float(self.seed_threshold),
            min_size_px=int(self.min_size_px),
            min_confidence=float(self.min_confidence),
            compiled=self.compiled,
            graphs=self.cuda_graphs,
        )
        return self._full_size(labels, f, h, w) if full_size else labels

    @staticmethod
    def _full_size(labels: Tensor, f: int, h: int, w: int) -> Tensor:
        """Labels found in frames binned by ``f``, back at the frames' ``h`` x ``w``."""
        if f > 1:
            labels = labels.repeat_interleave(f, -2).repeat_interleave(f, -1)[..., :h, :w]
        return labels

    def _estimate(self, cleaned: Tensor) -> tuple[float, int, Tensor, bool]:
        """Measure the nuclei's diameter and segment at the binning it calls for:
        (diameter px, bin factor, labels, whether the measure is sure: a probe saw
        large nuclei, or the full-resolution pass found many objects).

        The network draws nuclei in its trained size range at their true size, but
        cuts much larger ones into pieces, so the frames alone do not say which
        they hold. Coarse probes settle it: binned by 2, 4, 8, ... (while the
        binned frame is at least 64 px), a median object measured at more than half
        the trained diameter in binned pixels is a large nucleus seen in range,
        while small nuclei, merged by coarse binning, stay under that (and one a
        quarter of the frame across is background, not a nucleus). The largest
        such measure wins; without one, the full-resolution pass gives the
        diameter (which still asks for a 2x bin for nuclei just above the range).
        Costs about 1.3-1.5 full-resolution passes for small nuclei, less for
        large ones.
        """
        top = self.trained_diameter_px
        h, w = cleaned.shape[-2:]
        # each probe's labels kept at its binned size: a quarter of the memory or less
        probes: dict[int, Tensor] = {}
        seen: list[float] = []
        f = 2
        while min(h, w) // f >= _MIN_PROBE_PX:
            probes[f] = self._segment_binned(cleaned, f, full_size=False)
            binned = median_diameter_px(probes[f])
            # a quarter of the frame or more across: background or haze, not a nucleus
            if top / 2 < binned and 4 * f * binned <= min(h, w):
                seen.append(f * binned)  # in full-resolution pixels
            f *= 2
        if seen:
            diameter, sure = max(seen), True
        else:
            probes[1] = self._segment_binned(cleaned, 1)
            diameter, count = _objects(probes[1])
            # many objects, not specks of noise near the smallest size kept
            speck = 2 * math.sqrt(int(self.min_size_px) / math.pi)
            sure = count >= _HOLD_MIN_OBJECTS and diameter >= 1.5 * speck
        chosen = bin_factor(diameter, self.meta) if diameter == diameter else 1  # nan: none
        labels = probes.get(chosen)
        if labels is None:
            labels = self._segment_binned(cleaned, chosen, full_size=False)
        return diameter, chosen, self._full_size(labels, chosen, h, w), sure

    @property
    def last_measure(self) -> dict[str, Any] | None:
        """With :attr:`auto_diameter`, what the last call measured and chose, JSON-ready
        (``diameter_px`` None when it found no nucleus; ``held`` True once the
        diameter is held, see ``hold_after``); else None."""
        if not self.auto_diameter:
            return None
        if self.held_diameter_px is not None:
            return {
                "diameter_px": round(self.held_diameter_px, 2), "bin_factor": self.bin_factor,
                "held": True, "measures": len(self.sure_measures),
            }  # fmt: skip
        d = self.last_diameter_px
        diameter = None if d is None or math.isnan(d) else d
        measure: dict[str, Any] = {"diameter_px": diameter, "bin_factor": self.last_bin_factor}
        if self.hold_after is not None:
            measure["held"] = False
        return measure

    def warm_up(self, height: int, width: int, batch: int = 1) -> None:
        """Run one blank batch of this shape, so the first real frame pays no
        compilation or cuDNN algorithm search (seconds on a GPU; nothing on CPU)."""
        if self._dev.type == "cpu" or min(height, width, batch) < 1:
            return
        self.segment_tensor(torch.zeros((batch, height, width), device=self._dev))

    def to_device(self, frames: NDArray[Any]) -> tuple[Tensor, bool]:
        """``(N, Y, X)`` or ``(Y, X)`` host frames -> ``(N, Y, X)`` device tensor, was-2-D flag."""
        batch, was_2d = as_batch(frames)
        if batch.dtype == np.uint16:
            batch = batch.astype(np.int32)  # torch has no uint16 arithmetic everywhere
        t = torch.from_numpy(np.ascontiguousarray(batch)).to(self._dev, non_blocking=True)
        return t, was_2d

    def segment(self, frames: NDArray[Any]) -> NDArray[np.int32]:
        """Segment ``(N, Y, X)`` (or ``(Y, X)``) frames into int32 instance labels."""
        t, was_2d = self.to_device(frames)
        out = self.segment_tensor(t).cpu().numpy()  # the one host copy
        return out[0] if was_2d else out

    def segment_and_clean(
        self, frames: NDArray[Any]
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """As :meth:`segment`, plus the frames with hot pixels replaced, as float32.

        For what is measured in the same frames (per-object intensities, the stage
        classifier's crops), so that a hot camera pixel inside a nucleus does not
        raise its intensity either. One more host copy, of the cleaned frames.
        """
        t, was_2d = self.to_device(frames)
        labels, cleaned = self._segment(t)
        lab, img = labels.cpu().numpy(), cleaned.cpu().numpy()
        return (lab[0], img[0]) if was_2d else (lab, img)
