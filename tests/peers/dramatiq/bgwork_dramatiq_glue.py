"""Glue that runs dramatiq's own tests on ``adapters.dramatiq.SimBroker`` (a pytest plugin).

dramatiq's sdist ships its tests without ``tests/conftest.py``, ``tests/common.py`` and
``tests/middleware/``: this plugin supplies what the tests take from the first two, on
the simulation. ``stub_broker`` is a paused ``SimBroker`` on the test's simulation (the
``bgwork`` fixture), set as the global broker: as on a ``StubBroker`` with no worker yet,
sent messages wait. ``stub_worker`` (and ``common.worker(...)``) resumes it, and its
``join()`` runs the simulation until it is idle; no worker threads consume. As dramatiq's
conftest, ``result_backend`` and ``rate_limiter_backend`` run each test on every backend
this project simulates: the stub backends and the Redis ones on the simulated Redis
(``adapters.redis``); Memcached is not simulated. Tests that take none of these fixtures
(RabbitMQ, Redis brokers, the CLI) are deselected.
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
    """What the tests use of a ``dramatiq.Worker``; the simulation does the delivering.

    The broker starts paused (no worker runs yet, so sent messages wait, as on a
    ``StubBroker``); ``start`` resumes it, ``stop`` pauses it again.
    """

    def __init__(self, broker: SimBroker, **options: Any) -> None:
        self.broker = broker
        self.options = options

    def start(self) -> None:
        """The worker runs: the broker's waiting messages go to their actors."""
        self.broker.resume()

    def stop(self, timeout: int = 600000) -> None:
        """The worker is gone: messages sent from now on wait (teardown cancels the rest)."""
        self.broker.pause()

    def join(self) -> None:
        """Run the simulation until nothing is left to do (``Worker.join`` waits for its queue)."""
        for queue in sorted(self.broker.queues):
            self.broker.join(queue, fail_fast=False)

    def pause(self) -> None:
        """``Worker.pause``: delivered messages wait, their lease renewed."""
        self.broker.pause()

    def resume(self) -> None:
        """``Worker.resume``: the waiting messages run, highest priority first."""
        self.broker.resume()

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


#: The fixtures that stand for what this project simulates: a test taking one of them is kept.
_KEEP = {"stub_broker", "stub_worker", "rate_limiter_backend", "result_backend"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the tests that run on a stub broker: the ones this adapter stands in for."""
    keep, drop = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        (keep if _KEEP & set(names) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture
def stub_broker(bgwork: bg.Simulation) -> Iterator[SimBroker]:
    """A paused ``SimBroker`` on this test's simulation, set as dramatiq's global broker.

    Paused as a ``StubBroker`` with no worker: messages wait until a worker starts.
    """
    broker = SimBroker(bgwork)
    broker.pause()
    dramatiq.set_broker(broker)
    yield broker
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: SimBroker) -> Iterator[SimWorker]:
    """The worker stand-in: ``join()`` runs the simulation until it is idle."""
    with _common_module().worker(stub_broker, worker_timeout=100) as w:
        yield w


@pytest.fixture
def simulated_redis(bgwork: bg.Simulation) -> Iterator[None]:
    """Redis clients made during the test talk to the simulation's Redis (``adapters.redis``)."""
    from pytest_bgwork.adapters import redis as bg_redis

    with bg_redis.install(bgwork):
        yield


@pytest.fixture
def redis_result_backend(simulated_redis: None) -> Any:
    """dramatiq's Redis result backend, on the simulation's Redis."""
    from dramatiq.results.backends import RedisBackend

    return RedisBackend()


@pytest.fixture
def stub_result_backend() -> StubResultBackend:
    """dramatiq's stub result backend (results in a class-level dict)."""
    return StubResultBackend()


#: dramatiq's conftest runs each backend test on Memcached, Redis and the stub backend:
#: Redis is simulated (``adapters.redis``), Memcached is not.
BACKENDS = ["redis", "stub"]


@pytest.fixture(params=BACKENDS)
def result_backend(request: pytest.FixtureRequest) -> Any:
    """Each result backend this project simulates, as dramatiq's conftest parametrizes it."""
    return request.getfixturevalue(f"{request.param}_result_backend")


@pytest.fixture
def redis_rate_limiter_backend(simulated_redis: None) -> Any:
    """dramatiq's Redis rate-limiter backend, on the simulation's Redis."""
    from dramatiq.rate_limits.backends import RedisBackend

    return RedisBackend()


@pytest.fixture
def stub_rate_limiter_backend(bgwork: bg.Simulation) -> StubRateLimiterBackend:
    """dramatiq's stub rate-limiter backend; the test runs on the simulation (virtual time)."""
    return StubRateLimiterBackend()


@pytest.fixture(params=BACKENDS)
def rate_limiter_backend(request: pytest.FixtureRequest) -> Any:
    """Each rate-limiter backend this project simulates; the test body runs on virtual time."""
    return request.getfixturevalue(f"{request.param}_rate_limiter_backend")
