"""Celery on the simulation: unmodified tasks, delivered at least once on virtual time.

``with adapters.celery.install(sim, app) as worker: ...`` points ``app`` at a kombu
virtual transport registered as ``bgwork://`` (producer side: ``task.delay()``,
``apply_async``, ``self.retry()`` publish to ``sim.queues``), routes each Celery queue
to an in-loop executor that follows the worker's rules, and stores results in
``sim.kv`` (namespace ``celery-results``), or, for a ``redis://`` result backend, in
Celery's own Redis backend on ``adapters.redis``. Remote control (``revoke``, ``ping``,
``inspect``) is answered by the simulated worker with Celery's own handlers. Instead of a worker (threads, real
``sleep(polling_interval)``), the simulation delivers each message; the task body runs
in a thread while the clock is held (``_threads.Fiber``), built on
``celery.app.trace.build_tracer`` as the prefork pool runs it.

Worker rules honoured: early ack (the default: acked when the task starts) vs
``acks_late`` (acked when it returns, also after a failure); ``reject_on_worker_lost``;
``acks_on_failure``; ``Reject``/``Ignore``; ``self.retry(countdown=)`` (a new message
with an ETA); ETA/countdown tasks held in memory, unacked, while the visibility timeout
runs (a hold longer than it is redelivered and runs twice, as on Redis or SQS);
``expires``; chains and ``link``/``link_error`` callbacks (the tracer sends them); groups.
A crash injected in a task body is a pool child dying: the worker sees
``WorkerLostError``. Unsupported features raise ``UnsupportedFeature`` naming them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import datetime as _dt
import functools
import json
import re
import threading
import time
import weakref
from collections.abc import Iterator
from queue import Empty
from typing import TYPE_CHECKING, Any

from kombu.transport import TRANSPORT_ALIASES, virtual

from ..core.context import current_attempt
from ..core.errors import BgworkError, NotRunning
from ..core.errors import UnsupportedFeature as _UnsupportedFeature
from ._threads import Fiber, call, in_fiber

if TYPE_CHECKING:
    from celery import Celery

    from ..services.delivery import Delivery
    from ..simulation import Simulation

__all__ = [
    "RESULTS_NS",
    "ResultNotReady",
    "SimWorker",
    "UnsupportedFeature",
    "call",
    "install",
    "reset",
]

#: The ``sim.kv`` namespace the result backend writes to.
RESULTS_NS = "celery-results"
#: The Redis transport's default visibility timeout (SQS's is 30 s: pass it to ``install``).
DEFAULT_VISIBILITY = 3600.0
#: Redeliveries (crashes, requeues) before the simulated broker dead-letters a message.
DEFAULT_MAX_RETRIES = 100
HOSTNAME = "celery@bgwork"
#: The remote-control commands the simulated worker answers (Celery's own handlers).
CONTROL_COMMANDS = frozenset({"ping", "revoke", "revoke_by_stamped_headers", "revoked", "registered",
                              "query_task", "active", "reserved", "conf", "clock", "hello"})


#: A Celery feature this adapter does not simulate, raised instead of faking it: the one
#: "not simulated" error every adapter raises (``bg.UnsupportedFeature``).
UnsupportedFeature = _UnsupportedFeature


class ResultNotReady(BgworkError):
    """``AsyncResult.get()`` on a task that has not finished: it would block the simulation."""


def _unsupported(feature: str, fix: str) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"pytest-bgwork's Celery adapter does not simulate {feature}; it raises instead of "
        f"running it eagerly or ignoring it. {fix}"
    )


# -- the broker side: a kombu virtual transport ---------------------------------------------
class Channel(virtual.Channel):
    """Publishes to ``sim.queues``; consuming is the simulation's job, not kombu's."""

    do_restore = False

    def _inst(self) -> SimWorker:
        return _require_active("publishing a Celery message")

    def _next_delivery_tag(self) -> str:
        return _require_active("publishing a Celery message").next_uuid()

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return _is_pidbox(queue) or queue in self._inst().sim.queues.names()

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        if _is_pidbox(queue):
            return  # a remote-control reply queue: its replies are kept in memory
        self._inst().ensure_queue(queue)

    def basic_publish(self, message: Any, exchange: str, routing_key: str, **kwargs: Any) -> Any:
        """Publish; a remote-control broadcast is handled by the simulated worker at once."""
        if _is_pidbox(exchange) and not str(exchange).startswith("reply."):
            self._inst().control(self, message)
            return None
        if _is_pidbox(exchange):  # a reply: to kombu's reply queue, declared on any connection
            self._inplace_augment_message(message, exchange, routing_key)  # type: ignore[no-untyped-call]
            self._put(f"{routing_key}.{exchange}", message)
            return None
        return super().basic_publish(message, exchange, routing_key, **kwargs)  # type: ignore[no-untyped-call]

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if _is_pidbox(queue):  # a remote-control reply
            self._inst().replies.setdefault(queue, []).append(message)
            return
        self._inst().put(queue, message)

    def _get(self, queue: str, timeout: float | None = None) -> Any:
        if _is_pidbox(queue):
            replies = self._inst().replies.get(queue)
            if not replies:
                raise Empty()
            return replies.pop(0)
        raise _unsupported(
            "consuming from bgwork:// (a Celery worker, Consumer or basic_get)",
            "The simulation delivers each message to the in-loop executor: drive it with "
            "`await sim.run_until_idle()` instead of starting a worker.",
        )

    def _size(self, queue: str) -> int:
        if _is_pidbox(queue):
            return len(self._inst().replies.get(queue, ()))
        return int(self._inst().sim.queues.stats(queue)["pending"])

    def _purge(self, queue: str) -> int:
        if _is_pidbox(queue):
            return len(self._inst().replies.pop(queue, ()))
        waiting = self._size(queue)
        if waiting:
            raise _unsupported(
                f"purging queue {queue!r} with {waiting} message(s) waiting",
                "Let the messages run (or dead-letter) instead.",
            )
        return 0

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        pass

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        found: list[str] = super()._lookup(exchange, routing_key, default)  # type: ignore[no-untyped-call]
        if not found:  # kombu would drop the message with a warning: say so instead
            raise BgworkError(
                f"no queue is bound to exchange {exchange!r} with routing key {routing_key!r}: "
                "the message would be dropped. Declare the queue (Celery does when "
                "task_create_missing_queues is on) or route the task to a declared queue."
            )
        return found


class Transport(virtual.Transport):
    """``bgwork://``: kombu's virtual transport on the active simulation's queues."""

    Channel = Channel
    driver_type = "bgwork"
    driver_name = "bgwork"
    implements = virtual.Transport.implements.extend(asynchronous=False, exchange_type=frozenset(
        ["direct", "topic"]))

    def driver_version(self) -> str:
        return "pytest-bgwork"

    def drain_events(self, connection: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Wait for a remote-control reply: the simulated worker replied when the command was
        published, so none comes later; a ``timeout`` passes on virtual time (the simulation
        runs meanwhile, as a real worker would), then ``socket.timeout``."""
        cycle: Any = self.cycle
        for attempt in range(2):
            try:
                return cycle.get(self._deliver, timeout=timeout)
            except Empty:
                if attempt or timeout is None:
                    break
                time.sleep(timeout)  # virtual from a thread of the simulation
        if timeout is None:
            raise _unsupported(
                "waiting with no timeout for a remote-control reply that will never come",
                "Pass timeout= (Celery's default is 1 s).")
        raise TimeoutError()  # socket.timeout, which kombu's callers catch


TRANSPORT_ALIASES.setdefault("bgwork", f"{__name__}:Transport")


# -- the result backend: sim.kv -------------------------------------------------------------
def _backend_class() -> type[Any]:
    from celery.backends.base import KeyValueStoreBackend

    class BgworkBackend(KeyValueStoreBackend):  # type: ignore[misc]
        """Task results in ``sim.kv`` (namespace ``celery-results``), with Celery's expiry."""

        thread_safe = True
        supports_native_join = False
        #: The installation this backend belongs to (results stay readable after it ends).
        worker: SimWorker
        implements_incr = False

        def _ttl(self) -> float | None:
            expires = self.expires
            if isinstance(expires, _dt.timedelta):
                expires = expires.total_seconds()
            return float(expires) if expires else None

        def get(self, key: bytes | str) -> Any:
            k = _text(key)
            inst = self.worker
            if in_fiber():
                r = call(inst.sim.kv.get(RESULTS_NS, k))
                return r.data if r.exists else None
            inst.require_loop_thread("reading a Celery result")
            return inst.sim.kv.items(RESULTS_NS).get(k)

        def mget(self, keys: list[bytes | str]) -> list[Any]:
            return [self.get(k) for k in keys]

        def set(self, key: bytes | str, value: bytes | str) -> None:
            inst = self.worker
            coro = inst.sim.kv.set(RESULTS_NS, _text(key), _portable(_text(value)), ttl=self._ttl())
            if in_fiber():
                call(coro)
            else:
                inst.require_loop_thread("storing a Celery result", coro)
                inst.spawn(coro)

        def delete(self, key: bytes | str) -> None:
            inst = self.worker
            coro = inst.sim.kv.delete(RESULTS_NS, _text(key))
            if in_fiber():
                call(coro)
            else:
                inst.require_loop_thread("forgetting a Celery result", coro)
                inst.spawn(coro)

        def incr(self, key: bytes | str) -> int:
            raise _unsupported("chord counters", "Chords are not supported.")

        def expire(self, key: bytes | str, value: float) -> None:
            pass  # set() already gave the key Celery's result_expires as its TTL

        def ensure_chords_allowed(self) -> None:
            raise _unsupported(
                "chords (a group whose results feed a callback)",
                "Test the header tasks and the callback separately, or use a chain.",
            )

        def apply_chord(self, *args: Any, **kwargs: Any) -> None:
            self.ensure_chords_allowed()

        def wait_for(self, task_id: str, timeout: float | None = None, interval: float = 0.5,
                     no_ack: bool = True, on_interval: Any = None) -> Any:
            meta = self.get_task_meta(task_id)
            if meta["status"] in _ready_states():
                return meta
            inst = self.worker
            if _on_loop() or in_fiber():
                raise ResultNotReady(
                    f"AsyncResult({task_id!r}).get() would wait for a task that has not finished "
                    f"(state {meta['status']}) inside the simulation, blocking the loop it waits "
                    "for. Drive it first (`await sim.run_until_idle()` or `await "
                    "sim.advance(...)`), then read the result.")
            inst.require_loop_thread("waiting for a Celery result")
            # a sync caller (a test, a script): run the simulation until the result is ready
            # or `timeout` virtual seconds pass, polling every `interval` as Celery does
            return inst.sim.run(self._run_until_ready(task_id, timeout, interval))

        async def _run_until_ready(self, task_id: str, timeout: float | None, interval: float) -> Any:
            from celery.exceptions import TimeoutError as CeleryTimeout

            sim = self.worker.sim
            deadline = None if timeout is None else sim.clock.monotonic() + timeout
            while True:
                await sim.advance(0)  # let work ready now finish, without moving time
                meta = self.get_task_meta(task_id)
                if meta["status"] in _ready_states():
                    return meta
                now = sim.clock.monotonic()
                if deadline is not None and now >= deadline:
                    raise CeleryTimeout("The operation timed out.")
                timers = sim.loop.pending_timers()
                if not timers:
                    raise ResultNotReady(
                        f"AsyncResult({task_id!r}).get(): the simulation is idle and the task is "
                        f"still {meta['status']}: nothing will ever finish it (was it sent to a "
                        "queue no installation serves?)")
                target = min(h.when() for h in timers)
                if deadline is not None:
                    target = min(target, deadline)
                await sim.advance(max(0.0, target - now))  # to the next event, not past it

    return BgworkBackend


_REDIS_SCHEMES = ("redis", "rediss", "redis+socket")
_redis_classes: dict[type[Any], type[Any]] = {}


def _is_redis_url(url: Any) -> bool:
    """Whether ``url`` (the app's ``result_backend``) names Celery's Redis result backend."""
    return isinstance(url, str) and url.partition("://")[0].lower() in _REDIS_SCHEMES and "://" in url


def _redis_installed() -> bool:
    """Whether ``adapters.redis`` can run (redis-py and fakeredis are installed)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("redis", "fakeredis"))


def _redis_backend_class(base: type[Any]) -> type[Any]:
    """Celery's own Redis backend class ``base``, with the simulation's two rules for a wait."""
    cls = _redis_classes.get(base)
    if cls is not None:
        return cls

    class Consumer(base.ResultConsumer):  # type: ignore[misc,name-defined]
        """Celery's pub/sub result consumer; its wait for the socket is the simulated
        connection's ``can_read`` (a wait on virtual time), not ``select.poll`` on a socket
        that has no file descriptor."""

        def _wait_for_pubsub(self, pubsub: Any, timeout: float | None) -> bool:
            wait = 1.0 if timeout is None else min(timeout, 1.0)
            if not pubsub.subscribed:
                return bool(pubsub.subscribed_event.wait(wait))
            connection = pubsub.connection
            return connection is None or bool(connection.can_read(timeout=wait))

    class BgworkRedisBackend(base):  # type: ignore[misc]
        """Celery's Redis result backend on ``adapters.redis``: a sync ``get()`` waits on
        virtual time (its pub/sub read is a simulated socket read); on the loop's thread,
        or once the simulation is idle with the task unfinished, it raises ``ResultNotReady``."""

        ResultConsumer = Consumer
        #: The installation this backend belongs to.
        worker: SimWorker

        def wait_for_pending(self, result: Any, callback: Any = None, propagate: bool = True,
                             **kwargs: Any) -> Any:
            inst = self.worker
            if _on_loop():
                meta = self.get_task_meta(result.id)
                if meta["status"] not in _ready_states():
                    raise ResultNotReady(
                        f"AsyncResult({result.id!r}).get() would wait for a task that has not "
                        f"finished (state {meta['status']}) on the simulation's loop, blocking the "
                        "loop it waits for. Drive it first (`await sim.run_until_idle()`), then "
                        "read the result.")
            elif threading.get_ident() == inst._thread:
                kwargs["on_interval"] = _idle_guard(inst, result, kwargs.get("on_interval"))
            return super().wait_for_pending(result, callback=callback, propagate=propagate, **kwargs)

        def on_result_fulfilled(self, result: Any) -> None:
            """Unsubscribe; later, on the loop, when a simulated server is busy in this very
            command (``AsyncResult.__del__`` run by the garbage collector inside another
            redis call would wait for the server's lock for good)."""
            inst = self.worker
            if inst.closed:  # after install: the simulation may be gone (teardown)
                return
            if _collecting.get("thread") == threading.get_ident():
                return  # the cycle collector dropped it: when is not the code's to decide, so
                # its unsubscribe would make the history differ from run to run; left open
            if any(srv.lock.locked() for srv in inst.redis_servers()):
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody listens
                    inst.sim.loop.call_soon_threadsafe(self._fulfilled_later, result)
                return
            super().on_result_fulfilled(result)

        def _fulfilled_later(self, result: Any) -> None:
            if not self.worker.closed:
                super().on_result_fulfilled(result)

    _redis_classes[base] = BgworkRedisBackend
    return BgworkRedisBackend


#: The thread the garbage collector's cycle pass runs in now (``gc.callbacks``), if any.
_collecting: dict[str, int | None] = {}


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    _collecting["thread"] = threading.get_ident() if phase == "start" else None


def _idle_guard(inst: SimWorker, result: Any, on_interval: Any) -> Any:
    """``on_interval`` for a sync wait: raise ``ResultNotReady`` once the simulation is idle
    (no timer left, nothing ready) and the task is still unfinished: nothing will finish it."""

    def check() -> None:
        if on_interval is not None:
            on_interval()
        loop = inst.sim.loop
        if result.on_ready.ready or loop.pending_timers() or getattr(loop, "_ready", None):
            return
        state = result.backend.get_task_meta(result.id)["status"]
        if state not in _ready_states():
            raise ResultNotReady(
                f"AsyncResult({result.id!r}).get(): the simulation is idle and the task is "
                f"still {state}: nothing will ever finish it (was it sent to a queue no "
                "installation serves?)")

    return check


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _ready_states() -> frozenset[str]:
    from celery import states

    return states.READY_STATES  # type: ignore[no-any-return]


_PATH = re.compile(r'File "(?:[^"]*[/\\\\])?([^"/\\\\]+)"')


def _portable(value: str) -> str:
    """A stored result whose traceback names files without their directories: the history
    digest (it covers KV values) is then the same on every machine, not only on this one."""
    if '"traceback"' not in value:
        return value
    try:
        meta = json.loads(value)
    except ValueError:
        return value  # not Celery's JSON serializer: stored as it is
    if not isinstance(meta, dict) or not isinstance(meta.get("traceback"), str):
        return value
    meta["traceback"] = _PATH.sub(r'File "\1"', meta["traceback"])
    return json.dumps(meta)


def _is_pidbox(name: str | None) -> bool:
    """Celery's remote-control exchanges and queues (``celery.pidbox``, ``<uuid>.reply.celery.pidbox``)."""
    return bool(name) and str(name).endswith("pidbox")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- the installation -------------------------------------------------------------------------
_active: SimWorker | None = None
_lock = threading.Lock()


def _require_active(what: str) -> SimWorker:
    inst = _active
    if inst is None:
        raise NotRunning(
            f"{what} through bgwork:// needs an installed simulation: wrap the code in "
            "`with pytest_bgwork.adapters.celery.install(sim, app):` (or use the bg_celery "
            "fixture)"
        )
    return inst


class SimWorker:
    """What ``install`` yields: the simulated worker for one Celery app on one simulation.

    ``publish_errors`` lists publishes made from the loop thread (``task.delay()`` in a
    test or an async endpoint) that failed later (e.g. an injected ``queue.publish``
    fault): ``install`` raises them on exit unless you cleared the list.
    """

    def __init__(self, sim: Simulation, app: Celery, *, visibility_timeout: float,
                 max_retries: int, hostname: str, results: str = "kv",
                 concurrency: int | None = None) -> None:
        self.sim = sim
        self.app = app
        #: Where results go: ``"kv"`` (``sim.kv``) or ``"redis"`` (Celery's own Redis backend
        #: on ``adapters.redis``).
        self.results = results
        #: ``install`` ended: its Redis result subscriptions are left alone.
        self.closed = False
        #: Remote-control replies waiting in each reply queue (``<oid>.reply.celery.pidbox``).
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self._node: Any = None
        #: ``adapters.redis``'s backend while results go to Redis.
        self.redis: Any = None
        self.hostname = hostname
        self.visibility_timeout = visibility_timeout
        self.max_retries = max_retries
        self.publish_errors: list[BaseException] = []
        self._tracers: dict[str, Any] = {}
        self._pending: set[asyncio.Task[Any]] = set()
        self._uuids = 0
        self._succeeded: set[str] = set()
        #: Task bodies that may run at once (the pool's processes); ``None``: no limit.
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None
        self._thread = threading.get_ident()

    # -- ids: Celery's uuid4s, made deterministic ---------------------------------------------
    def next_uuid(self) -> str:
        """``00000000-0000-4000-8000-<n>``: a valid, readable, deterministic task id."""
        with _lock:
            self._uuids += 1
            n = self._uuids
        return f"00000000-0000-4000-8000-{n:012x}"

    # -- threads ------------------------------------------------------------------------------
    def require_loop_thread(self, what: str, coro: Any = None) -> None:
        if threading.get_ident() != self._thread:
            if coro is not None:
                coro.close()
            raise NotRunning(
                f"{what} from a thread the simulation does not run (only task bodies it runs "
                "and the loop's own thread may reach it)"
            )

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` on the simulation's loop from sync code on the loop thread (FIFO)."""
        task = self.sim.loop.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._spawned_done)
        return task

    def _spawned_done(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.publish_errors.append(task.exception())  # type: ignore[arg-type]

    def redis_servers(self) -> list[Any]:
        """The simulated Redis servers of the Redis result backend (none with ``sim.kv``)."""
        return list(self.redis.servers.values()) if self.redis is not None else []

    # -- remote control -------------------------------------------------------------------------
    def control(self, channel: Any, payload: dict[str, Any]) -> None:
        """A broadcast (``revoke``, ``ping``, ``inspect().registered()``...): the simulated
        worker runs Celery's own control handler at once and publishes its reply."""
        from celery.utils.collections import AttributeDict
        from celery.worker.control import Panel

        message = self._message(payload, {})
        body = message.decode()
        method = body.get("method") if isinstance(body, dict) else None
        arguments = (body.get("arguments") if isinstance(body, dict) else None) or {}
        if method not in CONTROL_COMMANDS or (method in ("revoke", "revoke_by_stamped_headers")
                                              and arguments.get("terminate")):
            what = f"{method}(terminate=True)" if method in CONTROL_COMMANDS else method
            raise _unsupported(
                f"the remote-control command {what!r}",
                f"The simulated worker answers {', '.join(sorted(CONTROL_COMMANDS))} "
                "(revoke without terminate: a task that has started runs to its end).")
        node = self._node
        if node is None:
            node = self._node = self.app.control.mailbox.Node(
                self.hostname, handlers=Panel.data,
                state=AttributeDict(app=self.app, hostname=self.hostname, consumer=None, tset=set))
        node.channel = channel
        node.handle_message(body, message)

    # -- queues -------------------------------------------------------------------------------
    def ensure_queue(self, name: str) -> None:
        """Create (if needed) and route Celery queue ``name`` to the simulation's Celery router."""
        router = _router_for(self.sim)
        if name in router.routed:
            return
        queues = self.sim.queues
        if name not in queues.names():
            # the broker's own queue (its retries are the broker's), whatever the platform
            queues.create(name, profile="agentuity", visibility_timeout=self.visibility_timeout,
                          max_retries=self.max_retries, retry_delay=0)
        queues.route(name, router.handle)
        router.routed.add(name)

    def _check_features(self, message: dict[str, Any]) -> None:
        headers = message.get("headers") or {}
        name = headers.get("task")
        limits = headers.get("timelimit") or ()
        if any(v is not None for v in limits):
            raise _unsupported(
                f"time limits (task {name!r} has time_limit/soft_time_limit {list(limits)})",
                "A thread cannot be killed: inject a hang or a crash with sim.faults instead.",
            )
        priority = (message.get("properties") or {}).get("priority")
        if priority:
            raise _unsupported(f"message priorities (priority={priority!r} on {name!r})",
                               "Queues here are FIFO; drop priority= in the test settings.")
        task = self.app.tasks.get(name) if isinstance(name, str) else None
        if task is not None:
            if task.rate_limit:
                raise _unsupported(f"rate limits (task {name!r} has rate_limit={task.rate_limit!r})",
                                   "Set rate_limit=None for tests.")
            if getattr(task, "retry_on_worker_lost", False):
                raise _unsupported(f"retry_on_worker_lost (task {name!r})",
                                   "Use acks_late with reject_on_worker_lost.")

    def put(self, queue: str, message: dict[str, Any]) -> None:
        """kombu's ``_put``: publish ``message`` (kombu's JSON-able dict) to ``sim.queues``."""
        self._check_features(message)
        self.ensure_queue(queue)
        coro = self.sim.queues.publish(queue, message)
        if in_fiber():
            call(coro)  # a task body publishing (retry, chain, delay): it waits, as kombu does
            return
        self.require_loop_thread("publishing a Celery message", coro)
        self.spawn(coro)

    # -- the executor ----------------------------------------------------------------------------
    def _tracer(self, task: Any) -> Any:
        tracer = self._tracers.get(task.name)
        if tracer is None:
            from celery.app.trace import build_tracer

            tracer = self._tracers[task.name] = build_tracer(
                task.name, task, loader=self.app.loader, hostname=self.hostname, app=self.app)
        return tracer

    def _message(self, payload: dict[str, Any], info: dict[str, Any]) -> Any:
        """kombu's ``Message`` for a stored payload (kombu's JSON-able dict)."""
        from kombu.message import Message
        from kombu.serialization import prepare_accept_content

        props = payload.get("properties") or {}
        body = payload.get("body")
        if body and props.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return Message(  # type: ignore[no-untyped-call]
            body=body, delivery_tag=props.get("delivery_tag"), content_type=payload.get("content-type"),
            content_encoding=payload.get("content-encoding"), headers=payload.get("headers"),
            properties=props, delivery_info=dict(props.get("delivery_info") or {}, **info),
            accept=prepare_accept_content(self.app.conf.accept_content),  # type: ignore[no-untyped-call]
        )

    def _request(self, payload: dict[str, Any], delivery: Delivery) -> Any:
        from celery.worker.request import Request

        message = self._message(payload, {"redelivered": delivery.attempt > 1})
        name = (payload.get("headers") or {}).get("task")
        task = self.app.tasks.get(name) if isinstance(name, str) else None
        if task is None:
            _unknown_task(self.app, name, message)
            return None
        return Request(message, app=self.app, task=task, hostname=self.hostname)

    async def _main(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` as the main worker process: outside the attempt (its child may be dead)."""
        return await asyncio.create_task(Fiber(fn, *args, context=contextvars.Context(),
                                               name="celery-main").run(),
                                         context=contextvars.Context())

    async def _settle(self, delivery: Delivery, how: str) -> None:
        """Ack or requeue as the main worker does (a fresh context: not the child's attempt)."""
        coro = delivery.ack() if how == "ack" else delivery.nack(0)
        await asyncio.create_task(coro, context=contextvars.Context())

    async def _handle(self, payload: dict[str, Any], delivery: Delivery) -> None:
        """One delivery, as ``celery.worker.request.Request`` and the prefork pool handle it."""
        from celery.worker import state as worker_state

        req = self._request(payload, delivery)
        if req is None:  # a task the app does not know: logged and discarded, as Celery does
            await delivery.ack()
            return

        _received(req)
        worker_state.task_reserved(req)
        try:
            await self._run(req, delivery)
        finally:
            worker_state.task_ready(req, successful=req.id in self._succeeded)
            self._succeeded.discard(req.id)

    async def _discarded(self, req: Any, delivery: Delivery) -> bool:
        """Revoked (by id or by a stamped header, through remote control): discarded as the
        worker does (``REVOKED`` stored, ``task_revoked`` sent, acked), not run."""
        from celery.worker import state as worker_state

        if req.id not in worker_state.revoked and not (req.stamped_headers and
                                                       worker_state.revoked_stamps):
            return False
        if not await self._main(req.revoked):
            return False
        await delivery.ack()
        return True

    async def _run(self, req: Any, delivery: Delivery) -> None:
        """Received: revoked ones are discarded, an ETA holds it, then a pool process runs it."""
        if await self._discarded(req, delivery):
            return
        clock = self.sim.clock
        if req.eta is not None:  # held in memory, unacked, while the visibility timeout runs
            wait = (req.eta - clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
        if self.concurrency is None:
            await self._execute(req, delivery)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        async with self._slots:  # prefetched, unacked, until a pool process is free
            await self._execute(req, delivery)

    async def _execute(self, req: Any, delivery: Delivery) -> None:
        """The pool takes the request: expiry and revocation checked, then the body runs."""
        from celery import states
        from celery.exceptions import WorkerLostError
        from celery.worker import state as worker_state

        task = req.task
        clock = self.sim.clock
        if req.expires is not None and clock.now() > req.expires:
            await self._main(functools.partial(task.backend.mark_as_revoked, req.id, "expired",
                                                 request=req._context))
            await delivery.ack()
            return
        if await self._discarded(req, delivery):
            return
        worker_state.task_accepted(req)
        acks_late = bool(task.acks_late)
        if not acks_late:
            await delivery.ack()  # on_accepted: early ack, before the body runs
        request = req._request_dict
        _, _, embed = req._payload
        request.update({"loglevel": 0, "logfile": None, "is_eager": False}, **(embed or {}))
        child = asyncio.create_task(
            Fiber(self._tracer(task), req.id, req.args, req.kwargs, request,
                  name=f"celery-{task.name}").run())
        attempt = current_attempt.get()
        crash = attempt.crash_future if attempt is not None else None
        await asyncio.wait([child] if crash is None else [child, crash],
                           return_when=asyncio.FIRST_COMPLETED)
        if not child.done():  # the pool child died: the main worker sees WorkerLostError
            await self._worker_lost(req, delivery, WorkerLostError("Worker exited prematurely: "
                                                                   "bgwork crash fault."))
            return
        _, info, _, _ = child.result()
        state = None if info is None else info.state
        if info is None:  # the tracer's "not failed": the worker's successful_requests
            self._succeeded.add(req.id)
        if state == states.REJECTED:
            exc = info.retval
            if not exc.requeue:
                await self._main(functools.partial(task.backend.mark_as_failure, req.id, exc,
                                                     request=req._context))
            if acks_late:
                await (self._settle(delivery, "requeue") if exc.requeue else delivery.ack())
        elif acks_late:  # success, failure (acks_on_failure or reject(False): both drop it),
            await delivery.ack()  # retry (the new message carries on), ignore

    async def _worker_lost(self, req: Any, delivery: Delivery, exc: BaseException) -> None:
        from celery import states

        task = req.task
        if self.results == "redis":
            stored = task.backend.get_task_meta(req.id).get("status")
        else:
            meta = self.sim.kv.items(RESULTS_NS).get(task.backend.get_key_for_task(req.id).decode())
            stored = None if meta is None else task.backend.decode_result(meta).get("status")
        if stored == states.SUCCESS:
            if task.acks_late:  # it stored SUCCESS, then died: do not run it again
                await self._settle(delivery, "ack")
            return
        if task.acks_late:
            if task.reject_on_worker_lost:
                await self._settle(delivery, "requeue")
                return
            await self._settle(delivery, "ack")  # acks_on_failure, or reject(requeue=False)
        await self._main(functools.partial(task.backend.mark_as_failure, req.id, exc,
                                                     request=req._context))


def _received(req: Any) -> None:
    """What the worker's strategy does on receiving a task: the log record and the signal."""
    from celery import signals
    from celery.app.trace import LOG_RECEIVED
    from celery.utils.log import get_logger

    context = {"id": req.id, "name": req.name, "args": req.argsrepr, "kwargs": req.kwargsrepr,
               "eta": req.eta}
    # as the strategy does: the formatting args also as `extra` for custom log handlers
    get_logger("celery.worker.strategy").info(LOG_RECEIVED, context, extra={"data": context})
    signals.task_received.send(sender=None, request=req)


def _unknown_task(app: Any, name: Any, message: Any) -> None:
    """The consumer's ``on_unknown_task``: log the error, send ``task_unknown``, discard."""
    from celery import signals
    from celery.utils.log import get_logger
    from celery.worker.consumer.consumer import UNKNOWN_TASK_ERROR, dump_body

    exc = KeyError(name)
    get_logger("celery.worker.consumer.consumer").error(
        UNKNOWN_TASK_ERROR, exc, dump_body(message, message.body), message.headers,
        message.delivery_info, exc_info=True)
    headers = message.headers or {}
    from celery.exceptions import NotRegistered
    from celery.utils.collections import AttributeDict

    request = AttributeDict(name=name, chord=None, root_id=headers.get("root_id"),
                            correlation_id=message.properties.get("correlation_id"),
                            reply_to=message.properties.get("reply_to"), errbacks=None)
    app.backend.mark_as_failure(headers.get("id"), NotRegistered(name), request=request)
    signals.task_unknown.send(sender=None, message=message, exc=exc, name=name, id=headers.get("id"))


class _Router:
    """The route of a simulation's Celery queues: hands each delivery to the installation in
    force (a simulation keeps its queues and routes across several ``install`` blocks)."""

    def __init__(self) -> None:
        self.routed: set[str] = set()
        self.worker: SimWorker | None = None

    async def handle(self, payload: dict[str, Any], delivery: Delivery) -> None:
        worker = self.worker
        if worker is None:
            raise NotRunning(
                f"a Celery message reached queue {delivery.queue!r} after "
                "adapters.celery.install(...) ended: drive the simulation inside the `with` "
                "block (or use the bg_celery fixture)"
            )
        await worker._handle(payload, delivery)


_routers: weakref.WeakKeyDictionary[Simulation, _Router] = weakref.WeakKeyDictionary()


def _router_for(sim: Simulation) -> _Router:
    router = _routers.get(sim)
    if router is None:
        router = _routers[sim] = _Router()
    return router


# -- install ----------------------------------------------------------------------------------
_UUID_MODULES = ("celery.app.base", "celery.app.task", "celery.canvas", "celery.utils")


@contextlib.contextmanager
def install(sim: Simulation, celery_app: Celery, *, visibility_timeout: float | None = None,
            max_retries: int = DEFAULT_MAX_RETRIES, hostname: str = HOSTNAME,
            results: str = "auto", concurrency: int | None = None) -> Iterator[SimWorker]:
    """Run ``celery_app``'s tasks on ``sim``: ``bgwork://`` broker, in-loop worker, results.

    ``results="kv"`` stores results in ``sim.kv`` (namespace ``celery-results``);
    ``"redis"`` keeps Celery's own Redis result backend (pub/sub and chords included) and
    runs it on ``adapters.redis`` (a simulated server of ``sim``; needs the ``redis``
    extra); ``"auto"`` (the default) picks ``"redis"`` when the app's ``result_backend`` is
    a ``redis://`` URL and the extra is installed, else ``"kv"``.
    ``concurrency`` limits how many task bodies run at once (a worker's pool processes:
    ``celery worker --concurrency``; the others wait, prefetched and unacked, and expire
    meanwhile as on a busy worker); ``None`` (the default) runs every delivered task at once.
    ``visibility_timeout`` defaults to ``broker_transport_options["visibility_timeout"]``,
    else 3600 s (Redis's default). Queues you created beforehand keep your settings.
    Restores the app's broker, backend and connection pools on exit.
    """
    global _active
    import importlib

    from celery import Celery

    if not isinstance(celery_app, Celery):
        raise TypeError(f"install(sim, celery_app): celery_app must be a celery.Celery app; got "
                        f"{type(celery_app).__name__}")
    conf = celery_app.conf
    if conf.task_always_eager:
        raise _unsupported(
            "task_always_eager=True alongside the simulation",
            "Turn it off in tests that install the adapter: the simulation delivers the tasks.",
        )
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or concurrency < 1):
        raise ValueError(f"install(concurrency=...): expected a whole number >= 1 (a pool's "
                         f"processes) or None for no limit; got {concurrency!r}")
    if results not in ("auto", "kv", "redis"):
        raise ValueError(f"install(results=...): expected 'auto', 'kv' or 'redis'; got {results!r}")
    if results == "auto":
        results = "redis" if _is_redis_url(conf.result_backend) and _redis_installed() else "kv"
    if results == "redis" and not _is_redis_url(conf.result_backend):
        raise ValueError(
            f"install(results='redis'): the app's result_backend is {conf.result_backend!r}, not a "
            "redis:// URL; set app.conf.result_backend = 'redis://' or pass results='kv'")
    if results == "redis" and not _redis_installed():
        raise ImportError("install(results='redis') runs Celery's Redis backend on "
                          "adapters.redis, which needs redis-py and fakeredis: "
                          'pip install "pytest-bgwork[celery,redis]" (or pass results="kv")')
    if visibility_timeout is None:
        visibility_timeout = float((conf.broker_transport_options or {}).get(
            "visibility_timeout", DEFAULT_VISIBILITY))
    if _active is not None:
        raise RuntimeError("adapters.celery.install(...) is already active; install one app at a "
                           "time (leave the first `with` block first)")
    worker = SimWorker(sim, celery_app, visibility_timeout=visibility_timeout,
                       max_retries=max_retries, hostname=hostname, results=results,
                       concurrency=concurrency)
    stack = contextlib.ExitStack()
    saved_conf = {k: conf.get(k) for k in ("broker_url", "broker_read_url", "broker_write_url")}
    saved_backend = celery_app._backend_cache
    saved_uuids = []
    for modname in _UUID_MODULES:
        module = importlib.import_module(modname)
        saved_uuids.append((module, vars(module)["uuid"]))
        setattr(module, "uuid", worker.next_uuid)  # noqa: B010 - a module attribute mypy cannot see
    _refuse_real_workers()
    _reset_pools(celery_app)
    conf.update(broker_url="bgwork://", broker_read_url=None, broker_write_url=None)
    saved_local = celery_app._local
    saved_state = _swap_worker_state(None)
    rebound = _bind_sleeps(celery_app)
    if results == "redis":
        stack.enter_context(_redis_results(sim, celery_app, worker))
    else:
        backend = _backend_class()(app=celery_app)
        backend.worker = worker
        celery_app._backend_cache = backend
    _active = worker
    router = _router_for(sim)
    router.worker = worker
    failed = True
    try:
        yield worker
        failed = False
    finally:
        _active = None
        worker.closed = True
        router.worker = None
        for module, fn in saved_uuids:
            setattr(module, "uuid", fn)  # noqa: B010
        conf.update(saved_conf)
        stack.close()
        celery_app._backend_cache = saved_backend
        celery_app._local = saved_local
        _swap_worker_state(saved_state)
        for space, name, real in rebound:
            space[name] = real
        _reset_pools(celery_app)
        for task in list(worker._pending):
            task.cancel()
    if not failed and worker.publish_errors:
        errors = "; ".join(repr(e) for e in worker.publish_errors)
        raise BgworkError(f"{len(worker.publish_errors)} Celery publish(es) from the test's thread "
                          f"failed after task.delay() returned: {errors}. Clear "
                          "worker.publish_errors if the test injected them on purpose.")


@contextlib.contextmanager
def _redis_results(sim: Simulation, app: Celery, worker: SimWorker) -> Iterator[None]:
    """Celery's Redis result backend on ``adapters.redis`` for the block: each thread's
    backend (Celery keeps one per thread) is made anew, on ``sim``'s simulated server."""
    from celery.app import backends

    from . import redis as _redis

    def get_backend() -> Any:
        cls, url = backends.by_url(app.backend_cls or app.conf.result_backend, app.loader)
        made = _redis_backend_class(cls)(app=app, url=url)
        made.worker = worker
        return made

    import gc

    with _redis.install(sim) as servers:
        worker.redis = servers
        gc.callbacks.append(_on_gc)
        app._backend_cache = None
        app._local = threading.local()  # backends made before (real Redis) stay unused
        app._get_backend = get_backend
        try:
            yield
        finally:
            del app._get_backend
            with contextlib.suppress(ValueError):
                gc.callbacks.remove(_on_gc)
            _collecting.clear()


_WORKER_STATE = ("revoked", "revoked_stamps", "successful_requests", "requests",
                 "active_requests", "reserved_requests")


def _swap_worker_state(saved: dict[str, Any] | None) -> dict[str, Any]:
    """Celery's process-wide worker state (``celery.worker.state``: revoked ids and stamps,
    successful requests...), empty for each installation (task ids restart at 1 in every
    simulation); ``saved`` is put back. Returns what was there."""
    from celery.worker import state as worker_state

    before: dict[str, Any] = {}
    for name in _WORKER_STATE:
        current = getattr(worker_state, name)
        before[name] = dict(current) if isinstance(current, dict) else list(current)
        current.clear()
        if saved is not None:
            current.update(saved[name])
    return before


def _virtual_sleep(seconds: float) -> None:
    """``time.sleep`` looked up at call time: virtual in the simulation's threads (task
    bodies, a sync test body), real elsewhere."""
    time.sleep(seconds)


def _bind_sleeps(app: Celery) -> list[tuple[dict[str, Any], str, Any]]:
    """Rebind ``sleep`` names bound to the real ``time.sleep`` at import (``from time import
    sleep``) in the modules of the app's tasks and in kombu's retry helper (what
    ``Manager.wait_for`` and the result backends' retries call), so they wait on virtual
    time as ``time.sleep(...)`` does. Returns what to put back."""
    import sys

    from kombu.utils import functional

    spaces: list[dict[str, Any]] = [vars(functional)]
    try:
        tasks = list(app.tasks.values())  # finalizes the app, as a worker does
    except RuntimeError:  # autofinalize=False and not finalized: no task modules to look at
        tasks = []
    for task in tasks:
        module = sys.modules.get(getattr(type(task), "__module__", "") or "")
        run = getattr(task, "run", None)
        for space in (getattr(run, "__globals__", None), vars(module) if module else None):
            if isinstance(space, dict) and all(space is not s for s in spaces):
                spaces.append(space)
    bound = []
    for space in spaces:
        for name, value in list(space.items()):
            if _is_real_sleep(value):
                space[name] = _virtual_sleep
                bound.append((space, name, value))
    return bound


def _is_real_sleep(value: Any) -> bool:
    """The C function ``time.sleep`` (whatever ``time.sleep`` is patched to now)."""
    return (type(value) is type(len) and getattr(value, "__name__", None) == "sleep"
            and getattr(getattr(value, "__self__", None), "__name__", None) == "time")


_worker_init: list[Any] = []


def _refuse_real_workers() -> None:
    """Make a real worker (``WorkController``: ``start_worker``, ``celery_session_worker``,
    ``celery worker``) on a ``bgwork://`` app fail at once, in the caller's thread.

    Started, it would fail in its consumer thread (nothing consumes ``bgwork://``) while
    ``start_worker`` waits forever for it to be ready.
    """
    if _worker_init:
        return
    from celery.worker.worker import WorkController

    original = WorkController.__init__
    _worker_init.append(original)

    @functools.wraps(original)
    def init(self: Any, app: Any = None, *args: Any, **kwargs: Any) -> None:
        url = str(getattr(getattr(app, "conf", None), "broker_url", "") or "")
        if url.startswith("bgwork:"):
            raise _unsupported(
                "a real Celery worker on bgwork:// (WorkController: start_worker, "
                "celery_session_worker, `celery worker`)",
                "The simulation is the worker: drop the worker fixture and let "
                "`result.get()` (sync) or `await sim.run_until_idle()` (async) run the tasks.",
            )
        original(self, app, *args, **kwargs)

    WorkController.__init__ = init


def _reset_pools(app: Celery) -> None:
    """Forget the app's pooled connections and producers (they belong to the broker URL in
    force); kombu's process-wide pools keep them, and a ``bgwork://`` channel looks up the
    active installation on every call, so a pooled one never reaches an old simulation."""
    app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None:
        amqp._producer_pool = None


def reset() -> None:
    """Forget an installation left active (a crashed test): the fixture calls it."""
    global _active
    _active = None
