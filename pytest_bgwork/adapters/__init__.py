"""Adapters: users' real client libraries running on the simulation.

One module per client library (``agentuity``, ``alien``, ``agentflow``, ``asgi``, ``sqs``,
``celery``, ``taskiq``, ``dramatiq``, ``redis``, ``arq``, ``rq``). An adapter may import only the public
``pytest_bgwork`` API and the services' public methods, plus its own client library,
and only when it is used: ``from pytest_bgwork import adapters`` imports no SDK, and
``adapters.agentuity`` imports ``pytest_bgwork.adapters.agentuity`` on first access
(module ``__getattr__``), so plugin start-up never pays for, or depends on, an SDK.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs only; nothing is imported at run time
    from . import agentflow, agentuity, alien, arq, asgi, celery, dramatiq, redis, rq, sqs, taskiq

__all__ = ["agentflow", "agentuity", "alien", "asgi", "celery", "dramatiq", "sqs", "taskiq"]
__all__ += ["arq", "redis", "rq"]

_NAMES = frozenset(__all__)


def __getattr__(name: str) -> ModuleType:
    """Import ``pytest_bgwork.adapters.<name>`` the first time it is asked for."""
    if name in _NAMES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(
        f"module {__name__!r} has no attribute {name!r}; the adapters are: {', '.join(__all__)}"
    )

