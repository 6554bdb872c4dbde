"""dramatiq on the simulation: ``SimBroker``, a ``dramatiq.Broker`` backed by ``sim.queues``.

``broker = SimBroker(sim)`` (or ``SimBroker()``: the simulation running the code, so one
broker made before your actors are imported serves every test). ``declare_queue`` makes
a ``sim.queues`` queue per simulation; ``enqueue(message, delay=ms)`` publishes to it
(a delay beyond the queue's 900 s cap is held on a virtual timer first). Each delivery
runs the actor as ``dramatiq.worker._WorkerThread.process_message`` does, middleware
included, in a thread that takes turns with the loop (the clock held): ``Retries``
backs off on virtual time with ``compute_backoff``'s jitter drawn from ``sim.choices``;
a message that fails for good (retries exhausted, ``throws``, unknown actor) is
dead-lettered: acked on the simulated queue, kept in ``broker.dead_letters`` and
recorded as ``dramatiq.dead_letter``. A crash injected in an actor parks its thread;
the queue redelivers after ``visibility_timeout``. Async actors run on the
simulation's loop. Message ids are deterministic.

Actors bind ``get_broker()`` when they are decorated: set a ``SimBroker`` as the global
broker before importing them, or let ``broker.adopt(old_broker)`` (the ``bg_dramatiq``
fixture does) move already-declared actors onto it.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import logging
import random
import threading
import uuid
import weakref
from collections import defaultdict
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

import dramatiq
import dramatiq.asyncio as _dq_asyncio
import dramatiq.common as _dq_common
import dramatiq.composition as _dq_composition
import dramatiq.message as _dq_message
import dramatiq.worker as _dq_worker
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.stub import _StubMessageProxy
from dramatiq.errors import ActorNotFound, QueueJoinTimeout, QueueNotFound, RateLimitExceeded, Retry
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage, TimeLimit

from ..core import context, validate
from ..core.errors import NotRunning, Stalled
from ..core.errors import UnsupportedFeature as _UnsupportedFeature
from ._publish import publish_delayed
from ._threads import Fiber, call, in_fiber

if TYPE_CHECKING:
    from ..services.delivery import Delivery
    from ..simulation import Simulation

__all__ = ["SimBroker", "UnsupportedFeature", "call", "reset"]

#: How long a dead worker's message stays invisible: Redis broker heartbeats time out
#: after about a minute, then its unacked messages are requeued.
DEFAULT_VISIBILITY = 60.0


#: The logger dramatiq's worker threads log on (``dramatiq.worker.WorkerThread``).
_WORKER_LOGGER = logging.getLogger("dramatiq.worker.WorkerThread")


def _consumer_logger(queue_name: str) -> logging.Logger:
    """The logger of dramatiq's consumer thread for ``queue_name``."""
    return logging.getLogger(f"dramatiq.worker.ConsumerThread({queue_name})")


#: A dramatiq feature this adapter does not simulate, raised instead of faking it: the one
#: "not simulated" error every adapter raises (``bg.UnsupportedFeature``).
UnsupportedFeature = _UnsupportedFeature


# -- global seams: jitter and async actors --------------------------------------------------
_real_uniform = random.uniform


def _uniform(a: float, b: float) -> float:
    """``random.uniform`` for ``compute_backoff``: from ``sim.choices`` inside a simulation."""
    from ..core.context import active

    sim = active()
    if sim is None:
        return _real_uniform(a, b)
    return a + (b - a) * sim.choices.fraction("dramatiq.backoff_jitter")


