"""pytest-bgwork: deterministic simulation testing for background work.

``import pytest_bgwork as bg`` gives the simulation, its errors, fault plans,
checks and the explorer; the pytest plugin (``pytest_bgwork.plugin``) adds the
``bgwork`` fixture and friends.
"""

from __future__ import annotations

from .checks import (
    assert_drained,
    assert_effects_once,
    assert_idempotent,
    assert_nothing_lost,
    assert_status_terminal,
    assert_streams_closed,
)
from .clock import VirtualClock
from .context import current
from .errors import (
    BgworkError,
    CheckFailed,
    Deadlock,
    NotRunning,
    RuntimeShuttingDown,
    Stalled,
    StreamClosed,
)
from .explore import (
    ExplorationFailed,
    ExploreCoverageWarning,
    ExploreReport,
    NonDeterministic,
    explore,
)
from .faults import Fault, FaultPlan
from .history import Event, History
from .loop import VirtualEventLoop
from .simulation import Simulation

__all__ = [
    "BgworkError",
    "CheckFailed",
    "Deadlock",
    "Event",
    "ExplorationFailed",
    "ExploreCoverageWarning",
    "ExploreReport",
    "Fault",
    "FaultPlan",
    "History",
    "NonDeterministic",
    "NotRunning",
    "RuntimeShuttingDown",
    "Simulation",
    "Stalled",
    "StreamClosed",
    "VirtualClock",
    "VirtualEventLoop",
    "assert_drained",
    "assert_effects_once",
    "assert_idempotent",
    "assert_nothing_lost",
    "assert_status_terminal",
    "assert_streams_closed",
    "current",
    "explore",
]
__version__ = "0.1.0"
