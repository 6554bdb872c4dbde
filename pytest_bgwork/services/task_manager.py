"""A fake of 10xgraph's (formerly agentflow's) ``BackgroundTaskManager`` on virtual time.

It is the real class (10xgraph 0.10.3, ``tenxgraph/utils/background_task_manager.py``)
step for step — the same asyncio calls in the same order, so every observable behaviour
matches, surprises included: ``shutdown()`` *cancels* every task first and then waits for
the cancellations (work in flight is lost); ``cancel_all()`` cancels, sleeps 0.1 s and
returns while clean-up may still run; ``timeout=0`` and ``max_pending_tasks=0`` mean "no
limit"; ``wait_for_all`` swallows a ``TimeoutError``, its own or a task's; ``create_task``
after ``shutdown`` runs the task. On top it records every step in the history (service
``task_manager``), makes each task the fault point ``task.<name>``, logs with the task's
context (logger ``pytest_bgwork.task_manager``), and refuses bad arguments at the call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..core import context as _context
from ..core.errors import BgworkError
from ..core.loop import describe_task
from .runtime import check_seconds, close_awaitable

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["BackgroundTaskManager", "ManagedTask", "ManagerShutDown"]

log = logging.getLogger("pytest_bgwork.task_manager")

#: Managers that ran tasks on each simulation, so ``sim.task_manager.outstanding()`` sees
#: the ones app code built itself (``BackgroundTaskManager()`` inside a simulation).
_managers: weakref.WeakKeyDictionary[Kernel, weakref.WeakSet[BackgroundTaskManager]] = (
    weakref.WeakKeyDictionary()
)

#: The real class warns about dropped tasks at most once per this many seconds.
DROP_WARNING_INTERVAL_SECONDS = 5.0


class ManagerShutDown(BgworkError, RuntimeError):
    """No longer raised: ``create_task`` after ``shutdown()`` runs the task, as the real class does.

    Kept so ``except bg.ManagerShutDown`` in existing tests still imports.
    """


@dataclass(eq=False)
class ManagedTask:
    """One task of the manager: name, id, timeout, context, times (virtual seconds), status.

    ``status`` is ``running``, ``done``, ``failed``, ``timeout``, ``cancelled`` or ``crashed``;
    ``cancel_reason`` says who cancelled it (``cancel_all``, ``shutdown``, ``wait_for_all
    timeout``, ``shutdown timeout``, ``timeout``).
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
    #: The context dict as passed (``get_task_info`` shows it, as the real class's ``context or {}``).
    given_context: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Tasks that run on this task's behalf (its timeout timer, an adapter's wrapper):
    #: ``assert_drained`` counts them under this task, not as other loop tasks.
    companions: tuple[asyncio.Task[Any], ...] = field(default=(), repr=False)

    def info(self) -> dict[str, Any]:
        """The ``get_task_info()`` entry: exactly the real class's six keys."""
        task = self.task
        done = task.done() if task is not None else True
        return {
            "name": self.name,
            "age_seconds": self.sim.clock.monotonic() - self.created_at,
            "timeout": self.timeout,
            "context": self.given_context,
            "done": done,
            "cancelled": task.cancelled() if task is not None and done else False,
        }


