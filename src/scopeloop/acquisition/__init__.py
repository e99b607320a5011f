"""The adaptive loop: scheduler, limits, analysis worker and the run's lifecycle."""

from .controller import (
    RunController,
    RunSignals,
    RunState,
    RunSummary,
    check_protocol,
    run_protocol,
)
from .limits import LimitChecker
from .scheduler import ObjectiveSetting, Scheduler, Site, Verdict
from .worker import AnalysisWorker, FrameItem

__all__ = [
    "AnalysisWorker",
    "FrameItem",
    "LimitChecker",
    "ObjectiveSetting",
    "RunController",
    "RunSignals",
    "RunState",
    "RunSummary",
    "Scheduler",
    "Site",
    "Verdict",
    "check_protocol",
    "run_protocol",
]
