"""Queues: at-least-once delivery on virtual time, shaped after SQS and Agentuity queues.

``sim.queues.create(name)`` makes a queue; ``publish`` enqueues a JSON copy of a payload;
``route`` sends each message to an async handler, an ASGI app or a URL (delivered
automatically on the simulation's loop), and a queue without a route holds messages for
the pull consumer ``receive``. A delivery not acked within ``visibility_timeout`` becomes
visible again, even while its first handler still runs; failed attempts are retried with
backoff and dead-lettered after ``max_retries`` retries. Every operation is recorded in the
history and passes a fault point (``queue.publish``, ``queue.deliver``, ``queue.ack``).
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import re
import types
from collections import deque
from typing import Any

from ..core import validate
from ..profiles import QueueProfile, limit_error, queue_profile
from ..profiles import seconds as profile_seconds
from .delivery import (
    ACKED,
    DEAD,
    DELAYED,
    EXPIRED,
    IN_FLIGHT,
    READY,
    STALE_ACK,
    Delivery,
    DeliveryEngine,
    DeliverySettled,
    Handler,
    Message,
    PublishResult,
    QueueConfig,
    UnknownQueue,
    _Queue,
    _result,
    _scope,
    _seconds,
    _to_json,
    retry_backoff,
)
from .workers import current_worker

__all__ = [
    "Delivery",
    "DeliverySettled",
    "Message",
    "PublishResult",
    "QueueConfig",
    "Queues",
    "UnknownQueue",
    "retry_backoff",
]

#: Queue names: what Agentuity accepts (and SQS's length limit).
NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]*$")
MAX_NAME = 256
MAX_KEY = 256
MAX_PAYLOAD = 1024 * 1024
DEFAULT_VISIBILITY = 30.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_DEDUP_WINDOW = 300.0
#: the detail names of a ``queue.publish`` event (``History.add`` rows)
_PUBLISH = ("queue", "id", "key", "duplicate")


def _key(call: str, arg: str, value: object, prof: QueueProfile) -> str | None:
    if value is None:
        return None
    limit = prof.max_key
    if not isinstance(value, str) or not value or len(value) > limit:
        got = f"{len(value)} characters" if isinstance(value, str) else repr(value)
        raise ValueError(f"{call}({arg}=...) must be a string of 1 to {limit} characters (the "
                         f"queue's key limit, profile {prof.name!r}) or None; got {got}. Hash "
                         "longer keys, e.g. hashlib.sha256(key.encode()).hexdigest().")
    if prof.key_re is not None and not prof.key_re.match(value):
        raise ValueError(f"{call}({arg}=...): profile {prof.name!r} allows letters, digits and "
                         f"ASCII punctuation only (no spaces, no other characters); got {value!r}."
                         " Hash the key, e.g. hashlib.sha256(key.encode()).hexdigest().")
    return validate.utf8(value, call, arg)


def _sqs_size(payload: Any, body: str, metadata: dict[str, Any] | None) -> int:
    """A message's size as SQS counts it: a string body's UTF-8 bytes (other payloads: their
    JSON), plus each attribute's name, data type and value; other metadata counts as JSON."""
    size = len(payload.encode()) if isinstance(payload, str) else len(body.encode())
    for name, attr in (metadata or {}).items():
        if isinstance(attr, dict) and isinstance(attr.get("DataType"), str) and (
                isinstance(attr.get("StringValue"), str) or isinstance(attr.get("BinaryValue"), str)):
            value = attr.get("StringValue")
            if isinstance(value, str):
                n = len(value.encode())
            else:
                raw = attr["BinaryValue"]
                n = len(raw) * 3 // 4 - raw.count("=", -2)  # base64: the decoded bytes
            size += len(str(name).encode()) + len(attr["DataType"].encode()) + n
        else:
            size += len(str(name).encode()) + len(_to_json("publish", "metadata", attr).encode())
    return size


