"""Sync task bodies (Celery tasks, dramatiq actors) on the simulation, deterministically.

A ``Fiber`` runs a sync function in its own thread while the loop thread waits for it:
the two strictly take turns, so the clock is held while the body runs and no other
simulated work interleaves at a real-time-dependent moment (same seed, same history).
From the body, ``call(awaitable)`` hands an awaitable to the loop (a KV write, a
publish) and blocks the thread until it is done: the simulation's fault points apply
there, and a crash injected there parks the thread for good (the process died); the
thread is released (``ProcessCrashed`` raised into it) when its attempt is disposed.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..core import threads
from ..core.errors import NotRunning, ProcessCrashed

__all__ = ["BODY_TIMEOUT", "Fiber", "call", "in_fiber"]

_T = TypeVar("_T")
#: Real seconds a body may run without returning or calling the simulation before the loop
#: gives up on it (a real ``time.sleep``, a socket, a lock nobody releases).
BODY_TIMEOUT = 120.0
_local = threading.local()


class Fiber:
    """``await Fiber(fn, *args).run()``: ``fn(*args)`` in a thread, taking turns with the loop."""

    def __init__(self, fn: Callable[..., Any], *args: Any, context: contextvars.Context | None = None,
                 name: str = "bgwork-task") -> None:
        self._fn = fn
        self._args = args
        self._ctx = context if context is not None else contextvars.copy_context()
        self._name = name
        self._to_loop: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._to_thread: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._killed = False
        self._interrupt: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The body's thread (``threading.get_ident()``), once it started.
        self.thread_id: int | None = None

    def interrupt(self, exc: BaseException) -> None:
        """Raise ``exc`` in the body where it waits (``time.sleep``, ``Event.wait``...) or at
        its next simulation call: a time limit's interruption (on the loop's thread)."""
        self._interrupt = exc
        for wait in list(getattr(self._loop, "_vwaits", ())):
            if type(wait) is threads.Wait and wait.thread == self.thread_id and not wait.woken:
                wait.wake()

    # -- the thread side ------------------------------------------------------------------
    def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        _local.fiber = self
        self._loop = loop
        self.thread_id = threading.get_ident()
        if hasattr(loop, "_vwaits"):  # time.sleep, Event.wait... wait on the simulation's clock
            threads.enter_fiber(loop, self.call)  # type: ignore[arg-type]
        try:
            result = self._ctx.run(self._fn, *self._args)
        except BaseException as exc:
            self._to_loop.put(("raised", exc))
        else:
            self._to_loop.put(("done", result))

    def call(self, awaitable: Awaitable[_T]) -> _T:
        """Run ``awaitable`` on the loop and wait for it (from this fiber's thread)."""
        if self._killed:
            _close(awaitable)
            raise ProcessCrashed()
        self._to_loop.put(("call", awaitable))
        kind, value = self._to_thread.get()
        if kind == "kill":
            self._killed = True
            raise ProcessCrashed()
        if self._interrupt is not None:
            exc, self._interrupt = self._interrupt, None
            raise exc
        if kind == "error":
            raise value
        return value  # type: ignore[no-any-return]

    # -- the loop side --------------------------------------------------------------------
    async def run(self) -> Any:
        """Start the thread and serve its calls until it returns (or raises) its result."""
        # _thread, not threading: freezegun answers time.time() with real time when a
        # `threading` frame is on the caller's stack (its default ignore list)
        _thread.start_new_thread(self._main, (asyncio.get_running_loop(),))
        finished = False
        try:
            while True:
                try:
                    kind, value = self._to_loop.get(timeout=BODY_TIMEOUT)
                except queue.Empty:
                    raise RuntimeError(
                        f"{self._name}: the sync body ran {BODY_TIMEOUT:g} s of real time without "
                        "returning or calling the simulation (a real time.sleep, a socket, a lock?). "
                        "Sync bodies share the simulation's clock: call services through "
                        "pytest_bgwork.adapters.celery.call(...) and never wait in real time."
                    ) from None
                if kind == "done":
                    finished = True
                    return value
                if kind == "raised":
                    finished = True
                    raise value
                try:
                    result = await value
                except (GeneratorExit, asyncio.CancelledError, ProcessCrashed):
                    raise
                except BaseException as exc:
                    self._to_thread.put(("error", exc))
                else:
                    self._to_thread.put(("value", result))
        finally:
            if not finished:  # crashed, cancelled or disposed: the thread dies where it waits
                self._to_thread.put(("kill", None))


def _close(awaitable: object) -> None:
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def in_fiber() -> bool:
    """True in a sync body an adapter runs (where ``call`` works)."""
    return getattr(_local, "fiber", None) is not None


def call(awaitable: Awaitable[_T]) -> _T:
    """From a sync task body an adapter runs, await ``awaitable`` on the simulation's loop.

    ``call(sim.kv.set("invoices", key, value))`` is the sync twin of ``await``: the
    operation's fault points apply, its errors are raised here, and a crash parks the
    thread (the worker died there). Elsewhere it raises ``NotRunning``.
    """
    fiber: Fiber | None = getattr(_local, "fiber", None)
    if fiber is None:
        _close(awaitable)
        raise NotRunning(
            "call(awaitable) runs an awaitable from a sync task body that a bgwork adapter "
            "runs (a Celery task, a dramatiq actor); in async code, `await` it instead"
        )
    return fiber.call(awaitable)
