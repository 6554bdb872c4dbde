"""The queue delivery engine: attempts, visibility leases, retries, dead letters.

``Queues`` (``services/queues.py``, the public API) inherits this engine; it holds the
message life cycle (ready heap, partitions, the attempt task, visibility leases: one
deadline timer per queue, ack/nack, backoff) and the data classes a delivery hands to user
code. HTTP destinations live in ``services/http.py``.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..core import validate
from ..core.context import Attempt, current_attempt
from ..core.errors import BgworkError, ProcessCrashed
from ..core.jsoncopy import dumps, scan
from ..profiles import PLATFORMS, QUEUE_PROFILES, QueueProfile, limit_error, seconds
from ..profiles import seconds as profile_seconds
from .workers import current_worker

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = [
    "Delivery",
    "DeliveryEngine",
    "DeliverySettled",
    "Message",
    "PublishResult",
    "QueueConfig",
    "UnknownQueue",
    "retry_backoff",
]

MAX_DELAY = 900.0
#: The longest lease ``extend`` grants where the profile sets no bound: 12 hours, SQS's
#: ChangeMessageVisibility limit.
MAX_EXTEND = 43_200.0


def lease_range(profile: QueueProfile) -> tuple[float, float]:
    """The seconds ``Delivery.extend`` accepts on a queue of ``profile``.

    The profile's visibility range where it is bounded (SQS 0..43,200, ChangeMessageVisibility;
    Alien 1..600, ``renew_lease``); otherwise 0..``MAX_EXTEND`` (0: visible again at once).
    """
    lo, hi = profile.visibility_range
    return (lo, hi) if math.isfinite(hi) else (0.0, MAX_EXTEND)
#: Default retry delay: exponential from 1 s, x2 per retry, at most 60 s, plus up to +50 % jitter.
BACKOFF_BASE = 1.0
BACKOFF_FACTOR = 2.0
BACKOFF_CAP = 60.0
BACKOFF_JITTER = 0.5
STALE_ACK = ("ignore", "deletes")

#: How many of the oldest ready messages a best-effort (SQS standard) receive draws from.
ORDER_WINDOW = 10

# Message states (``expired``: its queue's retention ran out before anyone consumed it).
DELAYED, READY, IN_FLIGHT, ACKED, DEAD, EXPIRED = (
    "delayed", "ready", "in_flight", "acked", "dead", "expired")

Handler = Callable[[Any, "Delivery"], Awaitable[object]]


class UnknownQueue(BgworkError, LookupError):
    """A queue name that was never created."""


class DeliverySettled(BgworkError):
    """``ack()``/``nack()`` on a delivery already acked or nacked, or ``extend()`` on one that
    ended (acked, nacked, failed, crashed) or whose visibility already lapsed."""


def retry_backoff(retry: int, jitter: float) -> float:
    """The default delay before retry ``retry`` (1-based): 1 s x2 per retry, at most 60 s.

    ``jitter`` in ``[0, 1)`` adds up to 50 %; at 0 (the unsurprising choice) it adds nothing.
    """
    # cap the exponent first: 2.0 ** 1024 overflows (OverflowError) at retry 1025
    exponent = min(max(retry - 1, 0), _MAX_EXPONENT)
    return min(BACKOFF_CAP, BACKOFF_BASE * BACKOFF_FACTOR ** exponent * (1 + BACKOFF_JITTER * jitter))


#: Past this exponent the delay is at the cap anyway (2 ** 64 s >> 60 s); never overflows.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings as ``create`` accepted them (``retry_delay=None``: exponential backoff).

    ``profile`` names the platform the queue behaves like; ``retention`` is how long an
    unconsumed message is kept (``None``: until consumed); ``dead_letter=False``: no
    dead-letter queue, a failing message is retried until its retention ends.
    """

    name: str
    max_retries: int
    visibility_timeout: float
    retry_delay: float | None
    dedup_window: float
    stale_ack: str
    profile: str = "agentuity"
    retention: float | None = None
    content_based_dedup: bool = False
    dead_letter: bool = True

    @property
    def max_receive_count(self) -> int:
        """SQS's name for the attempts a message gets before the dead-letter queue: retries + 1."""
        return self.max_retries + 1


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What ``publish`` returns; ``duplicate=True`` means the first message's id and offset."""

    id: str
    """The message id, e.g. ``"msg_1"`` (the first message's, for a duplicate)."""
    offset: int
    """Its position in the queue, from 0."""
    published_at: datetime
    """When it was published (virtual, aware UTC)."""
    duplicate: bool
    """``True``: the idempotency key was seen within the dedup window; nothing new was
    queued."""


_SET_RESULT = tuple(PublishResult.__dict__[f].__set__
                    for f in ("id", "offset", "published_at", "duplicate"))


def _result(id: str, offset: int, published_at: datetime, duplicate: bool) -> PublishResult:
    """``PublishResult(...)`` at half the cost: the slots set directly (a frozen dataclass's
    ``__init__`` goes through ``object.__setattr__`` per field); equal in every way after."""
    result: PublishResult = object.__new__(PublishResult)
    set_id, set_offset, set_at, set_duplicate = _SET_RESULT
    set_id(result, id)
    set_offset(result, offset)
    set_at(result, published_at)
    set_duplicate(result, duplicate)
    return result


