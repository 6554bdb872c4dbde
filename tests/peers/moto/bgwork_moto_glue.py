"""The glue that runs moto's own SQS tests on ``adapters.sqs``: ``moto.mock_aws`` replaced.

Loaded with ``-p bgwork_moto_glue`` (by ``tests/peers/_peer_suite.run_suite``) before
moto's test modules import ``from moto import mock_aws``. Our ``mock_aws`` (decorator or context manager, as moto's)
opens a seeded ``bg.Simulation(platform="aws")``, makes it current with the virtual wall
clock (as the ``bgwork`` fixture does for a sync test), installs ``adapters.sqs`` on it and
lets ``time.sleep`` wait on the virtual clock (sync code on virtual time). Nothing else of
moto's tests is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import moto

import pytest_bgwork as bg
from pytest_bgwork import adapters
from pytest_bgwork.core import context
from pytest_bgwork.core.wallclock import wall_clock

_real_sleep = time.sleep


@contextlib.contextmanager
def _simulated() -> Iterator[bg.Simulation]:
    sim = bg.Simulation(seed=0, platform="aws")

    def virtual_sleep(seconds: float) -> None:
        if sim.loop.is_running():
            _real_sleep(seconds)
            return
        sim.run(asyncio.sleep(seconds))

    context.push(sim)
    wall_clock.start()
    time.sleep = virtual_sleep
    try:
        with adapters.sqs.install(sim):
            yield sim
    finally:
        time.sleep = _real_sleep
        wall_clock.stop()
        context.pop(sim)
        sim.close()


class _MockAws:
    """``moto.mock_aws`` on the simulation: ``@mock_aws``, ``@mock_aws()``, ``with mock_aws():``."""

    def __init__(self, **_: Any) -> None:
        self._stack: list[contextlib.ExitStack] = []

    def __enter__(self) -> _MockAws:
        stack = contextlib.ExitStack()
        stack.enter_context(_simulated())
        self._stack.append(stack)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.pop().close()

    def start(self) -> None:
        self.__enter__()

    def stop(self) -> None:
        self.__exit__(None, None, None)

    def __call__(self, func: Callable[..., Any]) -> Any:
        if inspect.isclass(func):
            for name, attr in list(vars(func).items()):
                if name.startswith("test") and callable(attr):
                    setattr(func, name, self.__call__(attr))
            return func

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _simulated():
                return func(*args, **kwargs)

        return wrapper


def mock_aws(func: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """moto's ``mock_aws``, answered by ``adapters.sqs`` on a fresh simulation."""
    if func is not None and callable(func):
        return _MockAws(**kwargs)(func)
    return _MockAws(**kwargs)


moto.mock_aws = mock_aws  # before moto's test modules import it
