"""Fixtures for the task-framework adapters (plain fixture functions, imported lazily).

``bg_celery`` needs a ``celery_app`` fixture (the name celery.contrib.pytest uses);
``bg_taskiq`` and ``bg_dramatiq`` give a broker bound to the test's simulation.
The frameworks are imported only when a test asks for one of these fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..simulation import Simulation
    from .celery import SimWorker


@pytest.fixture
def bg_celery(bgwork: Simulation, request: pytest.FixtureRequest) -> Iterator[SimWorker]:
    """Your ``celery_app`` fixture's app on the simulation (``adapters.celery.install``)."""
    from . import celery

    app: Any = request.getfixturevalue("celery_app")
    celery.reset()
    try:
        with celery.install(bgwork, app) as worker:
            yield worker
    finally:
        celery.reset()
