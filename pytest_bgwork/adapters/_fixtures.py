"""pytest fixtures of the seed adapters (``bg_agentuity``, ``bg_alien``, ``bg_agentflow``).

Registered by the plugin; each fixture imports its adapter (and so the SDK) only in its
body, when a test asks for it, never at plugin start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import pytest_bgwork as bg


@pytest.fixture
def bg_agentuity(bgwork: bg.Simulation) -> Iterator[bg.Simulation]:
    """The test's simulation, with the agentuity SDK's KV/object HTTP API answered by it."""
    from . import agentuity

    with agentuity.install(bgwork):
        yield bgwork


@pytest.fixture
def bg_alien(bgwork: bg.Simulation) -> Iterator[bg.Simulation]:
    """The test's simulation, with ``alienplatform``'s ``Kv``/``Queue``/worker handlers on it."""
    from . import alien

    with alien.install(bgwork):
        yield bgwork


@pytest.fixture
def bg_agentflow(bgwork: bg.Simulation) -> Iterator[Any]:
    """10xgraph's real ``BackgroundTaskManager`` class, its tasks tracked by the simulation.

    Yields the real class; every instance made during the test (also one bound once
    through InjectQ) runs its tasks on the simulation, and managers bound in InjectQ's
    global container are rebound to a fresh instance for each test.
    """
    from . import agentflow

    with agentflow.install(bgwork) as manager_class:
        yield manager_class
