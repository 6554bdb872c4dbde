"""Adapters: users' real clients and frameworks on the simulation, each imported lazily.

``from pytest_bgwork import adapters; adapters.celery.install(sim, app)``: the submodule
is imported on first attribute access, so nothing optional loads at plugin start-up.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["asgi", "celery", "dramatiq", "sqs", "taskiq"]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
