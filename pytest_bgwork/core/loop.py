"""A virtual-time asyncio event loop.

``loop.time()`` reads the virtual clock. When no callback is ready the loop jumps the
clock straight to the next timer instead of waiting. Work handed to a thread
(``run_in_executor``, ``asyncio.to_thread``, ``getaddrinfo``) is waited for in real
time with the clock held still, so a thread's result is never skipped over. Nothing
ready, no timer, no thread, yet tasks waiting: ``Deadlock``, naming each task and the
line it waits on.

Trust: the loop never jumps past its *horizon* (``Stalled``, naming the
waiting tasks), never spins at one virtual instant for more than ``BUSY_LIMIT``
iterations (``Stalled``), turns an error raised in a loop callback into a failure of
the run, and lets outcome exceptions that are not its own (pytest's ``Failed``,
``KeyboardInterrupt``) through instead of storing them in a forgotten task. Unnamed
tasks get simulation-local names in creation order (``sim-task-1``...), so teardown
describes leftovers the same way on every run.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import heapq
import itertools
import linecache
import logging
import math
import os
import selectors
import sys
import types
from collections.abc import Callable, Mapping
from time import perf_counter as _perf
from typing import TYPE_CHECKING, Any, TypeVar

from . import _cpython, threads
from .clock import VirtualClock
from .errors import Deadlock, ProcessCrashed, Stalled

#: The callback ``run_until_complete`` adds to its future: it stops the loop.
_RUN_UNTIL_COMPLETE_CB = getattr(asyncio.base_events, "_run_until_complete_cb", None)

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["BUSY_LIMIT", "REAL_LIMIT", "VirtualEventLoop", "describe_task"]

_T = TypeVar("_T")
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_OWN_DIR = os.path.dirname(__file__)
_PACKAGE_DIR = os.path.dirname(_OWN_DIR) + os.sep
#: Real seconds to listen for a stray thread-safe wake-up before declaring a deadlock.
_DEADLOCK_GRACE = 0.05
#: Real seconds to listen more when a thread of the simulation waits (a server thread the
#: simulation did not start may set its event: ``http.server``'s shutdown polls every 0.5 s).
_THREAD_DEADLOCK_GRACE = 2.0
#: Real seconds a single blocking wait for a thread lasts before the loop looks again.
_THREAD_SLICE = 0.25
#: asyncio sweeps cancelled timers out of a heap larger than this when over half are cancelled.
_MIN_SCHEDULED = 100
#: asyncio's longest single select (``base_events.MAXIMUM_SELECT_TIMEOUT``).
_MAX_SELECT = 24 * 3600
#: Loop iterations with work ready at one virtual instant (no thread working) before the
#: loop declares the run busy-stalled: under a second of real time; real work stays far below it.
BUSY_LIMIT = 100_000
#: loop -> the task it is stepping (asyncio's own table where checked: ``_cpython``)
_current_task: Callable[[Any], asyncio.Task[Any] | None] = _cpython.current_task_getter()
#: The opcode a frame is at while it awaits (-1, matching none, where unchecked: ``_cpython``).
_SEND = _cpython.await_opcode()
#: task -> whether a cancellation is pending (``_cpython``)
_cancel_requested = _cpython.cancel_requested_getter()
_HANDLE_RUN = _cpython.handle_run_code()
#: Real seconds the loop may work at one virtual instant (no thread working) before the run
#: is declared runaway work: a handler that re-publishes itself under ``duplicate`` chaos
#: doubles its work with every delivery without ever moving time or spinning idle.
REAL_LIMIT = 10.0
#: Live tasks a runaway-guard window may add (or half its starting count, if more) and
#: still count as steady: finite work's concurrency wobbles, runaway growth multiplies.
_GROWTH_SLACK = 8


def _innermost_frame(coro: Any) -> types.FrameType | None:
    """Follow a coroutine's ``await`` chain to the innermost user frame: outside asyncio,
    and outside this plugin when there is one (a service call's suspension point names
    the caller's line, not the plugin's ``yield``)."""
    frame = None
    user = False
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(
            coro, "ag_frame", None
        )
        if f is not None:
            fname = f.f_code.co_filename
            if not fname.startswith(_ASYNCIO_DIR):
                ours = fname.startswith(_PACKAGE_DIR)
                if not (ours and user):
                    frame, user = f, not ours
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(
            coro, "ag_await", None
        )
    return frame


def describe_task(task: asyncio.Task[Any]) -> str:
    """One line: the task's name, its coroutine and the line it is suspended on."""
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", type(coro).__name__)
    frame = _innermost_frame(coro)
    where = "(not started)"
    if frame is not None:
        line = linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip()
        where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        if line:
            where += f": {line}"
    return f"task {task.get_name()!r} ({name}) waiting at {where}"


_INF = math.inf


