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
simulation's loop. Message ids are deterministic. Time limits interrupt an actor where it
waits, on virtual time. ``pause()``/``resume()`` hold delivered messages (their lease
renewed) and run them by priority, as a paused worker and its work queue do; ``flush``,
``qsize`` and, while paused, ``queues[name].get``/``consume`` work as on ``StubBroker``.

Actors bind ``get_broker()`` when they are decorated: set a ``SimBroker`` as the global
broker before importing them, or let ``broker.adopt(old_broker)`` (the ``bg_dramatiq``
fixture does) move already-declared actors onto it.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import hashlib
import itertools
import logging
import queue as _queue
import random
import threading
import uuid
import weakref
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass
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
from dramatiq.middleware import SkipMessage, TimeLimit, TimeLimitExceeded

from ..core import context, validate
from ..core.errors import NotRunning, ProcessCrashed, Stalled
from ..core.errors import UnsupportedFeature as _UnsupportedFeature
from ..core.threads import wait_until
from ._publish import publish_delayed
from ._threads import Fiber, call, in_fiber

if TYPE_CHECKING:
    from ..services.delivery import Delivery
    from ..simulation import Simulation

__all__ = ["SimBroker", "UnsupportedFeature", "call", "reset"]

#: How long a dead worker's message stays invisible: Redis broker heartbeats time out
#: after about a minute, then its unacked messages are requeued.
DEFAULT_VISIBILITY = 60.0


#: Loop turns a resumed broker waits at most for the messages sent so far to be delivered
#: (each publish takes a few turns) before it runs the waiting ones by priority.
_PREFETCH_TURNS = 1000

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


@dataclass(eq=False)
class _Waiting:
    """A delivered message a paused broker holds, as a paused worker's work queue does."""

    priority: int
    order: int
    data: bytes
    proxy: _Proxy
    future: asyncio.Future[str]


class _QueueHandle:
    """One declared queue of a ``SimBroker``, as ``StubBroker.queues[name]`` offers it."""

    def __init__(self, broker: SimBroker, name: str) -> None:
        self._broker = weakref.proxy(broker)
        self.name = name

    def put(self, data: bytes) -> None:
        """Send an already-encoded message (as another program, or a broker's UI, would)."""
        try:
            message_id: str | None = Message.decode(data).message_id
        except Exception:  # not a dramatiq message: the worker will reject it
            message_id = None
        self._broker._publish(self._broker.sim, self.name, data, 0.0, message_id)

    def qsize(self) -> int:
        """Messages sent to this queue that no actor has taken yet (delayed ones left out)."""
        return sum(1 for _, delayed in self._broker._backlog[self.name] if not delayed)

    @property
    def unfinished_tasks(self) -> int:
        """Messages of this queue not yet taken plus those an actor is processing now."""
        return self.qsize() + cast("int", self._broker._running[self.name])

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """Take the oldest waiting message off a paused broker's queue; its encoded bytes.

        As ``StubBroker.queues[name].get``: blocks (on virtual time, from a sync test body)
        until one is there or ``timeout`` seconds pass (``queue.Empty``). While the broker
        delivers, taking one would race the simulation's delivery: ``UnsupportedFeature``.
        """
        data = self._broker._take(self.name, block, timeout, f"SimBroker.queues[{self.name!r}].get()")
        if data is None:
            raise _queue.Empty
        return cast("bytes", data)

    def __repr__(self) -> str:
        return f"<SimBroker queue {self.name!r}>"


