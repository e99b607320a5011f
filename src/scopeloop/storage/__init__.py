"""Storage: OME-Zarr images, the frame journal, the decision log and run provenance."""

from .decision_log import DecisionLog, read_decisions
from .run_info import file_sha256, package_versions, write_run_info
from .zarr_store import FrameRecord, ZarrRunStore, read_journal

__all__ = [
    "DecisionLog",
    "FrameRecord",
    "ZarrRunStore",
    "file_sha256",
    "package_versions",
    "read_decisions",
    "read_journal",
    "write_run_info",
]
