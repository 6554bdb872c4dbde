"""pytest-bgwork: deterministic simulation testing for background work.

``import pytest_bgwork as bg`` gives the simulation, its errors, fault plans,
checks and the explorer; the pytest plugin (``pytest_bgwork.plugin``) adds the
``bgwork`` fixture and friends.
"""

from __future__ import annotations

from .checking.checks import (
    assert_drained,
    assert_effects_once,
    assert_idempotent,
    assert_nothing_lost,
    assert_status_terminal,
    assert_streams_closed,
)
from .checking.explore import (
    ExplorationFailed,
    ExploreCoverageWarning,
    ExploreReport,
    NonDeterministic,
    explore,
)
from .core.clock import VirtualClock
from .core.errors import (
    BgworkError,
    CheckFailed,
    Deadlock,
    LeftoverWork,
    NotRunning,
    RuntimeShuttingDown,
    Stalled,
    StreamClosed,
)
from .core.faults import Fault, FaultPlan
from .core.history import Event, History
from .core.loop import VirtualEventLoop
from .services.http import DestinationError
from .services.kv import KVResult
from .services.queues import Delivery, DeliverySettled, Message, PublishResult, UnknownQueue
from .services.streams import Stream, StreamExpired, StreamNotFound
from .services.task_manager import BackgroundTaskManager, ManagerShutDown
from .services.webhooks import WebhookSignatureError
from .simulation import Simulation, current

__all__ = [
    "BackgroundTaskManager",
    "BgworkError",
    "CheckFailed",
    "Deadlock",
    "Delivery",
    "DeliverySettled",
    "DestinationError",
    "Event",
    "ExplorationFailed",
    "ExploreCoverageWarning",
    "ExploreReport",
    "Fault",
    "FaultPlan",
    "History",
    "KVResult",
    "LeftoverWork",
    "ManagerShutDown",
    "Message",
    "NonDeterministic",
    "NotRunning",
    "PublishResult",
    "RuntimeShuttingDown",
    "Simulation",
    "Stalled",
    "Stream",
    "StreamClosed",
    "StreamExpired",
    "StreamNotFound",
    "UnknownQueue",
    "VirtualClock",
    "VirtualEventLoop",
    "WebhookSignatureError",
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
