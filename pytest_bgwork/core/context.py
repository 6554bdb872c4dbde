"""Who is running right now: the current simulation and the queue attempt in progress."""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import NotRunning

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Attempt", "current", "current_attempt"]

_active: list[Kernel] = []


@dataclass(eq=False, slots=True)
class Attempt:
    """One delivery attempt of a queue message; service calls made inside it carry its name."""

    queue: str
    message_id: str
    number: int
    crashed: bool = False
    crash_future: asyncio.Future[None] | None = field(default=None, repr=False)
    #: Fault points passed after the delivery, the point chaos ``crash`` drew to die at,
    #: and whether the handler returned (the queue is acking for it).
    passed: int = field(default=0, repr=False)
    crash_at: int | None = field(default=None, repr=False)
    returning: bool = field(default=False, repr=False)
    #: A pull attempt's pending ``fail-first`` rule: the worker's next service call raises it.
    fail_next: object = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """Short name used in history events, e.g. ``report-jobs/msg_1#2``."""
        return f"{self.queue}/{self.message_id}#{self.number}"


current_attempt: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "bgwork_attempt", default=None
)


def current() -> Kernel:
    """The simulation running this code, for app code that builds clients once.

    Inside the virtual loop it is the loop's simulation; in a sync test it is the
    test's ``bgwork`` simulation. Outside any simulation it raises ``NotRunning``.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    sim = getattr(loop, "sim", None)
    if sim is not None:
        return sim  # type: ignore[no-any-return]
    if _active:
        return _active[-1]
    raise NotRunning(
        "bg.current() was called outside a simulation: use the `bgwork` fixture, "
        "or call it from code that runs under sim.run(...)"
    )


def push(sim: Kernel) -> None:
    """Make ``sim`` the current simulation for sync code (the fixture does this)."""
    from . import network, threads

    threads.start()  # its threads' waits run on virtual time (counted; ``pop`` undoes)
    network.guard_sockets(bool(getattr(sim, "allow_network", False)))  # no client reaches the network unless allowed
    _active.append(sim)


def pop(sim: Kernel) -> None:
    """Undo ``push``; tolerant of a simulation that was never pushed."""
    if sim in _active:
        from . import network, threads

        _active.remove(sim)
        threads.stop()
        network.unguard_sockets(bool(getattr(sim, "allow_network", False)))


def active() -> Kernel | None:
    """The current simulation or ``None`` (used by the wall clock patch)."""
    try:
        return current()
    except NotRunning:
        return None
