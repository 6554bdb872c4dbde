"""pytest-bgwork: deterministic simulation testing for background work.

``import pytest_bgwork as bg`` gives the simulation, its errors, fault plans,
checks and the explorer; the pytest plugin (``pytest_bgwork.plugin``) adds the
``bgwork`` fixture and friends.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real imports, for type checkers and IDEs; at run time names load lazily
    from .checking.checks import (
        IdempotenceReport,
        NothingToCheck,
        assert_drained,
        assert_effects_once,
        assert_idempotent,
        assert_no_task_errors,
        assert_nothing_lost,
        assert_status_terminal,
        assert_streams_closed,
    )
    from .checking.explore import (
        ExplorationFailed,
        ExploreCoverageWarning,
        ExploreDatabaseWarning,
        ExploreReport,
        NonDeterministic,
        explore,
        explore_test,
    )
    from .core.clock import VirtualClock
    from .core.errors import (
        BgworkError,
        CheckFailed,
        Deadlock,
        LeftoverWorkWarning,
        NotRunning,
        RuntimeShuttingDown,
        Stalled,
        StreamClosed,
        UnmockedRequest,
        UnsupportedFeature,
        UnusedFaultRuleWarning,
    )
    from .core.faults import Fault, FaultPlan, fault_points, is_injected, register_fault_point
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
    "ExploreDatabaseWarning",
    "ExploreReport",
    "Fault",
    "FaultPlan",
    "History",
    "IdempotenceReport",
    "KVResult",
    "LeftoverWorkWarning",
    "ManagerShutDown",
    "Message",
    "NonDeterministic",
    "NotRunning",
    "NothingToCheck",
    "PublishResult",
    "RuntimeShuttingDown",
    "Simulation",
    "Stalled",
    "Stream",
    "StreamClosed",
    "StreamExpired",
    "StreamNotFound",
    "UnknownQueue",
    "UnmockedRequest",
    "UnsupportedFeature",
    "UnusedFaultRuleWarning",
    "VirtualClock",
    "VirtualEventLoop",
    "WebhookSignatureError",
    "assert_drained",
    "assert_effects_once",
    "assert_idempotent",
    "assert_no_task_errors",
    "assert_nothing_lost",
    "assert_status_terminal",
    "assert_streams_closed",
    "current",
    "explore",
    "explore_test",
    "fault_points",
    "is_injected",
    "register_fault_point",
]
__version__ = "0.3.0"

#: Where each public name lives. Importing ``pytest_bgwork`` (the plugin does, in every
#: pytest run of a venv that has it installed) loads none of them: each module is
#: imported on first use, so Hypothesis, httpx and freezegun load only when needed.
_EXPORTS: dict[str, str] = {
    "BackgroundTaskManager": ".services.task_manager",
    "BgworkError": ".core.errors",
    "CheckFailed": ".core.errors",
    "Deadlock": ".core.errors",
    "Delivery": ".services.queues",
    "DeliverySettled": ".services.queues",
    "DestinationError": ".services.http",
    "Event": ".core.history",
    "ExplorationFailed": ".checking.explore",
    "ExploreCoverageWarning": ".checking.explore",
    "ExploreDatabaseWarning": ".checking.explore",
    "ExploreReport": ".checking.explore",
    "Fault": ".core.faults",
    "FaultPlan": ".core.faults",
    "History": ".core.history",
    "IdempotenceReport": ".checking.checks",
    "KVResult": ".services.kv",
    "LeftoverWorkWarning": ".core.errors",
    "ManagerShutDown": ".services.task_manager",
    "Message": ".services.queues",
    "NonDeterministic": ".checking.explore",
    "NotRunning": ".core.errors",
    "NothingToCheck": ".checking.checks",
    "PublishResult": ".services.queues",
    "RuntimeShuttingDown": ".core.errors",
    "Simulation": ".simulation",
    "Stalled": ".core.errors",
    "Stream": ".services.streams",
    "StreamClosed": ".core.errors",
    "UnmockedRequest": ".core.errors",
    "StreamExpired": ".services.streams",
    "StreamNotFound": ".services.streams",
    "UnknownQueue": ".services.queues",
    "UnsupportedFeature": ".core.errors",
    "UnusedFaultRuleWarning": ".core.errors",
    "VirtualClock": ".core.clock",
    "VirtualEventLoop": ".core.loop",
    "WebhookSignatureError": ".services.webhooks",
    "assert_drained": ".checking.checks",
    "assert_effects_once": ".checking.checks",
    "assert_idempotent": ".checking.checks",
    "assert_no_task_errors": ".checking.checks",
    "assert_nothing_lost": ".checking.checks",
    "assert_status_terminal": ".checking.checks",
    "assert_streams_closed": ".checking.checks",
    "current": ".simulation",
    "explore": ".checking.explore",
    "explore_test": ".checking.explore",
    "fault_points": ".core.faults",
    "is_injected": ".core.faults",
    "register_fault_point": ".core.faults",
}


#: Subpackages reachable as attributes (``bg.adapters.sqs``, ``bg.strategies.fault_plans``).
_SUBMODULES = frozenset({"adapters", "strategies"})


#: Old public names kept for one release: ``bg.LeftoverWork`` still works and warns.
_DEPRECATED: dict[str, str] = {
    "LeftoverWork": "LeftoverWorkWarning",
    "UnusedFaultRule": "UnusedFaultRuleWarning",
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        import warnings

        new = _DEPRECATED[name]
        warnings.warn(f"pytest_bgwork.{name} is renamed {new}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return __getattr__(new)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_bgwork' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value

