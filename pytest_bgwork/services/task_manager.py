"""A fake of agentflow's ``BackgroundTaskManager`` on virtual time.

Same shape as the real class (10xscale-agentflow 0.10): ``create_task``, ``get_task_count``,
``get_task_info``, ``wait_for_all``, ``cancel_all``, ``shutdown``, ``async with``. Where the
real one is surprising it tells the truth instead: passing a coroutine *function* raises
``TypeError``, ``create_task`` after ``shutdown`` raises, and a ``wait_for_all`` that times
out cancels the stragglers and says which. Logger: ``pytest_bgwork.task_manager``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..core import context as _context
from ..core.errors import BgworkError
from ..core.loop import describe_task
from .runtime import DEADLINE_EPSILON, Deadline, check_seconds, close_awaitable, remaining, wait_some

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["BackgroundTaskManager", "ManagedTask", "ManagerShutDown"]

log = logging.getLogger("pytest_bgwork.task_manager")

#: Managers that ran tasks on each simulation, so ``sim.task_manager.outstanding()`` sees
#: the ones app code built itself (``BackgroundTaskManager()`` inside a simulation).
_managers: weakref.WeakKeyDictionary[Kernel, weakref.WeakSet[BackgroundTaskManager]] = (
    weakref.WeakKeyDictionary()
)


class ManagerShutDown(BgworkError, RuntimeError):
    """``create_task`` was called after ``shutdown()``; agentflow's real manager accepts it silently."""


@dataclass(eq=False)
class ManagedTask:
    """One task of the manager: name, id, timeout, context, times (virtual seconds), status.

    ``status`` is ``running``, ``done``, ``failed``, ``timeout``, ``cancelled`` or ``crashed``;
    ``cancel_reason`` says who cancelled it (``cancel_all``, ``wait_for_all timeout``,
    ``shutdown timeout``, ``timeout``).
    """

    name: str
    id: str
    timeout: float | None
    context: dict[str, Any] | None
    created_at: float
    sim: Kernel = field(repr=False)
    status: str = "running"
    finished_at: float | None = None
    error: BaseException | None = None
    cancel_reason: str | None = None
    seq: int = 0
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    #: Tasks that run on this task's behalf (an adapter's wrapper, a real manager's timeout
    #: timer): ``assert_drained`` counts them under this task, not as other loop tasks.
    companions: tuple[asyncio.Task[Any], ...] = field(default=(), repr=False)

    def info(self) -> dict[str, Any]:
        """The ``get_task_info()`` entry: agentflow's keys plus ``id``, ``status``, ``created_at``."""
        task = self.task
        return {
            "name": self.name,
            "id": self.id,
            "age_seconds": round(self.sim.clock.monotonic() - self.created_at, 6),
            "timeout": self.timeout,
            "context": self.context if self.context is not None else {},  # as the real class: `context or {}`
            "done": task.done() if task is not None else True,
            "cancelled": task.cancelled() if task is not None else False,
            "status": self.status,
            "created_at": self.created_at,
        }


