"""Workers the scenario owns: long-running pull loops under a process supervisor.

``sim.workers.start("exporter", lambda: worker_loop(sim))`` runs the coroutine the factory
returns as a task of its own, as a process supervisor (systemd, Kubernetes, supervisord)
runs a worker process:

- a worker that is killed (a ``crash`` fault or chaos ``crash`` inside a job: kill -9, no
  ``finally`` runs, nothing is deleted) or whose loop raises is started again from the
  factory after ``restart_delay`` virtual seconds (doubling after each failure in a row,
  at most ``MAX_RESTART_DELAY``); a loop that returns is not restarted;
- a message the worker received and had not deleted when it died comes back when its
  visibility timeout ends, as on SQS;
- it keeps running through an explored example's heal phase, and is stopped (cancelled,
  not reported as leftover work) when the simulation closes;
- while it waits for messages (an empty ``receive`` then a sleep, or a long poll) and no
  message of a pull queue is visible, its timers do not keep ``run_until_idle()`` busy:
  the simulation is idle. A worker waits from an empty receive until its next delivery;
  from a delivery on (its job, its delete, what it does after) it is busy until it comes
  back to an empty receive.

A message a worker receives with ``sim.queues.receive`` (or through an adapter built on
it, e.g. aiobotocore's ``receive_message``) starts an *attempt* in the worker, as a routed
delivery does: faults and chaos scoped to the queue act on the worker's service calls until
it acks (deletes) the message.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..core import validate
from ..core.context import current_attempt
from ..core.errors import ProcessCrashed
from ..core.faults import is_injected

if TYPE_CHECKING:
    from ..core.context import Attempt
    from ..core.kernel import Kernel
    from .delivery import Delivery

__all__ = ["MAX_RESTART_DELAY", "Worker", "Workers", "current_worker"]

#: The longest wait before a restart, however often a worker failed in a row (virtual seconds).
MAX_RESTART_DELAY = 60.0
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")

Factory = Callable[[], Coroutine[Any, Any, object]]

#: The worker whose task is running (set in each worker task's own context).
current_worker: contextvars.ContextVar[Worker | None] = contextvars.ContextVar(
    "bgwork_worker", default=None)


class Worker:
    """One supervised worker: its name, how often it started, and what it holds now.

    ``runs`` counts starts (1 = the first), ``crashes`` kills, ``failures`` loops that
    raised; ``state`` is ``running``, ``restarting``, ``exited`` or ``stopped``.
    """

    def __init__(self, workers: Workers, name: str, factory: Factory, restart_delay: float) -> None:
        self._workers = workers
        self.name = name
        """The name given to ``sim.workers.start``."""
        self.factory = factory
        """The callable that starts one run of the worker's loop (called again on restart)."""
        self.restart_delay = restart_delay
        """Virtual seconds between a crash or failure and the restart."""
        self.runs = 0
        """Starts so far (1 = the first run)."""
        self.crashes = 0
        """Times an injected crash killed it."""
        self.failures = 0
        """Times its loop raised (injected or not)."""
        self.errors: list[str] = []
        """The errors its loop raised that no injected fault caused (the user's bugs)."""
        self.state = "running"
        """``running``, ``restarting``, ``exited`` or ``stopped``."""
        self._in_a_row = 0
        self.task: asyncio.Task[None] | None = None
        """The task of the current run (``None`` before the first start or once stopped)."""
        self._timer: asyncio.TimerHandle | None = None
        self.held: list[Delivery] = []
        """Deliveries this run received and has not settled, oldest first."""
        self.polling = False
        """True from an empty receive until the next delivery: the worker waits for messages."""
        self._ctx = contextvars.Context()
        self._ctx.run(current_worker.set, self)

    def holds_work(self) -> bool:
        """Whether the worker is mid-job: it has not come back to an empty receive since its
        last delivery, or it holds a delivery it has not settled."""
        return not self.polling or any(d._settled is None and not d.expired for d in self.held)

    def __repr__(self) -> str:
        return f"<Worker {self.name} run={self.runs} state={self.state}>"


