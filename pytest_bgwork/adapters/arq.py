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
import contextvars
import dataclasses
import functools
import math
import types
import uuid
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any

import arq.connections
import arq.worker
from arq.constants import in_progress_key_prefix

import pytest_bgwork as bg

from ..core.context import Attempt, current_attempt
from . import redis as bg_redis
from ._install import patched_while_installed

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


def _rules(sim: bg.Simulation, kind: str, queue: str) -> list[bg.Fault]:
    """The fault rules of ``kind`` in force on ``queue``'s jobs (chaos rules are on ``*``)."""
    return [r for r in sim.faults.plan if r.kind == kind and r.queue in (None, "*", queue)]


#: Per simulation, the jobs a ``duplicate`` rule already ran a second time.
_duplicated: weakref.WeakKeyDictionary[bg.Simulation, set[str]] = weakref.WeakKeyDictionary()


def _as_attempt(queue: str, coroutine: Any, lapse: float) -> Any:
    """``coroutine(ctx, ...)`` run as a bgwork attempt of job ``ctx['job_id']``.

    A crash injected in it is the worker process dying with the job: the job never
    finishes, and it runs again once arq's in-progress key lapses (``lapse`` seconds: the
    job timeout + 10 s), as under a restarted worker; ``max_tries`` counts that run.
    The queue-level chaos rules act on the job as on a pulled message: ``fail-first``
    fails the first Redis (or other service) call of its first try, ``reorder`` pauses
    it a drawn 0..1 s before its body runs, and ``duplicate`` runs a job that returned a
    second time (its worker died before arq recorded the result: arq runs jobs at least
    once). ``overlap`` cannot act: arq never runs one job id twice at once (its
    in-progress key is taken with WATCH/MULTI).
    """

    @functools.wraps(coroutine)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        sim = bg.current()
        attempt = Attempt(queue, str(ctx.get("job_id")), int(ctx.get("job_try") or 1))
        attempt.crash_future = loop.create_future()
        sim.faults._arm_pull(attempt)  # chaos fail-first: the job's next service call fails
        for rule in _rules(sim, "reorder", queue)[:1]:
            pause = sim.faults._keyed_integer(0, 1000, "chaos.reorder", attempt.label) * rule.seconds / 1000
            if pause:
                sim.history.record("fault", "reorder", queue=queue, job=attempt.message_id, seconds=pause)
                await asyncio.sleep(pause)
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
            sim.history.record("arq", "crashed", job=attempt.message_id, job_try=attempt.number)
            raise arq.worker.Retry(defer=lapse)
        result = job.result()
        done = _duplicated.setdefault(sim, set())
        if attempt.message_id not in done and any(
                not r.overlap for r in _rules(sim, "duplicate", queue)):
            done.add(attempt.message_id)
            sim.history.record("fault", "duplicate", queue=queue, job=attempt.message_id)
            raise arq.worker.Retry(defer=0)  # the result was never recorded: it runs again
        return result

    return run


#: The arq worker whose poll loop runs in this task (set by its first poll iteration).
_polling: contextvars.ContextVar[arq.worker.Worker | None] = contextvars.ContextVar(
    "bgwork_arq_worker", default=None)


async def _poll(step: float = 0.5) -> AsyncGenerator[float, None]:
    """``arq.worker.poll`` while installed: the same grid of polls (every ``step`` seconds
    after the last one ended), minus the polls that could find nothing to do.

    Without it a worker waiting an hour for a deferred job runs 7,200 empty polls of two or
    three Redis commands each, every one a fault point and a history event: most of an
    exploration's time. A skipped poll is one where no job was due, no cron job or health
    record was due and no Redis write happened since the last poll; the worker wakes at
    the poll where the first of those comes, as arq would pick it up.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        before = loop.time()
        yield before - start
        after = loop.time()
        first = after + max(0.0, step - after + before)
        worker = _polling.get()
        if worker is None or step <= 0:
            await asyncio.sleep(first - after)
        else:
            await _idle(worker, loop, first, step)


def _grid(first: float, step: float, at: float) -> float:
    """The first poll of the grid ``first + k * step`` (k >= 0) at or after ``at``."""
    return first if at <= first else first + math.ceil((at - first) / step - 1e-9) * step


async def _idle(worker: arq.worker.Worker, loop: asyncio.AbstractEventLoop, first: float,
                step: float) -> None:
    """Sleep to the next poll that could find work: a job, cron or health record due, or
    the first poll after any write to the worker's Redis database."""
    db = bg_redis.database(worker.pool)
    due = loop.time() if db is None else _next_due(worker, db, loop.time())
    if due <= first:
        await asyncio.sleep(first - loop.time())
        return
    changed = asyncio.Event()

    def on_write() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(changed.set)

    db.add_change_callback(on_write)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_grid(first, step, due) - loop.time()):
                await changed.wait()
            await asyncio.sleep(_grid(first, step, loop.time()) - loop.time())
    finally:
        db.remove_change_callback(on_write)


def _next_due(worker: arq.worker.Worker, db: Any, mono: float) -> float:
    """The loop time of the earliest poll that could do something (``mono``: now)."""
    now = float(db.time)
    times = [math.inf]
    item = db.get(worker.queue_name.encode())
    if item is not None:
        for job_id, score in item.value.items():
            if score / 1000 > now:
                times.append(mono + score / 1000 - now)
                continue
            running = db.get(in_progress_key_prefix.encode() + job_id)
            if running is None:
                return mono  # due now
            if running.expireat is not None:
                times.append(mono + running.expireat - now)
    times.append(mono + worker._last_health_check + worker.health_check_interval - now)
    window = 2 * max(worker.poll_delay_s, 0.5)
    for cron in worker.cron_jobs:
        if cron.next_run is None:
            return mono
        times.append(mono + cron.next_run.timestamp() - window - now)
    return min(times)


def install(sim: bg.Simulation) -> contextlib.AbstractContextManager[bg.Simulation]:
    """arq's pools and workers made inside the block run on ``sim`` (yields ``sim``)."""
    original, real_poll = arq.worker.Worker.__init__, arq.worker.poll  # type: ignore[attr-defined]

    def __init__(self: arq.worker.Worker, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("handle_signals", False)  # the simulation, not a signal, stops it
        original(self, *args, **kwargs)
        queue, lapse = attempt_queue(self.queue_name), float(self.in_progress_timeout_s)
        self.functions = {name: dataclasses.replace(f, coroutine=_as_attempt(queue, f.coroutine, lapse))
                          for name, f in self.functions.items()}
        poll_iteration = self._poll_iteration

        async def _poll_iteration() -> None:
            _polling.set(self)  # for _poll, in the worker's main task
            await poll_iteration()

        self._poll_iteration = _poll_iteration  # type: ignore[method-assign]

    def patch() -> Callable[[], None]:
        arq.worker.Worker.__init__ = __init__  # type: ignore[method-assign]
        arq.connections.uuid4 = _JobIds()  # type: ignore[attr-defined]
        arq.worker.poll = _poll  # type: ignore[attr-defined]

        def restore() -> None:
            arq.worker.Worker.__init__ = original  # type: ignore[method-assign]
            arq.connections.uuid4 = uuid.uuid4  # type: ignore[attr-defined]
            arq.worker.poll = real_poll  # type: ignore[attr-defined]

        return restore

    return patched_while_installed("arq", _installs, sim, patch)


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