def _uuid4() -> uuid.UUID:
    """``uuid.uuid4`` for dramatiq's message ids and group barriers: seeded in a simulation.

    The ids keep dramatiq's form (a version-4 uuid) and are the same for the same seed,
    and differ between seeds, so results kept by id never leak from one test to the next.
    """
    from ..core.context import active

    sim = active()
    if sim is None:
        return uuid.uuid4()
    digest = hashlib.sha256(f"{sim.seed}/{sim._next_id('dramatiq-uuid')}".encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


class _UuidModule:
    """Stands in for the ``uuid`` module inside ``dramatiq.message`` (its ``uuid.uuid4()``)."""

    uuid4 = staticmethod(_uuid4)

    def __getattr__(self, name: str) -> Any:
        return getattr(uuid, name)


class _LoopThread:
    """Stands in for dramatiq's ``EventLoopThread``: async actors run on the simulation's loop."""

    def run_coroutine(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return call(coro)


_patched: list[tuple[Any, str, Any]] = []


def _patch() -> None:
    if _patched:
        return
    _patched.append((_dq_common, "uniform", vars(_dq_common)["uniform"]))
    setattr(_dq_common, "uniform", _uniform)  # noqa: B010 - compute_backoff's random.uniform
    _patched.append((_dq_message, "uuid", vars(_dq_message)["uuid"]))
    setattr(_dq_message, "uuid", _UuidModule())  # noqa: B010 - generate_unique_id's uuid4
    _patched.append((_dq_composition, "uuid4", vars(_dq_composition)["uuid4"]))
    setattr(_dq_composition, "uuid4", _uuid4)  # noqa: B010 - group completion barriers
    _patched.append((_dq_asyncio, "_event_loop_thread", _dq_asyncio.get_event_loop_thread()))
    _dq_asyncio.set_event_loop_thread(_LoopThread())  # type: ignore[arg-type]


def reset() -> None:
    """Undo the process-wide seams (jitter, async actors); the next ``SimBroker`` redoes them."""
    while _patched:
        module, name, value = _patched.pop()
        setattr(module, name, value)


def _body(data: bytes) -> dict[str, str]:
    """A queue payload for an encoded message: text, or base64 for a binary encoder (pickle)."""
    try:
        return {"message": data.decode()}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode()}


# -- the broker ---------------------------------------------------------------------------------
class _Proxy(_StubMessageProxy):
    """A delivered message that remembers its simulated delivery.

    As ``StubBroker``'s proxy, it keeps its exception after processing (so ``join`` can
    raise it and a test shows the full traceback) until the GC takes the message.
    """

    def __init__(self, message: Message[Any], delivery: Delivery) -> None:
        super().__init__(message)
        self._delivery = delivery


class _QueueHandle:
    """One declared queue of a ``SimBroker``, as ``StubBroker.queues[name]`` offers it."""

    def __init__(self, broker: SimBroker, name: str) -> None:
        self._broker = weakref.proxy(broker)
        self.name = name

    def put(self, data: bytes) -> None:
        """Send an already-encoded message (as another program, or a broker's UI, would)."""
        self._broker._publish(self._broker.sim, self.name, data, 0.0)

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """Taking a message off the queue would race the simulation's own delivery."""
        raise UnsupportedFeature(
            f"SimBroker.queues[{self.name!r}].get(): the simulation delivers the queue's messages "
            "to their actors; read what was sent with sim.queues.messages(name) instead")

    def __repr__(self) -> str:
        return f"<SimBroker queue {self.name!r}>"


class SimBroker(dramatiq.Broker):
    """A dramatiq broker whose queues are ``sim.queues`` queues.

    ``sim``: the simulation (default: the one running the code); ``middleware``: as for
    any broker (default: dramatiq's defaults); ``visibility_timeout``: how long a crashed
    worker's message stays invisible before it is redelivered; ``max_retries``: the
    simulated queue's own redelivery budget (crashes), not ``Retries``'.
    """

    def __init__(self, sim: Simulation | None = None, middleware: list[Any] | None = None, *,
                 visibility_timeout: float = DEFAULT_VISIBILITY, max_retries: int = 100,
                 fail_fast_default: bool = True) -> None:
        super().__init__(middleware)
        self.fail_fast_default = fail_fast_default
        _patch()
        self._sim = sim
        self.visibility_timeout = visibility_timeout
        self.max_retries = max_retries
        #: Declared queues by name (a dict, as ``StubBroker.queues``): ``put(data)`` sends
        #: an encoded message as another program would.
        self.queues: dict[str, _QueueHandle] = {}
        #: Messages that failed for good, by queue name, oldest first (as ``StubBroker``'s).
        self.dead_letters_by_queue: defaultdict[str, list[MessageProxy]] = defaultdict(list)
        #: Publishes made from the loop's thread that failed after ``send`` returned.
        self.publish_errors: list[BaseException] = []
        self._routed: weakref.WeakKeyDictionary[Simulation, set[str]] = weakref.WeakKeyDictionary()
        self._holds: set[asyncio.Task[Any]] = set()
        self._thread = threading.get_ident()

    @property
    def sim(self) -> Simulation:
        """The simulation this broker works on now."""
        return self._sim if self._sim is not None else cast("Simulation", context.current())

    @property
    def dead_letters(self) -> list[MessageProxy]:
        """Messages that failed for good, every queue's (as ``StubBroker.dead_letters``)."""
        return [m for messages in self.dead_letters_by_queue.values() for m in messages]

    # -- broker API -------------------------------------------------------------------------
    def declare_queue(self, queue_name: str) -> None:
        """Declare ``queue_name``; its ``sim.queues`` queue is made per simulation on first use."""
        if queue_name in self.queues:
            return
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = _QueueHandle(self, queue_name)
        self.emit_after("declare_queue", queue_name)

    def _ensure(self, sim: Simulation, queue_name: str) -> None:
        routed = self._routed.get(sim)
        if routed is None:
            routed = self._routed[sim] = set()
        if queue_name in routed:
            return
        if queue_name not in sim.queues.names():
            # the broker's own queue (its retries are the broker's), whatever the platform
            sim.queues.create(queue_name, profile="agentuity",
                              visibility_timeout=self.visibility_timeout,
                              max_retries=self.max_retries, retry_delay=0)
        sim.queues.route(queue_name, self._handle)
        routed.add(queue_name)

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Publish ``message`` (delivery after ``delay`` milliseconds); returns what was sent."""
        if message.queue_name not in self.queues:
            raise QueueNotFound(message.queue_name)  # type: ignore[no-untyped-call]
        self._check_features(message)
        sim = self.sim
        if delay is not None:
            validate.number(delay, "SimBroker.enqueue", "delay", lo=-float("inf"),
                            hi=validate.MAX_SECONDS * 1000, unit="milliseconds")
            message = message.copy(options={"eta": _dq_common.current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self._publish(sim, message.queue_name, message.encode(), (delay or 0) / 1000)
        self.emit_after("enqueue", message, delay)
        return message

    def _publish(self, sim: Simulation, queue_name: str, data: bytes, delay: float) -> None:
        """Publish encoded ``data``: awaited from an actor, spawned on the loop from the test's
        thread (it runs when the simulation next runs)."""
        self._ensure(sim, queue_name)
        coro = publish_delayed(sim, queue_name, _body(data), delay, self.publish_errors, self._holds)
        if in_fiber():
            call(coro)
        elif threading.get_ident() == self._thread:
            task = sim.loop.create_task(coro)
            self._holds.add(task)
            task.add_done_callback(self._spawned_done)
        else:
            coro.close()
            raise NotRunning("SimBroker.enqueue() from a thread the simulation does not run")

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._holds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.publish_errors.append(task.exception())  # type: ignore[arg-type]

    def _check_features(self, message: Message[Any]) -> None:
        actor = self.actors.get(message.actor_name)
        limit = message.options.get("time_limit") or (actor and actor.options.get("time_limit"))
        if limit and any(isinstance(m, TimeLimit) for m in self.middleware):
            raise UnsupportedFeature(
                f"pytest-bgwork's dramatiq adapter does not simulate time limits "
                f"({message.actor_name!r} has time_limit={limit!r}): a thread cannot be "
                "interrupted on virtual time. Inject a hang or crash with sim.faults instead."
            )

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        raise UnsupportedFeature("SimBroker has no consumers: the simulation delivers each message "
                                 "(drive it with `await sim.run_until_idle()`, no dramatiq Worker)")

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        return set()

    def flush(self, queue_name: str) -> None:
        raise UnsupportedFeature("SimBroker.flush(): let the messages run or dead-letter instead")

    def flush_all(self) -> None:
        self.flush("*")

    def join(self, queue_name: str, *, timeout: int | None = None, fail_fast: bool | None = None) -> None:
        """From a sync test: run the simulation until ``queue_name`` has no message left.

        As ``StubBroker.join``: ``timeout`` is in milliseconds (of virtual time here: the
        simulation runs until it is idle, at most that long, else ``QueueJoinTimeout``);
        with ``fail_fast`` (default ``fail_fast_default``, True) the first dead-lettered
        message's exception is raised. Inside the simulation (async code, an actor) it
        would block the loop it waits for: ``await sim.run_until_idle()`` there instead.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            running = in_fiber()
        else:
            running = True
        if running:
            raise UnsupportedFeature(
                f"SimBroker.join({queue_name!r}) inside the simulation would block the loop it "
                "waits for: `await sim.run_until_idle()` in async code instead")
        sim = self.sim
        max_time = None if timeout is None else timeout / 1000
        try:
            sim.run(sim.run_until_idle(max_time=max_time))
        except Stalled as exc:
            raise QueueJoinTimeout(queue_name) from exc  # type: ignore[no-untyped-call]
        if fail_fast if fail_fast is not None else self.fail_fast_default:
            for message in self.dead_letters_by_queue[queue_name]:
                raise (message._exception or Exception("Message failed with unknown error")) from None

    def adopt(self, other: dramatiq.Broker) -> list[Any]:
        """Move every actor declared on ``other`` onto this broker; returns them.

        Actors bind ``get_broker()`` when decorated, so a suite that imported them before
        making this broker calls ``adopt`` (``bg_dramatiq`` does); ``release`` undoes it.
        """
        moved = []
        for actor in list(other.actors.values()):
            actor.broker = self
            self.declare_actor(actor)
            moved.append(actor)
        return moved

    # -- the worker -------------------------------------------------------------------------
    async def _handle(self, payload: dict[str, Any], delivery: Delivery) -> None:
        message = Message.decode(payload["message"].encode() if "message" in payload
                                 else base64.b64decode(payload["b64"]))
        if "eta" in message.options:  # as the worker's consumer thread checks it
            eta = message.options["eta"]
            if eta is None:
                del message.options["eta"]
            elif not isinstance(eta, int | float):
                _consumer_logger(message.queue_name).warning(
                    "Invalid eta value for message %r: %r. Setting eta to current_millis().",
                    message.message_id, eta)
                message.options["eta"] = _dq_common.current_millis()
        eta = message.options.get("eta")
        if isinstance(eta, int | float):
            wait = eta / 1000 - self.sim.clock.time()
            if wait > 0:  # the worker's delay queue holds it until its eta
                self.emit_before("delay_message", MessageProxy(message))
                await asyncio.sleep(wait)
        proxy = _Proxy(message, delivery)
        try:
            self.get_actor(message.actor_name)
        except ActorNotFound as exc:
            _consumer_logger(message.queue_name).error(
                "Received message for undefined actor %r. Moving it to the DLQ.",
                message.actor_name, exc_info=True)
            proxy.fail()
            proxy.stuff_exception(exc)
        else:
            await Fiber(self._process, proxy, context=contextvars.copy_context(),
                        name=f"dramatiq-{message.actor_name}").run()
        if proxy.failed:
            self.emit_before("nack", proxy)
            await self._dead_letter(proxy, delivery)
            self.emit_after("nack", proxy)
        else:
            self.emit_before("ack", proxy)
            await delivery.ack()
            self.emit_after("ack", proxy)
        proxy.clear_exception()  # as the worker does after post-processing

    def _process(self, message: _Proxy) -> None:
        """``_WorkerThread.process_message``, minus the work queue (runs in a fiber).

        Same middleware calls and the same log records, on the worker's logger.
        """
        logger = _WORKER_LOGGER
        actor = None
        try:
            logger.debug("Received message %s with id %r.", message, message.message_id)
            self.emit_before("process_message", message)
            res = None
            if not message.failed:
                actor = self.get_actor(message.actor_name)
                res = actor(*message.args, **message.kwargs)
                if (res is not None and message.options.get("pipe_target") is None
                        and not _dq_worker.has_results_middleware(self)):
                    logger.warning(
                        "Actor '%s' returned a value that is not None, and you haven't added the "
                        "Results middleware to the broker, so the value has been discarded. "
                        "Consider adding the Results middleware to your broker or piping the "
                        "result into another actor.", actor.actor_name)
            self.emit_after("process_message", message, result=res)
        except SkipMessage as e:
            if message.failed:
                message.stuff_exception(e)
            logger.warning("Message %s was skipped.", message)
            self.emit_after("skip_message", message)
        except Exception as e:
            message.stuff_exception(e)
            throws = message.options.get("throws") or (actor and actor.options.get("throws"))
            if isinstance(e, RateLimitExceeded):
                logger.debug("Rate limit exceeded in message %s: %s.", message, e)
            elif throws and isinstance(e, throws):
                logger.info("Failed to process message %s with expected exception %s.",
                            message, type(e).__name__)
            elif not isinstance(e, Retry):
                logger.error("Failed to process message %s with unhandled exception.", message,
                             exc_info=True)
            self.emit_after("process_message", message, exception=e)

    async def _dead_letter(self, proxy: _Proxy, delivery: Delivery) -> None:
        """dramatiq's nack: the message goes to the dead-letter queue, never redelivered."""
        await delivery.ack()
        self.dead_letters_by_queue[proxy.queue_name].append(proxy)
        exc = proxy._exception
        self.sim.history.record("dramatiq", "dead_letter", queue=proxy.queue_name,
                                id=proxy.message_id, actor=proxy.actor_name,
                                error=None if exc is None else f"{type(exc).__name__}: {exc}")