class Message:
    """One published message. ``payload`` and ``metadata`` decode a fresh JSON copy on each read.

    ``state`` is ``delayed``, ``ready``, ``in_flight``, ``acked`` or ``dead``; ``attempts``
    counts deliveries so far; ``last_error`` is the last failed attempt's error text.
    """

    __slots__ = (
        "_body", "_copies_left", "_copy", "_copy_attempts", "_delivery", "_expires", "_gen", "_meta",
        "_overlap_left", "_timer", "attempts", "id", "idempotency_key", "last_error", "offset",
        "partition_key",
        "published_at", "queue", "state",
    )

    id: str
    """The message id, e.g. ``"msg_1"``."""
    queue: str
    """The queue it was published to."""
    offset: int
    """Its position in the queue, from 0."""
    published_at: datetime
    """When it was published (virtual, aware UTC)."""
    idempotency_key: str | None
    """The ``idempotency_key=`` given to ``publish`` (``None``: none)."""
    partition_key: str | None
    """The ``partition_key=`` given to ``publish``: messages with one key are delivered
    in order (``None``: none)."""
    attempts: int
    """How many times it was delivered so far."""
    state: str
    """``"delayed"``, ``"ready"``, ``"in_flight"``, ``"acked"`` or ``"dead"``."""
    last_error: str | None
    """The last failed attempt's error text (``None``: no attempt failed)."""

    def __init__(self, id: str, queue: str, offset: int, body: str, published_at: datetime,
                 idempotency_key: str | None, partition_key: str | None,
                 meta: str | None) -> None:
        self.id = id
        self.queue = queue
        self.offset = offset
        self._body = body
        self._meta = meta
        self.published_at = published_at
        self.idempotency_key = idempotency_key
        self.partition_key = partition_key
        self.attempts = 0
        self.state = READY
        self.last_error: str | None = None
        self._copies_left = 0  # extra deliveries a duplicate fault asked for
        self._overlap_left = 0  # extra deliveries that start with the first (overlap=True)
        self._copy = 1  # which of those deliveries is under way (1 = the original)
        self._copy_attempts = 0  # attempts of the current copy: the retry budget
        self._delivery: Delivery | None = None  # the attempt holding the visibility lease
        self._timer: asyncio.TimerHandle | None = None  # delay or retry timer
        self._gen = 0  # bumps each time it becomes ready (stale heap entries are skipped)
        self._expires: float | None = None  # end of its queue's retention (virtual seconds)

    @property
    def receive_count(self) -> int:
        """How many times it was delivered so far (SQS ``ApproximateReceiveCount``)."""
        return self.attempts

    @property
    def payload(self) -> Any:
        """A fresh copy of the payload (what JSON made of what was published)."""
        return _decode(self._body)

    @property
    def metadata(self) -> dict[str, Any] | None:
        """A fresh copy of the metadata given to ``publish``, or ``None``."""
        return None if self._meta is None else _decode(self._meta)

    def __repr__(self) -> str:
        return (f"<Message {self.queue}/{self.id} offset={self.offset} state={self.state} "
                f"attempts={self.attempts}>")


class Delivery:
    """One delivery attempt: ``payload``, ``message``, ``attempt`` (1-based), ``ack()``, ``nack()``.

    Routed handlers get it as their second argument; returning acks it unless the handler
    already did. ``expired`` says the visibility timeout lapsed (an ack now is *stale*).
    """

    __slots__ = ("_began", "_deadline", "_overlap", "_pull", "_q", "_queues", "_seq", "_settled", "_task",
                 "_worker", "attempt", "expired", "message", "payload")

    message: Message
    """The message being delivered (its id, state, attempts)."""
    attempt: int
    """Which delivery of the message this is, from 1."""
    payload: Any
    """A fresh copy of the message's payload, decoded for this attempt."""
    expired: bool
    """The visibility timeout lapsed: the message may be redelivered, and an ack now is
    *stale*."""

    def __init__(self, queues: DeliveryEngine, q: _Queue, message: Message, attempt: int) -> None:
        self._queues = queues
        self._q = q
        self.message = message
        self.attempt = attempt
        self.payload: Any = scan(message._body, 0)[0]  # ``_decode``, inlined
        self.expired = False
        self._settled: str | None = None
        #: The visibility lease: ends at virtual ``_deadline``; ``_seq`` orders it among timers
        #: due at that instant and names its entry in the queue's ``_Deadlines`` (0: no lease;
        #: ``-seq``: due, its ``_expire`` queued to run).
        self._seq = 0
        self._deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        #: An overlapping copy (``duplicate(..., overlap=True)``): it holds no lease of the
        #: message; its ack deletes nothing and its failure is not retried.
        self._overlap = False
        #: Received by a worker ``sim.workers`` supervises: that worker, and the attempt its
        #: service calls run in until it settles this delivery (``None`` otherwise).
        self._worker: Any = None
        self._pull: Attempt | None = None
        #: When this receive began (virtual monotonic): SQS caps its visibility 12 h after it.
        self._began = queues._sim.clock._mono

    @property
    def queue(self) -> str:
        """The queue's name."""
        return self._q.config.name

    @property
    def receive_count(self) -> int:
        """SQS ``ApproximateReceiveCount`` of this delivery: the attempt number (1 = first receive)."""
        return self.attempt

    @property
    def settled(self) -> str | None:
        """``"acked"``, ``"nacked"``, ``"failed"``, ``"crashed"`` or ``None`` while open."""
        return self._settled

    async def ack(self) -> None:
        """Delete the message (fault point ``queue.ack``); a stale ack deletes nothing by default."""
        await self._queues._ack(self)

    async def nack(self, delay: float = 0) -> None:
        """Give the message back: visible again after ``delay`` seconds (0..900); a failed attempt."""
        await self._queues._nack(self, delay)

    async def extend(self, seconds: float) -> None:
        """Renew the lease: the message stays invisible ``seconds`` from now.

        The queue profile's lease range (``lease_range``): SQS ``ChangeMessageVisibility``
        0..43,200, Alien ``renew_lease`` 1..600, otherwise 0..43,200; fault point ``queue.extend``.
        Raises ``DeliverySettled`` once the delivery ended or its visibility lapsed.
        """
        await self._queues._extend(self, seconds)

    def __repr__(self) -> str:
        return f"<Delivery {self.queue}/{self.message.id} attempt={self.attempt}>"


