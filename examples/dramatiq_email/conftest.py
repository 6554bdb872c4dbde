"""The fixture order that works with dramatiq.

Actors bind ``dramatiq.get_broker()`` when they are decorated, i.e. when the app module
is imported. So the simulated broker is made here, before any test module imports the
app. ``SimBroker()`` without a simulation serves whichever simulation runs the code,
so one broker serves every test; the fixture below clears what it kept per test, and
the previous global broker comes back at the end of the session.
"""

from collections.abc import Iterator

import dramatiq
import dramatiq.broker
import pytest

from pytest_bgwork.adapters.dramatiq import SimBroker

_previous = dramatiq.broker.global_broker
broker = SimBroker()
dramatiq.set_broker(broker)


@pytest.fixture(autouse=True)
def _fresh_broker_state() -> Iterator[SimBroker]:
    broker.dead_letters.clear()
    broker.publish_errors.clear()
    yield broker


def pytest_sessionfinish() -> None:
    dramatiq.broker.global_broker = _previous