def _check_name(call: str, name: object, prof: QueueProfile) -> str:
    if not isinstance(name, str) or len(name) > prof.max_name or not prof.name_re.match(name):
        got = f"{len(name)} characters" if isinstance(name, str) and len(name) > prof.max_name else (
            repr(name))
        example = "report-jobs.fifo" if prof.name == "sqs-fifo" else "report-jobs"
        raise ValueError(f"{call}(name=...) must match {prof.name_re.pattern} and be at most "
                         f"{prof.max_name} characters (profile {prof.name!r}); got {got}. Use "
                         f"{prof.name_text}, e.g. {example!r}.")
    return name



#: Plain functions already known to take ``(payload, delivery)``, by code and default shape:
#: a scenario routes a fresh closure per example, and ``inspect.signature`` costs ~18 µs.
_HANDLERS_OK: set[tuple[object, int, tuple[str, ...]]] = set()


def _check_handler(name: str, handler: object) -> None:
    """A route handler must take ``(payload, delivery)``: refuse one that cannot, at ``route``."""
    key = None
    if isinstance(handler, types.FunctionType):
        key = (handler.__code__, len(handler.__defaults__ or ()), tuple(handler.__kwdefaults__ or ()))
        if key in _HANDLERS_OK:
            return
    try:
        sig = inspect.signature(handler)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check
    try:
        sig.bind(None, None)
    except TypeError:
        raise TypeError(f"route({name!r}, handler): the queue calls handler(payload, delivery), "
                        f"but {_describe_handler(handler)}{sig.replace(return_annotation=sig.empty)} "
                        "cannot take those two arguments. "
                        "Write `async def handler(payload, delivery): ...`.") from None
    if key is not None:
        _HANDLERS_OK.add(key)


