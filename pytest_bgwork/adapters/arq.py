"""arq on the simulation: its real ``Worker`` and ``ArqRedis`` pool on ``adapters.redis``.

Inside ``with adapters.arq.install(sim):`` (fixture ``bg_arq``) arq's Redis is a simulated
server (``adapters.redis``), so its polling, ``_defer_by``/``_defer_until``,
``Retry(defer=...)``, ``job_timeout``, ``max_tries``, result expiry and cron jobs all run
on the virtual clock. Each job of a ``Worker`` made inside the block runs as a bgwork
attempt (queue: the worker's queue name with ``:`` as ``.``, message: the job id, number:
``job_try``), so ``sim.faults.crash("arq.queue", at="redis.hset")`` and chaos ``crash`` kill a job at a
fault point: the dead job never finishes, and it runs again (``job_try`` + 1, up to
``max_tries``) once arq's in-progress key lapses (the job timeout + 10 s), as under a
restarted worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import types
import uuid
from collections.abc import Iterator
from typing import Any

import arq.connections
import arq.worker

import pytest_bgwork as bg

from ..core.context import Attempt, current_attempt
from . import redis as bg_redis

__all__ = ["attempt_queue", "install", "worker"]

_installs: list[bg.Simulation] = []


def attempt_queue(queue_name: str) -> str:
    """The queue name of arq jobs' attempts (for fault rules): ``arq:queue`` -> ``arq.queue``."""
    return queue_name.replace(":", ".")


class _JobIds:
    """``arq.connections.uuid4`` while installed: job ids from the simulation (``arq_job_1``...),
    so the same seed gives the same keys and history."""

    def __call__(self) -> Any:
        sim = bg_redis._loop_sim() or (_installs[-1] if _installs else None)
        if sim is None:
            return uuid.uuid4()
        return types.SimpleNamespace(hex=sim._next_id("arq_job"))


def _as_attempt(queue: str, coroutine: Any, lapse: float) -> Any:
    """``coroutine(ctx, ...)`` run as a bgwork attempt of job ``ctx['job_id']``.

    A crash injected in it is the worker process dying with the job: the job never
    finishes, and it runs again once arq's in-progress key lapses (``lapse`` seconds: the
    job timeout + 10 s), as under a restarted worker; ``max_tries`` counts that run.
    """

    @functools.wraps(coroutine)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        attempt = Attempt(queue, str(ctx.get("job_id")), int(ctx.get("job_try") or 1))
        attempt.crash_future = loop.create_future()
        token = current_attempt.set(attempt)
        try:
            job = asyncio.ensure_future(coroutine(ctx, *args, **kwargs))
        finally:
            current_attempt.reset(token)
        try:
            await asyncio.wait({job, attempt.crash_future}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            job.cancel()
            raise
        if not job.done():  # the process died in the job
            bg.current().history.record("arq", "crashed", job=attempt.message_id, job_try=attempt.number)
            raise arq.worker.Retry(defer=lapse)
        return job.result()

    return run


@contextlib.contextmanager
def install(sim: bg.Simulation) -> Iterator[bg.Simulation]:
    """arq's pools and workers made inside the block run on ``sim`` (yields ``sim``)."""
    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.arq.install(sim): sim must be a pytest_bgwork Simulation "
                        f"(the `bgwork` fixture); got {type(sim).__name__}")
    original = arq.worker.Worker.__init__

    def __init__(self: arq.worker.Worker, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("handle_signals", False)  # the simulation, not a signal, stops it
        original(self, *args, **kwargs)
        queue, lapse = attempt_queue(self.queue_name), float(self.in_progress_timeout_s)
        self.functions = {name: dataclasses.replace(f, coroutine=_as_attempt(queue, f.coroutine, lapse))
                          for name, f in self.functions.items()}

    first = not _installs
    if first:
        arq.worker.Worker.__init__ = __init__  # type: ignore[method-assign]
        arq.connections.uuid4 = _JobIds()  # type: ignore[attr-defined]
    _installs.append(sim)
    try:
        with bg_redis.install(sim):
            yield sim
    finally:
        _installs.pop()
        if first:
            arq.worker.Worker.__init__ = original  # type: ignore[method-assign]
            arq.connections.uuid4 = uuid.uuid4  # type: ignore[attr-defined]


def worker(functions: Any = (), **settings: Any) -> arq.worker.Worker:
    """An arq ``Worker`` for a test: ``burst=True`` (it returns once the queue is empty,
    deferred jobs included), ``poll_delay=0.5`` and no signal handlers unless given.

    ``await adapters.arq.worker([job]).async_run()`` runs every queued job on virtual time.
    """
    settings.setdefault("burst", True)
    settings.setdefault("handle_signals", False)
    settings.setdefault("poll_delay", 0.5)
    if not _installs:
        raise bg.BgworkError("adapters.arq.worker(...) runs on a simulation: call it inside "
                             "`with adapters.arq.install(sim):` or with the bg_arq fixture")
    return arq.worker.Worker(functions=functions, **settings)