class Workers:
    """``sim.workers``: start long-running workers the simulation supervises."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._workers: dict[str, Worker] = {}

    def start(self, name: str, factory: Factory, *, restart_delay: float = 1.0) -> Worker:
        """Run ``factory()`` (a zero-argument callable returning a coroutine) as worker ``name``.

        It starts at once (on the simulation's loop), is started again from ``factory``
        after a crash or an error (``restart_delay`` seconds later, doubling on failures in
        a row), and is stopped when the simulation closes.
        """
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"workers.start(name=...) must be 1 to 100 letters, digits or _.:- "
                             f"(it names the worker's task and events); got {name!r}")
        if name in self._workers and self._workers[name].state not in ("exited", "stopped"):
            raise ValueError(f"workers.start(name=...): worker {name!r} is already running; give "
                             "each worker its own name, e.g. 'exporter-1', 'exporter-2'")
        if inspect.iscoroutine(factory):
            factory.close()
            raise TypeError("workers.start(factory=...) takes a zero-argument callable that "
                            "returns a new coroutine (the supervisor calls it again to restart "
                            "the worker), not a coroutine: pass `lambda: worker_loop(sim)` "
                            "rather than `worker_loop(sim)`")
        if not callable(factory):
            raise TypeError(f"workers.start(factory=...) must be a zero-argument callable returning "
                            f"a coroutine, e.g. `lambda: worker_loop(sim)`; got {factory!r}")
        delay = validate.seconds(restart_delay, "workers.start", "restart_delay",
                                 hi=MAX_RESTART_DELAY,
                                 fix="It is how long the supervisor waits before a restart.")
        assert delay is not None
        if self._sim.loop.is_closed():
            raise RuntimeError("workers.start(): this simulation was closed; start workers "
                               "while it runs")
        worker = Worker(self, name, factory, delay)
        self._workers[name] = worker
        self._spawn(worker)
        return worker

    def get(self, name: str) -> Worker:
        """The worker started as ``name``."""
        try:
            return self._workers[name]
        except KeyError:
            known = ", ".join(map(repr, self._workers)) or "none"
            raise KeyError(f"workers.get(name=...): no worker {name!r} (workers: {known})") from None

    def names(self) -> list[str]:
        """Every worker's name, in the order they were started."""
        return list(self._workers)

    def stop(self, name: str) -> None:
        """Stop worker ``name`` now (cancelled, not restarted)."""
        self._stop(self.get(name))

    # -- supervision ---------------------------------------------------------------------------
    def _spawn(self, w: Worker) -> None:
        w._timer = None
        if w.state == "stopped":
            return
        coro = w.factory()
        if not inspect.iscoroutine(coro):
            raise TypeError(f"workers.start({w.name!r}, factory): factory() must return a "
                            f"coroutine (call an `async def` function in it); got {coro!r}")
        w.runs += 1
        w.state = "running"
        w.held = []
        w.polling = False
        self._sim.history.record("worker", "start", name=w.name, run=w.runs)
        w.task = self._sim.loop.create_task(self._body(w, coro), name=f"worker:{w.name}#{w.runs}",
                                            context=w._ctx.copy())

    async def _body(self, w: Worker, coro: Coroutine[Any, Any, object]) -> None:
        run = w.runs
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except ProcessCrashed:  # a crash inside a blocking call unwinds: the process is gone
            if w.runs == run and w.state == "running":
                self._killed(w)
            return
        except Exception as exc:
            if w.runs != run or w.state != "running":
                return
            error = f"{type(exc).__name__}: {exc}"
            w.failures += 1
            injected = is_injected(exc)
            if not injected:
                w.errors.append(error)
            self._sim.history.record("worker", "failed", "fail", name=w.name, run=run, error=error,
                                     injected=injected)
            self._abandon(w, error)
            self._restart(w)
            return
        if w.runs == run and w.state == "running":
            w.state = "exited"
            self._sim.history.record("worker", "exit", name=w.name, run=run)

    def _abandon(self, w: Worker, error: str) -> None:
        """The run ended with messages it never settled: those attempts failed; their leases
        run out and the messages come back (nothing acks them)."""
        for d in w.held:
            if d._settled is None:
                d._settled = "failed"
                q = d._q
                q.stats["failed"] += 1
                self._sim.history.record("queue", "attempt_failed", queue=q.config.name,
                                         id=d.message.id, attempt=d.attempt, error=error,
                                         worker=w.name)
        w.held = []

    def _killed(self, w: Worker) -> None:
        """A job of ``w`` crashed (kill -9): its task is frozen; restart from the factory."""
        if w.state != "running":
            return
        w.crashes += 1
        self._sim.history.record("worker", "crashed", name=w.name, run=w.runs)
        for d in w.held:
            if d._settled is None and d._pull is not None:
                d._queues._crashed(d, d._pull)
        w.held = []
        self._restart(w)

    def _restart(self, w: Worker) -> None:
        w.state = "restarting"
        delay = min(MAX_RESTART_DELAY, w.restart_delay * 2 ** min(w._in_a_row, 16))
        w._in_a_row += 1
        # in the worker's context: while nothing is visible, a pending restart is idle too
        w._timer = self._sim.loop.call_later(delay, self._spawn, w, context=w._ctx.copy())

    def _stop(self, w: Worker) -> asyncio.Task[None] | None:
        if w.state == "stopped":
            return None
        alive = w.state in ("running",)
        w.state = "stopped"
        if w._timer is not None:
            w._timer.cancel()
            w._timer = None
        task = w.task
        if not self._sim.loop.is_closed():
            self._sim.history.record("worker", "stop", name=w.name, run=w.runs)
        if alive and task is not None and not task.done():
            task.cancel()
            return task
        return None

    def _stop_all(self) -> list[asyncio.Task[None]]:
        """Stop every worker (the simulation ends); the tasks being cancelled."""
        return [t for t in (self._stop(w) for w in self._workers.values()) if t is not None]

    def _tasks(self) -> set[asyncio.Task[None]]:
        return {w.task for w in self._workers.values() if w.task is not None}

    # -- the queue's side ---------------------------------------------------------------------
    def _took(self, w: Worker, d: Delivery, attempt: Attempt) -> None:
        """``w`` received ``d``: it is the worker's current attempt until settled."""
        w.held.append(d)
        w.polling = False
        w._in_a_row = 0  # it got as far as a job: the next failure restarts quickly again
        current_attempt.set(attempt)

    def _settled(self, w: Worker, d: Delivery) -> None:
        """``d`` was acked or nacked: the current attempt is the newest one still open."""
        if d in w.held:
            w.held.remove(d)
        if current_worker.get() is w:
            open_ = [x for x in w.held if x._settled is None]
            current_attempt.set(open_[-1]._pull if open_ else None)

    def _busy(self, timers: list[asyncio.TimerHandle]) -> list[asyncio.TimerHandle]:
        """``timers`` without those of workers that only wait (nothing visible, nothing held)."""
        if not self._workers:
            return timers
        mine = []
        for h in timers:
            ctx = getattr(h, "_context", None)
            w = ctx.get(current_worker) if ctx is not None else None
            if w is not None:
                mine.append((h, w))
        if not mine:
            return timers
        if self._visible():
            return timers
        quiet = {id(h) for h, w in mine if not w.holds_work()}
        return [h for h in timers if id(h) not in quiet]

    def _visible(self) -> bool:
        """Whether a message of a queue without a route is visible (a pull consumer could take it)."""
        queues = self._sim.__dict__.get("queues")
        if queues is None:
            return False
        for q in queues._queues.values():
            if q.route is None and (q.copies or queues._take(q, remove=False) is not None):
                return True
        return False
