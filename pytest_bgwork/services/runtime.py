"""The waitUntil runtime: background work started by a request that outlives its response.

Shaped after Agentuity's ``ctx.waitUntil(async fn)``, Alien's ``waitUntil(promise)`` and
Cloudflare's ``ctx.waitUntil(promise)``. Tasks start at once and run concurrently; a
failing task is logged (logger ``pytest_bgwork.runtime``) and recorded, never raised into
the response or the other tasks; ``shutdown()`` waits up to a grace period, then cancels
and records what it cut off. Every task is the fault point ``task.<name>``.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..core import validate
from ..core.errors import NotRunning, ProcessCrashed, RuntimeShuttingDown
from ..core.loop import describe_task

if TYPE_CHECKING:
    from ..core.history import Event
    from ..core.kernel import Kernel

__all__ = ["LATE_MODES", "Request", "Runtime", "RuntimeTask", "TaskError"]

log = logging.getLogger("pytest_bgwork.runtime")

#: What ``wait_until`` does once ``shutdown()`` began: raise (Alien's documented rule) or drop.
LATE_MODES = ("raise", "drop")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


# -- helpers shared with the task manager ---------------------------------------------------
def check_seconds(value: object, arg: str, *, optional: bool = True) -> float | None:
    """``None`` (when ``optional``) or a finite number >= 0, else a ``ValueError`` naming ``arg``."""
    if value is None and optional:
        return None
    try:
        return validate.seconds(value, arg, "")
    except ValueError:  # the validator's test, this module's wording (tests pin it)
        expected = "None or a finite number of seconds >= 0" if optional else "a finite number of seconds >= 0"
        limit = f" and at most {validate.MAX_SECONDS:,.0f} (the clock's range)" if (
            isinstance(value, int | float) and not isinstance(value, bool) and value > 0) else ""
        raise (validate.BadArgument if isinstance(value, bool) or not isinstance(value, int | float)
               else ValueError)(f"{arg} expects {expected}{limit} (virtual time); got {value!r}") from None


def clean_name(qualname: str) -> str:
    """A fault-point-safe task name from a qualname: ``make.<locals>.send`` -> ``send``."""
    tail = qualname.rsplit("<locals>.", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.:-]", "", tail).strip(".") or "task"


def close_awaitable(obj: object) -> None:
    """Make sure an awaitable we will never run does not run (and does not warn)."""
    if inspect.iscoroutine(obj):
        obj.close()
    elif isinstance(obj, asyncio.Future):
        obj.cancel()


def _close_unstarted(obj: object, _task: object = None) -> None:
    """Close a coroutine its task never started (it would warn "never awaited")."""
    if inspect.iscoroutine(obj) and inspect.getcoroutinestate(obj) == inspect.CORO_CREATED:
        obj.close()


def _name_of(obj: object) -> str:
    """Deterministic name for a callable or awaitable (never a global counter like ``Task-7``)."""
    if isinstance(obj, functools.partial):
        return _name_of(obj.func)
    if isinstance(obj, asyncio.Task):
        return _name_of(obj.get_coro())
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(qualname, str):
        qualname = type(obj).__qualname__
    return clean_name(qualname)


def _required_args(fn: Callable[..., Any]) -> list[str] | None:
    """The parameters ``fn()`` would be missing, or ``None`` when ``fn()`` binds."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: just call them
        return None
    try:
        sig.bind()
    except TypeError:
        return [
            p.name for p in sig.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
    return None


async def _reraise(exc: BaseException) -> None:
    raise exc


class _CrashWatch:
    """Wakes waiters when an injected crash freezes a task (a frozen task never finishes)."""

    def __init__(self, sim: Kernel) -> None:
        self.waiters: set[asyncio.Future[None]] = set()
        sim.history.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if event.service == "fault" and event.op == "crash":
            for fut in list(self.waiters):  # after this step: the crashing task is frozen by then
                fut.get_loop().call_soon(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


_watches: weakref.WeakKeyDictionary[Kernel, _CrashWatch] = weakref.WeakKeyDictionary()
#: Virtual seconds under which a deadline counts as reached (float rounding of loop.call_later).
DEADLINE_EPSILON = 1e-9


class Deadline:
    """A wait's deadline, armed once when the wait starts (as ``asyncio.wait_for`` arms its timer).

    Its timer wakes the current waiter directly. Re-arming a fresh timer on each wake would
    move it behind the timers armed since, so a task ending exactly at the deadline would
    count as finished or cut off depending on how often the wait woke (found by the oracle).
    """

    def __init__(self, seconds: float | None) -> None:
        self.expired = False
        self.waiter: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self._handle = None if seconds is None else loop.call_later(seconds, self._fire)

    def _fire(self) -> None:
        self.expired = True
        if self.waiter is not None:
            _wake(self.waiter)

    def cancel(self) -> None:
        """Disarm the timer (the wait is over)."""
        if self._handle is not None:
            self._handle.cancel()


async def wait_some(sim: Kernel, tasks: Iterable[asyncio.Future[Any]], timeout: float | None,
                    deadline: Deadline | None = None) -> None:
    """Return when one of ``tasks`` finishes, ``timeout`` passes, ``deadline`` expires, or a crash freezes a task."""
    watch = _watches.get(sim)
    if watch is None:
        watch = _watches[sim] = _CrashWatch(sim)
    if deadline is not None and deadline.expired:
        return
    loop = asyncio.get_running_loop()
    wake: asyncio.Future[None] = loop.create_future()  # set by the crash watch
    inner: asyncio.Future[None] = loop.create_future()  # what this task awaits

    def release(_: object = None) -> None:
        _wake(inner)

    # the same callback hops as asyncio.wait(FIRST_COMPLETED, timeout=): a task's end or a
    # crash wakes via a done callback, the timeout and the deadline directly
    watched = [*tasks, wake]
    for fut in watched:
        fut.add_done_callback(release)
    handle = None if timeout is None else loop.call_later(timeout, release)
    watch.waiters.add(wake)
    if deadline is not None:
        deadline.waiter = inner
    try:
        await inner
    finally:
        watch.waiters.discard(wake)
        for fut in watched:
            fut.remove_done_callback(release)
        wake.cancel()
        if handle is not None:
            handle.cancel()
        if deadline is not None:
            deadline.waiter = None


def remaining(sim: Kernel, deadline: float | None) -> float | None:
    """Seconds left until ``deadline`` (``None``: no deadline), never below 0."""
    return None if deadline is None else max(0.0, deadline - sim.clock.monotonic())


# -- records ---------------------------------------------------------------------------------
@dataclass(eq=False)
class RuntimeTask:
    """One ``wait_until`` task: its name, id, request, times (virtual seconds) and status.

    ``status`` is ``running``, ``done``, ``failed``, ``cut_off`` (cancelled by shutdown),
    ``cancelled`` (by someone else), ``crashed`` (its worker died) or ``dropped``.
    """

    name: str
    id: str
    request: str | None
    request_id: str | None
    started_at: float
    status: str = "running"
    finished_at: float | None = None
    error: BaseException | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def done(self) -> bool:
        """Whether the task finished, one way or another."""
        return self.status != "running"

    @property
    def seconds(self) -> float | None:
        """How long it ran (virtual seconds), ``None`` while it runs."""
        return None if self.finished_at is None else round(self.finished_at - self.started_at, 6)


@dataclass(frozen=True)
class TaskError:
    """A failed ``wait_until`` task: which one, the exception, and when (virtual seconds)."""

    task: str
    id: str
    request: str | None
    exception: BaseException
    time: float

    def __str__(self) -> str:
        where = f" in request {self.request!r}" if self.request else ""
        return (f"waitUntil task {self.task} [{self.id}]{where} failed at t=+{self.time:.3f}s: "
                f"{type(self.exception).__name__}: {self.exception}")


class Request:
    """``async with runtime.request("checkout") as ctx``: one handler invocation.

    ``ctx.wait_until(...)`` starts tasks tied to this request; leaving the block is the
    response, recorded as ``runtime.response`` with ``seconds`` since the request began,
    without waiting for the tasks.
    """

    def __init__(self, runtime: Runtime, name: str, id: str) -> None:
        self.runtime = runtime
        self.name = name
        self.id = id
        #: Virtual seconds (``sim.clock.monotonic()``) when the block was entered / left.
        self.started_at: float | None = None
        self.responded_at: float | None = None
        #: The exception the handler raised, if it did (it propagates; this only records it).
        self.error: BaseException | None = None
        self.tasks: list[RuntimeTask] = []

    @property
    def response_time(self) -> float | None:
        """Seconds from the start of the request to its response; ``None`` before it."""
        if self.started_at is None or self.responded_at is None:
            return None
        return round(self.responded_at - self.started_at, 6)

    @property
    def pending(self) -> list[RuntimeTask]:
        """This request's tasks still running."""
        return [t for t in self.runtime.pending if t.request_id == self.id]

    @property
    def errors(self) -> list[TaskError]:
        """Failures of this request's tasks."""
        ids = {t.id for t in self.tasks}
        return [e for e in self.runtime.errors if e.id in ids]

    def wait_until(self, fn_or_awaitable: Callable[[], Awaitable[Any]] | Awaitable[Any], *,
                   name: str | None = None) -> RuntimeTask:
        """Start a task tied to this request; the response does not wait for it."""
        if self.started_at is None:
            close_awaitable(fn_or_awaitable)
            raise RuntimeError(
                f"ctx.wait_until() of request {self.name!r} was called before the request began: "
                f"use it inside `async with runtime.request({self.name!r}) as ctx:`"
            )
        return self.runtime._start(fn_or_awaitable, name, self)

    async def __aenter__(self) -> Request:
        if self.started_at is not None:
            raise RuntimeError(f"request {self.name!r} [{self.id}] was already entered; "
                               "call runtime.request(...) once per request")
        self.started_at = self.runtime._sim.clock.monotonic()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        sim = self.runtime._sim
        self.responded_at = sim.clock.monotonic()
        seconds = self.response_time
        if exc is None:
            sim.history.record("runtime", "response", request=self.name, id=self.id, seconds=seconds,
                               tasks=len(self.tasks))
        else:
            self.error = exc
            sim.history.record("runtime", "response", "fail", request=self.name, id=self.id,
                               seconds=seconds, tasks=len(self.tasks), error=repr(exc))

    def __repr__(self) -> str:
        return (f"<Request {self.name!r} [{self.id}] response_time={self.response_time} "
                f"tasks={len(self.tasks)}>")


# -- the runtime -----------------------------------------------------------------------------
class Runtime:
    """``sim.runtime``: ``wait_until``, ``request``, ``drain``, ``shutdown``, ``pending``, ``errors``."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._tasks: list[RuntimeTask] = []
        self._errors: list[TaskError] = []
        self._requests: list[Request] = []
        self._shutdown_at: float | None = None
        self._late = "raise"

    # -- starting work ---------------------------------------------------------------------
    def wait_until(self, fn_or_awaitable: Callable[[], Awaitable[Any]] | Awaitable[Any], *,
                   name: str | None = None) -> RuntimeTask:
        """Start ``fn_or_awaitable`` now as a tracked background task; return its record.

        Takes a coroutine (``send_email(order)``), any awaitable, or a zero-argument
        callable returning one (``lambda: send_email(order)``, an ``async def`` without
        parameters). ``name=`` overrides the name derived from the coroutine's qualname;
        it is also the fault point ``task.<name>``. After ``shutdown()`` began it raises
        ``RuntimeShuttingDown`` (or, with ``shutdown(late="drop")``, drops the task).
        """
        return self._start(fn_or_awaitable, name, None)

    def request(self, name: str) -> Request:
        """An async context manager for one handler invocation; yields its ``ctx``."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"request(name=...) expects a non-empty string such as 'checkout'; got {name!r}")
        req = Request(self, name, self._sim._next_id("req"))
        self._requests.append(req)
        return req

    def _start(self, target: object, name: object, req: Request | None) -> RuntimeTask:
        if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
            close_awaitable(target)
            raise ValueError(
                "wait_until(name=...) expects letters, digits, '_', '.', ':' or '-' (it becomes the "
                f"fault point 'task.<name>'), e.g. name='send_email'; got {name!r}"
            )
        derived = self._check_target(target)
        task_name = name if isinstance(name, str) else derived
        sim = self._sim
        where = {"request": req.name, "request_id": req.id} if req else {}
        if self._shutdown_at is not None:
            close_awaitable(target)  # a callable is simply never called
            if self._late == "raise":
                raise RuntimeShuttingDown(
                    f"wait_until({task_name}) was called after runtime.shutdown() began at "
                    f"t=+{self._shutdown_at:.3f}s: the task was not started. Start background work "
                    "before shutdown; shutdown(late='drop') mimics Alien's Rust runtime, which drops "
                    "late tasks with a warning instead."
                )
            rec = self._record(task_name, req)
            rec.status, rec.finished_at = "dropped", rec.started_at
            sim.history.record("runtime", "dropped", "fail", task=task_name, id=rec.id, **where)
            log.warning("waitUntil task %s [%s] dropped: shutdown began at t=+%.3fs (late='drop')",
                        task_name, rec.id, self._shutdown_at)
            return rec
        try:
            loop = self._loop()
        except NotRunning:
            close_awaitable(target)
            raise
        if inspect.isawaitable(target):
            awaitable: Awaitable[Any] = target
        else:
            assert callable(target)  # _check_target made sure
            awaitable, called = self._call(target, derived)
            if name is None:
                task_name = called  # lambda: send_email(x) is named send_email
        rec = self._record(task_name, req)
        sim.history.record("runtime", "wait_until", task=task_name, id=rec.id, **where)
        rec.task = loop.create_task(self._run(rec, awaitable), name=f"waitUntil {task_name} {rec.id}")
        # a task cancelled before its first step (its request crashed, the simulation closed)
        # never ran ``_run``: close the awaitable it would have run, so it does not warn
        rec.task.add_done_callback(functools.partial(_close_unstarted, awaitable))
        return rec

    def _record(self, task_name: str, req: Request | None) -> RuntimeTask:
        rec = RuntimeTask(task_name, self._sim._next_id("wu"), req.name if req else None,
                          req.id if req else None, self._sim.clock.monotonic())
        self._tasks.append(rec)
        if req is not None:
            req.tasks.append(rec)
        return rec

    @staticmethod
    def _check_target(target: object) -> str:
        """Validate what ``wait_until`` got, without running it; return its derived name."""
        if inspect.isawaitable(target):
            if inspect.iscoroutine(target) and inspect.getcoroutinestate(target) != inspect.CORO_CREATED:
                raise TypeError(
                    f"wait_until() got a coroutine that already ran ({_name_of(target)}); pass a fresh "
                    "one, e.g. wait_until(send_email(order))"
                )
            return _name_of(target)
        if not callable(target):
            raise TypeError(
                "wait_until() takes a coroutine (wait_until(send_email(order))), an awaitable, or a "
                f"zero-argument callable returning one; got {type(target).__name__} {target!r}"
            )
        fn_name = _name_of(target)
        missing = _required_args(target)
        if missing is not None:
            args = ", ".join(missing)
            raise TypeError(
                f"wait_until({fn_name}): {fn_name} needs arguments ({args}) but wait_until calls it "
                f"with none. Pass a coroutine, wait_until({fn_name}({args})), or a zero-argument "
                f"callable, wait_until(lambda: {fn_name}({args}))"
            )
        return fn_name

    @staticmethod
    def _call(fn: Callable[[], object], fn_name: str) -> tuple[Awaitable[Any], str]:
        """Call a zero-argument callable: its awaitable (or a task failing as ``fn`` raised), and name."""
        try:
            result = fn()
        except Exception as exc:  # the task failed as it started: isolate it like any failure
            return _reraise(exc), fn_name
        if not inspect.isawaitable(result):
            raise TypeError(
                f"wait_until({fn_name}): {fn_name}() returned {type(result).__name__}, not an "
                "awaitable, so there is nothing to wait for (a sync function already ran). Pass an "
                "async function or a coroutine: wait_until(work())"
            )
        return result, _name_of(result) if inspect.iscoroutine(result) else fn_name

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._sim.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if (running is not None and running is not loop) or loop.is_closed():
            raise NotRunning(
                "wait_until() must run on this simulation's virtual loop: call it inside sim.run(...) "
                "or an async test that uses the `bgwork` fixture"
            )
        return loop

    async def _run(self, rec: RuntimeTask, awaitable: Awaitable[Any]) -> None:
        sim, point = self._sim, f"task.{rec.name}"
        try:
            try:
                step = sim.faults._enter(point)
                if step is not None:
                    await step
            except BaseException:
                close_awaitable(awaitable)
                raise
            await awaitable
            sim.faults._leave(point)
        except asyncio.CancelledError:
            if rec.status == "running":
                self._finish(rec, "cancelled")
                sim.history.record("runtime", "cancelled", "unknown", task=rec.name, id=rec.id,
                                   **self._where(rec))
            else:
                rec.finished_at = sim.clock.monotonic()
            raise
        except ProcessCrashed:  # the worker this task ran in died: the task dies with it
            self._finish(rec, "crashed")
            sim.history.record("runtime", "cut_off", "unknown", task=rec.name, id=rec.id,
                               reason="crashed", **self._where(rec))
        except Exception as exc:
            self._finish(rec, "failed")
            rec.error = exc
            now = sim.clock.monotonic()
            self._errors.append(TaskError(rec.name, rec.id, rec.request, exc, now))
            sim.history.record("runtime", "task_failed", "fail", task=rec.name, id=rec.id,
                               error=repr(exc), seconds=rec.seconds, **self._where(rec))
            where = f" (request {rec.request!r})" if rec.request else ""
            log.error("waitUntil task %s [%s]%s failed at t=+%.3fs: %s: %s", rec.name, rec.id, where,
                      now, type(exc).__name__, exc, exc_info=exc)
        else:
            self._finish(rec, "done")
            sim.history.record("runtime", "task_done", task=rec.name, id=rec.id, seconds=rec.seconds,
                               **self._where(rec))

    def _finish(self, rec: RuntimeTask, status: str) -> None:
        if rec.status == "running":
            rec.status = status
        rec.finished_at = self._sim.clock.monotonic()

    @staticmethod
    def _where(rec: RuntimeTask) -> dict[str, Any]:
        return {"request": rec.request, "request_id": rec.request_id} if rec.request else {}

    # -- waiting ---------------------------------------------------------------------------
    def _live(self) -> list[RuntimeTask]:
        frozen = self._sim.loop._ignored_tasks
        live = []
        for rec in self._tasks:
            if rec.status != "running" or rec.task is None:
                continue
            if rec.task in frozen:  # frozen by an injected crash: it never resumes
                rec.status = "crashed"
                continue
            if rec.task.done():  # cancelled before its first step: ``_run`` never saw it
                self._finish(rec, "cancelled")
                self._sim.history.record("runtime", "cancelled", "unknown", task=rec.name,
                                         id=rec.id, started=False, **self._where(rec))
                continue
            live.append(rec)
        return live

    async def drain(self, timeout: float | None = None) -> None:
        """Wait (virtual time) until no task is pending, including tasks started meanwhile.

        On ``timeout`` it raises ``TimeoutError`` naming the tasks still running and leaves
        them running: draining only watches; ``shutdown()`` is what cancels.
        """
        limit = check_seconds(timeout, "drain(timeout=...)")
        self._sim._require_loop("runtime.drain()")
        clock = self._sim.clock
        deadline = None if limit is None else clock.monotonic() + limit
        me = asyncio.current_task()
        while True:
            live = [r.task for r in self._live() if r.task is not None and r.task is not me]
            if not live:
                return
            left = remaining(self._sim, deadline)
            if left is not None and left <= DEADLINE_EPSILON:
                lines = "\n".join(f"  - {line}" for line in self.outstanding())
                raise TimeoutError(
                    f"runtime.drain(timeout={limit:g}) timed out at t=+{clock.monotonic():.3f}s with "
                    f"{len(live)} waitUntil task(s) still running (they keep running; "
                    f"runtime.shutdown(grace=...) cancels them):\n{lines}"
                )
            await wait_some(self._sim, live, left)

    async def shutdown(self, grace: float = 30, late: str = "raise") -> list[RuntimeTask]:
        """Refuse new tasks, wait up to ``grace`` virtual seconds, then cancel the rest.

        Returns the tasks it cut off (each recorded as ``runtime.cut_off``). ``late``
        decides what ``wait_until`` does from now on: ``"raise"`` (``RuntimeShuttingDown``)
        or ``"drop"`` (close the task, record ``runtime.dropped``, log a warning).
        """
        limit = check_seconds(grace, "shutdown(grace=...)", optional=False)
        assert limit is not None
        if late not in LATE_MODES:
            raise ValueError(f"shutdown(late=...) expects one of {', '.join(map(repr, LATE_MODES))}; "
                             f"got {late!r}")
        self._sim._require_loop("runtime.shutdown()")
        sim, clock = self._sim, self._sim.clock
        if self._shutdown_at is None:
            self._shutdown_at = clock.monotonic()
        self._late = late
        me = asyncio.current_task()
        live = [r for r in self._live() if r.task is not me]
        sim.history.record("runtime", "shutdown", grace=limit, late=late, pending=len(live))
        deadline = clock.monotonic() + limit
        while True:
            cut = [r for r in self._live() if r.task is not me]
            left = remaining(sim, deadline)
            if not cut or (left is not None and left <= DEADLINE_EPSILON):
                break
            await wait_some(sim, [r.task for r in cut if r.task is not None], left)
        for rec in cut:
            rec.status = "cut_off"
            sim.history.record("runtime", "cut_off", "unknown", task=rec.name, id=rec.id, grace=limit,
                               **self._where(rec))
            log.warning("waitUntil task %s [%s] cut off: still running %gs after shutdown began",
                        rec.name, rec.id, limit)
            assert rec.task is not None
            rec.task.cancel()
        if cut:
            await asyncio.wait([r.task for r in cut if r.task is not None])  # their finally blocks run
        return cut

    # -- looking -------------------------------------------------------------------------
    @property
    def pending(self) -> list[RuntimeTask]:
        """Tasks still running, oldest first."""
        return self._live()

    @property
    def errors(self) -> list[TaskError]:
        """Every task failure so far, in the order they happened."""
        return list(self._errors)

    @property
    def tasks(self) -> list[RuntimeTask]:
        """Every task ever started (or dropped), oldest first."""
        return list(self._tasks)

    @property
    def cut_off(self) -> list[RuntimeTask]:
        """Tasks ``shutdown()`` cancelled after the grace period."""
        return [t for t in self._tasks if t.status == "cut_off"]

    @property
    def dropped(self) -> list[RuntimeTask]:
        """Tasks dropped because they came after ``shutdown(late="drop")`` began."""
        return [t for t in self._tasks if t.status == "dropped"]

    @property
    def requests(self) -> list[Request]:
        """Every request made through ``request()``."""
        return list(self._requests)

    @property
    def shutting_down(self) -> bool:
        """Whether ``shutdown()`` began."""
        return self._shutdown_at is not None

    def outstanding(self) -> list[str]:
        """One line per task still running: name, id, request, start and where it waits."""
        now = self._sim.clock.monotonic()
        lines = []
        for rec in self._live():
            where = f" of request {rec.request!r}" if rec.request else ""
            task = rec.task
            at = describe_task(task) if task is not None else "(no task)"
            lines.append(f"{rec.name} [{rec.id}]{where}, started t=+{rec.started_at:.3f}s "
                         f"({now - rec.started_at:g}s ago): {at}")
        return lines

    # -- snapshot (for assert_idempotent) --------------------------------------------------------
    def _snapshot(self) -> object:
        """The finished-task records, errors and shutdown state (running tasks cannot be copied)."""
        done = [copy.copy(t) for t in self._tasks if t.done]
        return {"done": done, "errors": list(self._errors), "shutdown_at": self._shutdown_at,
                "late": self._late}

    def _restore(self, state: object) -> None:
        """Put back what ``_snapshot`` captured; tasks running now keep running."""
        if not isinstance(state, dict) or "done" not in state:
            raise TypeError(f"_restore() takes what _snapshot() returned; got {type(state).__name__}")
        self._tasks = [copy.copy(t) for t in state["done"]] + [t for t in self._tasks if not t.done]
        self._errors = list(state["errors"])
        self._shutdown_at, self._late = state["shutdown_at"], state["late"]

    def __repr__(self) -> str:
        return (f"<Runtime pending={len(self._live())} errors={len(self._errors)} "
                f"shutting_down={self.shutting_down}>")

