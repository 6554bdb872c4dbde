"""RQ on the simulation: its real ``SimpleWorker`` (no fork) on ``adapters.redis``, on virtual time.

Inside ``with adapters.rq.install(sim):`` (fixture ``bg_rq``) every redis-py client talks to a
simulated server (``adapters.redis``) and RQ's job ids come from the simulation.
``adapters.rq.work(sim, queues)`` runs a ``SimpleWorker`` in burst mode, in a thread of the
simulation (a sync test body, ``asyncio.to_thread``), until no job is queued or scheduled:
between bursts it sleeps, on the virtual clock, to the next ``enqueue_in``/``enqueue_at``
time or ``Retry(interval=)`` and lets RQ's scheduler enqueue what is due. Job timeouts
cannot use SIGALRM (virtual seconds pass in no real time): a job that returns after more
virtual seconds than its timeout fails with ``JobTimeoutException`` then, as RQ would
record it, but it is not interrupted. Each job runs as a bgwork attempt (queue ``rq.<name>``,
message the job id), so ``sim.faults.crash("rq.default", at="redis.hset")`` kills the
worker in that job: the job is left started, as under a dead worker process, until RQ's
registry clean-up finds it abandoned (then it is retried or failed).
"""

from __future__ import annotations

import contextlib
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Literal

import redis
import rq
import rq.job
from rq.timeouts import BaseDeathPenalty

import pytest_bgwork as bg

from ..core.context import Attempt, current_attempt
from ..core.errors import ProcessCrashed
from . import redis as bg_redis
from ._install import patched_while_installed

__all__ = ["VirtualDeathPenalty", "attempt_queue", "install", "work"]

_installs: list[bg.Simulation] = []


def attempt_queue(queue_name: str) -> str:
    """The queue name of an RQ queue's attempts (for fault rules): ``default`` -> ``rq.default``."""
    return f"rq.{queue_name}"


def _running() -> bg.Simulation | None:
    """The simulation running this code (an example of ``bg.explore`` has its own), else
    the innermost install's."""
    return bg_redis._loop_sim() or (_installs[-1] if _installs else None)


def _job_id() -> Any:
    """``rq.job.uuid4`` while installed: ids from the simulation (``rq_job_1``...), so the
    same seed gives the same keys and history."""
    sim = _running()
    return sim._next_id("rq_job") if sim is not None else uuid.uuid4()


#: Per simulation, the jobs a ``duplicate`` rule already ran a second time.
_duplicated: weakref.WeakKeyDictionary[bg.Simulation, set[str]] = weakref.WeakKeyDictionary()


class VirtualDeathPenalty(BaseDeathPenalty):
    """RQ's job timeout on the virtual clock, without signals: a job that returns after more
    virtual seconds than its timeout fails with ``JobTimeoutException`` (it ran to its end)."""

    def setup_death_penalty(self) -> None:
        self._started = time.monotonic()

    def cancel_death_penalty(self) -> None:
        """Nothing to cancel: no alarm was set."""

    def __exit__(self, type: Any, value: Any, traceback: Any) -> Literal[False]:
        timeout = float(self._timeout or -1)
        if type is None and timeout > 0 and time.monotonic() - self._started > timeout:
            raise self._exception(f"Task exceeded maximum timeout value ({self._timeout} seconds)")
        return False


class _Worker(rq.SimpleWorker):
    """``SimpleWorker`` whose jobs run as bgwork attempts; a crash in one kills the worker."""

    death_penalty_class = VirtualDeathPenalty
    dead: str | None = None  # the id of the job the worker died in
    _bg_tries: dict[str, int]

    def perform_job(self, job: rq.job.Job, queue: rq.Queue, execution: Any) -> bool:
        tries = self._bg_tries
        tries[job.id] = tries.get(job.id, 0) + 1
        attempt = Attempt(attempt_queue(queue.name), job.id, tries[job.id])
        perform = job.perform

        sim = _running() or bg.current()
        sim.faults._arm_pull(attempt)  # chaos fail-first: the job's next service call fails

        def perform_as_attempt() -> Any:  # the job body only: RQ's own bookkeeping is no part of it
            token = current_attempt.set(attempt)
            try:
                result = perform()
                done = _duplicated.setdefault(sim, set())
                if job.id not in done and any(r.kind == "duplicate" and not r.overlap
                                              and r.queue in (None, "*", attempt.queue)
                                              for r in sim.faults.plan):
                    # chaos duplicate: the worker died after the job returned, before RQ
                    # recorded it; the job runs again (RQ runs jobs at least once)
                    done.add(job.id)
                    sim.history.record("fault", "duplicate", queue=attempt.queue, job=job.id)
                    result = perform()
                return result
            except ProcessCrashed:
                self.dead = job.id
                raise
            finally:
                current_attempt.reset(token)

        job.perform = perform_as_attempt  # type: ignore[method-assign]
        try:
            return bool(super().perform_job(job, queue, execution))
        finally:
            del job.perform

    def _finalize_failure(self, job: rq.job.Job, *args: Any, **kwargs: Any) -> None:
        if self.dead == job.id:  # the process died in the job: nothing records its end
            raise ProcessCrashed()
        super()._finalize_failure(job, *args, **kwargs)

    def _install_signal_handlers(self) -> None:
        """None: the simulation stops the worker (RQ's SIGINT/SIGTERM handlers would take
        Ctrl-C from pytest, and cannot be set outside the main thread)."""

    def subscribe(self) -> None:
        """No command channel: RQ listens on a pub/sub thread of its own, a real thread whose
        start the simulation would wait for while virtual time moved on."""

    def teardown(self) -> None:
        if not self.dead:  # a dead process registers no death
            super().teardown()  # type: ignore[no-untyped-call]