def _describe_handler(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - an instance with an async __call__


class Queues(DeliveryEngine):
    """``sim.queues``: create queues, publish, route or receive, inspect stats and dead letters."""

    # -- set-up ------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        profile: str | None = None,
        max_retries: int | None = None,
        visibility_timeout: float | None = None,
        retry_delay: float | None = None,
        dedup_window: float | None = None,
        retention: float | None = None,
        content_based_dedup: bool = False,
        stale_ack: str = "ignore",
        dead_letter: bool | None = None,
    ) -> QueueConfig:
        """Make queue ``name`` behaving like ``profile`` (default: the simulation's platform's).

        Unset settings take the profile's defaults; ``retry_delay=None`` means exponential
        backoff (1 s..60 s, x2) on profiles that retry after a backoff. ``dead_letter=False``:
        no dead-letter queue (a failing message comes back until its retention ends). SQS
        queues have none unless given a redrive policy, so on the ``sqs-*`` profiles it
        defaults to whether ``max_retries`` (maxReceiveCount - 1) was given.
        """
        prof = queue_profile(self._default_profile if profile is None else profile)
        _check_name("create", name, prof)
        if name in self._queues:
            raise ValueError(f"create(name=...): queue {name!r} already exists in this "
                             "simulation; create each queue once (sim.queues.config(name) shows "
                             "its settings).")
        if dead_letter is None:
            dead_letter = max_retries is not None or not prof.uses_visibility_retry
        elif dead_letter not in (False, True):
            raise TypeError(f"create(dead_letter=...) must be True, False or None (the profile's "
                            f"default); got {dead_letter!r}")
        if max_retries is None:
            max_retries = prof.default_max_retries
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"create(max_retries=...) must be an int >= 0 (retries after the "
                             f"first attempt; 0 = dead-letter on the first failure); got "
                             f"{max_retries!r}")
        hi = prof.max_retries_hi
        if hi is not None and max_retries > hi:
            raise limit_error("create", "max_retries", prof.name,
                              f"0 to {hi} (maxReceiveCount 1 to {hi + 1})", max_retries,
                              "The dead-letter queue takes a message on the receive past "
                              "max_retries + 1.")
        if visibility_timeout is None:
            visibility = prof.default_visibility
        elif prof.name == "agentuity":
            visibility = _seconds("create", "visibility_timeout", visibility_timeout, positive=True,
                                  fix="It is how long an attempt may run before the message is "
                                      "redelivered.")
        else:
            lo, hi_v = prof.visibility_range
            visibility = profile_seconds("create", "visibility_timeout", visibility_timeout, prof.name, lo,
                                 hi_v, lo_open=prof.visibility_lo_open, whole=prof.whole_seconds,
                                 fix="It is how long an attempt may run before the message is "
                                     "redelivered.")
        if retry_delay is not None:
            if prof.uses_visibility_retry:
                raise limit_error("create", "retry_delay", prof.name,
                                  "no retry delay (a failed attempt comes back when its "
                                  "visibility timeout ends)", retry_delay,
                                  "Set visibility_timeout=, or nack(delay=...) in the handler.")
            retry_delay = _seconds("create", "retry_delay", retry_delay,
                                   fix="Use retry_delay=None for exponential backoff, 0 to retry "
                                       "at once.")
        if dedup_window is None:
            window = prof.default_dedup_window
        elif prof.dedup == "key":
            window = _seconds("create", "dedup_window", dedup_window, fix="Use 0 to turn dedup off.")
        else:
            allowed = ("no deduplication (dedup_window=0)" if prof.dedup == "none"
                       else "a fixed 300 s deduplication interval")
            if dedup_window != prof.default_dedup_window:
                raise limit_error("create", "dedup_window", prof.name, allowed, dedup_window)
            window = prof.default_dedup_window
        if content_based_dedup not in (False, True):
            raise TypeError(f"create(content_based_dedup=...) must be a bool; got "
                            f"{content_based_dedup!r}")
        if content_based_dedup and prof.dedup != "fifo":
            raise limit_error("create", "content_based_dedup", prof.name,
                              "no content-based deduplication (SQS FIFO queues have it)",
                              content_based_dedup, "Use profile='sqs-fifo'.")
        if prof.retention is None:
            if retention is not None:
                raise limit_error("create", "retention", prof.name, "no retention setting "
                                  "(messages are kept until consumed)", retention,
                                  "Use profile='sqs-standard' or 'sqs-fifo' to model SQS's.")
            kept = None
        elif retention is None:
            kept = prof.retention[0]
        else:
            kept = profile_seconds("create", "retention", retention, prof.name, prof.retention[1],
                           prof.retention[2], whole=True,
                           fix="SQS keeps messages 60 s to 14 days (1209600 s); 4 days by default.")
        if stale_ack not in STALE_ACK:
            raise ValueError(f"create(stale_ack=...) must be one of {', '.join(STALE_ACK)}; got "
                             f"{stale_ack!r}")
        config = QueueConfig(name, max_retries, visibility, retry_delay, window, stale_ack,
                             prof.name, kept, content_based_dedup, dead_letter)
        self._queues[name] = _Queue(config)
        detail: dict[str, Any] = {}
        if prof.name != "agentuity":
            detail["profile"] = prof.name
        self._sim.history.record("queue", "create", queue=name, max_retries=max_retries,
                                 visibility_timeout=config.visibility_timeout, **detail)
        return config

    def route(
        self,
        name: str,
        handler: Handler | None = None,
        *,
        app: Any = None,
        path: str | None = None,
        url: str | None = None,
    ) -> None:
        """Deliver ``name``'s messages to ``handler(payload, delivery)``, ``app`` + ``path``, or ``url``.

        An ASGI app gets ``POST path`` with the JSON payload and a URL gets it through httpx
        (so respx mocks it); a 2xx answer acks. Messages already waiting start at once.
        """
        q = self._get("route", name)
        given = [k for k, v in (("handler", handler), ("app", app), ("url", url)) if v is not None]
        if len(given) != 1:
            raise TypeError(f"route({name!r}, ...) needs exactly one destination: a handler, "
                            f"app= with path=, or url=; got {', '.join(given) or 'none'}")
        if path is not None and app is None:
            raise TypeError(f"route(path=...) goes with app=; got path={path!r} without an app. "
                            "For a URL pass url='https://...'.")
        if q.route is not None:
            raise ValueError(f"route({name!r}, ...): the queue already routes to {q.route_text}; "
                             "a queue has one destination, set it once.")
        dest: Handler
        if handler is not None:
            if not _is_async_callable(handler):
                raise TypeError(f"route({name!r}, handler) needs an async callable "
                                f"`async def handler(payload, delivery)`; got "
                                f"{_describe_handler(handler)}, which is not async")
            _check_handler(name, handler)
            dest, text = handler, f"handler {_describe_handler(handler)}"
        elif app is not None:
            from .http import AsgiDestination


            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"route({name!r}, app=..., path=...) needs the path to POST to, "
                                 f"starting with '/', e.g. '/api/workers/{name}'; got {path!r}")
            if not callable(app):
                raise TypeError(f"route({name!r}, app=...) needs an ASGI application (a "
                                "Starlette or FastAPI app, or `async def app(scope, receive, "
                                f"send)`); got {app!r}")
            dest = AsgiDestination(app, path)
            text = f"app POST {path}"
        else:
            from .http import UrlDestination

            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"route({name!r}, url=...) needs an http(s) URL, e.g. "
                                 f"'https://app.example/api/workers/{name}'; got {url!r}")
            dest = UrlDestination(url)
            text = f"POST {url}"
        q.route, q.route_text = dest, text
        self._sim.history.record("queue", "route", queue=name, destination=text)
        self._pump(q)

    def config(self, name: str) -> QueueConfig:
        """The settings queue ``name`` was created with."""
        return self._get("config", name).config

    def names(self) -> list[str]:
        """Every queue's name, in creation order."""
        return list(self._queues)

    # -- operations ----------------------------------------------------------------------------
    async def publish(
        self,
        name: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        partition_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float = 0,
    ) -> PublishResult:
        """Enqueue a JSON copy of ``payload``; a key seen within ``dedup_window`` returns the first."""
        q = (self._queues.get(name) if type(name) is str else None) or self._get("publish", name)
        prof = q.profile
        body = _to_json("publish", "payload", payload)
        meta = None
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise TypeError(f"publish(metadata=...) must be a dict or None; got "
                                f"{type(metadata).__name__}")
            meta = _to_json("publish", "metadata", metadata)
            most = prof.max_metadata_keys
            if most is not None and len(metadata) > most:
                raise limit_error("publish", "metadata", prof.name,
                                  f"at most {most} message attributes", f"{len(metadata)} keys",
                                  "Put the rest in the payload.")
        counted = meta is not None and prof.metadata_counts
        if len(body) * 4 > MAX_PAYLOAD or counted:
            if prof.metadata_counts:  # SQS counts the body's bytes and each attribute's parts
                size = _sqs_size(payload, body, metadata)
                as_what = "as SQS counts them (body bytes, attribute names, types and values)"
            else:
                size = len(body.encode())
                as_what = "as JSON"
            if size > MAX_PAYLOAD:
                what = " with its metadata" if counted else ""
                raise ValueError(f"publish(payload=...) is {size} bytes {as_what}{what}; the "
                                 f"limit is 1 MiB ({MAX_PAYLOAD} bytes, profile {prof.name!r}"
                                 f"{', counting message attributes' if counted else ''}). Store "
                                 "large data elsewhere (a stream or KV) and publish its key.")
        key = idempotency_key
        if key is not None:
            _key("publish", "idempotency_key", key, prof)
        pkey = partition_key
        if pkey is not None:
            _key("publish", "partition_key", pkey, prof)
        if prof.needs_partition_key and pkey is None:
            raise limit_error("publish", "partition_key", prof.name,
                              "only messages with a partition key (its MessageGroupId)", None,
                              "Pass partition_key=..., e.g. the customer or job id; messages "
                              "of one key are delivered in order.")
        dkey = key
        if prof.dedup != "key":
            if prof.dedup == "none":
                dkey = None
            elif key is None:
                if not q.config.content_based_dedup:
                    raise limit_error(
                        "publish", "idempotency_key", prof.name,
                        "only messages with a deduplication id unless the queue has "
                        "content_based_dedup=True", None,
                        "Pass idempotency_key=... or create the queue with content_based_dedup=True.")
                dkey = "\0sha256:" + hashlib.sha256(body.encode()).hexdigest()
        if delay != 0 or type(delay) is not int:
            if not prof.per_message_delay and delay != 0:
                raise limit_error("publish", "delay", prof.name,
                                  "no per-message delay (FIFO queues only have a queue-level delay)",
                                  delay, "Publish with delay=0.")
            if prof.whole_seconds:
                delay = profile_seconds("publish", "delay", delay, prof.name, 0.0, prof.max_delay,
                                whole=True, fix="SQS delays delivery by 0 to 900 whole seconds.")
            else:
                delay = _seconds("publish", "delay", delay, hi=prof.max_delay,
                                 fix="The queue delays delivery by at most 900 s (15 minutes).")
        sim = self._sim
        q.publishes += 1
        number = q.publishes
        faults = sim.faults
        # scoped by the attempt publishing (a queue-scoped rule means "that queue's
        # workers"), so the test's own publishes do not use up a rule's on_call
        step = faults._enter("queue.publish", call=True)
        if step is not None:
            try:
                await step
            except Exception as exc:
                sim.history.record("queue", "publish", "fail", queue=name, id=None, key=key,
                                   duplicate=False, error=repr(exc))
                raise
        now = sim.clock._mono
        if dkey is not None:
            hit = q.dedup.get(dkey)
            if hit is not None and now - hit[1] < q.config.dedup_window:
                first = hit[0]
                q.stats["duplicates"] += 1
                err = self._leave("queue.publish")
                sim.history.record("queue", "publish", "unknown" if err else "ok", queue=name,
                                   id=first.id, key=key, duplicate=True)
                if err is not None:
                    raise err
                return _result(first.id, first.offset, first.published_at, True)
        clock = sim.clock
        seconds = clock.start + now
        stamp = self._stamp
        if stamp is None or stamp[0] != seconds:
            stamp = self._stamp = (seconds, clock.now())
        msg = Message(sim._next_id("msg"), name, q.next_offset, body, stamp[1], key, pkey, meta)
        q.next_offset += 1
        q.messages[msg.id] = msg
        q.stats["published"] += 1
        if dkey is not None:
            q.dedup[dkey] = (msg, now)
        if q.config.retention is not None:
            msg._expires = now + q.config.retention
            heapq.heappush(q.retention, (msg._expires, msg.offset, msg))
        if pkey is not None and q.ordered:
            part = q.partitions.get(pkey)
            if part is None:
                part = q.partitions[pkey] = deque()
            part.append(msg)
        err = self._leave("queue.publish")
        sim.history.add("queue", "publish", "unknown" if err else "ok", _PUBLISH,
                        (name, msg.id, key, False))
        if faults._rules:  # a duplicate rule may ask for more deliveries
            msg._copies_left = faults._deliveries(name, number) - 1
            msg._overlap_left = faults._deliveries(name, number, overlap=True,
                                                  ordered=pkey is not None and q.ordered) - 1
        if delay:
            self._schedule(q, msg, delay)
        else:
            self._make_ready(q, msg)
        if err is not None:
            raise err
        return _result(msg.id, msg.offset, msg.published_at, False)

    async def receive(self, name: str) -> Delivery | None:
        """Pull the oldest visible message of a queue without a route; ``None`` if there is none."""
        return await self._receive(name, None)

    async def receive_many(self, name: str, most: int) -> list[Delivery]:
        """Pull up to ``most`` visible messages at once (an SQS batch receive).

        On ordered queues (``sqs-fifo``) one call may take several messages of one group,
        in group order, as SQS does; one at a time (``receive``) takes a group's next message
        only after the one before it is settled.
        """
        if isinstance(most, bool) or not isinstance(most, int) or most < 1:
            raise ValueError(f"receive_many(most=...) must be an int >= 1 (how many messages "
                             f"at most); got {most!r}")
        out: list[Delivery] = []
        taken: set[Message] = set()
        while len(out) < most:
            d = await self._receive(name, taken)
            if d is None:
                break
            out.append(d)
            taken.add(d.message)
        return out

    async def _receive(self, name: str, batch: set[Message] | None) -> Delivery | None:
        q = self._get("receive", name)
        if q.route is not None:
            raise ValueError(f"receive({name!r}): the queue routes to {q.route_text}, which "
                             "takes every message; receive() is the pull consumer for queues "
                             "without a route.")
        if q.copies:  # an overlapping copy is visible alongside the message in flight
            return self._start_copy(q, *q.copies.popleft())
        if q.retention:
            self._sweep_retention(q)
        if self._take(q, remove=False, batch=batch) is None:
            return self._empty()
        step = self._sim.faults._enter("queue.deliver", queue=_scope(name), call=True)
        if step is not None:
            await step
        while True:
            if q.retention:
                self._sweep_retention(q)
            msg = self._take(q, remove=True, batch=batch)
            if msg is None:  # taken while a fault delayed us
                return self._empty()
            if not self._past_receives(q, msg):
                return self._start(q, msg)

    async def move_to_dead_letter_queue(self, delivery: Delivery, queue: str, *,
                                        idempotency_key: str | None = None,
                                        partition_key: str | None = None) -> PublishResult:
        """Move a received message to dead-letter queue ``queue``: publish a copy there, then
        delete it from its own queue (what SQS redrive and dramatiq's DLQ do).

        Recorded as ``queue.dead_letter`` naming the copy (``dlq``, ``dlq_id``), so the
        checks count the message as dead-lettered, not lost, and the copy as accounted for.
        """
        msg = delivery.message
        self._get("move_to_dead_letter_queue", queue)
        result = await self.publish(queue, msg.payload, metadata=msg.metadata,
                                    idempotency_key=idempotency_key, partition_key=partition_key)
        await delivery.ack()
        self._record("dead_letter", queue=msg.queue, id=msg.id, attempts=msg.attempts, dlq=queue,
                     dlq_id=result.id)
        return result

    @staticmethod
    def _empty() -> None:
        """An empty receive: a supervised worker that made it now waits for messages."""
        worker = current_worker.get()
        if worker is not None:
            worker.polling = True

    def stats(self, name: str) -> dict[str, int]:
        """Counters (published, delivered, failed, ...) and current states of queue ``name``."""
        q = self._get("stats", name)
        if q.retention:
            self._sweep_retention(q)
        out = dict(q.stats)
        states = dict.fromkeys((DELAYED, READY, IN_FLIGHT, ACKED, DEAD, EXPIRED), 0)
        for msg in q.messages.values():
            states[msg.state] += 1
        out.update(acked=states[ACKED], dead_letters=states[DEAD], in_flight=states[IN_FLIGHT],
                   pending=states[READY] + states[DELAYED])
        return out

    def dead_letters(self, name: str) -> list[Message]:
        """Messages of queue ``name`` that used up their attempts, oldest first."""
        q = self._get("dead_letters", name)
        if q.retention:
            self._sweep_retention(q)
        return list(q.dead)

    def messages(self, name: str) -> list[Message]:
        """Every message published to queue ``name`` (duplicates by key left out), in order."""
        q = self._get("messages", name)
        if q.retention:
            self._sweep_retention(q)
        return list(q.messages.values())

    # -- snapshot ------------------------------------------------------------------------------
    def _snapshot(self) -> object:
        """Queues, messages, dedup tables and counters as plain data (routes are not state)."""
        now = self._sim.clock._mono
        out: dict[str, Any] = {}
        for name, q in self._queues.items():
            msgs = []
            for m in q.messages.values():
                due = None
                if m.state == DELAYED and m._timer is not None:
                    due = m._timer.when()
                elif m.state == IN_FLIGHT and m._delivery is not None and m._delivery._seq:
                    due = m._delivery._deadline
                msgs.append({
                    "id": m.id, "offset": m.offset, "body": m._body, "meta": m._meta,
                    "published_at": m.published_at, "key": m.idempotency_key,
                    "pkey": m.partition_key, "attempts": m.attempts, "state": m.state,
                    "last_error": m.last_error, "copies_left": m._copies_left,
                    "copy": m._copy, "copy_attempts": m._copy_attempts, "due": due if due is None else due - now,
                    "expires": m._expires,
                })
            out[name] = {
                "config": q.config, "messages": msgs,
                "dedup": {k: (m.id, t) for k, (m, t) in q.dedup.items()},
                "dead": [m.id for m in q.dead], "next_offset": q.next_offset,
                "publishes": q.publishes, "stats": dict(q.stats),
            }
        return out

    def _restore(self, state: object) -> None:
        """Go back to a ``_snapshot``: timers re-armed from now, running attempts become stale."""
        if not isinstance(state, dict):
            raise TypeError(f"queues._restore(state) takes what _snapshot() returned; got "
                            f"{type(state).__name__}")
        for q in self._queues.values():
            for m in q.messages.values():
                if m._timer is not None:
                    m._timer.cancel()
                    m._timer = None
                if m._delivery is not None:
                    d = m._delivery
                    self._release(d)
                    d.expired = True
        old, self._queues = self._queues, {}
        for name, data in state.items():
            q = _Queue(data["config"])
            prev = old.get(name)
            if prev is not None:
                q.route, q.route_text = prev.route, prev.route_text
            q.next_offset, q.publishes = data["next_offset"], data["publishes"]
            q.stats = dict(data["stats"])
            self._queues[name] = q
            for md in data["messages"]:
                m = Message(md["id"], name, md["offset"], md["body"], md["published_at"],
                            md["key"], md["pkey"], md["meta"])
                m.attempts, m.last_error = md["attempts"], md["last_error"]
                m._copies_left, m._copy_attempts = md["copies_left"], md["copy_attempts"]
                m._copy = md["copy"]
                m.state = md["state"]
                m._expires = md["expires"]
                q.messages[m.id] = m
                if m._expires is not None and m.state not in (ACKED, DEAD, EXPIRED):
                    heapq.heappush(q.retention, (m._expires, m.offset, m))
                if m.partition_key is not None and q.ordered and m.state not in (ACKED, DEAD,
                                                                                  EXPIRED):
                    q.partitions.setdefault(m.partition_key, deque()).append(m)
            q.dedup = {k: (q.messages[i], t) for k, (i, t) in data["dedup"].items()}
            q.dead = [q.messages[i] for i in data["dead"]]
            loop = self._sim.loop
            for md in data["messages"]:
                m = q.messages[md["id"]]
                due = max(0.0, md["due"] or 0.0)
                if m.state == IN_FLIGHT:  # its worker is gone: visible again when the lease ends
                    d = Delivery(self, q, m, m.attempts)
                    m._delivery = d
                    self._lease(q, d, loop.time() + due)
                elif m.state == DELAYED:
                    m._timer = loop.call_later(due, self._due, q, m, context=self._quiet)
                elif m.state == READY:
                    m._gen += 1
                    heapq.heappush(q.ready, (m.offset, m._gen, m))
            self._pump(q)