def _refuse_instant(call: str, value: object) -> None:
    """A timer at NaN or inf never fires in order (NaN compares false with everything, so
    the heap misplaces every timer after it): refuse it where the app asked for it."""
    raise ValueError(
        f"loop.{call} got {value!r}: a virtual-time timer needs a finite number of seconds "
        "(asyncio.sleep(), wait_for(timeout=), call_later() all end here). NaN would corrupt the "
        "order of every other timer, inf would never fire. Pass a finite delay; to wait forever, "
        "await an event or future instead (e.g. `await asyncio.Event().wait()`)."
    )


_copy_context = contextvars.copy_context
_asyncio_log = logging.getLogger("asyncio")  # asyncio.log.logger
_Task = asyncio.Task
_Handle = asyncio.Handle


class _OrderedTimerHandle(asyncio.TimerHandle):
    """A timer that breaks ties by creation order: timers due at one instant fire FIFO."""

    __slots__ = ("_seq",)
    _seq: int

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimerHandle):  # (when, seq) < (when, seq), minus the tuples
            when, other_when = self._when, other._when  # type: ignore[attr-defined]
            return when < other_when or (when == other_when and self._seq < other._seq)
        return super().__lt__(other)  # type: ignore[operator]


_new_timer = object.__new__


class DeadlineTimer(_OrderedTimerHandle):
    """One heap entry standing for many deadlines: the earliest live one of its ``owner``.

    A queue keeps its visibility deadlines itself (``owner.head()``: the earliest live
    ``(when, seq)`` or ``None``; ``owner.take()``: pop it, return the arguments of
    ``callback``) and arms one of these instead of a ``TimerHandle`` per delivery. Its
    key may lag behind (an acked head is dropped lazily): the loop re-keys it whenever it
    reaches the top of the heap, before the key decides anything, and hands out one
    ``Handle`` per due deadline, each at the place its own timer would have had.
    """

    __slots__ = ("_owner",)
    _owner: Any

    def _sync(self, heap: list[asyncio.TimerHandle]) -> bool:
        """At the top of ``heap``: re-key to the owner's head or leave; False if nothing changed."""
        head = self._owner.head()
        if head is None:
            heapq.heappop(heap)
            self._scheduled = False
            self._owner.timer = None
            return True
        when, seq = head
        if when == self._when and seq == self._seq:  # type: ignore[has-type]
            return False
        self._when, self._seq = when, seq
        heapq.heapreplace(heap, self)
        return True

    def _take(self, heap: list[asyncio.TimerHandle]) -> asyncio.Handle:
        """Popped as due: a handle for the head's deadline; back into ``heap`` at the next one."""
        args = self._owner.take()
        handle: Any = _new_timer(_Handle)
        handle._context = self._context  # type: ignore[attr-defined]
        handle._loop = self._loop  # type: ignore[attr-defined]
        handle._callback = self._callback  # type: ignore[attr-defined]
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        head = self._owner.head()
        if head is None:
            self._owner.timer = None
        else:
            self._when, self._seq = head
            heapq.heappush(heap, self)
            self._scheduled = True
        return handle  # type: ignore[no-any-return]

    def _run(self) -> None:  # pragma: no cover - the loop never queues the timer itself
        self._take(self._loop._scheduled)._run()  # type: ignore[attr-defined]