def install(sim: bg.Simulation) -> contextlib.AbstractContextManager[bg.Simulation]:
    """RQ's queues and workers made inside the block run on ``sim`` (yields ``sim``)."""
    def patch() -> Callable[[], None]:
        rq.job.uuid4 = _job_id  # type: ignore[attr-defined]

        def restore() -> None:
            rq.job.uuid4 = uuid.uuid4  # type: ignore[attr-defined]

        return restore

    return patched_while_installed("rq", _installs, sim, patch)


def _first(queues: list[rq.Queue], registry: str) -> float | None:
    """The lowest score (epoch seconds) in one registry of ``queues`` (``None``: empty)."""
    times: list[float] = []
    for queue in queues:
        first: Any = queue.connection.zrange(getattr(queue, registry).key, 0, 0, withscores=True)
        times += [float(score) for _, score in first if float(score) != float("inf")]
    return min(times) if times else None


def work(sim: bg.Simulation, queues: Iterable[str | rq.Queue] = ("default",), *,
         connection: redis.Redis | None = None, max_bursts: int = 10_000) -> list[rq.SimpleWorker]:
    """Run RQ ``SimpleWorker`` bursts until no job on ``queues`` is queued, scheduled or abandoned.

    Call it from a thread of the simulation (a sync test body, or ``await
    asyncio.to_thread(adapters.rq.work, sim)``). Scheduled jobs (``enqueue_in``,
    ``enqueue_at``, ``Retry(interval=)``) run at their virtual time; a job whose worker
    died in it is handed to RQ's started-registry clean-up once its entry lapses (retried
    if it has retries left, else failed). A worker that quit on an unhandled exception (a
    Redis error in RQ's own bookkeeping) with jobs still queued is started again after 1 s,
    doubling to a minute while it keeps quitting, as a process supervisor does. Returns the
    workers that ran (a new one after each crash or quit, as a restarted process).
    """
    if not _installs:
        raise bg.BgworkError("adapters.rq.work(sim, ...) runs on a simulation: call it inside "
                             "`with adapters.rq.install(sim):` or with the bg_rq fixture")
    if max_bursts < 1:
        raise ValueError(f"adapters.rq.work(max_bursts=): must be at least 1; got {max_bursts}")
    names = list(queues)
    given = [q.connection for q in names if isinstance(q, rq.Queue)]
    conn = connection if connection is not None else given[0] if given else redis.Redis()
    qs = [q if isinstance(q, rq.Queue) else rq.Queue(q, connection=conn) for q in names]
    if not qs:
        raise ValueError("adapters.rq.work(queues=): give at least one queue name or rq.Queue")
    tries: dict[str, int] = {}
    workers: list[rq.SimpleWorker] = []
    worker: _Worker | None = None
    backoff = 1.0
    for _ in range(max_bursts):
        if worker is None or worker.dead:
            worker = _Worker(qs, connection=conn, name=sim._next_id("rq_worker"))
            worker._bg_tries = tries
            workers.append(worker)
        worker.work(burst=True, with_scheduler=True)
        if worker.dead:
            sim.history.record("rq", "crashed", job=worker.dead, worker=worker.name)
            continue
        if any(q.count for q in qs):  # RQ logged an unhandled exception and quit: restart it
            sim.history.record("rq", "quit", "fail", worker=worker.name, restart_in=backoff)
            time.sleep(backoff)  # a process supervisor's restart delay, doubling to a minute
            backoff = min(60.0, backoff * 2)
            worker = None
            continue
        backoff = 1.0
        scheduled = _first(qs, "scheduled_job_registry")
        abandoned = _first(qs, "started_job_registry")  # only a dead worker's jobs are left there
        if scheduled is None and abandoned is None:
            return workers
        due = min(t for t in (scheduled, abandoned) if t is not None)
        time.sleep(max(0.0, due - time.time()))
        if abandoned is not None and abandoned <= due:
            for queue in qs:  # RQ's own clean-up: an abandoned job is retried or failed
                queue.started_job_registry.cleanup()
    raise bg.BgworkError(f"adapters.rq.work(): jobs were still scheduled after {max_bursts} "
                         "bursts (a job that re-enqueues itself forever?); raise max_bursts= "
                         "if that many are expected")
