"""The simulated microscope: a virtual live-cell specimen with ground truth.

Devices for pymmcore-plus ``UniMMCore`` (:mod:`.devices`) render the specimen
(:mod:`.specimen`, :mod:`.render`) through shared optics (:mod:`.optics`,
:mod:`.nuclei`). One :class:`SimWorld` per core holds the specimen and the clock.
"""

from .specimen import CellStage, MitosisRecord, Specimen, SpecimenOptions
from .world import FaultKnobs, SimWorld, is_simulated, world_of

__all__ = [
    "CellStage",
    "FaultKnobs",
    "MitosisRecord",
    "SimWorld",
    "Specimen",
    "SpecimenOptions",
    "is_simulated",
    "world_of",
]
