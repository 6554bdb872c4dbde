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


@pytest.fixture
def bg_taskiq(bgwork: Simulation) -> Any:
    """A fresh ``adapters.taskiq.SimBroker`` bound to the test's simulation."""
    from .taskiq import SimBroker

    return SimBroker(bgwork)


@pytest.fixture
def bg_dramatiq(bgwork: Simulation) -> Iterator[Any]:
    """dramatiq's global broker as a ``SimBroker`` for this test; restored afterwards.

    If the global broker already is a ``SimBroker()`` made without a simulation (set in
    ``conftest.py`` before the actors were imported), it is used as is. Otherwise a new
    one adopts the actors declared on the current global broker (actors bind
    ``get_broker()`` at decoration), and they go back to it at teardown.
    """
    import dramatiq.broker as dq_broker

    from .dramatiq import SimBroker

    previous = dq_broker.global_broker
    moved: list[Any] = []
    if isinstance(previous, SimBroker) and previous._sim is None:
        broker = previous
    else:
        broker = SimBroker(bgwork)
        if previous is not None:
            moved = broker.adopt(previous)
        dq_broker.set_broker(broker)
    broker.dead_letters_by_queue.clear()
    broker.publish_errors.clear()
    try:
        yield broker
    finally:
        for actor in moved:
            actor.broker = previous
        dq_broker.global_broker = previous
