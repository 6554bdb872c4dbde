"""A virtual-time asyncio event loop.

``loop.time()`` reads the virtual clock. When no callback is ready the loop jumps the
clock straight to the next timer instead of waiting. Work handed to a thread
(``run_in_executor``, ``asyncio.to_thread``, ``getaddrinfo``) is waited for in real
time with the clock held still, so a thread's result is never skipped over. Nothing
ready, no timer, no thread, yet tasks waiting: ``Deadlock``, naming each task and the
line it waits on.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import heapq
import linecache
import os
import selectors
import sys
import types
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from .clock import VirtualClock
from .errors import Deadlock

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["VirtualEventLoop", "describe_task"]

_T = TypeVar("_T")
_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
_OWN_DIR = os.path.dirname(__file__)
#: Real seconds to listen for a stray thread-safe wake-up before declaring a deadlock.
_DEADLOCK_GRACE = 0.05
#: Real seconds a single blocking wait for a thread lasts before the loop looks again.
_THREAD_SLICE = 0.25


def _innermost_frame(coro: Any) -> types.FrameType | None:
    """Follow a coroutine's ``await`` chain to the innermost user frame."""
    frame = None
    seen = 0
    while coro is not None and seen < 100:
        seen += 1
        f = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(
            coro, "ag_frame", None
        )
        if f is not None:
            fname = f.f_code.co_filename
            if not fname.startswith(_ASYNCIO_DIR):
                frame = f
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


class _OrderedTimerHandle(asyncio.TimerHandle):
    """A timer that breaks ties by creation order: timers due at one instant fire FIFO."""

    __slots__ = ("_seq",)
    _seq: int

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _OrderedTimerHandle):  # (when, seq) < (when, seq), minus the tuples
            when, other_when = self._when, other._when  # type: ignore[attr-defined]
            return when < other_when or (when == other_when and self._seq < other._seq)
        return super().__lt__(other)  # type: ignore[operator]


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
        real_io = len(self._real.get_map()) > 1  # more than the loop's own self-pipe
        if loop._threads:
            # A thread is working for us: wait for it in real time, clock held still.
            if timeout == 0:
                return self._real.select(0)
            return self._real.select(_THREAD_SLICE)
        if timeout == 0:
            return self._real.select(0) if real_io else []
        if real_io:
            events = self._real.select(0)
            if events:
                return events
        if timeout is not None:
            scheduled = loop._scheduled
            when = scheduled[0].when() if scheduled else loop.time() + timeout
            loop.clock.advance_to(when)
            return []
        # Nothing ready, no timer: listen briefly for a thread-safe wake-up, then give up.
        events = self._real.select(_DEADLOCK_GRACE)
        if events or loop._ready or loop._threads:
            return events
        loop._deadlocked()
        return []


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose time is a ``VirtualClock``.

    ``sim`` is the simulation that owns the loop (``None`` until one adopts it).
    """

    # asyncio.BaseEventLoop internals this loop reads (typeshed does not declare them)
    _scheduled: list[asyncio.TimerHandle]
    _ready: collections.deque[asyncio.Handle]

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
        self._selector = _VirtualSelector(self._selector, self)  # type: ignore[has-type]

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
        self._check_closed()  # type: ignore[attr-defined]
        timer = _OrderedTimerHandle(when, callback, args, self, context)
        self._timer_seq += 1
        timer._seq = self._timer_seq
        if timer._source_traceback:  # type: ignore[attr-defined]
            del timer._source_traceback[-1]  # type: ignore[attr-defined]
        heapq.heappush(self._scheduled, timer)
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    # -- threads are real work: count them so the clock waits -------------------
    def run_in_executor(  # type: ignore[override]
        self, executor: concurrent.futures.Executor | None, func: Callable[..., _T], *args: Any
    ) -> asyncio.Future[_T]:
        fut = super().run_in_executor(executor, func, *args)
        self._threads += 1
        fut.add_done_callback(self._thread_done)
        return fut

    def _thread_done(self, _fut: asyncio.Future[Any]) -> None:
        self._threads -= 1

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
        self._recurring = {h for h in self._recurring if not h.cancelled() and h in self._scheduled}
        return [h for h in self._scheduled if not h.cancelled() and h not in self._recurring]

    def live_tasks(self) -> list[asyncio.Task[Any]]:
        """Tasks on this loop that are not done, crashed attempts left out."""
        return [
            t for t in asyncio.all_tasks(self) if not t.done() and t not in self._ignored_tasks
        ]

    def _deadlocked(self) -> None:
        tasks = self.live_tasks()
        if not tasks:
            # Only frozen (crashed) work remains, or run_forever with nothing to do.
            stuck = [t for t in asyncio.all_tasks(self) if not t.done()]
            if not stuck:
                raise Deadlock(
                    "the virtual loop has nothing to run, no timer and no task: "
                    "run_forever() would wait forever"
                )
            tasks = stuck
        lines = "\n".join(f"  - {describe_task(t)}" for t in sorted(tasks, key=lambda t: t.get_name()))
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
