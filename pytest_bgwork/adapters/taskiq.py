"""taskiq on the simulation: ``SimBroker``, an ``AsyncBroker`` backed by ``sim.queues``.

``broker = SimBroker(sim)`` (or ``SimBroker()``: the simulation running the code, so a
module-level broker serves every test). ``kick`` publishes to ``sim.queues`` honouring
the ``delay`` label (beyond the queue's 900 s cap the message is held on a virtual
timer); the queue's route hands each delivery to taskiq's own ``Receiver.callback``
with an ack tied to the delivery, so ``ack_type`` (``when_received``,
``when_executed``, ``when_saved``: broker-wide or per task label) decides when the
message is acked. Async tasks run on the simulation's loop, so every fault kind
works inside them; results and progress live in ``sim.kv``. ``SmartRetryMiddleware``'s
jitter is drawn from ``sim.choices``. Task ids are deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import functools
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Any, cast

from taskiq import AckableMessage, AsyncBroker, AsyncResultBackend, BrokerMessage, TaskiqResult
from taskiq.acks import AcknowledgeType
from taskiq.depends.progress_tracker import TaskProgress
from taskiq.events import TaskiqEvents
from taskiq.middlewares import SmartRetryMiddleware
from taskiq.receiver import Receiver
from taskiq.utils import maybe_awaitable

from ..core import context, validate
from ..core.errors import NotRunning
from ._publish import publish_delayed

if TYPE_CHECKING:
    from ..services.delivery import Delivery
    from ..simulation import Simulation

__all__ = ["PROGRESS_NS", "RESULTS_NS", "SimBroker", "SimResultBackend"]

#: ``sim.kv`` namespaces of the result backend.
RESULTS_NS = "taskiq-results"
PROGRESS_NS = "taskiq-progress"
DEFAULT_QUEUE = "taskiq"


class _InlineExecutor(concurrent.futures.Executor):
    """Runs a sync task body at once on the loop thread, the clock held: deterministic.

    (A thread pool would run it concurrently with the loop, at real-time-dependent moments.)
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


class SimResultBackend(AsyncResultBackend[Any]):
    """taskiq results in ``sim.kv`` (``taskiq-results``; progress in ``taskiq-progress``).

    The record in ``sim.kv`` is JSON; the result object itself is kept beside it, so a
    result read back while its record is unchanged keeps its exception's type (a
    pydantic ``ValidationError`` stays one), as taskiq's in-memory and pickle backends do.
    """

    def __init__(self, broker: SimBroker) -> None:
        self._broker = weakref.proxy(broker)
        self._objects: weakref.WeakKeyDictionary[Simulation, dict[str, tuple[Any, TaskiqResult[Any]]]] = (
            weakref.WeakKeyDictionary())

    async def set_result(self, task_id: str, result: TaskiqResult[Any]) -> None:
        sim = self._broker.sim
        record = result.model_dump(mode="json")
        await sim.kv.set(RESULTS_NS, task_id, record)
        self._objects.setdefault(sim, {})[task_id] = (record, result)

    async def is_result_ready(self, task_id: str) -> bool:
        return bool((await self._broker.sim.kv.get(RESULTS_NS, task_id)).exists)

    async def get_result(self, task_id: str, with_logs: bool = False) -> TaskiqResult[Any]:
        r = await self._broker.sim.kv.get(RESULTS_NS, task_id)
        if not r.exists:
            raise KeyError(f"no taskiq result for task {task_id!r} in sim.kv[{RESULTS_NS!r}] yet")
        kept = self._objects.get(self._broker.sim, {}).get(task_id)
        if kept is not None and kept[0] == r.data:
            return kept[1]
        return TaskiqResult.model_validate(r.data)

    async def set_progress(self, task_id: str, progress: TaskProgress[Any]) -> None:
        await self._broker.sim.kv.set(PROGRESS_NS, task_id, progress.model_dump(mode="json"))

    async def get_progress(self, task_id: str) -> TaskProgress[Any] | None:
        r = await self._broker.sim.kv.get(PROGRESS_NS, task_id)
        return TaskProgress.model_validate(r.data) if r.exists else None