class _QueueAttempt(Attempt):
    """A routed attempt that makes its crash future on first use (only a crash reads it, so
    attempts that never crash skip the future and its callback) and builds its label once."""

    __slots__ = ("_ctx", "_d", "_future", "label")

    def __init__(self, d: Delivery, ctx: contextvars.Context, queue: str, message_id: str,
                 number: int) -> None:
        # Attempt's fields, set directly (its generated __init__ would go through the
        # crash_future property below)
        self.queue = queue
        self.message_id = message_id
        self.number = number
        self.crashed = False
        self.passed = 0
        self.crash_at = None
        self.returning = False
        self.fail_next = None
        self.label = f"{queue}/{message_id}#{number}"  # type: ignore[misc]  # a slot here
        self._future: asyncio.Future[None] | None = None
        #: What the crash future's callback needs; None once the attempt ended.
        self._d: Delivery | None = d
        self._ctx: contextvars.Context | None = ctx

    @property
    def crash_future(self) -> asyncio.Future[None] | None:
        """Resolved when the worker dies in this attempt; ``DeliveryEngine._crashed`` records it."""
        d = self._d
        if self._future is None and d is not None:
            queues = d._queues
            self._future = queues._sim.loop.create_future()
            self._future.add_done_callback(lambda _f: queues._crashed(d, self), context=self._ctx)
        return self._future

    @crash_future.setter
    def crash_future(self, value: asyncio.Future[None] | None) -> None:
        self._future = value
        if value is None:
            self._d = None  # the attempt ended: break the reference cycles

    def __repr__(self) -> str:  # what ``Attempt``'s dataclass repr shows
        return (f"Attempt(queue={self.queue!r}, message_id={self.message_id!r}, "
                f"number={self.number!r}, crashed={self.crashed!r})")


class _Deadlines:
    """The visibility deadlines of one queue's deliveries, owner of one ``DeadlineTimer``.

    Entries are ``(when, seq, delivery)``; one is live while ``delivery._seq == seq`` (a
    settled, expired or extended lease leaves its entry stale, dropped when it comes up).
    A queue's timeout is constant, so leases mostly end in the order they start: those go
    to ``fifo``; the rest (``extend``, a restore) to the heap ``late``. ``live`` counts the
    leases not yet due (what a timer each would count in ``loop.pending_timers()``).
    """

    __slots__ = ("fifo", "late", "live", "timer")

    def __init__(self) -> None:
        self.fifo: deque[tuple[float, int, Delivery]] = deque()
        self.late: list[tuple[float, int, Delivery]] = []
        self.live = 0
        self.timer: asyncio.TimerHandle | None = None

    def head(self) -> tuple[float, int] | None:
        """The earliest live deadline as ``(when, seq)``, stale entries dropped on the way."""
        fifo, late = self.fifo, self.late
        while fifo and fifo[0][2]._seq != fifo[0][1]:
            fifo.popleft()
        while late and late[0][2]._seq != late[0][1]:
            heapq.heappop(late)
        if fifo:
            when, seq, _ = fifo[0]
            if late and late[0][:2] < (when, seq):
                return late[0][:2]
            return when, seq
        return late[0][:2] if late else None

    def take(self) -> tuple[Delivery, int]:
        """Pop the earliest live deadline (``head()`` just returned it): the ``_expire`` args."""
        fifo, late = self.fifo, self.late
        if fifo and not (late and late[0][:2] < fifo[0][:2]):
            _, seq, d = fifo.popleft()
        else:
            _, seq, d = heapq.heappop(late)
        d._seq = -seq  # due: its ``_expire`` is queued (a release or extend now voids it)
        self.live -= 1
        return d, seq


class _Queue:
    """Internal state of one queue."""

    __slots__ = ("best_effort", "config", "copies", "dead", "deadlines", "dedup", "dlq_on_receive",
                 "messages", "next_offset", "ordered", "partitions", "profile", "publishes", "ready",
                 "retention", "route", "route_text", "stats")

    def __init__(self, config: QueueConfig) -> None:
        self.config = config
        self.profile: QueueProfile = QUEUE_PROFILES[config.profile]
        self.ordered = self.profile.ordered_partitions  # one key's messages go one at a time
        self.dlq_on_receive = self.profile.uses_visibility_retry  # SQS redrive at the receive
        #: SQS standard queues are best-effort ordered: which ready message goes next is drawn
        self.best_effort = self.profile.name == "sqs-standard"
        self.retention: list[tuple[float, int, Message]] = []  # heap: (retention end, offset, msg)
        self.route: Handler | None = None
        self.route_text = ""
        self.messages: dict[str, Message] = {}
        self.ready: list[tuple[int, int, Message]] = []  # heap: (offset, gen, message)
        self.partitions: dict[str, deque[Message]] = {}  # unfinished messages per key, in order
        self.dedup: dict[str, tuple[Message, float]] = {}  # key -> (first message, published t)
        self.dead: list[Message] = []
        self.copies: deque[tuple[Message, int]] = deque()  # overlapping copies a pull consumer has yet to take
        self.deadlines = _Deadlines()  # visibility leases of its deliveries
        self.next_offset = 0
        self.publishes = 0
        self.stats = dict.fromkeys(_COUNTERS, 0)


#: ``expired``: messages dropped by retention; ``visibility_expired``: leases that lapsed.
_COUNTERS = ("published", "duplicates", "delivered", "redelivered", "failed", "nacked",
             "retries", "visibility_expired", "expired", "crashed", "stale_acks", "extended")


# -- argument checks -------------------------------------------------------------------------
def _seconds(call: str, arg: str, value: object, *, hi: float | None = None,
             positive: bool = False, fix: str = "") -> float:
    out = validate.seconds(value, call, arg, hi=validate.MAX_SECONDS if hi is None else hi,
                           positive=positive, fix=fix)
    assert out is not None
    return out


