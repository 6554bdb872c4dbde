"""pytest-bgwork: deterministic simulation testing for background work.

``import pytest_bgwork as bg`` gives the simulation, its errors, fault plans,
checks and the explorer; the pytest plugin (``pytest_bgwork.plugin``) adds the
``bgwork`` fixture and friends.
"""

from __future__ import annotations

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
from .faults import Fault, FaultPlan
from .history import Event, History
from .loop import VirtualEventLoop
from .simulation import Simulation

__all__ = [
    "BgworkError",
    "CheckFailed",
    "Deadlock",
    "Event",
    "Fault",
    "FaultPlan",
    "History",
    "NotRunning",
    "RuntimeShuttingDown",
    "Simulation",
    "Stalled",
    "StreamClosed",
    "VirtualClock",
    "VirtualEventLoop",
    "current",
]
__version__ = "0.1.0"
