"""The ``bg_redis``, ``bg_arq`` and ``bg_rq`` fixtures (plain fixture functions; the plugin registers them).

redis-py, arq and RQ are imported only in the fixtures' bodies, when a test asks for it, never at
plugin start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..simulation import Simulation

__all__ = ["bg_arq", "bg_redis", "bg_rq"]


@pytest.fixture
def bg_redis(bgwork: Simulation) -> Iterator[Simulation]:
    """The test's simulation, with every redis-py client made in the test on simulated Redis
    servers (``adapters.redis.install``): virtual-time expiry, faults, history."""
    from . import redis

    with redis.install(bgwork):
        yield bgwork


@pytest.fixture
def bg_arq(bgwork: Simulation) -> Iterator[Simulation]:
    """The test's simulation, with arq's pools and workers on it (``adapters.arq.install``):
    its Redis simulated, its polling, deferrals, retries, timeouts and crons on virtual time."""
    from . import arq

    with arq.install(bgwork):
        yield bgwork


@pytest.fixture
def bg_rq(bgwork: Simulation) -> Iterator[Simulation]:
    """The test's simulation, with RQ on it (``adapters.rq.install``): its Redis simulated,
    ``adapters.rq.work(bg_rq)`` runs its ``SimpleWorker`` with schedules and retries on virtual time."""
    from . import rq

    with rq.install(bgwork):
        yield bgwork