def _decode(body: str) -> Any:
    """A fresh copy of the value in ``body`` (the copy rule's JSON text)."""
    return scan(body, 0)[0]


def _to_json(call: str, arg: str, value: object) -> str:
    """The copy rule's JSON text of a queue argument, or an error naming ``call`` and ``arg``."""
    try:
        text = dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{call}({arg}=...) must be JSON-serialisable (dict, list, str, int, "
                        f"float, bool, None); got {type(value).__name__}: {exc}. Convert it "
                        "first, e.g. a datetime to dt.isoformat(), a set to a list.") from None
    return text if text.isascii() else validate.utf8(text, call, arg, inside=True)


#: detail names of the hot ``queue`` events (``History.add`` rows)
_DELIVER = ("queue", "id", "attempt")
_ACK = ("queue", "id", "attempt", "stale", "deleted")
_NACK = ("queue", "id", "attempt", "delay")
_NACK_OVERLAP = (*_NACK, "overlap")
_NACK_STALE = (*_NACK, "stale")
_EXTEND = ("queue", "id", "attempt", "seconds")


def _scope(name: str) -> str | None:
    """The queue a fault rule is matched against: inside an attempt, the attempt's own queue
    (a queue-scoped rule is about that queue's workers); outside, the queue operated on."""
    return None if current_attempt.get() is not None else name