class _PerSim:
    """What a broker keeps per simulation: its receiver (bound to that loop) and held publishes."""

    def __init__(self) -> None:
        self.receiver: Receiver | None = None
        self.holds: set[asyncio.Task[Any]] = set()
        self.router: _Router | None = None


class _Router:
    """One simulated queue shared by every ``SimBroker`` that names it in a simulation.

    Several brokers may use one queue (as several real brokers may point at one Redis
    list): each delivery goes to the broker that registered the task, else to the broker
    that kicked it.
    """

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.brokers: list[weakref.ref[SimBroker]] = []

    def index(self, broker: SimBroker) -> int:
        for i, ref in enumerate(self.brokers):
            if ref() is broker:
                return i
        self.brokers.append(weakref.ref(broker))
        return len(self.brokers) - 1

    def pick(self, task_name: str, kicked_by: int | None) -> SimBroker:
        live = [b for b in (ref() for ref in self.brokers) if b is not None]
        for broker in live:
            if task_name in broker.local_task_registry:
                return broker
        if kicked_by is not None and kicked_by < len(self.brokers):
            kicker = self.brokers[kicked_by]()
            if kicker is not None:
                return kicker
        if not live:
            raise RuntimeError(f"no SimBroker is left to receive queue {self.queue!r}'s messages")
        return live[0]

    async def handle(self, payload: dict[str, Any], delivery: Delivery) -> None:
        broker = self.pick(str(payload.get("task_name", "")), payload.get("broker"))
        await broker._handle(payload, delivery)


_routers: weakref.WeakKeyDictionary[Simulation, dict[str, _Router]] = weakref.WeakKeyDictionary()


def _router(sim: Simulation, broker: SimBroker) -> _Router:
    """The router of ``broker.queue`` in ``sim``: made (queue created and routed) on first use."""
    routers = _routers.setdefault(sim, {})
    router = routers.get(broker.queue)
    if router is None:
        router = routers[broker.queue] = _Router(broker.queue)
        if broker.queue not in sim.queues.names():
            # the broker's own queue, whatever the platform
            sim.queues.create(broker.queue, profile="agentuity",
                              visibility_timeout=broker.visibility_timeout,
                              max_retries=broker.max_retries)
        sim.queues.route(broker.queue, router.handle)
    router.index(broker)
    return router


