"""Reading a weights file written by ``scopeloop train``.

Both networks are saved the same way (a ``.pt`` of ``{"state_dict", "meta"}``), so
one given where the other belongs, or a file of another program, is the usual
mistake: it is named here, with the file, instead of torch's list of missing keys
or its unpickling advice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["KINDS", "read_weights"]

#: what each kind of weights is called, the first part of every one of its tensor
#: names, and where a user gives such weights
KINDS: dict[str, tuple[str, frozenset[str], str]] = {
    "unet": (
        "U-Net",
        frozenset({"down", "up", "head"}),
        "as analysis.weights in a protocol or --weights on the command line",
    ),
    "stage_classifier": (
        "stage-classifier",
        frozenset({"features", "head"}),
        "as a mitosis detector's classifier_weights in a protocol",
    ),
}


def read_weights(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The float32 tensors and the metadata of a ``kind`` weights file (see :data:`KINDS`).

    Raises ``ValueError`` naming the file when it is not a torch file, not one written
    by ``scopeloop train``, or holds the other network's weights.
    """
    p = Path(path)
    name, parts, _ = KINDS[kind]
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise ValueError(
            f"{p}: not a weights file written by scopeloop train (torch cannot read it: "
            f"{type(exc).__name__})"
        ) from None
    state = blob.get("state_dict") if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{p}: not a weights file written by scopeloop train (no 'state_dict')")
    found = {str(k).split(".")[0] for k in state}
    if not found <= parts:
        other = [k for k, (_, o, _) in KINDS.items() if k != kind and found <= o]
        if other:
            other_name, _, where = KINDS[other[0]]
            raise ValueError(
                f"{p}: these are {other_name} weights, not {name} weights; give them {where}"
            )
        raise ValueError(f"{p}: not {name} weights (tensors {', '.join(sorted(found))})")
    try:
        meta = json.loads(blob.get("meta", "{}"))
    except (TypeError, json.JSONDecodeError):
        raise ValueError(f"{p}: the weights' metadata is not readable JSON") from None
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return tensors, meta