class _VirtualSelector(selectors.BaseSelector):
    """Wraps the loop's real selector; a blocking ``select`` becomes a clock jump."""

    def __init__(self, real: selectors.BaseSelector, loop: VirtualEventLoop) -> None:
        self._real = real
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._real.get_map()

    def close(self) -> None:
        self._real.close()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        loop = self._loop
        if loop._fatal is not None:
            loop._raise_fatal()
        real_io = len(self._real.get_map()) > 1  # more than the loop's own self-pipe
        if loop._threads and loop.threads_working():
            # A thread is working for us: wait for it in real time, clock held still.
            loop._busy = 0
            if timeout == 0:
                return self._real.select(0)
            return self._real.select(_THREAD_SLICE)
        if timeout == 0:
            busy = loop._busy = loop._busy + 1
            if busy == 1:
                loop._busy_begins()
            elif busy > BUSY_LIMIT or loop._no_progress():
                raise loop._busy_error()
            return self._real.select(0) if real_io else []
        loop._busy = 0
        if real_io:
            events = self._real.select(0)
            if events:
                return events
        if timeout is not None:
            scheduled = loop._scheduled
            when = scheduled[0].when() if scheduled else loop.time() + timeout
            if when > loop._horizon and when > loop.horizon():
                loop._past_horizon(when)
            loop.clock.advance_to(when)
            return []
        # Nothing ready, no timer: listen briefly for a thread-safe wake-up, then give up.
        events = self._real.select(_DEADLOCK_GRACE)
        if events or loop._ready or (loop._threads and loop.threads_working()):
            return events
        if loop._vwaits:  # a thread waits: one the simulation did not start may still notify it
            events = self._real.select(_THREAD_DEADLOCK_GRACE)
            if events or loop._ready or (loop._threads and loop.threads_working()):
                return events
        loop._deadlocked()
        return []


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose time is a ``VirtualClock``.

    ``sim`` is the simulation that owns the loop (``None`` until one adopts it).
    """

    # asyncio.BaseEventLoop internals this loop reads (typeshed does not declare them)
    _task_factory: Any
    _current_handle: asyncio.Handle | None
    _scheduled: list[asyncio.TimerHandle]
    _ready: collections.deque[asyncio.Handle]
    _stopping: bool
    _debug: bool
    _closed: bool
    _timer_cancelled_count: int

    def __init__(self, clock: VirtualClock | None = None) -> None:
        super().__init__()
        self.clock = clock if clock is not None else VirtualClock()
        self.sim: Kernel | None = None
        self._threads = 0
        self._timer_seq = 0
        # asyncio fires a timer when ``when < time() + _clock_resolution``; a clock jumped
        # exactly to ``when`` needs a resolution above float precision at large times
        # (1e-9 vanishes past ~97 virtual days), so use 1 µs: good for centuries.
        self._clock_resolution = 1e-6
        self._recurring: set[asyncio.TimerHandle] = set()
        self._ignored_tasks: set[asyncio.Task[Any]] = set()
        #: Virtual instant auto-advance may not pass (``inf``: none); ``horizon_reason`` says why.
        self._horizon = math.inf
        self.horizon_reason = ""
        self._extensions: list[float] = []
        self._busy = 0
        self._fatal: BaseException | None = None
        self._task_ids = itertools.count(1)
        self._busy_since = 0.0
        #: The runaway guard's window: live tasks and finished tasks when it opened; whether
        #: the live tasks grew in the window before; tasks finished so far.
        self._window_live = 0
        self._window_done = 0
        self._grew = False
        self._tasks_done = 0
        #: The real clock the runaway guard reads (a test may put a slow fake clock here).
        self.real_clock: Callable[[], float] = _perf
        #: Real seconds of one window of the runaway guard (``REAL_LIMIT``; the marker's
        #: ``runaway_after=``): see ``_no_progress``.
        self.real_limit = REAL_LIMIT
        #: Creation numbers of ``create_task`` tasks, held strongly until each ends: asyncio
        #: keeps tasks only weakly, so a task waiting on an object only it references would be
        #: collected (its ``finally`` run) whenever the garbage collector happens to run.
        self._task_order: dict[asyncio.Task[Any], int] = {}
        #: Creation numbers of ``start_task`` tasks, held until they end (``task_ended``).
        self._own_order: dict[asyncio.Task[Any], int] = {}
        real = self._selector  # type: ignore[has-type]
        #: The real selector's fd map (``len > 1``: real I/O besides the self-pipe), if readable.
        self._fds: dict[int, Any] | None = getattr(real, "_fd_to_key", None)
        self._selector = _VirtualSelector(real, self)
        #: Threads of this simulation blocked in a wait on virtual time (``core.threads``).
        self._vwaits: dict[Any, None] = {}  # threads.Wait, threads.Queued, network.HeldSocket

    # -- time -------------------------------------------------------------------
    def time(self) -> float:
        return self.clock._mono

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """``BaseEventLoop.call_at`` with FIFO order among timers due at the same instant."""
        if when is None:
            raise TypeError("when cannot be None")
        if not when < _INF:  # NaN or inf would corrupt the timer heap's order
            _refuse_instant("call_at(when=...)", when)
        timer: Any
        if self._closed or self._debug:  # the checks and source tracebacks of asyncio's path
            self._check_closed()  # type: ignore[attr-defined]
            timer = _OrderedTimerHandle(when, callback, args, self, context)
            if timer._source_traceback:
                del timer._source_traceback[-1]
        else:  # TimerHandle.__init__ inlined (it is on every sleep's path)
            timer = _new_timer(_OrderedTimerHandle)
            timer._context = context if context is not None else _copy_context()
            timer._loop = self
            timer._callback = callback
            timer._args = args
            timer._cancelled = False
            timer._repr = None
            timer._source_traceback = None
            timer._when = when
        self._timer_seq += 1
        timer._seq = self._timer_seq
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer  # type: ignore[no-any-return]

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        """``BaseEventLoop.call_soon`` with ``Handle.__init__`` inlined (every task wake-up)."""
        if self._closed or self._debug:
            return super().call_soon(callback, *args, context=context)
        handle: Any = _new_timer(_Handle)
        handle._context = context if context is not None else _copy_context()
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        self._ready.append(handle)
        return handle  # type: ignore[no-any-return]

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """``BaseEventLoop.call_later`` without a frame in between (``asyncio.sleep`` uses it)."""
        if delay is None:
            raise TypeError("delay must not be None")
        if not delay < _INF:
            _refuse_instant("call_later(delay=...)", delay)
        return self.call_at(self.clock._mono + delay, callback, *args, context=context)

    def reserve_seq(self) -> int:
        """The creation number a timer made now would get (ties at one instant fire in this
        order); a deadline kept by a ``DeadlineTimer`` owner takes one instead of a timer."""
        self._timer_seq += 1
        return self._timer_seq

    def arm_deadlines(self, owner: Any, callback: Callable[..., object],
                      context: contextvars.Context) -> None:
        """Make sure ``owner``'s ``DeadlineTimer`` is in the heap no later than its head.

        Call it after adding a deadline that may be earlier than the timer's key (or when
        ``owner.timer`` is ``None``); ``callback(*owner.take())`` runs in ``context`` for
        each deadline as it falls due.
        """
        head = owner.head()
        if head is None:
            return
        when, seq = head
        old: Any = owner.timer
        if old is not None and not old._cancelled:
            if (old._when, old._seq) <= head:
                return  # due no later than the head: it re-keys when it gets there
            old._cancelled = True  # an earlier deadline (a shortened lease): a new entry
            self._timer_cancelled_count += 1
        timer: Any = _new_timer(DeadlineTimer)
        timer._context = context
        timer._loop = self
        timer._callback = callback
        timer._args = ()
        timer._cancelled = False
        timer._repr = None
        timer._source_traceback = None
        timer._when = when
        timer._seq = seq
        timer._owner = owner
        owner.timer = timer
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True

    def _sync_deadlines(self) -> None:
        """Re-key every ``DeadlineTimer`` in the heap to its owner's earliest live deadline."""
        scheduled = self._scheduled
        changed = False
        timer: Any
        for timer in scheduled:
            if type(timer) is DeadlineTimer and not timer._cancelled:
                head = timer._owner.head()
                if head is None:
                    timer._cancelled = True
                    self._timer_cancelled_count += 1
                    timer._owner.timer = None
                elif head != (timer._when, timer._seq):
                    timer._when, timer._seq = head
                    changed = True
        if changed:
            heapq.heapify(scheduled)

    def run_until_complete(self, future: Any) -> Any:
        """``BaseEventLoop.run_until_complete``, after dropping a stale stop request.

        When a ``BaseException`` (pytest's ``Failed``, ``KeyboardInterrupt``) escapes a run,
        asyncio leaves that run's completion callback queued; it stops the next run at once
        ("Event loop stopped before Future completed", e.g. when teardown cancels leftovers).
        """
        for handle in self._ready:
            if getattr(handle, "_callback", None) is _RUN_UNTIL_COMPLETE_CB:
                handle.cancel()
        return super().run_until_complete(future)

    # -- tasks: local names, creation order, outcome exceptions never stored -------
    def create_task(  # type: ignore[override]
        self, coro: Any, *, name: str | None = None, context: contextvars.Context | None = None,
    ) -> asyncio.Task[Any]:
        """``BaseEventLoop.create_task``; an unnamed task is ``sim-task-<n>`` (n: creation order)."""
        n = next(self._task_ids)
        if name is None:
            name = f"sim-task-{n}"
        if self._task_factory is None and not self._closed:  # asyncio's create_task, inlined
            task = _Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:  # type: ignore[attr-defined]
                del task._source_traceback[-1]  # type: ignore[attr-defined]
        else:
            task = super().create_task(coro, name=name, context=context)
        self._task_order[task] = n
        task.add_done_callback(self._task_finished)
        if not n & 255 and self._busy and self._fatal is None and self._no_progress():
            self._fatal = self._busy_error()  # runaway work inside one loop iteration
        return task

    def start_task(self, coro: Any, name: str, context: contextvars.Context) -> asyncio.Task[Any]:
        """``create_task`` for a service that ends its own tasks (queue attempts).

        The caller catches what its coroutine raises and calls ``task_ended(task)`` as it
        finishes; an outcome exception that is not ours it hands to ``reraise_later``. So the
        task needs no done callback and its creation number no weak reference.
        """
        if self._task_factory is not None or self._closed or self._debug:
            return self.create_task(coro, name=name, context=context)
        n = next(self._task_ids)
        task = _Task(coro, loop=self, name=name, context=context)
        self._own_order[task] = n
        if not n & 255 and self._busy and self._fatal is None and self._no_progress():
            self._fatal = self._busy_error()  # runaway work inside one loop iteration
        return task

    def task_ended(self, task: asyncio.Task[Any] | None) -> None:
        """A ``start_task`` task is finishing: forget its creation number."""
        self._own_order.pop(task, None)  # type: ignore[arg-type]
        self._tasks_done += 1

    def reraise_later(self, task: asyncio.Task[Any]) -> None:
        """A ``start_task`` task is about to end with an exception that is not ours: re-raise it
        from the loop once it ended, as ``create_task``'s tasks do."""
        task.add_done_callback(self._task_finished)

    def _task_finished(self, task: asyncio.Task[Any]) -> None:
        """A task ended: drop the loop's strong reference; re-raise an outcome exception that
        is not ours (pytest's ``Failed``)."""
        self._task_order.pop(task, None)
        self._tasks_done += 1
        if task.cancelled():
            return
        exc = task.exception()
        # KeyboardInterrupt and SystemExit already left the loop when the task raised them
        if exc is not None and not isinstance(exc, Exception | ProcessCrashed | KeyboardInterrupt
                                              | SystemExit):
            raise exc  # asyncio stored it in the task, where nobody may ever look

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """An error raised in a loop callback fails the run (asyncio would only log it)."""
        exc = context.get("exception")
        if exc is None or "handle" not in context:
            super().call_exception_handler(context)
            return
        if not isinstance(exc, Exception):
            raise exc  # never swallow what is not ours: pytest's Failed, SystemExit, ...
        if self._fatal is None:
            exc.add_note(f"bgwork: raised in a loop callback ({context.get('message', '')}); "
                         "the virtual loop fails the run instead of logging it")
            self._fatal = exc

    def _raise_fatal(self) -> None:
        exc, self._fatal = self._fatal, None
        assert exc is not None
        raise exc

    def task_order(self, task: asyncio.Task[Any]) -> int:
        """Creation number of a task made on this loop (tasks from elsewhere sort last)."""
        n = self._own_order.get(task)
        return self._task_order.get(task, sys.maxsize) if n is None else n

    # -- horizon: how far auto-advance may move the clock ----------------------------
    def set_horizon(self, when: float, reason: str) -> None:
        """Auto-advance raises ``Stalled`` rather than jump past virtual instant ``when``."""
        self._horizon = when
        self.horizon_reason = reason

    def horizon(self) -> float:
        """The instant auto-advance may reach: the horizon, or an explicit advance's target."""
        return max(self._horizon, *self._extensions) if self._extensions else self._horizon

    def extend_horizon(self, when: float) -> None:
        """An explicit ``advance``/``run_until_idle`` may move time up to ``when``."""
        self._extensions.append(when)

    def end_extension(self, when: float, slide_by: float) -> None:
        """An explicit wait ended: the horizon now lies ``slide_by`` seconds past the present."""
        with contextlib.suppress(ValueError):
            self._extensions.remove(when)
        if self._horizon != math.inf:
            self._horizon = max(self._horizon, self.clock._mono + slide_by)

    def waiting_tasks(self) -> list[str]:
        """One line per live task but the one running, in creation order."""
        current = asyncio.current_task(self) if self.is_running() else None
        return [describe_task(t) for t in self.live_tasks() if t is not current]

    def _timer_names(self) -> str:
        names: list[str] = []
        for h in sorted(self._scheduled):
            if h.cancelled():
                continue
            cb = h._callback  # type: ignore[attr-defined]
            text = getattr(cb, "__qualname__", None) or type(cb).__name__
            args = h._args
            label = args[0] if args else None
            label = label if isinstance(label, str) else getattr(label, "name", None)
            if isinstance(label, str):
                text += f" {label!r}"
            text += " [recurring]" if h in self._recurring else ""
            if text not in names:
                names.append(text)
        return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")

    def _past_horizon(self, when: float) -> None:
        now = self.clock._mono
        horizon = self.horizon()
        self._horizon = math.inf  # let the run's clean-up go on
        self._extensions.clear()
        tasks = self.waiting_tasks()
        listed = "\n".join(f"  - {t}" for t in tasks[:20]) or "  (no task is waiting)"
        raise Stalled(
            f"virtual time would pass the horizon t=+{horizon:g}s ({self.horizon_reason}) at "
            f"t=+{now:.3f}s: the next timer is due at t=+{when:g}s ({self._timer_names()}).\n"
            f"Waiting:\n{listed}\n"
            "Each waits for something that has not happened while only timers kept firing. "
            "If this much virtual time is intended, raise max_time= "
            "(@pytest.mark.bgwork(max_time=...), Simulation(max_time=...)) or advance explicitly."
        )

    def _yield_changes_nothing(self, frame: types.FrameType | None) -> bool:
        """Would a service call's bare yield be a no-op (``core.faults.suspend`` and
        ``FaultInjector._enter`` ask), ``frame`` being the first frame that must be
        awaiting it (the caller of ``suspend()``, of a service method that calls ``_enter``,
        of ``_enter``'s rule-applying coroutine)?

        The rule holds, and the yield is skipped, when all of these hold (else it yields, as
        before):

        - this loop (a ``VirtualEventLoop``, not a subclass: callers check) has no thread or real I/O
          working, is not stopping, not in debug mode, has no callback error pending and no
          cancelled-timer sweep due: its next iteration takes ``_run_once``'s fast path;
        - its ready queue is empty (nothing would run before this task's next step) and no
          timer, cancelled or not, is due at or before now (none would be made ready first);
          the clock does not move while work is ready, so the horizon plays no part;
        - the yield would reach this loop directly: every frame from ``frame`` up to the
          current task's coroutine is awaiting (at ``SEND``), and that coroutine was
          stepped by a loop handle (the task's step, which only this loop's ``_run_once`` runs:
          not an eager start from inside another callback). Code that steps a coroutine by
          hand (``run_sync``, anything calling ``.send()``) gets its yield as before;
        - the task has no cancellation pending (it would be raised at the yield);
        - the busy guard would not fire: the skip counts the iteration in ``self._busy`` (and
          notes when the run of busy iterations began) as ``_run_once`` would; at the limit
          the task yields and the loop raises ``Stalled`` as before.

        Then the yield's only effect would be the loop's next iteration stepping this task
        again at the same virtual instant, with nothing run in between.
        """
        if self._ready or self._threads or self._stopping or self._debug or self._fatal is not None:
            return False
        fds = self._fds
        if fds is None or len(fds) > 1:
            return False
        scheduled = self._scheduled
        if scheduled and (
                scheduled[0]._when < self.clock._mono + self._clock_resolution  # type: ignore[attr-defined]
                or (len(scheduled) > _MIN_SCHEDULED
                    and self._timer_cancelled_count > len(scheduled) // 2)):
            return False
        task = _current_task(self)
        if task is None:
            return False
        try:
            if _cancel_requested(task):
                return False
        except AttributeError:  # a task without the field: a cancellation may be pending
            return False
        try:
            top = task.get_coro().cr_frame  # type: ignore[union-attr]
        except AttributeError:  # a task of something else than a coroutine
            return False
        f = frame
        while f is not top:  # the frames between the call and the task's coroutine
            if f is None or f.f_code.co_code[f.f_lasti] != _SEND:
                return False
            f = f.f_back
        if top is None or top.f_code.co_code[top.f_lasti] != _SEND:
            return False
        handle = top.f_back
        if handle is None or handle.f_code is not _HANDLE_RUN:
            return False
        busy = self._busy + 1  # the busy guard, exactly as _run_once counts an iteration with work ready
        if busy & 15:  # the loop reads the real clock on every 16th iteration only
            if busy > BUSY_LIMIT:
                return False  # the loop raises Stalled on its next iteration
            if busy == 1:
                self._busy_begins()
        elif busy > BUSY_LIMIT or self._no_progress():
            return False
        self._busy = busy
        return True

    def _busy_begins(self) -> None:
        """A run of busy iterations at one virtual instant starts: open the guard's window."""
        self._busy_since = self.real_clock()
        self._window_live = len(self._task_order) + len(self._own_order)
        self._window_done = self._tasks_done
        self._grew = False

    def _no_progress(self) -> bool:
        """The runaway guard, asked now and then while work runs at one virtual instant.

        Real seconds alone cannot tell runaway work from finite work on a slow machine (60
        handlers of 0.2 s of CPU each take 12 s). So at the end of each window of
        ``real_limit`` real seconds it judges progress: work that finished no task in the
        window, or whose live tasks grew markedly in this window and the one before (work
        making more work than it finishes, e.g. a handler re-publishing itself under
        duplicate chaos), is runaway; otherwise a new window opens.
        """
        now = self.real_clock()
        if now - self._busy_since <= self.real_limit:
            return False
        live = len(self._task_order) + len(self._own_order)
        grew = live > self._window_live + max(_GROWTH_SLACK, self._window_live // 2)
        if self._tasks_done == self._window_done or (grew and self._grew):
            return True
        self._busy_since = now
        self._window_live = live
        self._window_done = self._tasks_done
        self._grew = grew
        return False

    def _busy_error(self) -> Stalled:
        busy, self._busy = self._busy, 0
        tasks = self.live_tasks()
        names: dict[str, int] = {}
        for t in tasks:
            coro = t.get_coro()
            key = getattr(coro, "__qualname__", type(coro).__name__)
            names[key] = names.get(key, 0) + 1
        most = ", ".join(f"{k} x{v}" for k, v in sorted(names.items(), key=lambda kv: -kv[1])[:3])
        spent = self.real_clock() - self._busy_since
        if busy > BUSY_LIMIT // 10:  # many small iterations: a poll; few huge ones: runaway growth
            what = (f"the loop ran {busy} iterations ({spent:.1f}s of real time) at virtual "
                    f"t=+{self.clock._mono:.3f}s without time moving or a thread working: code "
                    "that polls without waiting, e.g. `while True: await asyncio.sleep(0)` or a "
                    "receive()/nack() loop, or bulk work done at one instant (the limit is "
                    f"{BUSY_LIMIT:,} loop iterations at one virtual instant, and each service "
                    "call, such as a publish() or a kv.set(), counts as one)")
            fix = ("Wait for a timer (await asyncio.sleep(seconds)) or an event, or give the "
                   "work a stop condition. Bulk work (say 100,000 publishes) must let virtual "
                   "time move between batches, e.g. `await asyncio.sleep(0.001)` after every "
                   "10,000 calls.")
        else:
            why = ("no task finished in the last window" if self._tasks_done == self._window_done
                   else f"the live tasks kept growing (to {len(tasks)})")
            what = (f"runaway work: more than {self.real_limit:g}s of real time at virtual "
                    f"t=+{self.clock._mono:.3f}s without time moving or a thread working, "
                    f"{len(tasks)} tasks alive ({most}), and {why}: "
                    "work that makes more work than it finishes, e.g. a handler that re-publishes "
                    "its own message (under duplicate chaos each delivery doubles it)")
            fix = ("Wait for a timer (await asyncio.sleep(seconds)) or an event, or give the "
                   "work a stop condition. Finite work that is just slow is judged again every "
                   f"{self.real_limit:g}s and goes on while tasks finish; to judge over a longer "
                   "window, set @pytest.mark.bgwork(runaway_after=seconds) or the ini key "
                   "bgwork_runaway_after (sim.loop.real_limit).")
        listed = "\n".join(f"  - {describe_task(t)}" for t in tasks[:10])
        return Stalled(f"{what}.\nTasks:\n{listed}\n{fix}")

    # -- the loop's iteration --------------------------------------------------------
    def _run_once(self) -> None:
        """``BaseEventLoop._run_once``, minus the selector when there is no real I/O (~2x faster).

        With no thread working and no file descriptor but the loop's own self-pipe, a
        ``select`` could only return nothing: skip it (and ``_process_events``), and when
        nothing is ready jump the clock to the next timer directly; the selector's checks
        (a fatal callback error, the busy limit, the horizon) run here the same way. Real
        I/O, threads and debug mode go through the (virtual) selector as asyncio does.
        A ``DeadlineTimer`` at the top of the heap is re-keyed before its key is read, and
        gives one handle per due deadline, so deadlines fire exactly as timers of their own.
        """
        scheduled = self._scheduled
        handle: Any
        if len(scheduled) > _MIN_SCHEDULED and self._timer_cancelled_count > len(scheduled) // 2:
            kept = []  # asyncio's sweep of cancelled timers, in place
            for handle in scheduled:
                if handle._cancelled:
                    handle._scheduled = False
                else:
                    kept.append(handle)
            scheduled[:] = kept
            heapq.heapify(scheduled)
            self._timer_cancelled_count = 0
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
        ready = self._ready
        clock = self.clock
        fds = self._fds
        if fds is None or len(fds) > 1 or self._threads or self._debug:
            timeout = None  # asyncio's way: the (virtual) selector waits, or jumps the clock
            if ready or self._stopping:
                timeout = 0.0
            elif scheduled and self._exact_top():
                timeout = min(max(0.0, scheduled[0]._when - clock._mono),  # type: ignore[attr-defined]
                              _MAX_SELECT)
            self._process_events(self._selector.select(timeout))  # type: ignore[attr-defined]
        else:
            if self._fatal is not None:
                self._raise_fatal()
            if ready or self._stopping:  # the selector's timeout-0 path: count busy iterations
                busy = self._busy = self._busy + 1
                if busy == 1:
                    self._busy_begins()
                elif busy > BUSY_LIMIT or (not busy & 15  # the real clock: every 16th
                                           and self._no_progress()):
                    raise self._busy_error()
            elif scheduled and self._exact_top():  # the selector's timer path: jump to the next
                self._busy = 0                         # timer, not past the horizon
                when = scheduled[0]._when  # type: ignore[attr-defined]
                if when > self._horizon and when > self.horizon():
                    self._past_horizon(when)
                if when > clock._mono:
                    clock.advance_to(when)  # refuses a time past the clock's range
            else:
                super()._run_once()  # type: ignore[misc]  # nothing left: the deadlock check
                return
        if scheduled:
            end_time = clock._mono + self._clock_resolution
            while scheduled:
                handle = scheduled[0]
                if handle._when >= end_time:
                    break
                if type(handle) is DeadlineTimer:
                    if handle._cancelled:
                        self._timer_cancelled_count -= 1
                        heapq.heappop(scheduled)
                        handle._scheduled = False
                        continue
                    if handle._sync(scheduled):
                        continue  # re-keyed (maybe no longer due) or gone: look again
                    heapq.heappop(scheduled)
                    handle._scheduled = False
                    ready.append(handle._take(scheduled))
                else:
                    heapq.heappop(scheduled)
                    handle._scheduled = False
                    ready.append(handle)
        popleft = ready.popleft
        if self._debug:
            for _ in range(len(ready)):
                handle = popleft()
                if not handle._cancelled:
                    self._run_debug(handle)
        else:
            for _ in range(len(ready)):
                handle = popleft()
                if not handle._cancelled:
                    handle._run()
        handle = None  # break cycles when an exception occurs

    def _exact_top(self) -> bool:
        """Before the next timer's time is used: drop cancelled timers and re-key a lagging
        ``DeadlineTimer`` at the top of the heap; False when no timer is left."""
        scheduled = self._scheduled
        handle: Any
        while scheduled:
            handle = scheduled[0]
            if handle._cancelled:
                self._timer_cancelled_count -= 1
                heapq.heappop(scheduled)
                handle._scheduled = False
            elif type(handle) is not DeadlineTimer or not handle._sync(scheduled):
                return True
        return False

    def _run_debug(self, handle: asyncio.Handle) -> None:
        """Run ``handle`` as asyncio's debug mode does: warn about a slow callback."""
        try:
            self._current_handle = handle
            t0 = self.time()
            handle._run()
            dt = self.time() - t0
            if dt >= self.slow_callback_duration:
                _asyncio_log.warning("Executing %s took %.3f seconds",
                                     asyncio.base_events._format_handle(handle), dt)  # type: ignore[attr-defined]
        finally:
            self._current_handle = None

    # -- threads are real work: count them so the clock waits -------------------
    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        if executor is None or isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            func = threads.bind(self, func)  # its waits are on virtual time
        fut = super().run_in_executor(executor, func, *args)
        self._threads += 1
        fut.add_done_callback(self._thread_done)
        return fut

    def _thread_done(self, _fut: asyncio.Future[Any]) -> None:
        self._threads -= 1

    def hold_clock(self) -> Callable[[], None]:
        """Count real work (a worker thread, a socket) the clock waits for; call the result once done."""
        self._threads += 1
        held = [True]

        def release() -> None:
            if held:
                held.clear()
                self._threads -= 1

        return release

    def threads_working(self) -> int:
        """Clock holders still working: holders minus threads blocked in a wait on virtual
        time (``core.threads``; those whose wait is over are woken here)."""
        if not self._vwaits:
            return self._threads
        blocked = threads.poll(self)  # first: it may end holds (a closed socket)
        return self._threads - blocked

    def close(self) -> None:
        """Close the loop; a thread still waiting on its clock wakes with ``NotRunning``."""
        threads.abort(self)
        super().close()

    async def _make_subprocess_transport(self, *args: Any, **kwargs: Any) -> Any:
        """A subprocess holds the clock until it exits, as a thread does (it is real work)."""
        release = self.hold_clock()
        try:
            transport = await super()._make_subprocess_transport(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            release()
            raise
        if transport.get_returncode() is not None:
            release()
        else:
            exited = transport._process_exited

            def process_exited(returncode: int) -> None:
                try:
                    exited(returncode)
                finally:
                    release()

            transport._process_exited = process_exited
        return transport

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        self._threads += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._threads -= 1

    # -- recurring timers (schedules) do not keep the simulation busy ------------
    def call_at_recurring(
        self, when: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle:
        """Like ``call_at``, but ``run_until_idle`` does not wait for this timer."""
        handle = self.call_at(when, callback, *args)
        self._recurring.add(handle)
        return handle

    def ignore_task(self, task: asyncio.Task[Any]) -> None:
        """Leave a frozen task (a crashed attempt) out of deadlock and idle accounting."""
        self._ignored_tasks.add(task)

    def pending_timers(self) -> list[asyncio.TimerHandle]:
        """Live timers that keep the simulation busy (recurring ones left out)."""
        self._sync_deadlines()
        self._recurring = {h for h in self._recurring if not h.cancelled() and h in self._scheduled}
        timers = [h for h in self._scheduled if not h.cancelled() and h not in self._recurring]
        for h in self._scheduled:  # a DeadlineTimer stands for each deadline it keeps
            if type(h) is DeadlineTimer and not h._cancelled:
                timers += [h] * (h._owner.live - 1)
        return timers

    def live_tasks(self) -> list[asyncio.Task[Any]]:
        """Tasks on this loop that are not done, crashed attempts left out."""
        order = self.task_order
        tasks = [t for t in asyncio.all_tasks(self) if not t.done() and t not in self._ignored_tasks]
        tasks.sort(key=lambda t: (order(t), t.get_name()))
        return tasks

    def _deadlocked(self) -> None:
        tasks = self.live_tasks()
        if not tasks:
            # Only frozen (crashed) work remains, or run_forever with nothing to do.
            order = self.task_order
            stuck = sorted((t for t in asyncio.all_tasks(self) if not t.done()),
                           key=lambda t: (order(t), t.get_name()))
            if not stuck:
                raise Deadlock(
                    "the virtual loop has nothing to run, no timer and no task: "
                    "run_forever() would wait forever"
                )
            tasks = stuck
        lines = "\n".join([f"  - {describe_task(t)}" for t in tasks]
                          + [f"  - {w}" for w in threads.describe_waits(self)])
        threads.abort(self)  # their waits can never end: let the threads finish
        raise Deadlock(
            f"nothing can run and no timer is pending, yet {len(tasks)} task(s) still wait "
            f"at virtual t=+{self.clock.monotonic():.3f}s:\n{lines}\n"
            "Each waits for something that nothing left in the simulation will do "
            "(an event never set, a future never resolved, a queue never fed)."
        )

    def __repr__(self) -> str:
        return f"<VirtualEventLoop t=+{self.clock.monotonic():.3f}s running={self.is_running()}>"


def _check_platform() -> None:
    if sys.platform == "win32":  # pragma: no cover - CI is Linux
        raise RuntimeError("pytest-bgwork's virtual loop needs a selector event loop (Unix)")


_check_platform()