class SimBroker(AsyncBroker):
    """An ``AsyncBroker`` whose messages travel through ``sim.queues``.

    ``sim``: the simulation (default: the one running the code, ``bg.current()``);
    ``queue``: the ``sim.queues`` queue (created with ``visibility_timeout`` and
    ``max_retries`` unless it exists); ``ack_type``: the worker's default ack time
    (taskiq's default ``when_saved``). ``publish_errors`` collects held publishes that
    failed after ``kick`` returned.
    """

    def __init__(self, sim: Simulation | None = None, *, queue: str = DEFAULT_QUEUE,
                 ack_type: AcknowledgeType | str | None = None, visibility_timeout: float = 30,
                 max_retries: int = 5) -> None:
        super().__init__()
        self._sim = sim
        self.queue = queue
        """The ``sim.queues`` queue this broker publishes to and delivers from."""
        self.ack_type = None if ack_type is None else AcknowledgeType(ack_type)
        """The worker's default ack time (``None``: taskiq's default, ``when_saved``)."""
        self.visibility_timeout = visibility_timeout
        """Seconds a crashed attempt's message stays invisible before redelivery."""
        self.max_retries = max_retries
        """The simulated queue's own redelivery budget (crashes), not taskiq's retries."""
        self.result_backend = SimResultBackend(self)
        """Where results are kept: on the simulation, one store per simulation."""
        self.id_generator = self._next_id
        """Task ids drawn from the simulation, so a seed gives the same ids."""
        self.publish_errors: list[BaseException] = []
        """Held publishes that failed after ``kick`` returned."""
        self._per_sim: weakref.WeakKeyDictionary[Simulation, _PerSim] = weakref.WeakKeyDictionary()

    @property
    def sim(self) -> Simulation:
        """The simulation this broker works on now."""
        return self._sim if self._sim is not None else cast("Simulation", context.current())

    def _on_loop(self, what: str) -> Simulation:
        """The simulation, checked to be the one whose loop runs this code.

        A message kicked on another loop (``asyncio.run(...)`` in a sync test) would never
        be delivered and its ``wait_result`` never time out: refuse it at the call.
        """
        sim = self.sim
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not sim.loop:
            raise NotRunning(
                f"SimBroker.{what}() ran on {'no event loop' if loop is None else 'a foreign event loop'}, "
                f"not the simulation's: its messages would never be delivered. Run the code "
                f"under the simulation (an `async def` test with the `bgwork` fixture, or "
                f"`sim.run(main())` instead of `asyncio.run(main())`)")
        return sim

    def _next_id(self) -> str:
        return self.sim._next_id("taskiq")

    def _state(self, sim: Simulation) -> _PerSim:
        state = self._per_sim.get(sim)
        if state is None:
            state = self._per_sim[sim] = _PerSim()
            state.router = _router(sim, self)
        return state

    def _route_jitter(self) -> None:
        """Make each ``SmartRetryMiddleware``'s jitter come from ``sim.choices`` (label
        ``taskiq.retry_jitter``) instead of ``random.random()`` (``add_middlewares`` and
        ``with_middlewares`` both append to ``self.middlewares``: look there)."""
        for mw in self.middlewares:
            if isinstance(mw, SmartRetryMiddleware) and "make_delay" not in vars(mw):
                mw.make_delay = functools.partial(self._make_delay, mw,  # type: ignore[method-assign]
                                                  type(mw).make_delay)

    def _make_delay(self, mw: SmartRetryMiddleware, original: Any, message: Any, retries: int) -> float:
        jitter, mw.use_jitter = mw.use_jitter, False
        try:
            delay = float(original(mw, message, retries))
        finally:
            mw.use_jitter = jitter
        if jitter:
            delay += self.sim.choices.fraction("taskiq.retry_jitter")
        return delay

    async def startup(self) -> None:
        """Client and worker start-up events (this broker is both), as ``InMemoryBroker`` does."""
        await super().startup()
        for handler in self.event_handlers.get(TaskiqEvents.WORKER_STARTUP, []):
            await maybe_awaitable(handler(self.state))

    async def shutdown(self) -> None:
        """Client and worker shut-down events."""
        for handler in self.event_handlers.get(TaskiqEvents.WORKER_SHUTDOWN, []):
            await maybe_awaitable(handler(self.state))
        await super().shutdown()

    async def kick(self, message: BrokerMessage) -> None:
        """Publish ``message`` to the queue; the ``delay`` label (seconds) delays delivery."""
        sim = self._on_loop("kick")
        state = self._state(sim)
        data = message.message
        try:
            body: dict[str, Any] = {"text": data.decode()}
        except UnicodeDecodeError:
            body = {"b64": base64.b64encode(data).decode()}
        assert state.router is not None
        body.update(task_id=message.task_id, task_name=message.task_name,
                    broker=state.router.index(self))
        delay = message.labels.get("delay")
        seconds = 0.0 if delay in (None, "") else validate.number(
            float(delay), "SimBroker.kick(message)", "labels['delay']", lo=-float("inf"),
            fix="Give the task's `delay` label a finite number of seconds.")
        await publish_delayed(sim, self.queue, body, seconds, self.publish_errors, state.holds)

    def listen(self) -> AsyncGenerator[bytes | AckableMessage, None]:
        """Not used: the simulation delivers each message to taskiq's receiver itself."""
        raise RuntimeError("SimBroker does not listen: the simulation delivers its messages "
                           "(drive it with `await sim.run_until_idle()`, no `taskiq worker`)")

    def _receiver(self, sim: Simulation) -> Receiver:
        state = self._state(sim)
        if state.receiver is None:
            state.receiver = Receiver(broker=self, executor=_InlineExecutor(), run_startup=False,
                                      max_async_tasks=100_000, ack_type=self.ack_type)
        return state.receiver

    async def _handle(self, payload: dict[str, Any], delivery: Delivery) -> None:
        data = payload["text"].encode() if "text" in payload else base64.b64decode(payload["b64"])
        self._route_jitter()
        receiver = self._receiver(self.sim)
        await receiver.callback(AckableMessage(data=data, ack=delivery.ack), raise_err=True)