class _Consumer(Consumer):
    """``broker.consume(queue)`` on a paused ``SimBroker``: takes its waiting messages.

    As ``StubBroker``'s consumer: ``next()`` gives a ``MessageProxy`` or ``None`` after
    ``timeout`` milliseconds (virtual); ``nack`` dead-letters, ``requeue`` sends again.
    """

    def __init__(self, broker: SimBroker, queue_name: str, timeout: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.timeout = timeout

    def __next__(self) -> MessageProxy | None:
        data = self.broker._take(self.queue_name, True, self.timeout / 1000,
                                 f"SimBroker.consume({self.queue_name!r})")
        return None if data is None else MessageProxy(Message.decode(data))

    def ack(self, message: MessageProxy) -> None:
        """Nothing left to do: the message left the simulated queue when it was taken."""

    def nack(self, message: MessageProxy) -> None:
        self.broker.dead_letters_by_queue[message.queue_name].append(message)

    def requeue(self, messages: Any) -> None:
        for message in messages:
            self.broker.enqueue(message._message if isinstance(message, MessageProxy) else message)


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
        """``message.get_result`` default for ``fail_fast`` (dramatiq's: ``True``)."""
        _patch()
        self._sim = sim
        self.visibility_timeout = visibility_timeout
        """Seconds a crashed worker's message stays invisible before redelivery."""
        self.max_retries = max_retries
        """The simulated queue's own redelivery budget (crashes), not ``Retries``'."""
        self.queues: dict[str, _QueueHandle] = {}
        """Declared queues by name (a dict, as ``StubBroker.queues``): ``put(data)`` sends
        an encoded message as another program would."""
        self.dead_letters_by_queue: defaultdict[str, list[MessageProxy]] = defaultdict(list)
        """Messages that failed for good, by queue name, oldest first (as ``StubBroker``'s)."""
        self.publish_errors: list[BaseException] = []
        """Publishes made from the loop's thread that failed after ``send`` returned."""
        self._routed: weakref.WeakKeyDictionary[Simulation, set[str]] = weakref.WeakKeyDictionary()
        self._holds: set[asyncio.Task[Any]] = set()
        self._thread = threading.get_ident()
        self._paused = False
        self._resuming = False
        #: Messages a paused broker holds (delivered, not yet processed), in arrival order.
        self._parked: list[_Waiting] = []
        self._order = itertools.count()
        #: Per queue, (message id, delayed) of each message sent and not yet taken by an actor.
        self._backlog: defaultdict[str, list[tuple[str, bool]]] = defaultdict(list)
        #: Per queue, ids of flushed messages whose delivery is still to come (then dropped).
        self._dropped: defaultdict[str, Counter[str]] = defaultdict(Counter)
        #: Per queue, how many messages an actor is processing now.
        self._running: Counter[str] = Counter()

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
        if routed is None:  # a new simulation: what the broker held for the last one is gone
            routed = self._routed[sim] = set()
            self._parked.clear()
            self._backlog.clear()
            self._dropped.clear()
            self._running.clear()
            self._resuming = False
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
        sim = self.sim
        if delay is not None:
            validate.number(delay, "SimBroker.enqueue", "delay", lo=-float("inf"),
                            hi=validate.MAX_SECONDS * 1000, unit="milliseconds")
            message = message.copy(options={"eta": _dq_common.current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self._publish(sim, message.queue_name, message.encode(), (delay or 0) / 1000,
                      message.message_id)
        self.emit_after("enqueue", message, delay)
        return message

    def _publish(self, sim: Simulation, queue_name: str, data: bytes, delay: float,
                 message_id: str | None = None) -> None:
        """Publish encoded ``data``: awaited from an actor, spawned on the loop from the test's
        thread (it runs when the simulation next runs)."""
        self._ensure(sim, queue_name)
        if message_id is not None:
            self._backlog[queue_name].append((message_id, delay > 0))
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

    def _time_limit(self, message: Message[Any]) -> float | None:
        """The message's time limit in seconds, as the ``TimeLimit`` middleware reads it."""
        middleware = next((m for m in self.middleware if isinstance(m, TimeLimit)), None)
        if middleware is None:
            return None
        actor = self.actors.get(message.actor_name)
        default = middleware.time_limit if actor is None else actor.options.get(
            "time_limit", middleware.time_limit)
        limit = message.options.get("time_limit") or default
        return float(limit) / 1000

    @staticmethod
    def _time_out(fiber: Fiber) -> None:
        """The limit passed (on virtual time): interrupt the actor where it waits."""
        logging.getLogger("dramatiq.middleware.time_limit.TimeLimit").warning(
            "Time limit exceeded. Raising exception in worker thread %r.", fiber.thread_id)
        fiber.interrupt(TimeLimitExceeded())

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        """A consumer of a paused broker's waiting messages (as ``StubBroker.consume``).

        While the broker delivers, the simulation gives each message to its actor, so a
        consumer would race it: ``UnsupportedFeature``; ``pause()`` first.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        if not self._paused:
            raise UnsupportedFeature(
                f"SimBroker.consume({queue_name!r}): the simulation delivers each message to its "
                "actor (drive it with `await sim.run_until_idle()` or broker.join(queue)); call "
                "broker.pause() first to take the messages yourself")
        return _Consumer(self, queue_name, timeout)

    def _take(self, queue_name: str, block: bool, timeout: float | None, what: str) -> bytes | None:
        """The oldest waiting message of a paused broker's queue (encoded), or ``None`` once
        ``timeout`` virtual seconds passed; taking it acks it on the simulated queue."""
        if not self._paused:
            raise UnsupportedFeature(
                f"{what}: the simulation delivers the queue's messages to their actors; call "
                "broker.pause() first to take them yourself, or read what was sent with "
                "sim.queues.messages(name)")

        def waiting() -> list[_Waiting]:
            return [w for w in self._parked if w.proxy.queue_name == queue_name]

        if block and not waiting():
            wait_until(lambda: bool(waiting()), timeout, what=what)
        found = waiting()
        if not found:
            return None
        entry = found[0]
        self._parked.remove(entry)
        self._taken(queue_name, entry.proxy.message_id)
        if not entry.future.done():
            entry.future.set_result("taken")
        return entry.data

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        return set()

    def flush(self, queue_name: str) -> None:
        """Drop every message of ``queue_name`` no actor has taken yet (as ``StubBroker.flush``).

        Each is acked on the simulated queue when its delivery comes, without running.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        for message_id, _ in self._backlog.pop(queue_name, []):
            self._dropped[queue_name][message_id] += 1
        for entry in [w for w in self._parked if w.proxy.queue_name == queue_name]:
            self._parked.remove(entry)
            if not entry.future.done():
                entry.future.set_result("flushed")

    def flush_all(self) -> None:
        """Flush every queue and forget the dead letters (as ``StubBroker.flush_all``)."""
        for queue_name in list(self.queues):
            self.flush(queue_name)
        self.dead_letters_by_queue.clear()

    # -- pausing: the worker's pause() / resume() ---------------------------------------------
    @property
    def paused(self) -> bool:
        """Whether delivered messages wait for ``resume()`` instead of running."""
        return self._paused

    def pause(self) -> None:
        """Stop running actors, as ``dramatiq.Worker.pause``: delivered messages wait (their
        lease renewed, as a worker's heartbeat does) until ``resume()``."""
        self._paused = True

    def resume(self) -> None:
        """Run the waiting messages, highest priority (lowest ``priority``) first, then the
        rest as they come (as ``dramatiq.Worker.resume`` and its priority work queue).

        The release happens when the simulation next runs, once every message sent so far
        has been delivered at that instant, as a resumed worker's prefetch fills its work
        queue before its threads take from it.
        """
        if not self._paused:
            return
        self._paused = False
        if not self._parked and not any(self._backlog.values()):
            return  # nothing sent meanwhile: nothing to order
        self._resuming = True
        self.sim.loop.call_soon_threadsafe(self._release_soon)

    def _release_soon(self) -> None:
        task = self.sim.loop.create_task(self._release())
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _release(self) -> None:
        try:  # the deliveries of this instant park first (bounded: one may never come)
            for _ in range(_PREFETCH_TURNS):
                sent = sum(1 for backlog in self._backlog.values() for _, delayed in backlog
                           if not delayed)
                if len(self._parked) >= sent:
                    break
                await asyncio.sleep(0)
        finally:
            self._resuming = False
        if not self._paused:  # not paused again meanwhile
            waiting, self._parked = sorted(self._parked, key=lambda w: (w.priority, w.order)), []
            for entry in waiting:
                if not entry.future.done():
                    entry.future.set_result("run")

    def _taken(self, queue_name: str, message_id: str) -> None:
        """Drop one backlog entry of ``message_id``: an actor (or ``get``) took it."""
        backlog = self._backlog.get(queue_name)
        if backlog:
            for i, (mid, _) in enumerate(backlog):
                if mid == message_id:
                    del backlog[i]
                    return

    def _take_dropped(self, queue_name: str, message_id: str) -> bool:
        dropped = self._dropped.get(queue_name)
        if dropped and dropped[message_id] > 0:
            dropped[message_id] -= 1
            return True
        return False

    async def _park(self, data: bytes, proxy: _Proxy, delivery: Delivery) -> str:
        """Hold a delivered message while paused; what ended the wait ("run", "taken", ...)."""
        actor = self.actors.get(proxy.actor_name)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = _Waiting(actor.priority if actor else 0, next(self._order), data, proxy, future)
        self._parked.append(entry)
        try:
            while not future.done():
                done, _ = await asyncio.wait([future], timeout=self.visibility_timeout / 2)
                if not done:  # the worker's heartbeat keeps its prefetched message invisible
                    await delivery.extend(self.visibility_timeout)
        finally:
            if entry in self._parked:  # the heartbeat failed or the simulation ended
                self._parked.remove(entry)
        return future.result()

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
        if self._paused and self._backlog.get(queue_name):
            raise NotRunning(
                f"SimBroker.join({queue_name!r}) while the broker is paused: "
                f"{len(self._backlog[queue_name])} message(s) wait for broker.resume(), so the "
                "join could never end (a paused dramatiq Worker would block it forever)")
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
        data = payload["message"].encode() if "message" in payload else base64.b64decode(payload["b64"])
        message = Message.decode(data)
        queue_name = message.queue_name
        if self._take_dropped(queue_name, message.message_id):
            return  # flushed before its delivery: acked, never run
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
        if self._take_dropped(queue_name, message.message_id):
            return  # flushed while it waited for its eta
        proxy = _Proxy(message, delivery)
        try:
            self.get_actor(message.actor_name)
        except ActorNotFound as exc:
            self._taken(queue_name, message.message_id)
            _consumer_logger(message.queue_name).error(
                "Received message for undefined actor %r. Moving it to the DLQ.",
                message.actor_name, exc_info=True)
            proxy.fail()
            proxy.stuff_exception(exc)
        else:
            if (self._paused or self._resuming) and await self._park(data, proxy, delivery) != "run":
                self._take_dropped(queue_name, message.message_id)
                return  # flushed, or taken with queues[name].get(): acked, never run
            self._taken(queue_name, message.message_id)
            self._running[queue_name] += 1
            fiber = Fiber(self._process, proxy, context=contextvars.copy_context(),
                          name=f"dramatiq-{message.actor_name}")
            limit = self._time_limit(message)
            timer = None if limit is None else asyncio.get_running_loop().call_later(
                limit, self._time_out, fiber)
            try:
                await fiber.run()
            finally:
                self._running[queue_name] -= 1
                if timer is not None:
                    timer.cancel()
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
        except BaseException as e:  # as the worker: an Interrupt (TimeLimitExceeded) too
            if isinstance(e, ProcessCrashed):
                raise  # an injected crash: the worker died here, nothing is processed
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
