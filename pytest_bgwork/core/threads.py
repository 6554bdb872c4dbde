"""Sync code on virtual time: a simulation's threads wait on the virtual clock.

A thread *belongs* to a simulation when the simulation started its work: a
``run_in_executor``/``asyncio.to_thread`` call, a ``ThreadPoolExecutor.submit`` made from
the simulation's code, anyio's worker threads, a sync task body an adapter runs (a
``Fiber``), and the thread of a sync ``bgwork`` test body. Such a thread holds the clock
while it works. When it blocks in a *wait* -- ``time.sleep``, ``threading.Condition.wait``
(and so ``Event.wait``, ``queue.Queue.get``, ``concurrent.futures.Future.result``), or
``wait_until`` (a simulated socket read such as a long poll) -- the loop counts it as
waiting, not working: once nothing else works or is ready, virtual time moves to the
earliest deadline, and the thread wakes there, or earlier when it is notified.

The patches are installed while a simulation is current (``start``/``stop``, counted) and
only change what a thread of a simulation sees; every other thread keeps the real calls.
Waits due at the same virtual instant wake in the order they began.
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import functools
import linecache
import os
import queue
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import NotRunning

if TYPE_CHECKING:
    from .loop import VirtualEventLoop

__all__ = ["bind", "describe_waits", "hold_submit", "owner_loop", "poll", "start", "stop", "wait_until"]

_T = TypeVar("_T")
#: The real calls (in a dict: the wall-clock patch swaps module attributes holding real clocks).
_REAL: dict[str, Any] = {
    "sleep": time.sleep, "monotonic": time.monotonic, "cond_wait": threading.Condition.wait,
    "submit": concurrent.futures.ThreadPoolExecutor.submit, "join": threading.Thread.join,
}
_PACKAGE_DIR = os.path.dirname(os.path.dirname(__file__)) + os.sep
_STDLIB_DIR = os.path.dirname(os.__file__) + os.sep
#: Real seconds a waiting thread sleeps between looks at whether its loop was closed.
_CLOSED_CHECK = 1.0
#: Real seconds a joined thread that neither exits nor waits on virtual time holds the
#: clock (it may be blocked in a real wait that only the join's timeout ends).
_JOIN_HOLD = 1.0


class _Local(threading.local):
    #: the virtual loop whose clock this thread's work holds (a worker thread)
    loop: VirtualEventLoop | None = None
    #: ``call(awaitable)`` of the sync task body (``Fiber``) running in this thread
    call: Callable[[Awaitable[Any]], Any] | None = None
    #: the simulation whose sync test body runs in this thread (it drives the loop)
    driver: Any = None


_local = _Local()


class Wait:
    """One blocked thread: its deadline (virtual, or ``None``), what ends it early, how it wakes.

    It is ``blocked`` from the moment the loop armed it until it is woken: by its deadline
    (``timed_out``), by ``Condition.notify`` calling ``release`` (it stands in the
    condition's waiter list), or by ``check()`` turning true when the loop looks.
    """

    __slots__ = ("_guard", "_lock", "aborted", "check", "future", "loop", "thread", "timed_out",
                 "timer", "what", "when", "where", "woken")

    def __init__(self, loop: VirtualEventLoop, when: float | None, what: str,
                 check: Callable[[], bool] | None = None) -> None:
        self.loop = loop
        self.when = when
        self.what = what
        self.where = _caller()
        self.check = check
        self.woken = False
        self.timed_out = False
        self.aborted = False
        self.thread = threading.get_ident()
        self.timer: asyncio.TimerHandle | None = None
        self.future: asyncio.Future[None] | None = None  # set when the loop's thread waits
        self._guard = _thread.allocate_lock()
        self._lock = _thread.allocate_lock()
        self._lock.acquire()

    def wake(self) -> bool:
        """End the wait (from any thread); False if it had already ended."""
        with self._guard:
            if self.woken:
                return False
            self.woken = True
        future = self.future
        if future is None:
            self._lock.release()
            self.loop._write_to_self()  # type: ignore[attr-defined]  # the loop looks again at once
        elif getattr(self.loop, "_thread_id", None) == threading.get_ident():
            _resolve(future)  # on the loop's thread (its deadline, a check): no self-pipe write
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                self.loop.call_soon_threadsafe(_resolve, future)
        return True

    def release(self) -> None:
        """``Condition.notify``'s call on a waiter: the wait ends as notified."""
        if not self.wake():
            raise RuntimeError("release unlocked lock")  # notify() skips it, as for a real lock

    def expire(self) -> None:
        """The deadline came (on the loop's thread)."""
        with self._guard:
            if not self.woken:
                self.timed_out = True
        self.wake()

    def describe(self) -> str:
        return f"thread blocked in {self.what} at {self.where}"


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _caller() -> str:
    """The first frame outside the standard library and this plugin: where the user waits."""
    frame: Any = sys._getframe(2)
    fallback = None  # no user frame (``to_thread(event.wait)``): the first outside this plugin
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith((_PACKAGE_DIR, _STDLIB_DIR)) and not name.startswith("<frozen"):
            break
        if fallback is None and not name.startswith(_PACKAGE_DIR) and not name.endswith(
                ("threading.py", "queue.py", os.sep + "_base.py")):
            fallback = frame
        frame = frame.f_back
    frame = frame or fallback
    if frame is None:
        return "(unknown)"
    name = frame.f_code.co_filename
    line = linecache.getline(name, frame.f_lineno).strip()
    return f"{name}:{frame.f_lineno} in {frame.f_code.co_name}" + (f": {line}" if line else "")


# -- the loop's side ------------------------------------------------------------------------
def _arm(wait: Wait) -> None:
    """On the loop's thread: count ``wait`` as blocked and set its deadline's timer."""
    loop = wait.loop
    if wait.woken:
        return
    if wait.when is not None:
        wait.timer = loop.call_at(wait.when, wait.expire)
    loop._vwaits[wait] = None


def _disarm(wait: Wait) -> None:
    """On the loop's thread: forget ``wait`` and its timer (a notified wait's timer is stale)."""
    wait.loop._vwaits.pop(wait, None)
    if wait.timer is not None:
        wait.timer.cancel()
        wait.timer = None


class HeldThread:
    """A thread another thread of the simulation joins: it holds the clock while it works
    (its exit is real work), not while it waits on virtual time, and at most ``_JOIN_HOLD``
    real seconds while it does neither."""

    __slots__ = ("release", "since", "thread")

    def __init__(self, thread: threading.Thread, release: Callable[[], None]) -> None:
        self.thread = thread
        self.release = release
        self.since = time.perf_counter()

    def gone(self) -> bool:
        return not self.thread.is_alive() or time.perf_counter() - self.since > _JOIN_HOLD


class Queued:
    """Work submitted to a thread pool that has not started: it holds the clock (it will run)
    unless every thread of its pool is blocked in a wait (then it cannot start before one ends)."""

    __slots__ = ("executor", "started")

    def __init__(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        self.executor = executor
        self.started = False


def poll(loop: VirtualEventLoop) -> int:
    """How many of ``loop``'s clock holders are blocked in a wait; wakes those whose
    ``check()`` came true (the loop calls it before it decides anything about time)."""
    blocked = 0
    queued: list[Queued] = []
    joined: list[HeldThread] = []
    waiting: set[int] = set()
    entries: Any = loop._vwaits
    for wait in list(entries):
        if isinstance(wait, HeldThread):
            if wait.gone():
                del entries[wait]
                wait.release()
            else:
                joined.append(wait)
            continue
        if isinstance(wait, Queued):
            if wait.started:
                del entries[wait]
            else:
                queued.append(wait)
            continue
        if not isinstance(wait, Wait):  # a socket holding the clock (core.network)
            if wait.gone():
                del entries[wait]
                wait.release()
            continue
        if wait.woken:
            continue
        if wait.check is not None and wait.check():
            wait.wake()
            continue
        blocked += 1
        waiting.add(wait.thread)
    for held in joined:  # a joined thread waiting on virtual time does not hold the clock
        if held.thread.ident in waiting:
            blocked += 1
    for item in queued:
        pool: Any = item.executor
        workers = list(getattr(pool, "_threads", ()))
        if len(workers) >= getattr(pool, "_max_workers", 1) and all(t.ident in waiting for t in workers):
            blocked += 1
    return blocked


def abort(loop: VirtualEventLoop) -> None:
    """The loop closes or deadlocked: wake every thread still waiting on it (it raises
    ``NotRunning``), so no thread of the simulation is left blocked for good."""
    entry: Any
    for entry in list(loop._vwaits):
        if isinstance(entry, Wait):
            entry.aborted = True
            entry.wake()
        elif not isinstance(entry, Queued):  # a socket or a joined thread holding the clock
            entry.release()
    loop._vwaits.clear()


def describe_waits(loop: VirtualEventLoop) -> list[str]:
    """One line per thread blocked in a wait on ``loop`` (for ``Deadlock``/``Stalled``)."""
    return [w.describe() for w in loop._vwaits if type(w) is Wait and not w.woken]


async def _wait_on_loop(wait: Wait) -> None:
    """The loop's own thread waits (a sync test body, a sync task body): let the loop run."""
    loop = wait.loop
    with wait._guard:  # a wake before this (a notify from another thread) saw no future
        wait.future = loop.create_future()
        if wait.woken:
            return
    release = loop.hold_clock()  # a blocked wait counts one holder off; this is the one
    try:
        if wait.when is not None:
            wait.when = max(wait.when, loop.time())
        _arm(wait)
        await wait.future
    finally:
        _disarm(wait)
        release()


# -- the thread's side ----------------------------------------------------------------------
def _running(loop: VirtualEventLoop | None) -> bool:
    return loop is not None and not loop.is_closed()


def _mode() -> tuple[str, VirtualEventLoop] | None:
    """How this thread waits inside a simulation, or ``None`` (a real wait)."""
    local = _local
    if local.call is not None:
        loop = local.loop
        return ("call", loop) if loop is not None and loop.is_running() else None
    if local.loop is not None:
        return ("worker", local.loop) if _running(local.loop) else None
    driver = local.driver
    if driver is not None:
        loop = driver.loop
        if _running(loop) and not loop.is_running():
            return ("drive", loop)
    return None


def _on_loop_thread() -> VirtualEventLoop | None:
    """The virtual loop running in this thread, if a simulation owns it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if getattr(loop, "sim", None) is not None and hasattr(loop, "_vwaits") else None  # type: ignore[return-value]


def _block(mode: tuple[str, VirtualEventLoop], wait: Wait) -> bool:
    """Block this thread until ``wait`` ends; True unless its deadline ended it."""
    kind, loop = mode
    if kind == "worker":
        try:
            loop.call_soon_threadsafe(_arm, wait)
        except RuntimeError:  # closed meanwhile
            raise _closed(wait) from None
        lock = wait._lock
        while not lock.acquire(True, _CLOSED_CHECK):
            if loop.is_closed():
                raise _closed(wait)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_disarm, wait)
    elif kind == "call":
        assert _local.call is not None
        _local.call(_wait_on_loop(wait))
    else:
        loop.run_until_complete(_wait_on_loop(wait))
    if wait.aborted:
        raise _closed(wait)
    return not wait.timed_out


def _closed(wait: Wait) -> NotRunning:
    return NotRunning(f"the simulation ended (closed, or failed with Deadlock) while this thread "
                      f"waited in {wait.what} at {wait.where}; the wait can never end")


def _deadline(loop: VirtualEventLoop, timeout: float | None, what: str) -> float | None:
    if timeout is None:
        return None
    if timeout != timeout or timeout in (float("inf"), float("-inf")):
        raise ValueError(f"{what}: timeout={timeout!r} is not a finite number of seconds")
    return loop.time() + max(0.0, timeout)


def owner_loop() -> VirtualEventLoop | None:
    """The virtual loop whose work this thread does (a worker thread the simulation started,
    a sync task body, a sync test body), or ``None``: for adapters that must find the
    simulation from sync code in a thread, where no loop is running."""
    mode = _mode()
    return mode[1] if mode is not None else None


def wait_until(predicate: Callable[[], bool], timeout: float | None = None, *,
               what: str = "wait_until()") -> bool:
    """Block this thread until ``predicate()`` is true or ``timeout`` virtual seconds pass.

    For adapters whose sync API waits for simulated work (a result backend's ``get()``, a
    long poll): the predicate is evaluated on the loop's thread each time the loop is
    about to move time, so it sees the simulation's state between steps. Returns whether
    the predicate came true. In a thread that is not the simulation's it raises
    ``NotRunning``.
    """
    if predicate():
        return True
    mode = _mode()
    if mode is None:
        raise NotRunning(
            f"{what} waits on the simulation's clock, from a thread of the simulation: the "
            "test body of a sync bgwork test, a sync task body, or a worker thread the "
            "simulation started (asyncio.to_thread, run_in_executor)")
    loop = mode[1]
    wait = Wait(loop, _deadline(loop, timeout, what), what, check=predicate)
    _block(mode, wait)
    return bool(predicate())


# -- the patched calls ----------------------------------------------------------------------
def _polls_real_work() -> frozenset[Any]:
    """Code whose sleeps poll real work (a child process's exit): they stay real sleeps."""
    import subprocess

    return frozenset({subprocess.Popen._wait.__code__})  # type: ignore[attr-defined]


def _starts_a_thread(frame: Any) -> bool:
    """Whether this wait is ``Thread.start`` waiting for the new thread to run (through
    ``Event.wait``): a real thread's start-up takes real time, never virtual time (while it
    waited virtually the clock jumped to the next timer)."""
    for _ in range(2):
        if frame is None:
            return False
        if frame.f_code is _THREAD_START:
            return True
        frame = frame.f_back
    return False


_THREAD_START = threading.Thread.start.__code__
#: The function a ``ThreadPoolExecutor``'s threads run.
_POOL_WORKER = getattr(concurrent.futures.thread, "_worker", None)


def _sleep(seconds: float) -> None:
    """``time.sleep`` for the simulation's threads: virtual seconds."""
    mode = _mode()
    if mode is not None and sys._getframe(1).f_code in _REAL["pollers"]:
        _REAL["sleep"](seconds)  # ``subprocess.run(timeout=)`` waits for the child in real time
        return
    if mode is None:
        loop = _on_loop_thread()
        if loop is None or _local.call is not None:
            _REAL["sleep"](seconds)
            return
        # the loop's own thread blocks: as a blocked loop, time passes and nothing else runs
        if seconds > 0:
            loop.clock.advance_to(loop.time() + float(seconds))
        return
    loop = mode[1]
    if seconds != seconds or seconds < 0:
        _REAL["sleep"](seconds)  # the real call's error (ValueError) for a bad value
    wait = Wait(loop, _deadline(loop, float(seconds), "time.sleep()"), f"time.sleep({seconds!r})")
    _block(mode, wait)


def _cond_wait(self: threading.Condition, timeout: float | None = None) -> bool:
    """``threading.Condition.wait`` for the simulation's threads: the timeout is virtual.

    The same protocol as the real one (a waiter in ``self._waiters`` that ``notify``
    releases), with a ``Wait`` as the waiter.
    """
    mode = _mode()
    if mode is None or _starts_a_thread(sys._getframe(1)):
        return _REAL["cond_wait"](self, timeout)  # type: ignore[no-any-return]
    if not self._is_owned():  # type: ignore[attr-defined]
        raise RuntimeError("cannot wait on un-acquired lock")
    loop = mode[1]
    what = "Condition.wait()" if timeout is None else f"Condition.wait(timeout={timeout!r})"
    wait = Wait(loop, _deadline(loop, timeout, what), what)
    waiters = self._waiters  # type: ignore[attr-defined]
    waiters.append(wait)
    saved = self._release_save()  # type: ignore[attr-defined]
    try:
        _block(mode, wait)
    finally:
        self._acquire_restore(saved)  # type: ignore[attr-defined]
        try:
            waiters.remove(wait)  # still listed: nobody notified it
            notified = False
        except ValueError:
            notified = True
    return notified


def _join(self: threading.Thread, timeout: float | None = None) -> None:
    """``Thread.join`` of a thread pool's thread (``shutdown``) from the simulation's threads:
    the timeout is virtual.

    The joined thread holds the clock until it exits, unless it waits on virtual time
    itself (then time moves on, so a pool thread's ``time.sleep`` ends and it can exit).
    A thread started with ``threading.Thread`` is not the simulation's: a real join.
    """
    mode = _mode()
    if (mode is None or getattr(self, "_target", None) is not _POOL_WORKER
            or self.ident == threading.get_ident() or not self.is_alive()):
        _REAL["join"](self, timeout)
        return
    loop = mode[1]
    if timeout is not None and timeout != timeout:
        raise ValueError(f"Thread.join(timeout={timeout!r}): not a number of seconds")
    holder: list[HeldThread] = []

    def hold() -> None:
        if self.is_alive() and not loop.is_closed():
            held = HeldThread(self, loop.hold_clock())
            holder.append(held)
            loop._vwaits[held] = None

    def unhold() -> None:
        for held in holder:
            if loop._vwaits.pop(held, 0) is None:
                held.release()

    if mode[0] == "drive":
        hold()
    else:
        loop.call_soon_threadsafe(hold)
    try:
        wait_until(lambda: not self.is_alive(), timeout, what=f"Thread.join() of {self.name}")
    finally:
        if mode[0] == "drive":
            unhold()
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(unhold)
    if not self.is_alive():
        _REAL["join"](self, 0)


def _monotonic() -> float:
    """``queue``'s and ``threading``'s clock: virtual in the simulation's threads, so their
    ``timeout=`` arithmetic (``Queue.get``, ``Condition.wait_for``) runs on virtual time."""
    mode = _mode()
    if mode is None:
        return _REAL["monotonic"]()  # type: ignore[no-any-return]
    return mode[1].time()


def bind(loop: VirtualEventLoop, fn: Callable[..., _T], queued: Queued | None = None) -> Callable[..., _T]:
    """``fn`` run in a worker thread whose work holds ``loop``'s clock (the caller holds it):
    its waits are the simulation's."""

    @functools.wraps(fn)
    def bound(*args: Any, **kwargs: Any) -> _T:
        if queued is not None:
            queued.started = True
        previous = _local.loop
        _local.loop = loop
        try:
            return fn(*args, **kwargs)
        finally:
            _local.loop = previous

    bound._bgwork_bound = True  # type: ignore[attr-defined]
    return bound


def _submit(self: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any,
            **kwargs: Any) -> concurrent.futures.Future[Any]:
    """``ThreadPoolExecutor.submit`` from the simulation's code: the work holds the clock."""
    loop = hold_submit(fn)
    if loop is None:
        return _REAL["submit"](self, fn, *args, **kwargs)  # type: ignore[no-any-return]
    queued = Queued(self)
    release = _hold_from_any_thread(loop, queued)
    try:
        future: concurrent.futures.Future[Any] = _REAL["submit"](self, bind(loop, fn, queued), *args, **kwargs)
    except BaseException:
        release()
        raise
    _release_after_callbacks(future, release)
    return future


def _release_after_callbacks(future: concurrent.futures.Future[Any], release: Callable[[], None]) -> None:
    """Call ``release`` once ``future``'s done callbacks have all run (``asyncio.wrap_future``
    hands the result to the loop from one): released earlier, the loop could see no work for
    a moment and move time before the result arrives."""
    guard = threading.RLock()
    added = [False]

    def on_done(f: concurrent.futures.Future[Any]) -> None:
        with guard:
            callbacks = getattr(f, "_done_callbacks", None)
            if not added[0] or not isinstance(callbacks, list):
                release()  # done already (called from add_done_callback itself)
            else:  # being called from the list of callbacks: go last in it
                callbacks.append(lambda _f: release())

    with guard:
        future.add_done_callback(on_done)
        added[0] = True


def hold_submit(fn: Callable[..., Any]) -> VirtualEventLoop | None:
    """The simulation loop whose clock work submitted now must hold, if any."""
    if getattr(fn, "_bgwork_bound", False):
        return None  # run_in_executor holds it already
    loop = _on_loop_thread()
    if loop is not None:
        return loop
    mode = _mode()
    return mode[1] if mode is not None else None


def _hold_from_any_thread(loop: VirtualEventLoop, queued: Queued) -> Callable[[], None]:
    """``loop.hold_clock()`` from any thread for ``queued`` work; the release is thread-safe."""
    state: dict[str, Any] = {"release": None, "done": False}

    def hold() -> None:  # on the loop's thread
        if not state["done"]:
            state["release"] = loop.hold_clock()
            if not queued.started:
                loop._vwaits[queued] = None

    def release() -> None:  # on the loop's thread
        state["done"] = True
        if state["release"] is not None:
            state["release"]()
            state["release"] = None

    if _on_loop_thread() is loop or not loop.is_running():
        hold()
    else:  # the caller's own hold keeps the clock until this runs (callbacks run in order)
        loop.call_soon_threadsafe(hold)

    def release_once() -> None:
        if _on_loop_thread() is loop:
            release()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to hold
                loop.call_soon_threadsafe(release)

    return release_once


# -- installing ---------------------------------------------------------------------------
_depth = 0


def start() -> None:
    """Install the patches (counted: a simulation became current)."""
    global _depth
    _depth += 1
    if _depth > 1:
        return
    if "pollers" not in _REAL:
        _REAL["pollers"] = _polls_real_work()
    time.sleep = _sleep  # type: ignore[assignment]
    threading.Condition.wait = _cond_wait  # type: ignore[method-assign]
    queue.time = _monotonic  # type: ignore[attr-defined]
    threading._time = _monotonic  # type: ignore[attr-defined]
    concurrent.futures.ThreadPoolExecutor.submit = _submit  # type: ignore[method-assign,assignment]
    threading.Thread.join = _join  # type: ignore[method-assign]


def stop() -> None:
    """Undo one ``start``; the last restores the real calls."""
    global _depth
    if _depth == 0:
        return
    _depth -= 1
    if _depth:
        return
    time.sleep = _REAL["sleep"]
    threading.Condition.wait = _REAL["cond_wait"]  # type: ignore[method-assign]
    queue.time = _REAL["monotonic"]  # type: ignore[attr-defined]
    threading._time = _REAL["monotonic"]  # type: ignore[attr-defined]
    concurrent.futures.ThreadPoolExecutor.submit = _REAL["submit"]  # type: ignore[method-assign]
    threading.Thread.join = _REAL["join"]  # type: ignore[method-assign]


def drive(sim: Any) -> Callable[[], None]:
    """This thread runs ``sim``'s sync test body: its waits drive the loop. Returns the undo."""
    previous = _local.driver
    _local.driver = sim

    def undo() -> None:
        _local.driver = previous

    return undo


def enter_fiber(loop: VirtualEventLoop, call: Callable[[Awaitable[Any]], Any]) -> None:
    """This thread runs a sync task body on ``loop``: its waits go through ``call``."""
    _local.loop = loop
    _local.call = call