class BackgroundTaskManager:
    """``BackgroundTaskManager(default_shutdown_timeout=30.0, max_pending_tasks=1000, *, sim=None)``.

    ``max_pending_tasks=0`` means no cap, as in the real class. ``sim=None`` finds the
    running simulation (``bg.current()``) at each call, so app code can build its own
    manager once, as it would in production.
    """

    def __init__(self, default_shutdown_timeout: float = 30.0, max_pending_tasks: int = 1000, *,
                 sim: Kernel | None = None) -> None:
        timeout = check_seconds(default_shutdown_timeout, "BackgroundTaskManager(default_shutdown_timeout=...)",
                                optional=False)
        assert timeout is not None
        if isinstance(max_pending_tasks, bool) or not isinstance(max_pending_tasks, int) or max_pending_tasks < 0:
            raise ValueError("BackgroundTaskManager(max_pending_tasks=...) expects an int >= 0 (the cap on "
                             "live tasks, create_task returns None past it; 0 means no cap, as in the real "
                             f"class); got {max_pending_tasks!r}")
        self.default_shutdown_timeout = timeout
        """Seconds ``shutdown()`` waits when given no ``timeout=`` (0: no limit)."""
        self.max_pending_tasks = max_pending_tasks
        """The cap on live tasks: ``create_task`` returns ``None`` past it (0: no cap)."""
        self._sim = sim
        self._live: dict[asyncio.Task[Any], ManagedTask] = {}  # the real ``_tasks``, in creation order
        self._records: list[ManagedTask] = []
        self._dropped = 0
        self._last_drop_warning: float | None = None
        self._shutdown = False
        self._shutdown_lock = asyncio.Lock()
        self._seq = 0

    # -- creating ------------------------------------------------------------------------
    def create_task(self, coro: Coroutine[Any, Any, Any], *, name: str = "background_task",
                    timeout: float | None = None,
                    context: dict[str, Any] | None = None) -> asyncio.Task[Any] | None:
        """Run ``coro`` in the background, tracked; return its task (``None`` at the cap).

        ``timeout`` (virtual seconds; ``None`` or 0: no limit) cancels it when exceeded, with
        a warning naming ``context``. Each task is the fault point ``task.<name>``. After
        ``shutdown()`` the task still runs (the real class accepts it); a warning says
        nobody will wait for it.
        """
        if not inspect.iscoroutine(coro):
            if callable(coro) and not inspect.isawaitable(coro):
                fn = getattr(coro, "__qualname__", repr(coro))
                raise TypeError(
                    f"create_task() takes a coroutine object; got the function {fn}. Call it: "
                    f"create_task({fn}(...)), not create_task({fn}) (passed uncalled, the work never runs)"
                )
            close_awaitable(coro)
            raise TypeError(f"create_task() takes a coroutine object such as save_memory(thread_id); "
                            f"got {type(coro).__name__} {coro!r}")
        try:
            limit = self._check_args(name, timeout, context)
            sim = self._resolve()
            loop = sim.loop
            if not loop.is_running():  # asyncio.create_task, which the real class calls, needs one too
                raise RuntimeError(f"create_task(name={name!r}) needs the simulation's loop running: call it "
                                   "from async code inside the simulation (as asyncio.create_task, which "
                                   "the real class calls, needs a running loop)")
        except BaseException:
            coro.close()
            raise
        ctx = dict(context) if context else None
        history = sim.history
        if self.max_pending_tasks and len(self._live) >= self.max_pending_tasks:
            coro.close()
            self._record_drop(sim, name, ctx)
            return None
        _managers.setdefault(sim, weakref.WeakSet()).add(self)
        rec = ManagedTask(name, sim._next_id("bgtask"), timeout, ctx, sim.clock.monotonic(), sim,
                          given_context=context or {})
        self._records.append(rec)
        extra: dict[str, Any] = {"after_shutdown": True} if self._shutdown else {}
        history.record("task_manager", "create_task", name=name, id=rec.id, timeout=limit, context=ctx, **extra)
        if self._shutdown:
            log.warning("create_task(name=%r) after shutdown(): the task runs, but this manager's shutdown "
                        "is over and nobody will wait for it (context %r)", name, ctx)
        task = loop.create_task(self._run(rec, coro), name=name)
        rec.task = task
        self._live[task] = rec
        task.add_done_callback(self._task_done_callback)
        task.add_done_callback(lambda _: self._cancelled_unstarted(rec, coro))
        if limit:
            self._setup_timeout(rec, task, limit)
        return task

    def _record_drop(self, sim: Kernel, name: str, ctx: dict[str, Any] | None) -> None:
        self._dropped += 1
        sim.history.record("task_manager", "dropped", "fail", name=name, context=ctx,
                           max_pending_tasks=self.max_pending_tasks)
        now = sim.clock.monotonic()
        if self._last_drop_warning is None or now - self._last_drop_warning >= DROP_WARNING_INTERVAL_SECONDS:
            self._last_drop_warning = now  # at most one warning per 5 s, as the real class
            log.warning("BackgroundTaskManager at max_pending_tasks=%d: dropped task %r (context %r); "
                        "its coroutine was closed and never ran (%d dropped so far)",
                        self.max_pending_tasks, name, ctx, self._dropped)

    @staticmethod
    def _check_args(name: object, timeout: object, context: object) -> float | None:
        if not isinstance(name, str):
            raise TypeError(f"create_task(name=...) expects a string; got {type(name).__name__} {name!r}")
        limit = check_seconds(timeout, "create_task(timeout=...)")
        if context is not None and not isinstance(context, dict):
            raise TypeError(f"create_task(context=...) expects a dict such as {{'thread_id': 't1'}} or "
                            f"None; got {type(context).__name__}")
        return limit

    def _resolve(self) -> Kernel:
        return self._sim if self._sim is not None else _context.current()

    def _setup_timeout(self, rec: ManagedTask, task: asyncio.Task[Any], timeout: float) -> None:
        """The real class's timeout: a task that sleeps ``timeout`` and cancels ``task`` if still running.

        Unlike the real one it ends with its task (the real one sleeps on, doing nothing).
        """

        async def timeout_canceller() -> None:
            try:
                await asyncio.sleep(timeout)
                if not task.done():
                    self._expire(rec)
            except asyncio.CancelledError:
                pass

        canceller = asyncio.get_running_loop().create_task(timeout_canceller(), name=f"{rec.name} timeout")
        rec.companions += (canceller,)
        task.add_done_callback(lambda _: canceller.cancel())

    async def _run(self, rec: ManagedTask, coro: Coroutine[Any, Any, Any]) -> Any:
        sim, point = rec.sim, f"task.{rec.name}"
        history = sim.history
        try:
            try:
                step = sim.faults._enter(point)
                if step is not None:
                    await step
            except BaseException:
                coro.close()
                raise
            result = await coro
            sim.faults._leave(point)
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
        """A task cancelled before its first step never ran ``_run``: settle it."""
        if rec.status != "running":
            return
        coro.close()
        self._finish(rec, "cancelled")
        rec.sim.history.record("task_manager", "cancelled", "unknown", name=rec.name, id=rec.id,
                               context=rec.context, reason=rec.cancel_reason or "cancelled")

    def _task_done_callback(self, task: asyncio.Task[Any]) -> None:
        """The real class's done callback: forget the task (a callback, so one step after it ended)."""
        self._live.pop(task, None)
        if not task.cancelled():
            task.exception()  # it was logged: no "exception was never retrieved" warning

    def _finish(self, rec: ManagedTask, status: str) -> None:
        rec.status = status
        rec.finished_at = rec.sim.clock.monotonic()
        self._seq += 1
        rec.seq = self._seq

    def _expire(self, rec: ManagedTask) -> None:
        task = rec.task
        if task is None or task.done() or rec.status != "running":
            return
        if task in rec.sim.loop._ignored_tasks:  # frozen by a crash: cancelling would revive it
            self._finish(rec, "crashed")
            return
        rec.cancel_reason = "timeout"
        rec.sim.history.record("task_manager", "timeout", "fail", name=rec.name, id=rec.id,
                               context=rec.context, timeout=rec.timeout)
        log.warning("background task %r [%s] exceeded its timeout of %gs and was cancelled (context %r)",
                    rec.name, rec.id, rec.timeout, rec.context)
        task.cancel()

    # -- looking -------------------------------------------------------------------------
    def _running(self) -> list[ManagedTask]:
        """Tracked records in creation order (tasks frozen by a crash left out: their process died)."""
        out = []
        for rec in list(self._live.values()):
            task = rec.task
            if task is not None and task in rec.sim.loop._ignored_tasks:
                if rec.status == "running":
                    self._finish(rec, "crashed")
                self._live.pop(task, None)
                continue
            out.append(rec)
        return out

    def _tracked(self) -> list[asyncio.Task[Any]]:
        return [rec.task for rec in self._running() if rec.task is not None]

    def get_task_count(self) -> int:
        """How many tasks are tracked (a finished task leaves one loop step after it ended)."""
        return len(self._running())

    @property
    def pending_count(self) -> int:
        """Number of tasks currently in flight (the real class's property)."""
        return len(self._running())

    def get_task_info(self) -> list[dict[str, Any]]:
        """Per tracked task: ``name``, ``age_seconds``, ``timeout``, ``context``, ``done``, ``cancelled``."""
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
                if rec.status != "running":
                    continue  # ended; the manager forgets it one loop step later
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
        """Wait (virtual time) for the tracked tasks, as the real class does.

        That is ``asyncio.gather`` of the tasks, under ``asyncio.wait_for`` when ``timeout``
        is set (``None`` or 0: no limit). Without ``return_exceptions`` the first failure is
        raised at once (the others keep running) and a task cancelled meanwhile raises
        ``CancelledError`` here. Past ``timeout`` every task still running is **cancelled**
        (gather's cancellation), a warning names them, and it returns ``None``: no error. A
        task's own ``TimeoutError`` is swallowed the same way.
        """
        limit = check_seconds(timeout, "wait_for_all(timeout=...)")
        tasks = self._tracked()
        if not tasks:
            return
        sim = self._resolve()
        recs = [self._live[t] for t in tasks if t in self._live]
        try:
            gathered = asyncio.gather(*tasks, return_exceptions=return_exceptions)
            if limit:
                _label_cancel(gathered, recs, "wait_for_all timeout")
                await asyncio.wait_for(gathered, timeout=limit)
            else:
                await gathered
            await asyncio.sleep(0)  # the done callbacks run: the count is 0 on return (as the real class)
        except TimeoutError:
            cut = [r for r in recs if r.cancel_reason == "wait_for_all timeout"]
            log.warning("wait_for_all(timeout=%g) timed out at t=+%.3fs: %d task(s) still running were "
                        "cancelled (the real class logs 'some may still be running'): %s", limit or 0.0,
                        sim.clock.monotonic(), len(cut), ", ".join(f"{r.name} [{r.id}]" for r in cut) or "none")
            sim.history.record("task_manager", "wait_timeout", "fail", timeout=limit,
                               cancelled=[r.name for r in cut])

    def _cancel(self, reason: str) -> list[ManagedTask]:
        cut = []
        for rec in self._running():
            task = rec.task
            if task is not None and not task.done():
                if rec.cancel_reason is None:
                    rec.cancel_reason = reason
                task.cancel()
                cut.append(rec)
        return cut

    async def cancel_all(self) -> None:
        """Cancel every tracked task, sleep 0.1 s (virtual) and return, as the real class does.

        A task's clean-up (``except CancelledError``/``finally`` that awaits) may still be
        running on return.
        """
        await self._cancel_all("cancel_all")

    async def _cancel_all(self, reason: str) -> None:
        if not self._running():
            return
        cut = self._cancel(reason)
        if cut:
            log.info("cancelling %d background task(s): %s", len(cut),
                     ", ".join(f"{r.name} [{r.id}]" for r in cut))
        await asyncio.sleep(0.1)

    async def shutdown(self, timeout: float | None = None) -> dict[str, Any]:
        """Cancel every task, then wait up to ``timeout`` for the cancellations, as the real class does.

        Work in flight is lost: shutdown does not let running tasks finish. ``timeout``
        defaults to ``default_shutdown_timeout``; 0 waits for nothing. Returns
        ``{"status": "completed"|"timeout", "initial_tasks", "completed_tasks",
        "remaining_tasks", "duration_seconds"}``; a second call returns ``{"status":
        "already_shutdown", "tasks_remaining": 0}``. A second concurrent call waits for the
        first. A task that swallows its cancellation keeps shutdown waiting, as it keeps the
        real one waiting forever: the simulation ends in ``bg.Stalled`` naming it.
        """
        limit = check_seconds(timeout, "shutdown(timeout=...)")
        async with self._shutdown_lock:
            if self._shutdown:
                return {"status": "already_shutdown", "tasks_remaining": 0}
            self._shutdown = True
            wait = self.default_shutdown_timeout if limit is None else limit
            sim = self._resolve()
            start = sim.clock.monotonic()
            initial = len(self._running())
            cancelled = [r.name for r in self._running() if r.task is not None and not r.task.done()]
            await self._cancel_all("shutdown")
            recs = self._running()
            gathered = asyncio.gather(*[r.task for r in recs if r.task is not None], return_exceptions=True)
            _label_cancel(gathered, recs, "shutdown timeout",
                          lambda cut: self._shutdown_overdue(sim, wait, cut))
            try:
                await asyncio.wait_for(gathered, timeout=wait)
                left = len(self._running())
                result: dict[str, Any] = {
                    "status": "completed", "initial_tasks": initial, "completed_tasks": initial - left,
                    "remaining_tasks": left, "duration_seconds": sim.clock.monotonic() - start}
            except TimeoutError:
                left = len(self._running())
                self._cancel("shutdown timeout")
                result = {"status": "timeout", "initial_tasks": initial, "completed_tasks": initial - left,
                          "remaining_tasks": left, "duration_seconds": sim.clock.monotonic() - start}
            sim.history.record("task_manager", "shutdown", "ok" if result["status"] == "completed" else "fail",
                               **{k: v for k, v in result.items() if k != "status"}, result=result["status"],
                               cancelled=cancelled)
            return result

    @staticmethod
    def _shutdown_overdue(sim: Kernel, wait: float, cut: list[ManagedTask]) -> None:
        """At shutdown's timeout, before it waits for the second cancellation: say who it waits for.

        Said now, not after: a task that swallows its cancellation keeps shutdown (the real
        one too) waiting forever, and this is the last word before the simulation stalls.
        """
        names = [f"{r.name} [{r.id}] (context {r.context!r})" for r in cut]
        log.warning("shutdown(timeout=%g) timed out: %d task(s) still running after their cancellation "
                    "were cancelled again, cutting their clean-up short; shutdown waits for them to end "
                    "(forever for a task that catches CancelledError and goes on): %s", wait, len(cut),
                    ", ".join(names))
        sim.history.record("task_manager", "shutdown_overdue", "fail", timeout=wait,
                           waiting_for=[r.name for r in cut])

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


def _label_cancel(gathered: asyncio.Future[Any], recs: list[ManagedTask], reason: str,
                  then: Callable[[list[ManagedTask]], None] | None = None) -> None:
    """Name ``reason`` on the tasks ``gathered.cancel()`` cancels (``asyncio.wait_for`` at its timeout).

    The gather is cancelled exactly as before; this only labels the history (and calls
    ``then`` with the tasks it cancels).
    """
    cancel = gathered.cancel

    def labelled(msg: Any = None) -> bool:
        cut = [rec for rec in recs if rec.task is not None and not rec.task.done()]
        for rec in cut:
            rec.cancel_reason = reason
        if then is not None:
            then(cut)
        return cancel(msg)

    gathered.cancel = labelled  # type: ignore[method-assign]