class BackgroundTaskManager:
    """``BackgroundTaskManager(default_shutdown_timeout=30.0, max_pending_tasks=1000, *, sim=None)``.

    ``sim=None`` finds the running simulation (``bg.current()``) at each call, so app code
    can build its own manager once, as it would in production.
    """

    def __init__(self, default_shutdown_timeout: float = 30.0, max_pending_tasks: int = 1000, *,
                 sim: Kernel | None = None) -> None:
        timeout = check_seconds(default_shutdown_timeout, "BackgroundTaskManager(default_shutdown_timeout=...)",
                                optional=False)
        assert timeout is not None
        if isinstance(max_pending_tasks, bool) or not isinstance(max_pending_tasks, int) or max_pending_tasks < 1:
            raise ValueError("BackgroundTaskManager(max_pending_tasks=...) expects an int >= 1 (the cap on "
                             f"live tasks; create_task returns None past it); got {max_pending_tasks!r}")
        self.default_shutdown_timeout = timeout
        self.max_pending_tasks = max_pending_tasks
        self._sim = sim
        self._live: dict[asyncio.Task[Any], ManagedTask] = {}
        self._records: list[ManagedTask] = []
        self._dropped = 0
        self._shutdown = False
        self._seq = 0

    # -- creating ------------------------------------------------------------------------
    def create_task(self, coro: Coroutine[Any, Any, Any], *, name: str = "background_task",
                    timeout: float | None = None,
                    context: dict[str, Any] | None = None) -> asyncio.Task[Any] | None:
        """Run ``coro`` in the background, tracked; return its task (``None`` at the cap).

        ``timeout`` (virtual seconds) cancels it when exceeded, with a warning naming
        ``context``. Each task is the fault point ``task.<name>``: a fault there fails it.
        """
        if inspect.iscoroutinefunction(coro) or (callable(coro) and not inspect.isawaitable(coro)):
            fn = getattr(coro, "__qualname__", repr(coro))
            raise TypeError(
                f"create_task() takes a coroutine object; got the function {fn}. Call it: "
                f"create_task({fn}(...)), not create_task({fn}) (passed uncalled, the work never runs)"
            )
        if not inspect.iscoroutine(coro):
            close_awaitable(coro)
            raise TypeError(f"create_task() takes a coroutine object such as save_memory(thread_id); "
                            f"got {type(coro).__name__} {coro!r}")
        try:
            limit = self._check_args(name, timeout, context)
            if self._shutdown:
                raise ManagerShutDown(
                    f"create_task(name={name!r}) after shutdown(): this manager no longer runs tasks, so "
                    "the coroutine was closed. agentflow's real BackgroundTaskManager silently accepts "
                    "it (the task runs untracked and nobody waits for it); create background work "
                    "before shutdown, or use a new manager."
                )
            sim = self._resolve()
            loop = sim.loop
        except BaseException:
            coro.close()
            raise
        ctx = dict(context) if context is not None else None
        history = sim.history
        if len(self._live) >= self.max_pending_tasks:
            coro.close()
            self._dropped += 1
            history.record("task_manager", "dropped", "fail", name=name, context=ctx,
                           max_pending_tasks=self.max_pending_tasks)
            log.warning("BackgroundTaskManager at max_pending_tasks=%d: dropped task %r (context %r); "
                        "its coroutine was closed and never ran (%d dropped so far)",
                        self.max_pending_tasks, name, ctx, self._dropped)
            return None
        _managers.setdefault(sim, weakref.WeakSet()).add(self)
        rec = ManagedTask(name, sim.next_id("bgtask"), limit, ctx, sim.clock.monotonic(), sim)
        self._records.append(rec)
        history.record("task_manager", "create_task", name=name, id=rec.id, timeout=limit, context=ctx)
        task = loop.create_task(self._run(rec, coro), name=name)
        rec.task = task
        self._live[task] = rec
        task.add_done_callback(_retrieve)
        task.add_done_callback(lambda _: self._cancelled_unstarted(rec, coro))
        if limit is not None:
            rec.timer = loop.call_later(limit, self._expire, rec)
        return task

    @staticmethod
    def _check_args(name: object, timeout: object, context: object) -> float | None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"create_task(name=...) expects a non-empty string; got {name!r}")
        limit = check_seconds(timeout, "create_task(timeout=...)")
        if limit == 0:
            raise ValueError("create_task(timeout=...) expects None (no limit) or seconds > 0; got 0")
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"create_task(context=...) expects a dict such as {{'thread_id': 't1'}} or "
                            f"None; got {type(context).__name__}")
        return limit

    def _resolve(self) -> Kernel:
        return self._sim if self._sim is not None else _context.current()

    async def _run(self, rec: ManagedTask, coro: Coroutine[Any, Any, Any]) -> Any:
        sim, point = rec.sim, f"task.{rec.name}"
        history = sim.history
        try:
            try:
                await sim.faults.enter(point)
            except BaseException:
                coro.close()
                raise
            result = await coro
            sim.faults.leave(point)
        except asyncio.CancelledError:
            if rec.cancel_reason == "timeout":
                self._finish(rec, "timeout")
            else:
                self._finish(rec, "cancelled")
                history.record("task_manager", "cancelled", "unknown", name=rec.name, id=rec.id,
                               context=rec.context, reason=rec.cancel_reason or "cancelled")
            raise
        except Exception as exc:
            self._finish(rec, "failed")
            rec.error = exc
            history.record("task_manager", "task_failed", "fail", name=rec.name, id=rec.id,
                           context=rec.context, error=repr(exc))
            log.error("background task %r [%s] failed (context %r): %s: %s", rec.name, rec.id, rec.context,
                      type(exc).__name__, exc, exc_info=exc)
            raise  # it stays on the task, as with the real manager
        except BaseException:  # an injected crash: the worker died with it
            self._finish(rec, "crashed")
            raise
        else:
            self._finish(rec, "done")
            history.record("task_manager", "task_done", name=rec.name, id=rec.id, context=rec.context,
                           seconds=round((rec.finished_at or 0.0) - rec.created_at, 6))
            return result

    def _cancelled_unstarted(self, rec: ManagedTask, coro: Coroutine[Any, Any, Any]) -> None:
        """A task cancelled before its first step never ran ``_run``: settle it (found by the oracle)."""
        if rec.status != "running":
            return
        coro.close()
        self._finish(rec, "cancelled")
        rec.sim.history.record("task_manager", "cancelled", "unknown", name=rec.name, id=rec.id,
                               context=rec.context, reason=rec.cancel_reason or "cancelled")

    def _finish(self, rec: ManagedTask, status: str) -> None:
        rec.status = status
        rec.finished_at = rec.sim.clock.monotonic()
        self._seq += 1
        rec.seq = self._seq
        if rec.timer is not None:
            rec.timer.cancel()
            rec.timer = None
        if rec.task is not None:
            self._live.pop(rec.task, None)

    def _expire(self, rec: ManagedTask) -> None:
        rec.timer = None
        if rec.task is None or rec.task.done() or rec.status != "running":
            return
        if rec.task in rec.sim.loop._ignored_tasks:  # frozen by a crash: cancelling would revive it
            self._finish(rec, "crashed")
            return
        rec.cancel_reason = "timeout"
        rec.sim.history.record("task_manager", "timeout", "fail", name=rec.name, id=rec.id,
                               context=rec.context, timeout=rec.timeout)
        log.warning("background task %r [%s] exceeded its timeout of %gs and was cancelled (context %r)",
                    rec.name, rec.id, rec.timeout, rec.context)
        rec.task.cancel()

    # -- looking -------------------------------------------------------------------------
    def _running(self) -> list[ManagedTask]:
        """Live records in creation order (frozen, crashed tasks left out)."""
        out = []
        for rec in list(self._live.values()):
            task = rec.task
            if task is not None and task in rec.sim.loop._ignored_tasks:
                self._finish(rec, "crashed")
                continue
            out.append(rec)
        return out

    def get_task_count(self) -> int:
        """How many tasks are still running."""
        return len(self._running())

    def get_task_info(self) -> list[dict[str, Any]]:
        """Per running task: ``name``, ``age_seconds``, ``timeout``, ``context``, ``done``, ``cancelled``..."""
        return [rec.info() for rec in self._running()]

    @property
    def tasks(self) -> list[ManagedTask]:
        """Every task this manager created, finished or not, oldest first."""
        return list(self._records)

    @property
    def dropped_count(self) -> int:
        """How many tasks were dropped at the ``max_pending_tasks`` cap."""
        return self._dropped

    @property
    def is_shutdown(self) -> bool:
        """Whether ``shutdown()`` ran."""
        return self._shutdown

    def outstanding(self) -> list[str]:
        """One line per task still running (for ``bg.assert_drained``).

        The simulation's own manager (``sim.task_manager``) also lists tasks of managers
        the app built itself on the same simulation.
        """
        managers: list[BackgroundTaskManager] = [self]
        sim = self._sim
        if sim is not None and vars(sim).get("task_manager") is self:
            others = sorted((m for m in _managers.get(sim, ()) if m is not self), key=lambda m: m._first_number())
            managers += others
        lines = []
        for manager in managers:
            mine = "" if manager is self else " (another BackgroundTaskManager)"
            for rec in manager._running():
                now = rec.sim.clock.monotonic()
                ctx = f", context {rec.context!r}" if rec.context else ""
                where = describe_task(rec.task) if rec.task is not None else "(no task)"
                lines.append(f"{rec.name} [{rec.id}]{mine}{ctx}, created t=+{rec.created_at:.3f}s "
                             f"({now - rec.created_at:g}s ago): {where}")
        return lines

    def _first_number(self) -> int:
        """The id number of this manager's first task: a stable order among managers."""
        return int(self._records[0].id.rsplit("_", 1)[1]) if self._records else 0

    # -- waiting and stopping ------------------------------------------------------------
    async def wait_for_all(self, timeout: float | None = None, return_exceptions: bool = False) -> None:
        """Wait (virtual time) for the tasks running now.

        Like the real one (``asyncio.gather`` under ``asyncio.wait_for``): without
        ``return_exceptions`` the first failure is raised at once (the others keep
        running); past ``timeout`` the tasks still running are cancelled, each recorded
        as ``task_manager.cancelled`` (reason ``wait_for_all timeout``), and
        ``TimeoutError`` names them. Cancelled tasks count as finished, not as failures.
        """
        limit = check_seconds(timeout, "wait_for_all(timeout=...)")
        me = asyncio.current_task()
        targets = [rec for rec in self._running() if rec.task is not None and rec.task is not me]
        if not targets:
            return
        sim = self._resolve()
        # one deadline timer armed now, as asyncio.wait_for arms its own: a task ending at the
        # deadline instant is ordered against it the same way however often the wait wakes
        deadline = Deadline(limit)
        try:
            while True:
                failed = [r for r in targets if r.status == "failed"]
                if failed and not return_exceptions:
                    first = min(failed, key=lambda r: r.seq)  # the first to fail, as gather raises it
                    assert first.error is not None
                    raise first.error
                running = [r for r in self._running() if r in targets]
                if not running:
                    return
                if deadline.expired:
                    names = [f"{r.name} [{r.id}]" for r in running]
                    log.warning("wait_for_all(timeout=%g) timed out: cancelled %d task(s) still running: %s",
                                limit or 0.0, len(running), ", ".join(names))
                    await self._cancel(running, "wait_for_all timeout")
                    raise TimeoutError(
                        f"wait_for_all(timeout={limit:g}) timed out at t=+{sim.clock.monotonic():.3f}s and "
                        f"cancelled {len(running)} task(s) still running: {', '.join(names)} (agentflow's "
                        "real manager cancels them too but logs 'some may still be running')"
                    )
                await wait_some(sim, [r.task for r in running if r.task is not None], None, deadline)
        finally:
            deadline.cancel()

    async def _cancel(self, recs: list[ManagedTask], reason: str) -> None:
        for rec in recs:
            if rec.task is not None and not rec.task.done():
                rec.cancel_reason = reason
                rec.task.cancel()
        tasks = [r.task for r in recs if r.task is not None]
        if tasks:
            await asyncio.wait(tasks)

    async def cancel_all(self) -> None:
        """Cancel every running task and wait until they are gone (each recorded as cancelled)."""
        running = self._running()
        if running:
            log.info("cancelling %d background task(s): %s", len(running),
                     ", ".join(f"{r.name} [{r.id}]" for r in running))
        await self._cancel(running, "cancel_all")

    async def shutdown(self, timeout: float | None = None) -> dict[str, Any]:
        """Refuse new tasks, wait up to ``timeout`` (default ``default_shutdown_timeout``), cancel the rest.

        Returns ``{"status": "completed"|"timeout", "initial_tasks", "completed_tasks",
        "remaining_tasks", "duration_seconds"}`` (+ ``cancelled``: the names cut off);
        ``remaining_tasks`` counts tasks still running at the deadline, which were then
        cancelled. A second call returns ``{"status": "already_shutdown", ...}``.
        """
        limit = check_seconds(timeout, "shutdown(timeout=...)")
        if self._shutdown:
            return {"status": "already_shutdown", "initial_tasks": 0, "completed_tasks": 0,
                    "remaining_tasks": self.get_task_count(), "duration_seconds": 0.0, "cancelled": []}
        self._shutdown = True
        wait = self.default_shutdown_timeout if limit is None else limit
        sim = self._resolve()
        start = sim.clock.monotonic()
        me = asyncio.current_task()
        initial = [r for r in self._running() if r.task is not me]
        deadline = start + wait
        while True:
            left = [r for r in self._running() if r.task is not me]
            rest = remaining(sim, deadline)
            if not left or (rest is not None and rest <= DEADLINE_EPSILON):
                break
            await wait_some(sim, [r.task for r in left if r.task is not None], rest)
        if left:
            log.warning("shutdown(timeout=%g): cancelling %d task(s) still running: %s", wait, len(left),
                        ", ".join(f"{r.name} [{r.id}] (context {r.context!r})" for r in left))
            await self._cancel(left, "shutdown timeout")
        result = {
            "status": "timeout" if left else "completed",
            "initial_tasks": len(initial),
            "completed_tasks": len(initial) - len(left),
            "remaining_tasks": len(left),
            "duration_seconds": round(sim.clock.monotonic() - start, 6),
            "cancelled": [r.name for r in left],
        }
        sim.history.record("task_manager", "shutdown", "ok" if not left else "fail",
                           **{k: v for k, v in result.items() if k != "status"}, result=result["status"])
        return result

    async def __aenter__(self) -> BackgroundTaskManager:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.shutdown()

    # -- snapshot (for assert_idempotent) --------------------------------------------------------
    def _snapshot(self) -> object:
        """Finished records, the drop count and the shutdown flag (running tasks cannot be copied)."""
        return {"done": [r for r in self._records if r.status != "running"], "dropped": self._dropped,
                "shutdown": self._shutdown}

    def _restore(self, state: object) -> None:
        """Put back what ``_snapshot`` captured; tasks running now keep running."""
        if not isinstance(state, dict) or "done" not in state:
            raise TypeError(f"_restore() takes what _snapshot() returned; got {type(state).__name__}")
        self._records = list(state["done"]) + [r for r in self._records if r.status == "running"]
        self._dropped, self._shutdown = state["dropped"], state["shutdown"]

    def __repr__(self) -> str:
        return (f"<BackgroundTaskManager running={len(self._live)} dropped={self._dropped} "
                f"shutdown={self._shutdown}>")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a failure as seen (it was logged), so asyncio does not warn 'never retrieved'."""
    if not task.cancelled():
        task.exception()
