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
    LeftoverWork,
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
from .http import DestinationError
from .kv import KVResult
from .loop import VirtualEventLoop
from .queues import Delivery, DeliverySettled, Message, PublishResult, UnknownQueue
from .simulation import Simulation
from .streams import Stream, StreamExpired, StreamNotFound
from .task_manager import BackgroundTaskManager, ManagerShutDown
from .webhooks import WebhookSignatureError

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
