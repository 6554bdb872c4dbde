"""The ``bg_redis`` fixture (a plain fixture function; the plugin registers it).

redis-py is imported only in the fixture's body, when a test asks for it, never at
plugin start-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..simulation import Simulation

__all__ = ["bg_redis"]


@pytest.fixture
def bg_redis(bgwork: Simulation) -> Iterator[Simulation]:
    """The test's simulation, with every redis-py client made in the test on simulated Redis
    servers (``adapters.redis.install``): virtual-time expiry, faults, history."""
    from . import redis

    with redis.install(bgwork):
        yield bgwork
