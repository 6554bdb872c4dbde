"""Glue that runs taskiq's own test suite on ``adapters.taskiq.SimBroker`` (a pytest plugin).

Loaded with ``-p bgwork_taskiq_glue`` into a pytest run of taskiq's unpacked tests. It
swaps ``InMemoryBroker`` for a ``SimBroker`` that takes its arguments, gives every test a
simulation (the ``bgwork`` fixture) and runs each ``async def`` test on the simulation's
loop instead of anyio's. Nothing else of taskiq's tests changes.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import taskiq
import taskiq.brokers.inmemory_broker as inmemory
from taskiq.events import TaskiqEvents
from taskiq.utils import maybe_awaitable

import pytest_bgwork as bg
from pytest_bgwork.adapters.taskiq import RESULTS_NS, SimBroker, SimResultBackend


class _Results:
    """``InmemoryResultBackend.results`` over ``sim.kv``: the tests read and pop it."""

    def __init__(self, backend: SimResultBackend) -> None:
        self._backend = backend

    def pop(self, task_id: str) -> None:
        bg.current().kv.delete_sync(RESULTS_NS, task_id)


class InMemoryResultsOnSim(SimResultBackend):
    """The adapter's result backend with ``InmemoryResultBackend``'s ``results`` attribute."""

    @property
    def results(self) -> _Results:
        """A view of the stored results that ``pop`` deletes from."""
        return _Results(self)


class InMemoryOnSim(SimBroker):
    """``InMemoryBroker``'s constructor and extras (``wait_all``, ``await_inplace``) on a ``SimBroker``."""

    def __init__(self, sync_tasks_pool_size: int = 4, max_stored_results: int = 100,
                 cast_types: bool = True, max_async_tasks: int = 30,
                 max_async_tasks_jitter: int = 0, propagate_exceptions: bool = True,
                 await_inplace: bool = False) -> None:
        super().__init__()
        self.result_backend = InMemoryResultsOnSim(self)
        self.await_inplace = await_inplace

    @property
    def _running_tasks(self) -> set[str]:
        """Messages kicked and not yet acked (``InMemoryBroker`` keeps their tasks)."""
        sim = self.sim
        if self.queue not in sim.queues.names():
            return set()
        return {m.id for m in sim.queues.messages(self.queue) if m.state in ("ready", "delayed", "in_flight")}

    async def kick(self, message: taskiq.BrokerMessage) -> None:
        """Refuse an unknown task as ``InMemoryBroker`` does; ``await_inplace`` waits for it."""
        if self.find_task(message.task_name) is None:
            raise taskiq.exceptions.UnknownTaskError(task_name=message.task_name)
        await super().kick(message)
        if self.await_inplace:
            await self.wait_all()

    async def wait_all(self) -> None:
        """Run the simulation until every kicked message is done."""
        while self._running_tasks:
            await self.sim.run_until_idle()

    async def startup(self) -> None:
        """Client and worker start-up, middlewares and result backend, as ``InMemoryBroker``."""
        for event in (TaskiqEvents.CLIENT_STARTUP, TaskiqEvents.WORKER_STARTUP):
            for handler in self.event_handlers.get(event, []):
                await maybe_awaitable(handler(self.state))
        for middleware in self.middlewares:
            if middleware.__class__.startup != taskiq.TaskiqMiddleware.startup:
                await maybe_awaitable(middleware.startup())
        await self.result_backend.startup()

    async def shutdown(self) -> None:
        """Client and worker shut-down, middlewares and result backend, as ``InMemoryBroker``."""
        for event in (TaskiqEvents.CLIENT_SHUTDOWN, TaskiqEvents.WORKER_SHUTDOWN):
            for handler in self.event_handlers.get(event, []):
                await maybe_awaitable(handler(self.state))
        for middleware in self.middlewares:
            if middleware.__class__.shutdown != taskiq.TaskiqMiddleware.shutdown:
                await maybe_awaitable(middleware.shutdown())
        await self.result_backend.shutdown()


def pytest_configure(config: pytest.Config) -> None:
    """Swap the broker before the suite imports it."""
    taskiq.InMemoryBroker = InMemoryOnSim  # type: ignore[misc]
    inmemory.InMemoryBroker = InMemoryOnSim  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _bgwork_sim(request: pytest.FixtureRequest, bgwork: bg.Simulation) -> None:
    """Every test gets a simulation; its async body runs on the simulation's loop."""
    item = request.node
    if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
        item.obj = _on_sim(bgwork, item.obj)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Any:
    """An async fixture of a test runs on that test's simulation loop too (not anyio's)."""
    func = fixturedef.func
    if not (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)):
        return (yield)
    sim = request.getfixturevalue("bgwork")
    fixturedef.func = _fixture_on_sim(sim, func)  # type: ignore[misc]
    try:
        return (yield)
    finally:
        fixturedef.func = func  # type: ignore[misc]


def _fixture_on_sim(sim: bg.Simulation, func: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(func):
        def value(**kwargs: Any) -> Any:
            return sim.run(func(**kwargs))
        return value

    def gen(**kwargs: Any) -> Any:
        agen = func(**kwargs)
        yield sim.run(agen.__anext__())
        try:
            sim.run(agen.__anext__())
        except StopAsyncIteration:
            return
        raise RuntimeError(f"async fixture {func.__name__} yielded twice")
    return gen


def _on_sim(sim: bg.Simulation, fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(**kwargs: Any) -> Any:
        return sim.run(fn(**kwargs))

    run.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    del run.__wrapped__  # type: ignore[attr-defined]  # so nothing sees a coroutine function
    return run


__all__ = ["InMemoryOnSim"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The admin middleware's tests talk to a real loopback HTTP server they start: let
    them through the network guard, as a user of such a test would."""
    for item in items:
        if "admin_middleware" in item.nodeid:
            item.add_marker(pytest.mark.bgwork(allow_network=True))