class DeliveryEngine:
    """The life cycle of every message of a simulation's queues (``Queues`` adds the API)."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        #: the profile ``create`` uses when given none: the simulation's platform's
        self._default_profile = PLATFORMS[sim.platform][0]
        self._queues: dict[str, _Queue] = {}
        self._running: set[asyncio.Task[None]] = set()
        #: The (empty) context timer callbacks run in: no attempt is current there. Callbacks
        #: run one at a time and never enter it again from inside, so one object serves all.
        self._quiet = contextvars.Context()
        #: (virtual epoch seconds, that instant as a datetime): publishes at one instant share
        #: the (immutable) ``published_at`` rather than build a datetime each.
        self._stamp: tuple[float, datetime] | None = None

    # -- internals: lookup, fault points --------------------------------------------------------
    def _get(self, call: str, name: str) -> _Queue:
        if not isinstance(name, str):
            raise TypeError(f"{call}(name=...) must be a queue name (a string such as "
                            f"'report-jobs'), given first; got {type(name).__name__} {name!r:.60}")
        q = self._queues.get(name)
        if q is None:
            known = ", ".join(repr(n) for n in self._queues) or "none yet"
            raise UnknownQueue(f"{call}(name=...): queue {name!r} does not exist (queues: "
                               f"{known}); create it first with sim.queues.create({name!r})")
        return q

    def _leave(self, point: str) -> BaseException | None:
        """``faults._leave(point)``; its after-apply error is returned to raise after recording."""
        try:
            self._sim.faults._leave(point)
        except Exception as exc:
            return exc
        return None

    def _record(self, op: str, outcome: str = "ok", **detail: Any) -> None:
        self._sim.history.record("queue", op, outcome, **detail)

    # -- internals: the message life cycle ------------------------------------------------------
    def _schedule(self, q: _Queue, msg: Message, delay: float) -> None:
        """Make ``msg`` visible now (``delay`` 0) or after ``delay`` virtual seconds."""
        if delay <= 0:
            self._make_ready(q, msg)
            return
        msg.state = DELAYED
        msg._timer = self._sim.loop.call_later(delay, self._due, q, msg, context=self._quiet)

    def _due(self, q: _Queue, msg: Message) -> None:
        msg._timer = None
        if msg.state == DELAYED:
            self._make_ready(q, msg)

    def _make_ready(self, q: _Queue, msg: Message) -> None:
        if q.retention:
            self._sweep_retention(q)
            if msg.state == EXPIRED:
                return
        msg.state = READY
        msg._gen += 1
        if q.route is not None and (msg.partition_key is None or self._is_head(q, msg)):
            if not (q.dlq_on_receive and self._past_receives(q, msg)):
                self._start(q, msg)
        else:
            heapq.heappush(q.ready, (msg.offset, msg._gen, msg))

    @staticmethod
    def _is_head(q: _Queue, msg: Message) -> bool:
        """FIFO per partition key: only the oldest unfinished message of a key is deliverable."""
        return (msg.partition_key is None or not q.ordered
                or q.partitions[msg.partition_key][0] is msg)

    def _reorders(self, q: _Queue) -> bool:
        """Whether a ``reorder`` fault rule (chaos ``reorder``) is in force on ``q``: it shuffles
        what a pull consumer takes too, not only when routed handlers start."""
        faults = self._sim.faults
        if not faults._rules or faults.healed:
            return False
        return any(r.kind == "reorder" and faults._queue_matches(r, q.config.name)
                   for r in faults._rules)

    def _take_drawn(self, q: _Queue, batch: set[Message] | None) -> Message | None:
        """Take one of the ``ORDER_WINDOW`` oldest deliverable messages, drawn from
        ``sim.choices`` (label ``queue.order``; 0, the oldest, is what shrinking goes to)."""
        heap = q.ready
        aside: list[tuple[int, int, Message]] = []
        window: list[tuple[int, int, Message]] = []
        while heap and len(window) < ORDER_WINDOW:
            entry = heapq.heappop(heap)
            msg = entry[2]
            if msg.state != READY or msg._gen != entry[1]:
                continue  # stale entry
            if not self._is_head(q, msg) and not (batch and self._follows(q, msg, batch)):
                aside.append(entry)
                continue
            window.append(entry)
        found = None
        if window:
            index = self._sim.choices.integer(0, len(window) - 1, "queue.order") if len(window) > 1 else 0
            found = window.pop(index)[2]
            if index and not q.best_effort:  # a chaos reorder acted: count it as its fault
                for rule in self._sim.faults._rules:
                    if rule.kind == "reorder":
                        self._sim.faults._fire(rule, "queue.deliver", id=found.id,
                                               skipped=index)
                        break
        for entry in (*aside, *window):
            heapq.heappush(heap, entry)
        return found

    @staticmethod
    def _follows(q: _Queue, msg: Message, batch: set[Message]) -> bool:
        """Whether every unfinished message before ``msg`` in its group was taken by ``batch``."""
        for earlier in q.partitions[msg.partition_key]:  # type: ignore[index]
            if earlier is msg:
                return True
            if earlier not in batch:
                return False
        return False

    def _past_receives(self, q: _Queue, msg: Message) -> bool:
        """SQS redrive: the receive past ``maxReceiveCount`` moves the message to the DLQ instead."""
        if q.dlq_on_receive and msg._copy_attempts > q.config.max_retries and q.config.dead_letter:
            self._dead_letter(q, msg)
            return True
        return False

    def _sweep_retention(self, q: _Queue) -> None:
        """Drop the messages whose retention ran out (SQS deletes them, consumed or not)."""
        heap = q.retention
        now = self._sim.clock._mono
        while heap and heap[0][0] <= now:
            when, _, msg = heapq.heappop(heap)
            if msg.state == DEAD and q.messages.get(msg.id) is msg and msg in q.dead:
                # a dead letter expires too: SQS keeps it in the dead-letter queue only for
                # that queue's retention, from the message's first enqueue
                q.dead.remove(msg)
                msg.state = EXPIRED
                q.stats["expired"] += 1
                self._record("expired", queue=q.config.name, id=msg.id, attempts=msg.attempts,
                             expired_at=when, retention=q.config.retention, dead_letter=True)
                continue
            if msg.state in (ACKED, DEAD, EXPIRED) or q.messages.get(msg.id) is not msg:
                continue
            if msg._delivery is not None:
                msg._delivery.expired = True  # its attempt's ack now deletes nothing
            msg.state = EXPIRED
            q.stats["expired"] += 1
            self._record("expired", queue=q.config.name, id=msg.id, attempts=msg.attempts,
                         expired_at=when, retention=q.config.retention)
            self._finish(q, msg)

    def _take(self, q: _Queue, *, remove: bool, batch: set[Message] | None = None) -> Message | None:
        """The oldest ready, deliverable message (popped from the heap when ``remove``).

        ``batch``: messages this same receive took already; a message whose group's earlier
        unfinished messages are all in it is deliverable too (an SQS FIFO batch receive
        returns several messages of one group, in order).
        """
        heap = q.ready
        if remove and len(heap) > 1 and (q.best_effort or self._reorders(q)):
            return self._take_drawn(q, batch)
        aside: list[tuple[int, int, Message]] = []
        found = None
        while heap:
            entry = heapq.heappop(heap)
            msg = entry[2]
            if msg.state != READY or msg._gen != entry[1]:
                continue  # stale entry
            if not self._is_head(q, msg) and not (batch and self._follows(q, msg, batch)):
                aside.append(entry)
                continue
            found = msg
            if not remove:
                aside.append(entry)
            break
        for entry in aside:
            heapq.heappush(heap, entry)
        return found

    def _pump(self, q: _Queue) -> None:
        """Start every ready, deliverable message of a routed queue."""
        while q.route is not None:
            msg = self._take(q, remove=True)
            if msg is None:
                return
            if not (q.dlq_on_receive and self._past_receives(q, msg)):
                self._start(q, msg)

    def _start(self, q: _Queue, msg: Message) -> Delivery:
        """Begin an attempt: take the visibility lease, record it, run the route if there is one."""
        msg.attempts += 1
        msg._copy_attempts += 1
        msg.state = IN_FLIGHT
        number = msg.attempts
        d = Delivery(self, q, msg, number)
        msg._delivery = d
        self._lease(q, d, self._sim.clock._mono + q.config.visibility_timeout)
        stats = q.stats
        stats["delivered"] += 1
        if number > 1:
            stats["redelivered"] += 1
        detail: dict[str, Any] | None = None  # None: the usual queue, id and attempt
        if msg._copy > 1:  # the Nth delivery a duplicate fault asked for
            detail = {"queue": q.config.name, "id": msg.id, "attempt": number, "copy": msg._copy}
        d = self._launch(q, d, detail)
        if msg._overlap_left:  # overlapping copies start at this same instant
            n, msg._overlap_left = msg._overlap_left, 0
            for k in range(1, n + 1):
                if q.route is not None:
                    self._start_copy(q, msg, msg._copy + k)
                else:
                    q.copies.append((msg, msg._copy + k))
        return d

    def _lease(self, q: _Queue, d: Delivery, when: float) -> None:
        """Hold ``d``'s visibility lease until ``when``: ``_expire`` runs then unless released.

        It fires where a timer made now would (``reserve_seq``), through the queue's one
        ``DeadlineTimer``, so a delivery costs a tuple rather than a ``TimerHandle``.
        """
        loop = self._sim.loop
        dl = q.deadlines
        if d._seq <= 0:  # a new lease (not an extend of one still running)
            dl.live += 1
        seq = d._seq = loop.reserve_seq()
        d._deadline = when
        fifo = dl.fifo
        if not fifo or fifo[-1][0] <= when:
            fifo.append((when, seq, d))
        else:
            heapq.heappush(dl.late, (when, seq, d))
        timer = dl.timer
        if timer is None or timer._when > when or timer._cancelled:  # type: ignore[attr-defined]
            loop.arm_deadlines(dl, self._expire, self._quiet)

    def _start_copy(self, q: _Queue, msg: Message, copy: int) -> Delivery:
        """An overlapping copy of ``msg``: a delivery of its own next to the one in flight."""
        msg.attempts += 1
        d = Delivery(self, q, msg, msg.attempts)
        d._overlap = True
        q.stats["delivered"] += 1
        q.stats["redelivered"] += 1
        return self._launch(q, d, {"queue": q.config.name, "id": msg.id, "attempt": d.attempt,
                                   "copy": copy, "overlap": True})

    def _launch(self, q: _Queue, d: Delivery, detail: dict[str, Any] | None) -> Delivery:
        """Record the delivery and, on a routed queue, run its handler in a task of its own.

        ``detail`` is what ``queue.deliver`` records; ``None``: queue, id and attempt.
        """
        route = q.route
        history = self._sim.history
        if route is None:
            worker = current_worker.get()
            if worker is not None:  # a supervised worker received it: its attempt starts
                self._adopt(worker, q, d)
            if detail is None:
                history.add("queue", "deliver", "ok", _DELIVER,
                            (q.config.name, d.message.id, d.attempt))
            else:
                history.record("queue", "deliver", **detail)
            return d
        ctx = contextvars.Context()
        attempt = _QueueAttempt(d, ctx, q.config.name, d.message.id, d.attempt)
        ctx.run(current_attempt.set, attempt)  # inside the attempt's fresh context: it is current
        if detail is None:
            ctx.run(history.add, "queue", "deliver", "ok", _DELIVER,
                    (attempt.queue, attempt.message_id, attempt.number))
        else:
            ctx.run(history.record, "queue", "deliver", **detail)
        # named after the attempt (deterministic), counted and ordered by the virtual loop;
        # ``_run`` ends it itself (no done callback)
        task: asyncio.Task[None] = self._sim.loop.start_task(self._run(route, d, attempt),
                                                            attempt.label, ctx)
        d._task = task
        self._running.add(task)  # the loop holds tasks weakly: keep running attempts alive
        return d

    def _adopt(self, worker: Any, q: _Queue, d: Delivery) -> None:
        """A worker received ``d``: its service calls run in an attempt of ``d`` (so faults and
        chaos scoped to the queue act on them) until it settles ``d``; its death is a crash."""
        attempt = Attempt(q.config.name, d.message.id, d.attempt)
        attempt.returning = True  # chaos crash: the worker's delete is its attempt's last point
        loop = self._sim.loop
        fut: asyncio.Future[None] = loop.create_future()
        attempt.crash_future = fut
        workers = worker._workers
        fut.add_done_callback(lambda _f: workers._killed(worker), context=self._quiet)
        d._worker, d._pull = worker, attempt
        workers._took(worker, d, attempt)
        if not d._overlap:
            self._sim.faults._arm_pull(attempt)

    async def _run(self, route: Handler, d: Delivery, attempt: _QueueAttempt) -> None:
        """One routed attempt, in its own task with ``current_attempt`` set."""
        faults = self._sim.faults
        try:
            try:
                step = faults._enter("queue.deliver", queue=attempt.queue)
                if step is not None:
                    await step
                await route(d.payload, d)
                faults._leave("queue.deliver")
            except ProcessCrashed:
                self._crashed(d, attempt)
                return
            except Exception as exc:
                self._failed(d, exc)
                return
            if d._settled is None:
                attempt.returning = True  # chaos crash: the queue's ack is its last point
                try:
                    step = faults._enter("queue.ack")  # in the attempt: its queue scopes the rules
                    if step is None:
                        self._acked(d)
                    else:
                        await self._enter_ack(d, step)
                except ProcessCrashed:
                    self._crashed(d, attempt)
                except Exception:  # recorded as a failed queue.ack; the visibility lapses
                    pass
        except BaseException:  # pytest's Failed, a cancellation: what a plain task would do
            if d._task is not None:
                self._sim.loop.reraise_later(d._task)
            raise
        finally:
            # Break the reference cycles (future -> callback -> attempt -> future, delivery
            # <-> task) so a finished attempt is freed at once, not by the cyclic GC.
            task = d._task
            self._running.discard(task)
            self._sim.loop.task_ended(task)
            d._task = None
            # ``attempt.crash_future = None``, inlined, and the attempt <-> context cycle
            attempt._future = attempt._d = attempt._ctx = None

    def _is_current(self, d: Delivery) -> bool:
        msg = d.message
        return (msg._delivery is d and not d.expired
                and d._q.messages.get(msg.id) is msg)  # a restore replaces message objects

    def _release(self, d: Delivery) -> None:
        """Drop ``d``'s visibility lease (the attempt ended)."""
        if d._seq:
            if d._seq > 0:
                d._q.deadlines.live -= 1
            d._seq = 0  # its deadline entry is stale now: drop the stale ones at the front
            fifo = d._q.deadlines.fifo
            while fifo and fifo[0][2]._seq != fifo[0][1]:
                fifo.popleft()
        if d.message._delivery is d:
            d.message._delivery = None

    def _crashed(self, d: Delivery, attempt: Attempt) -> None:
        """The worker died in this attempt: record it once; the visibility timeout redelivers."""
        if d._settled == "crashed":
            return
        attempt.crashed = True
        d._settled = "crashed"
        d._q.stats["crashed"] += 1
        self._record("crashed", queue=attempt.queue, id=attempt.message_id,
                     attempt=attempt.number)

    def _failed(self, d: Delivery, exc: BaseException) -> None:
        q, msg = d._q, d.message
        error = f"{type(exc).__name__}: {exc}"
        q.stats["failed"] += 1
        if d._overlap:  # an overlapping copy: the message's own delivery carries the retries
            if d._settled is None:
                d._settled = "failed"
            self._record("attempt_failed", queue=q.config.name, id=msg.id, attempt=d.attempt,
                         error=error, overlap=True)
            return
        open_ = d._settled is None  # False: the handler acked or nacked, then raised
        current = open_ and self._is_current(d)
        detail: dict[str, Any] = {"queue": q.config.name, "id": msg.id, "attempt": d.attempt,
                                  "error": error}
        if open_ and not current:
            detail["stale"] = True  # the visibility lapsed: another attempt owns the message
        self._record("attempt_failed", **detail)
        if not current:
            if open_:
                d._settled = "failed"
            return
        msg.last_error = error
        d._settled = "failed"
        delay = None
        if q.profile.uses_visibility_retry and d._seq:
            # SQS: a failed receive is not deleted; it is visible again when the lease ends
            delay = max(0.0, d._deadline - self._sim.loop.time())
        self._release(d)
        self._retry_or_dead(q, msg, delay)

    def _retry_or_dead(self, q: _Queue, msg: Message, delay: float | None) -> None:
        """After a failed attempt: dead-letter when the budget is spent, else retry after a delay.

        On SQS profiles the budget is checked on the next receive (``_past_receives``).
        """
        if (msg._copy_attempts > q.config.max_retries and not q.profile.uses_visibility_retry
                and q.config.dead_letter):
            self._dead_letter(q, msg)
            return
        if delay is None:
            delay = q.config.retry_delay
            if delay is None:
                delay = retry_backoff(msg._copy_attempts,
                                      self._sim.choices.fraction("queue.retry_jitter"))
        q.stats["retries"] += 1
        self._record("retry", queue=q.config.name, id=msg.id, attempt=msg.attempts + 1,
                     delay=delay)
        self._schedule(q, msg, delay)

    def _dead_letter(self, q: _Queue, msg: Message) -> None:
        msg.state = DEAD
        q.dead.append(msg)
        self._record("dead_letter", queue=q.config.name, id=msg.id, attempts=msg.attempts)
        self._finish(q, msg)

    def _finish(self, q: _Queue, msg: Message) -> None:
        """``msg`` is acked or dead: cancel its timers and let its partition's next message go."""
        if msg._timer is not None:
            msg._timer.cancel()
            msg._timer = None
        if msg._delivery is not None:
            self._release(msg._delivery)
        key = msg.partition_key
        if key is None or not q.ordered:
            return
        part = q.partitions[key]
        if part[0] is msg:
            part.popleft()
        else:
            part.remove(msg)
        if not part:
            del q.partitions[key]
        elif q.route is not None and part[0].state == READY:
            self._pump(q)

    def _expire(self, d: Delivery, seq: int) -> None:
        """The visibility timeout lapsed: the message is visible again (or dead, budget spent)."""
        if d._seq != -seq:
            return  # released or extended since (the lease's timer would have been cancelled)
        d._seq = 0
        msg, q = d.message, d._q
        if msg._delivery is not d:
            return
        d.expired = True
        msg._delivery = None
        q.stats["visibility_expired"] += 1
        self._record("visibility_expired", queue=q.config.name, id=msg.id, attempt=d.attempt)
        if (msg._copy_attempts > q.config.max_retries and not q.profile.uses_visibility_retry
                and q.config.dead_letter):
            msg.last_error = msg.last_error or f"visibility timeout ({q.config.visibility_timeout:g}s)"
            self._dead_letter(q, msg)
        else:
            self._make_ready(q, msg)

    def _settle_check(self, d: Delivery, call: str) -> None:
        if d._settled in ("acked", "nacked"):
            raise DeliverySettled(f"{call}: the delivery {d.message.id} attempt {d.attempt} was "
                                  f"already {d._settled}; ack() or nack() a delivery once")

    async def _ack(self, d: Delivery) -> None:
        self._settle_check(d, "ack()")
        step = self._sim.faults._enter("queue.ack", queue=_scope(d._q.config.name), call=True)
        if step is None:
            self._acked(d)
        else:
            await self._enter_ack(d, step)
        if d._worker is not None:
            d._worker._workers._settled(d._worker, d)

    async def _enter_ack(self, d: Delivery, step: Awaitable[None]) -> None:
        """``_ack`` when fault point ``queue.ack`` may raise, wait or crash: await ``step``
        (``faults._enter``'s)."""
        name = d._q.config.name
        try:
            await step
        except Exception as exc:
            self._sim.history.record("queue", "ack", "fail", queue=name, id=d.message.id,
                                     attempt=d.attempt, stale=not self._is_current(d),
                                     error=repr(exc))
            raise
        self._acked(d)

    def _acked(self, d: Delivery) -> None:
        """The rest of ``_ack`` once ``queue.ack`` was entered (the routed ack calls it directly
        when the fault point has nothing to do, saving a coroutine per attempt)."""
        if d._settled is not None and d._settled in ("acked", "nacked"):
            self._settle_check(d, "ack()")
        q, msg = d._q, d.message
        if q.retention:
            self._sweep_retention(q)
        current = (msg._delivery is d and not d.expired  # ``_is_current``, inlined
                   and q.messages.get(msg.id) is msg)
        d._settled = "acked"
        deleted = copy = False
        if d._overlap:  # an overlapping copy's ack: the message's own delivery settles it
            err = self._leave("queue.ack")
            self._sim.history.record("queue", "ack", "unknown" if err else "ok",
                                     queue=q.config.name, id=msg.id, attempt=d.attempt,
                                     stale=False, deleted=False, overlap=True)
            if err is not None:
                raise err
            return
        if current:
            # ``_release(d)``, inlined: d holds the lease (current), so it has its entry
            dl = q.deadlines
            if d._seq > 0:
                dl.live -= 1
            d._seq = 0
            msg._delivery = None
            fifo = dl.fifo
            while fifo and fifo[0][2]._seq != fifo[0][1]:
                fifo.popleft()
            if msg._copies_left:  # a duplicate fault: the next copy follows this ack
                msg._copies_left -= 1
                msg._copy += 1
                msg._copy_attempts = 0
                msg.state = READY
                copy = True
                if q.route is None or q.profile.name == "sqs-fifo":
                    # a pull consumer (or a FIFO queue): the lease lapsed just before this
                    # delete, as at-least-once delivery does; the delete is stale, deletes
                    # nothing, and the message comes back. A delete never un-happens.
                    d.expired = True
                    current = False
                    q.stats["visibility_expired"] += 1
                    q.stats["stale_acks"] += 1
                    self._record("visibility_expired", queue=q.config.name, id=msg.id,
                                 attempt=d.attempt, duplicate=True)
            else:
                msg.state = ACKED
                deleted = True
        else:
            q.stats["stale_acks"] += 1
            if (q.config.stale_ack == "deletes" and msg.state in (READY, DELAYED, IN_FLIGHT)
                    and q.messages.get(msg.id) is msg):
                msg.state = ACKED
                deleted = True
        err = self._leave("queue.ack")
        self._sim.history.add("queue", "ack", "unknown" if err else "ok", _ACK,
                              (q.config.name, msg.id, d.attempt, not current, deleted))
        if copy:
            self._make_ready(q, msg)
        elif deleted and not (msg._timer is None and msg._delivery is None
                              and msg.partition_key is None):
            self._finish(q, msg)  # (nothing to cancel or pass on otherwise)
        if err is not None:
            raise err

    async def _nack(self, d: Delivery, delay: float) -> None:
        prof = d._q.profile
        if prof.name == "agentuity":
            delay = _seconds("nack", "delay", delay, hi=MAX_DELAY,
                             fix="Use delay=0 to make the message visible at once.")
        else:
            delay = seconds("nack", "delay", delay, prof.name, 0.0, prof.max_nack_delay,
                            whole=prof.whole_seconds,
                            fix="Use delay=0 to make the message visible at once.")
        self._settle_check(d, "nack()")
        q, msg = d._q, d.message
        name = q.config.name
        step = self._sim.faults._enter("queue.ack", queue=_scope(name), call=True)
        if step is not None:
            try:
                await step
            except Exception as exc:
                self._record("nack", "fail", queue=name, id=msg.id, attempt=d.attempt,
                             delay=delay, error=repr(exc))
                raise
        self._settle_check(d, "nack()")
        current = self._is_current(d) and not d._overlap
        d._settled = "nacked"
        if current:
            self._release(d)
            q.stats["nacked"] += 1
        err = self._leave("queue.ack")
        names: tuple[str, ...]
        values: tuple[Any, ...]
        if current:
            names, values = _NACK, (name, msg.id, d.attempt, delay)
        else:  # an overlapping copy's nack, or a stale one: flagged
            names = _NACK_OVERLAP if d._overlap else _NACK_STALE
            values = (name, msg.id, d.attempt, delay, True)
        self._sim.history.add("queue", "nack", "unknown" if err else "ok", names, values)
        if d._worker is not None:
            d._worker._workers._settled(d._worker, d)
        if current:
            self._retry_or_dead(q, msg, delay)
        if err is not None:
            raise err


    async def _extend(self, d: Delivery, seconds: float) -> None:
        """``Delivery.extend``: the visibility lease ends ``seconds`` from now."""
        q, msg = d._q, d.message
        lo, hi = lease_range(q.profile)
        seconds = profile_seconds("extend", "seconds", seconds, q.profile.name, lo, hi,
                                  fix="Extend again before the lease runs out for longer work.")
        self._extend_check(d)
        if q.profile.uses_visibility_retry and not d._overlap:
            held = self._sim.clock._mono - d._began
            if held + seconds > hi:  # SQS: at most 12 hours after the receive, in all
                raise limit_error("extend", "seconds", q.profile.name,
                                  f"a visibility of at most {hi:g} s after the receive in all "
                                  f"(received {held:g} s ago, so at most {hi - held:g} now)",
                                  seconds, "Delete the message and publish it again for longer work.")
        name = q.config.name
        step = self._sim.faults._enter("queue.extend", queue=_scope(name), call=True)
        if step is not None:
            try:
                await step
            except Exception as exc:
                self._record("extend", "fail", queue=name, id=msg.id, attempt=d.attempt,
                             seconds=float(seconds), error=repr(exc))
                raise
        self._extend_check(d)
        if not d._overlap:
            self._lease(q, d, self._sim.loop.time() + seconds)
        q.stats["extended"] += 1
        err = self._leave("queue.extend")
        self._sim.history.add("queue", "extend", "unknown" if err else "ok", _EXTEND,
                              (name, msg.id, d.attempt, float(seconds)))
        if seconds == 0 and not d._overlap and self._is_current(d):
            # SQS ChangeMessageVisibility(0): visible to the very next receive, not a loop
            # turn later when the lease's timer fires
            self._release(d)
            d.expired = True
            q.stats["visibility_expired"] += 1
            self._record("visibility_expired", queue=name, id=msg.id, attempt=d.attempt)
            self._make_ready(q, msg)
        if err is not None:
            raise err

    def _extend_check(self, d: Delivery) -> None:
        if d._settled is not None:
            raise DeliverySettled(f"extend(): the delivery {d.message.id} attempt {d.attempt} "
                                  f"already ended ({d._settled}); extend a lease only while its "
                                  "handler still works on it")
        if not d._overlap and not self._is_current(d):
            raise DeliverySettled(f"extend(): the visibility of {d.message.id} attempt "
                                  f"{d.attempt} already lapsed and the message is visible again "
                                  "(maybe redelivered); extend before the lease runs out, e.g. "
                                  "every visibility_timeout / 2 seconds")
