"""``Simulation``: one virtual clock, seeded choices, a history, faults and the services."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import inspect
import random as _random
from collections.abc import Awaitable, Coroutine
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from .core import context
from .core.choices import Choices
from .core.clock import check_span
from .core.errors import Deadlock, NotRunning, ProcessCrashed, Stalled, UnmockedRequest
from .core.kernel import Kernel
from .core.loop import VirtualEventLoop, describe_task
from .core.wallclock import wall_clock
from .profiles import check_platform

if TYPE_CHECKING:
    from .services.kv import KV
    from .services.queues import Queues
    from .services.runtime import Runtime
    from .services.schedules import Schedules
    from .services.streams import Streams
    from .services.task_manager import BackgroundTaskManager
    from .services.tasks import Tasks
    from .services.webhooks import Webhooks
    from .services.workers import Workers

__all__ = ["DEFAULT_MAX_TIME", "Simulation", "current"]

_T = TypeVar("_T")
#: ``run_until_idle``'s default horizon: one simulated week.
DEFAULT_MAX_TIME = 7 * 86400.0
_BUSY_LIMIT = 200_000
#: Virtual seconds cancelled leftovers get at teardown for their ``finally`` blocks.
_TEARDOWN_GRACE = 3600.0
#: Further cancellations (each running only the callbacks ready then) before a leftover that
#: keeps running is declared to swallow ``CancelledError`` and abandoned.
_TEARDOWN_RECANCELS = 2


class Simulation(Kernel):
    """A deterministic world for one test: virtual time, services, faults, history.

    ``Simulation(seed=7, start="2026-01-01T00:00:00Z", platform="agentuity")`` (``platform``
    picks every service's default profile: "agentuity", "aws" or "alien"); drive it with ``sim.run(coro)``
    from sync code, or ``await sim.advance(...)`` / ``await sim.run_until_idle()`` from
    code already running on its loop (an ``async def`` test using ``bgwork``).

    ``max_time`` (virtual seconds, default one week) is the horizon of every way of running
    it: time moves on its own at most that far past the start of ``run`` (or of an async
    test) or the end of the last ``advance``/``run_until_idle``, else ``Stalled``.
    ``allow_network=True`` lets outbound HTTP requests no mock answers leave the machine.
    ``real_random=True`` leaves ``uuid.uuid4``/``uuid1`` and the ``random`` module real
    (by default they draw from the seed while the simulation runs, as the clock is virtual).
    """

    def __init__(
        self,
        seed: int = 0,
        start: str | float | _dt.datetime | None = None,
        *,
        loop: VirtualEventLoop | None = None,
        choices: Choices | None = None,
        platform: str = "agentuity",
        max_time: float = DEFAULT_MAX_TIME,
        allow_network: bool = False,
        real_random: bool = False,
    ) -> None:
        platform = check_platform(platform)
        if not isinstance(real_random, bool):
            raise TypeError(f"real_random= expects True or False; got {real_random!r}")
        self.max_time = check_span("Simulation(max_time=...)", max_time)
        """The horizon in virtual seconds: how far time may move on its own in one run
        before ``Stalled``."""
        if not isinstance(allow_network, bool):
            raise TypeError(f"allow_network= expects True or False; got {allow_network!r}")
        super().__init__(seed, start, loop=loop, choices=choices)
        self.platform = platform
        """The platform whose profiles the services default to: ``"agentuity"``,
        ``"aws"`` or ``"alien"``."""
        self.allow_network = allow_network
        """``True``: outbound requests no mock answers leave the machine (else
        ``UnmockedRequest``)."""
        self.real_random = real_random
        """``False`` (default): while it runs, ``uuid.uuid4``/``uuid1`` and the ``random``
        module's functions draw from this simulation's seed (see ``_enter_random``)."""
        self._random_depth = 0
        self._random_state: object = None
        self._random_saved: object = None
        self.unmocked_requests: list[str] = []
        """``"METHOD url"`` of each outbound request refused with ``UnmockedRequest``."""
        #: The ``UnmockedRequest`` raised for each, in order (teardown reads where each was caught).
        self._unmocked_errors: list[UnmockedRequest] = []
        self._closed = False
        #: leftovers that swallowed their cancellation at teardown: given up on, not retried
        self._abandoned: set[asyncio.Task[object]] = set()
        #: Context managers ``enter_context`` keeps open until ``close`` (made on first use).
        self._contexts: contextlib.ExitStack | None = None
        from .core import network

        network.install()

    @cached_property
    def _world_random(self) -> _random.Random:
        """The random source of ``uuid.uuid4``/``uuid1`` inside this simulation (from its seed)."""
        return _random.Random(f"bgwork-uuid:{self.seed}")

    def _enter_random(self) -> None:
        """The ``random`` module's functions draw from this simulation's seed until
        ``_exit_random`` (nested calls count; nothing when ``real_random=True``)."""
        self._random_depth += 1
        if self._random_depth == 1 and not self.real_random:
            self._random_saved = _random.getstate()
            if self._random_state is None:
                _random.seed(f"bgwork-random:{self.seed}")
            else:
                _random.setstate(self._random_state)  # type: ignore[arg-type]

    def _exit_random(self) -> None:
        """Undo one ``_enter_random``: the last gives the ``random`` module its own state back."""
        if self._random_depth == 0:
            return
        self._random_depth -= 1
        if self._random_depth == 0 and not self.real_random:
            self._random_state = _random.getstate()
            saved, self._random_saved = self._random_saved, None
            _random.setstate(saved)  # type: ignore[arg-type]

    def _start_horizon(self, reason: str = "") -> None:
        """Start the run's horizon: ``max_time`` virtual seconds from now."""
        self.loop.set_horizon(self.clock.monotonic() + self.max_time,
                              reason or f"max_time={self.max_time:g}s")

    # -- services (created on first use, so an unused service costs nothing) -------
    @cached_property
    def queues(self) -> Queues:
        """The queue service: ``create``, ``route``, ``publish``, ``receive``."""
        from .services.queues import Queues

        return Queues(self)

    @cached_property
    def kv(self) -> KV:
        """The key-value service: ``set``, ``get``, ``delete``, ``keys``."""
        from .services.kv import KV

        return KV(self)

    @cached_property
    def streams(self) -> Streams:
        """The durable stream service: ``create``, then ``write`` and ``close``."""
        from .services.streams import Streams

        return Streams(self)

    @cached_property
    def runtime(self) -> Runtime:
        """The waitUntil runtime: ``wait_until`` work that outlives the response."""
        from .services.runtime import Runtime

        return Runtime(self)

    @cached_property
    def task_manager(self) -> BackgroundTaskManager:
        """The simulation's ``BackgroundTaskManager`` (10xgraph's, on virtual time)."""
        from .services.task_manager import BackgroundTaskManager

        return BackgroundTaskManager(sim=self)

    @cached_property
    def schedules(self) -> Schedules:
        """Cron schedules that fire on the virtual wall clock (UTC)."""
        from .services.schedules import Schedules

        return Schedules(self)

    @cached_property
    def webhooks(self) -> Webhooks:
        """Signed webhook deliveries to ASGI apps, with retries."""
        from .services.webhooks import Webhooks

        return Webhooks(self)

    @cached_property
    def workers(self) -> Workers:
        """Workers the scenario owns (``start``): supervised, restarted after a crash."""
        from .services.workers import Workers

        return Workers(self)

    @cached_property
    def tasks(self) -> Tasks:
        """The tasks service: ``create``, ``update``, ``get``, ``list``."""
        from .services.tasks import Tasks

        return Tasks(self)

    # -- driving time ------------------------------------------------------------------
    def run(self, main: Awaitable[_T]) -> _T:
        """Run ``main`` (a coroutine) on the virtual loop from sync code; return its result."""
        if inspect.iscoroutinefunction(main) or (callable(main) and not inspect.isawaitable(main)):
            raise TypeError(
                f"sim.run() takes a coroutine: call it first, e.g. sim.run(main()) not sim.run(main); "
                f"got {main!r}"
            )
        if not inspect.isawaitable(main):
            raise TypeError(f"sim.run() takes a coroutine or awaitable; got {type(main).__name__}")
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            if inspect.iscoroutine(main):
                main.close()
            raise NotRunning(
                "sim.run() was called from inside a running event loop; in async code, "
                "`await` the coroutine instead"
            )
        if self.loop.is_closed():
            if inspect.iscoroutine(main):
                main.close()  # never run: the error below says why, not a never-awaited warning
            raise NotRunning("this simulation was closed; create a new Simulation")
        context.push(self)
        wall_clock.start()
        self._enter_random()
        self._start_horizon(f"sim.run's max_time={self.max_time:g}s")
        try:
            result: _T = self.loop.run_until_complete(main)
            return result
        finally:
            self._exit_random()
            wall_clock.stop()
            context.pop(self)

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward ``seconds``, firing everything due, in order."""
        seconds = check_span("advance(seconds=...)", seconds, self.clock.monotonic())
        self._require_loop("sim.advance()")
        loop = self.loop
        target = self.clock.monotonic() + seconds
        loop.extend_horizon(target)
        try:
            await asyncio.sleep(seconds)
            await self._settle()
        finally:
            loop.end_extension(target, self.max_time)

    async def run_until_idle(self, max_time: float | None = None) -> None:
        """Advance until nothing is runnable and no timer is pending but recurring schedules.

        Raises ``Stalled`` if work is still pending ``max_time`` virtual seconds from now
        (default: the simulation's ``max_time``, one simulated week).
        """
        if max_time is None:
            max_time = self.max_time
        max_time = check_span("run_until_idle(max_time=...)", max_time, self.clock.monotonic())
        self._require_loop("sim.run_until_idle()")
        loop = self.loop
        deadline = self.clock.monotonic() + max_time
        loop.extend_horizon(deadline)
        try:
            while True:
                await self._settle()
                timers = loop.pending_timers()
                if timers and "workers" in self.__dict__:  # a worker that only waits is idle
                    timers = self.workers._busy(timers)
                if not timers:
                    return
                when = min(h.when() for h in timers)
                if when > deadline:
                    raise Stalled(self._stalled_message(max_time, timers))
                await asyncio.sleep(max(0.0, when - self.clock.monotonic()))
        finally:
            loop.end_extension(deadline, self.max_time)

    async def _settle(self) -> None:
        """Let every ready callback run (and every thread finish) without moving time."""
        loop = self.loop
        for _ in range(_BUSY_LIMIT):
            if loop._threads and loop.threads_working():
                await asyncio.sleep(0)  # the selector waits for the thread in real time
                continue
            if not loop._ready:
                return
            await asyncio.sleep(0)
        raise Stalled(
            f"work kept the loop busy for {_BUSY_LIMIT:,} iterations at one virtual instant "
            "(a loop that never awaits a timer, e.g. `while True: await asyncio.sleep(0)`, "
            "or bulk work at one instant: each service call counts as one). Poll with a "
            "timer (`await asyncio.sleep(1)`), or let virtual time move between batches of "
            "bulk work (`await asyncio.sleep(0.001)` after every 10,000 calls)."
        )

    def _stalled_message(self, max_time: float, timers: list[asyncio.TimerHandle]) -> str:
        now = self.clock.monotonic()
        tasks = [t for t in self.loop.live_tasks() if t is not asyncio.current_task()]
        lines = [
            f"run_until_idle: still busy after max_time={max_time:g}s of virtual time (now t=+{now:.3f}s): "
            f"{len(timers)} timer(s) pending, the next at t=+{min(h.when() for h in timers):.3f}s"
        ]
        lines += [f"  - {describe_task(t)}" for t in tasks[:10]]
        lines.append("Raise max_time= if this much waiting is intended, or find what keeps re-arming.")
        return "\n".join(lines)

    # -- summaries --------------------------------------------------------------------
    def stats(self) -> dict[str, float]:
        """Counts for reports: simulated seconds, deliveries, redeliveries, faults, dead letters."""
        h = self.history
        deliveries = h.filter("queue", "deliver")
        return {
            "simulated_seconds": self.clock.monotonic(),
            "deliveries": len(deliveries),
            "redeliveries": sum(1 for e in deliveries if e.detail.get("attempt", 1) > 1),
            "faults": self.faults.injected,
            "dead_letters": h.count("queue", "dead_letter"),
        }

    # -- teardown ---------------------------------------------------------------------
    def _cancel_leftovers(self) -> list[str]:
        """Cancel tasks still running (a test may stop mid-flight); return what was cut off.

        Clean-up is bounded, so teardown always ends. After the cancellation only the
        callbacks ready at that instant run; a task then back at the ``await`` it was cancelled
        at caught the cancellation and looped. The others get ``_TEARDOWN_GRACE`` virtual
        seconds for their ``finally`` blocks, then are cancelled ``_TEARDOWN_RECANCELS`` more
        times. A task still running swallows ``CancelledError``: it is abandoned (its
        coroutine closed) and ``Stalled`` names it and the line it waits on.
        """
        loop = self.loop
        if loop.is_closed() or loop.is_running():
            return []
        # workers the scenario owns end with the simulation: stopped, not leftover work
        workers = self.__dict__.get("workers")
        stopping = set(workers._stop_all()) if workers is not None else set()
        live = [t for t in loop.live_tasks() if t not in self._abandoned]
        # ``aclose()`` of an async generator the test dropped, scheduled by the loop's
        # finalizer hook: clean-up, not work left running. It runs to the end (its
        # ``finally`` blocks act, as ``shutdown_asyncgens`` lets them) and is not reported.
        closers = [t for t in live if type(t.get_coro()).__name__ == "async_generator_athrow"]
        tasks = [t for t in live if t not in closers and t not in stopping]
        described = [describe_task(t) for t in tasks]
        for text in described:
            self.history.record("sim", "cancelled_at_teardown", task=text)
        if not live:
            return described
        context.push(self)
        self._enter_random()  # their finally blocks draw as the run did
        horizon, reason = loop._horizon, loop.horizon_reason
        spots = {t: _suspension_point(t) for t in tasks}
        stuck: list[asyncio.Task[object]] = []
        try:
            for round_ in range(2 + _TEARDOWN_RECANCELS):
                if round_ != 1:  # first all, then (after the grace) whatever still runs
                    for t in tasks if round_ == 0 else live:
                        t.cancel()
                # the first round runs only what is ready now; the second gives clean-up time
                grace = min(_TEARDOWN_GRACE, self.max_time) if round_ == 1 else 0.0
                loop.set_horizon(self.clock.monotonic() + grace, "teardown's clean-up")
                with contextlib.suppress(Stalled, Deadlock):  # still waiting: look, cancel again, or give up
                    loop.run_until_complete(asyncio.gather(*live, return_exceptions=True))
                live = [t for t in live if not t.done()]
                if round_ == 0:  # back where it was cancelled: it caught the cancellation and looped
                    stuck = [t for t in live if spots.get(t) is not None
                             and _suspension_point(t) == spots[t]]
                    live = [t for t in live if t not in stuck]
                if not live:
                    break
        finally:
            loop.set_horizon(horizon, reason)
            self._exit_random()
            context.pop(self)
        stuck += live
        if stuck:
            listed = "\n".join(f"  - {describe_task(t)}" for t in stuck)
            self._abandoned.update(stuck)
            self._frozen.extend(stuck)  # closed without running more of them, as crashed attempts
            raise Stalled(
                f"{len(stuck)} task(s) did not end when cancelled at teardown: each caught "
                "the cancellation and went on waiting (or was still waiting after "
                f"{_TEARDOWN_GRACE:g} virtual seconds and {_TEARDOWN_RECANCELS} more "
                "cancellations), so it swallows asyncio.CancelledError (e.g. `except "
                f"CancelledError: pass` in a loop). It was abandoned:\n{listed}\n"
                "Re-raise CancelledError after clean-up (or catch Exception, which does not "
                "include it), or stop the task before the test ends."
            )
        return described

    def _dispose_frozen(self) -> None:
        """Throw away crashed attempts without letting their ``finally`` blocks act."""
        self._disposing = True
        self.faults._release()  # the simulation is done: stop intercepting outbound HTTP
        frozen, self._frozen = self._frozen, []
        for task in frozen:
            coro = task.get_coro()
            try:
                if isinstance(coro, Coroutine):
                    coro.close()
            except (Exception, ProcessCrashed):  # a dead worker's last words; never Ctrl-C
                pass
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            self.loop._task_order.pop(task, None)  # the loop's strong reference too
            # forget it, or a runner that cancels every task at shutdown (pytest-asyncio)
            # resumes the closed coroutine: "cannot reuse already awaited coroutine"
            asyncio.tasks._unregister_task(task)

    def close(self) -> None:
        """Cancel leftovers, dispose crashed attempts and close the loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._cancel_leftovers()
        finally:
            self._dispose_frozen()
            loop = self.loop
            if not loop.is_closed() and not loop.is_running():
                try:
                    if loop._asyncgens:  # type: ignore[attr-defined]  # (a loop run costs)
                        loop.run_until_complete(loop.shutdown_asyncgens())
                finally:
                    loop.close()
            while self._random_depth:  # the random module's own state back, whatever happened
                self._exit_random()
            if self._contexts is not None:  # last: leftovers' clean-up still had them
                contexts, self._contexts = self._contexts, None
                contexts.close()

    def enter_context(self, cm: contextlib.AbstractContextManager[_T]) -> _T:
        """Enter ``cm`` now and keep it open until the simulation closes; return its value.

        For set-up the whole run needs, made inside a ``bg.explore`` scenario:
        ``sim.enter_context(adapters.sqs.install(sim))`` or
        ``mock = sim.enter_context(respx.mock(assert_all_called=False))``. A ``with``
        block in the scenario closes when an injected error escapes it (or when the
        scenario returns), while the work it started, the heal phase and the checks run
        on; entered here, the context stays open through them and is exited, last entered
        first, when the example's simulation closes.
        """
        if self._closed:
            raise NotRunning(f"sim.enter_context({cm!r}): the simulation is closed; enter "
                             "contexts while it runs (in the scenario or the test)")
        if not isinstance(cm, contextlib.AbstractContextManager):
            raise TypeError(f"sim.enter_context(cm=...) expects a context manager (what a "
                            f"`with` statement takes), e.g. adapters.sqs.install(sim); got "
                            f"{cm!r}")
        if self._contexts is None:
            self._contexts = contextlib.ExitStack()
        return self._contexts.enter_context(cm)

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Simulation seed={self.seed} t=+{self.clock.monotonic():.3f}s events={len(self.history)}>"


def _suspension_point(task: asyncio.Task[object]) -> tuple[tuple[object, int], ...] | None:
    """Where a task waits: the code and line of each frame of its ``await`` chain (None if
    it has no frame). A task back at the same point after a cancellation caught it."""
    chain: list[tuple[object, int]] = []
    aw: object = task.get_coro()
    while aw is not None and len(chain) < 100:
        frame = getattr(aw, "cr_frame", None) or getattr(aw, "gi_frame", None)
        if frame is not None:
            chain.append((frame.f_code, frame.f_lineno))
        aw = getattr(aw, "cr_await", None) or getattr(aw, "gi_yieldfrom", None)
    return tuple(chain) or None


def current() -> Simulation:
    """The simulation running this code, for app code that builds clients once.

    Inside the virtual loop it is the loop's simulation; in a sync test it is the
    test's ``bgwork`` simulation. Outside any simulation it raises ``NotRunning``.
    """
    sim = context.current()
    assert isinstance(sim, Simulation)
    return sim
