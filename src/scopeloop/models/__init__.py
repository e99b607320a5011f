"""Bottom layer: plain data models shared by every other layer."""

from .actions import Action, Reimage, Reposition, Retime, Skip, Stop
from .detections import Detection, FrameInfo

__all__ = [
    "Action",
    "Detection",
    "FrameInfo",
    "Reimage",
    "Reposition",
    "Retime",
    "Skip",
    "Stop",
]
