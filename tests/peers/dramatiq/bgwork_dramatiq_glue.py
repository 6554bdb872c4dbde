"""Glue that runs dramatiq's own tests on ``adapters.dramatiq.SimBroker`` (a pytest plugin).

dramatiq's sdist ships its tests without ``tests/conftest.py`` and ``tests/common.py``:
this plugin supplies what the tests take from them, on the simulation. ``stub_broker`` is
a ``SimBroker`` on the test's simulation (the ``bgwork`` fixture), set as the global
broker; ``stub_worker`` (and ``common.worker(...)``) is a stand-in whose ``join()`` runs
the simulation until it is idle: the simulation delivers the messages, no worker threads
consume them. ``result_backend`` and ``rate_limiter_backend`` are dramatiq's stub
backends. Tests that take neither ``stub_broker`` nor ``stub_worker`` (RabbitMQ, Redis,
the CLI) are deselected: they do not exercise a broker this project simulates.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import types
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.rate_limits.backends import StubBackend as StubRateLimiterBackend
from dramatiq.results.backends import StubBackend as StubResultBackend

import pytest_bgwork as bg
from pytest_bgwork.adapters.dramatiq import SimBroker, UnsupportedFeature


class SimWorker:
    """What the tests use of a ``dramatiq.Worker``; the simulation does the delivering."""

    def __init__(self, broker: SimBroker, **options: Any) -> None:
        self.broker = broker
        self.options = options

    def start(self) -> None:
        """Nothing to start: the simulation delivers each message."""

    def stop(self, timeout: int = 600000) -> None:
        """Nothing to stop: the simulation's teardown cancels leftover work."""

    def join(self) -> None:
        """Run the simulation until nothing is left to do (``Worker.join`` waits for its queue)."""
        for queue in sorted(self.broker.queues):
            self.broker.join(queue, fail_fast=False)

    def pause(self) -> None:
        """A paused worker would stop the simulation's deliveries: not simulated."""
        raise UnsupportedFeature("a paused dramatiq Worker is not simulated (the simulation delivers)")

    resume = pause

    def __getattr__(self, name: str) -> Any:
        # consumers, workers, work_queue, queue_prefetch: a real worker's internals
        raise UnsupportedFeature(f"dramatiq Worker.{name}: a real worker's internals are not simulated")


def _common_module() -> types.ModuleType:
    """``tests/common.py`` of dramatiq's repository, which its sdist lacks."""
    common = types.ModuleType("tests.common")

    @contextlib.contextmanager
    def worker(broker: SimBroker, **options: Any) -> Iterator[SimWorker]:
        w = SimWorker(broker, **options)
        w.start()
        try:
            yield w
        finally:
            w.stop()

    setattr(common, "worker", worker)  # noqa: B010
    in_ci = os.getenv("GITHUB_ACTION") is not None
    setattr(common, "skip_in_ci", pytest.mark.skipif(in_ci, reason="test skipped in CI"))  # noqa: B010
    setattr(common, "skip_on_windows", pytest.mark.skipif(  # noqa: B010
        platform.system() == "Windows", reason="test skipped on Windows"))
    setattr(common, "skip_on_pypy", pytest.mark.skipif(  # noqa: B010
        platform.python_implementation() == "PyPy", reason="Time limits are not supported under PyPy."))
    setattr(common, "RABBITMQ_CREDENTIALS", None)  # noqa: B010
    return common


def pytest_configure(config: pytest.Config) -> None:
    """Provide ``tests.common`` before dramatiq's test modules import it."""
    sys.modules.setdefault("tests.common", _common_module())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests that run on a stub broker: the ones this adapter stands in for."""
    keep, drop = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        (keep if "stub_broker" in names or "stub_worker" in names else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def stub_broker(bgwork: bg.Simulation) -> Iterator[SimBroker]:
    """A ``SimBroker`` on this test's simulation, set as dramatiq's global broker."""
    broker = SimBroker(bgwork)
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: SimBroker) -> Iterator[SimWorker]:
    """The worker stand-in: ``join()`` runs the simulation until it is idle."""
    with _common_module().worker(stub_broker, worker_timeout=100) as w:
        yield w


@pytest.fixture
def result_backend() -> StubResultBackend:
    """dramatiq's stub result backend (the suite also runs Redis and Memcached ones)."""
    return StubResultBackend()


@pytest.fixture
def rate_limiter_backend() -> StubRateLimiterBackend:
    """dramatiq's stub rate-limiter backend."""
    return StubRateLimiterBackend()
