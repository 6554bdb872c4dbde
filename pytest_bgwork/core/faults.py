"""The fault injector: named fault points, and rules that fire at them.

A rule can make a fault point raise (an *error*), wait (a *delay* or *hang*), or stop
the worker there for good (a *crash*); an ``after_apply`` error is raised after the
write happened (its outcome is recorded as ``unknown``). Services reach a point through
the injector's private protocol, ``_enter`` before the operation and ``_leave`` after it
(CONTRIBUTING.md, "Fault points"). Rules are plain data (``Fault``), so a
``FaultPlan`` prints, compares and replays.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import fnmatch
import random
import re
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .context import Attempt, current_attempt
from .errors import ProcessCrashed
from .loop import VirtualEventLoop

if TYPE_CHECKING:
    from .kernel import Kernel

_T = TypeVar("_T")
_E = TypeVar("_E", bound=BaseException)

__all__ = ["KINDS", "LATENCY_MAX", "POINTS", "Fault", "FaultInjector", "FaultPlan", "fault_points",
           "is_injected", "register_fault_point", "suspend"]

#: Fault points the built-in services expose; ``task.<name>`` (waitUntil and manager
#: tasks) and ``schedule.<name>`` (schedule runs) are points for any name.
POINTS = (
    "queue.publish", "queue.deliver", "queue.ack", "queue.extend",
    "kv.get", "kv.set", "kv.delete", "kv.keys",
    "stream.create", "stream.write", "stream.close", "stream.read",
    "http", "webhook.deliver",
    "tasks.create", "tasks.update", "tasks.get",
)
#: Prefixes whose every ``prefix.<name>`` is a point (the name is the task's or schedule's;
#: ``redis.<command>``: a command of ``adapters.redis``).
PREFIXES = ("task.", "schedule.", "redis.")
KINDS = ("fail", "crash", "duplicate", "hang", "delay")
#: Largest latency (virtual seconds) a service call takes when latency is on (exploration,
#: chaos ``latency``): a slow network round trip; drawn in 1,000 steps, shrinking to 0.
LATENCY_MAX = 0.1
#: Chaos ``crash`` draws its point among the first this many points of an attempt until the
#: queue's attempts have shown how many they pass.
CRASH_DEPTH = 6


@types.coroutine
def suspend() -> Any:
    """Yield to the other ready tasks once, as ``asyncio.sleep(0)`` does (no time passes).

    Every service call is a suspension point (docs/interleavings.md). When the yield could not let
    anything else happen it is skipped: the loop would only count a busy iteration and
    step this same task again at the same instant, so the call goes on at once with the
    busy count advanced as the loop would have advanced it (the exact rule:
    ``VirtualEventLoop._yield_changes_nothing``). Every interleaving and history stays the same.
    """
    loop = _get_running_loop()
    if type(loop) is VirtualEventLoop and loop._yield_changes_nothing(_getframe(1)):
        return
    yield


@types.coroutine
def _yield() -> Any:
    """A bare yield, always (``suspend`` once its rule said no)."""
    yield


_getframe = sys._getframe
_get_running_loop = asyncio._get_running_loop


_POINT_RE = re.compile(r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_.:-]+)?$")
_registered: dict[str, None] = dict.fromkeys(POINTS)
#: Queue names a queue-scoped rule may name: every profile's charset (``.fifo`` included).
_QUEUE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,255}$")


def register_fault_point(name: str) -> str:
    """Make ``name`` (e.g. ``"sqs.receive"``) a known fault point, so rules may target it.

    Adapters call it once at import for each fault point of their own, so that a rule
    naming it is accepted. Registering a name twice is fine. Names are
    ``service.op``: lowercase service, a dot, then letters, digits, ``_.:-``.
    """
    if not isinstance(name, str) or "." not in name or not _POINT_RE.match(name):
        raise ValueError(
            f"register_fault_point(name=...) expects 'service.op' such as 'sqs.receive' "
            f"(lowercase service, a dot, then letters, digits, '_', '.', ':', '-'); got {name!r}"
        )
    _registered[name] = None
    return name


def fault_points() -> list[str]:
    """Every known fault point (built-in and registered), plus ``task.<name>`` and
    ``schedule.<name>`` for any name."""
    return [*_registered, *(p + "<name>" for p in PREFIXES)]


def _check_point(point: str, arg: str = "point") -> str:
    """``point`` if it is a known fault point, else a ``ValueError`` with a suggestion."""
    if isinstance(point, str) and point in _registered:
        return point
    if isinstance(point, str) and point.startswith(PREFIXES) and _POINT_RE.match(point):
        return point
    from .validate import name_error

    hint = name_error("", arg, point, [*_registered, "task.<name>", "schedule.<name>"])
    raise ValueError(
        f"{arg}= must be a fault point bgwork knows; got {point!r}{hint or '.'} Known points: "
        f"{', '.join(_registered)}, task.<name>, schedule.<name>. An adapter adds its own "
        "with bg.register_fault_point('service.op')."
    )


def _crash_point(at: str | None, point: str | None) -> str:
    """The fault point of a ``crash`` given as ``at=`` or ``point=`` (one of the two)."""
    if at is not None and point is not None:
        raise TypeError(
            f"sim.faults.crash() got at={at!r} and point={point!r}: they are one argument "
            "under two names; give one, e.g. crash('jobs', point='stream.write')"
        )
    if at is not None:
        return _check_point(at, "at")
    if point is None:
        raise TypeError(
            "sim.faults.crash() needs the fault point where the worker dies: "
            "point='stream.write' (or its first name, at=...)"
        )
    return _check_point(point, "point")


def _check_on_call(on_call: int | None, where: str = "sim.faults") -> int | None:
    from .validate import integer

    return integer(on_call, where, "on_call", none=True, what="an int",
                   fix="on_call= counts calls from 1; None fires on every call")


def _check_times(times: int | None, where: str, lo: int = 1) -> int | None:
    from .validate import integer

    return integer(times, where, "times", lo=lo, none=True,
                   fix="None fires as often as the rule matches")


def _check_flag(value: object, where: str, arg: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}({arg}=...) must be True or False; got {value!r}")
    return value


def _check_queue_name(queue: object, where: str) -> str:
    if queue == "*" or (isinstance(queue, str) and _QUEUE_RE.match(queue)):
        return str(queue)
    raise ValueError(
        f"{where}(queue=...) must name a queue (letters, digits, '_', '-', '.'; at most 256 "
        f"characters) or '*' for every queue; got {queue!r}"
    )


def _error_text(error: BaseException | type[BaseException] | str | None,
                where: str = "sim.faults.fail") -> str:
    if error is None:
        return "ConnectionError('injected fault')"
    if isinstance(error, str):
        return error
    if isinstance(error, type) and issubclass(error, BaseException):
        return f"{error.__name__}()"
    if isinstance(error, BaseException):
        return repr(error)
    raise TypeError(f"{where}(error=...) must be an exception, an exception class or its text; "
                    f"got {error!r}")


#: The attribute that marks an exception the fault injector raised (see ``is_injected``).
_TAG = "_bgwork_injected"
#: The key that marks an HTTP response a fault rule answered (``httpx.Response.extensions``).
_RESPONSE_TAG = "bgwork_injected"


def _tag(exc: _E) -> _E:
    """Mark ``exc`` as raised by the fault injector, and return it."""
    with contextlib.suppress(AttributeError, TypeError):  # a type with __slots__: left untagged
        setattr(exc, _TAG, True)
    return exc


def is_injected(exc: BaseException | None) -> bool:
    """Whether ``exc`` was caused by an injected fault.

    True for an error the fault injector raised (a ``fail`` rule, an ``after_apply``
    error, an ``http`` rule's timeout or connect error), for an exception whose
    ``__cause__``/``__context__`` chain holds one (``raise AppError(...) from exc``, or
    raised while handling it), for an error about a response an ``http`` rule answered
    (``httpx.HTTPStatusError`` from ``raise_for_status()``), and for an exception group
    all of whose members are. ``bg.explore`` records such an error escaping the scenario
    as ``scenario.error`` instead of failing the example, and ``assert_no_task_errors``
    leaves background tasks that failed so to the business checks.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc] if exc is not None else []
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if getattr(e, _TAG, False):
            return True
        response = getattr(e, "response", None)
        extensions = getattr(response, "extensions", None)
        if isinstance(extensions, dict) and extensions.get(_RESPONSE_TAG):
            return True
        if isinstance(e, BaseExceptionGroup) and e.exceptions and all(
                is_injected(member) for member in e.exceptions):
            return True
        todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return False


def _make_error(text: str) -> BaseException:
    """Rebuild an exception from its repr, e.g. ``ConnectionError('kv down')``, tagged as injected."""
    return _tag(_build_error(text))


def _build_error(text: str) -> BaseException:
    m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\((.*)\)$", text, re.S)
    if m:
        cls = getattr(builtins, m.group(1), None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            arg = m.group(2).strip()
            if not arg:
                return cls()
            if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
                return cls(arg[1:-1])
            return cls(arg)
    return ConnectionError(text)


_ALL_KINDS = (*KINDS, "http", "reorder", "latency")


def _validate(f: Fault, where: str) -> None:
    """Refuse a rule that could never fire as meant: unknown kind or point, bad numbers."""
    from .validate import integer, seconds

    if f.kind not in _ALL_KINDS:
        raise ValueError(f"Fault.kind must be one of {_ALL_KINDS}; got {f.kind!r}")
    if f.point is not None and f.point != "*":  # "*": chaos crash's drawn point, latency
        _check_point(f.point, f"{where}(point=...)" if where == "Fault" else "point")
    if f.queue is not None:
        _check_queue_name(f.queue, where)
    integer(f.on_call, where, "on_call", none=True, what="a call number",
            fix="None fires on every call")
    integer(f.times, where, "times", lo=2 if f.kind == "duplicate" else 1, none=True,
            fix="None fires as often as the rule matches")
    integer(f.attempt, where, "attempt", none=True)
    seconds(f.seconds, where, "seconds")
    if not isinstance(f.after_apply, bool):
        raise ValueError(f"{where}(after_apply=...) must be True or False; got {f.after_apply!r}")
    if f.error is not None and not isinstance(f.error, str):
        raise TypeError(f"{where}(error=...) must be the error's text, e.g. "
                        f"\"ConnectionError('down')\"; got {f.error!r}")


@dataclass(frozen=True)
class Fault:
    """One fault rule as plain data: what happens, where, and on which call.

    The ``sim.faults`` methods build these; a ``FaultPlan`` is a list of them, so a
    plan prints, compares and replays.
    """

    kind: str
    """What happens: ``fail``, ``crash``, ``duplicate``, ``hang``, ``delay`` or ``http``
    (chaos mode adds ``reorder`` and ``latency``)."""
    point: str | None = None
    """The fault point it fires at, e.g. ``"kv.set"`` (``None``: the kind's own point)."""
    queue: str | None = None
    """Only inside attempts of this queue (``"*"``: any queue; ``None``: anywhere)."""
    on_call: int | None = None
    """The call of ``point`` it fires on, counted from 1 (``None``: every call). For a
    queue-scoped rule, the calls made inside that queue's attempts."""
    error: str | None = None
    """``fail``: the error raised, as its text, e.g. ``"ConnectionError('kv down')"``;
    ``http``: ``"timeout"`` or ``"connect_error"``."""
    after_apply: bool = False
    """``fail``: raise after the operation took effect (its outcome is ``unknown``)."""
    seconds: float = 0.0
    """``hang`` and ``delay``: how long, in virtual seconds (``reorder``, ``latency``:
    the most)."""
    times: int | None = None
    """How often it fires in all (``None``: as often as it matches); ``duplicate``:
    how many times each message is delivered in all."""
    url: str | None = None
    """``http``: the glob on the full request URL, e.g. ``"https://api.example/*"``."""
    status: int | None = None
    """``http``: the status code to answer with (``None``: raise ``error`` instead)."""
    attempt: int | None = None
    """Fire only in this attempt of each queue message (chaos mode's "first attempt"
    rules; ``None``: any attempt)."""
    overlap: bool = False
    """``duplicate``: start the copies at the same virtual instant (concurrently)."""

    def __post_init__(self) -> None:
        _validate(self, "Fault")

    def describe(self) -> str:
        """Readable one-liner, e.g. ``crash report-jobs at stream.write on call 1``."""
        if self.kind == "http":
            how = f"answer {self.status}" if self.status else f"raise {self.error}"
            call = f" on call {self.on_call}" if self.on_call else " on every call"
            return f"http {self.url} {how}{call}" + (f" x{self.times}" if self.times else "")
        if self.kind == "latency":
            return f"latency up to {self.seconds:g}s on every service call"
        bits = [self.kind]
        if self.queue:
            bits.append(self.queue)
        if self.point == "*":
            bits.append("at a point drawn among those the attempt passes")
        elif self.point:
            bits.append(f"at {self.point}")
        if self.on_call:
            bits.append(f"on call {self.on_call}")
        elif self.kind != "duplicate" and self.point != "*":
            bits.append("on every call")
        if self.overlap:
            bits.append("overlapping (the copies start at the same instant)")
        if self.kind == "fail":
            bits.append(f"raising {self.error}")
            if self.after_apply:
                bits.append("after the write applied")
        if self.kind in ("hang", "delay"):
            bits.append(f"for {self.seconds:g}s")
        if self.kind == "reorder":
            bits.append(f"up to {self.seconds:g}s")
        if self.attempt is not None:
            bits.append(f"in attempt {self.attempt}")
        if self.times is not None:
            bits.append(f"x{self.times}")
        return " ".join(bits)


@dataclass(frozen=True)
class FaultPlan:
    """An ordered list of ``Fault``; the empty plan means "no fault"."""

    faults: tuple[Fault, ...] = field(default_factory=tuple)
    """The rules, in order."""

    def __init__(self, faults: Iterable[Fault | dict[str, Any]] = ()) -> None:
        object.__setattr__(self, "faults", _faults_of(faults, "FaultPlan(faults=...)"))

    def __len__(self) -> int:
        return len(self.faults)

    def __iter__(self) -> Iterator[Fault]:
        return iter(self.faults)

    def to_data(self) -> list[dict[str, Any]]:
        """Plain lists and dicts (JSON-ready), defaults left out."""
        default = asdict(Fault(kind="fail"))
        out = []
        for f in self.faults:
            d = {k: v for k, v in asdict(f).items() if k == "kind" or v != default[k]}
            out.append(d)
        return out

    def describe(self) -> str:
        """``no faults`` or one fault per line."""
        if not self.faults:
            return "no faults"
        return "\n".join(f"{i + 1}. {f.describe()}" for i, f in enumerate(self.faults))

    def __repr__(self) -> str:
        return f"FaultPlan({self.to_data()!r})"


def _faults_of(faults: object, where: str) -> tuple[Fault, ...]:
    """The ``Fault`` rules of a list of faults or dicts; anything else is refused."""
    if isinstance(faults, FaultPlan):
        return faults.faults
    if isinstance(faults, str | bytes | dict) or not isinstance(faults, Iterable):
        raise TypeError(
            f"{where} expects a list of bg.Fault or dicts such as "
            f"[{{'kind': 'fail', 'point': 'kv.set'}}] (or a FaultPlan); got {faults!r}"
        )
    items: list[Fault] = []
    for i, f in enumerate(faults):
        if isinstance(f, Fault):
            items.append(f)
        elif isinstance(f, dict):
            unknown = sorted(set(f) - set(Fault.__dataclass_fields__))
            if unknown or "kind" not in f:
                raise TypeError(
                    f"{where}: item {i} {f!r} "
                    + (f"has unknown field(s) {', '.join(map(repr, unknown))}" if unknown
                       else "has no 'kind'")
                    + f"; fields: {', '.join(Fault.__dataclass_fields__)}"
                )
            items.append(Fault(**f))
        else:
            raise TypeError(f"{where}: item {i} must be a bg.Fault or a dict; got {f!r}")
    return tuple(items)


class FaultInjector:
    """``sim.faults``: add fault rules; they fire at fault points.

    Every method adds one ``Fault`` and returns it. Each takes its target first (a
    point, a queue or a URL, positionally or by keyword) and ``on_call=``:

    | method | target | fires at | `on_call` default |
    | --- | --- | --- | --- |
    | `fail(point, error=)` | `point=` (`queue=` narrows) | `point` | `1` |
    | `crash(queue, point=)` | `queue=` and `point=` (or `at=`) | `point` | `1` |
    | `hang(queue, seconds=)` | `queue=` | `queue.deliver` | `1` |
    | `http(url, status=)` | `url=` | outbound requests | `1` |
    | `delay(point, seconds=)` | `point=` (`queue=` narrows) | `point` | `None` (every call) |
    | `duplicate(queue, times=)` | `queue=` | `queue.publish` | `None` (every publish) |

    The rule behind the defaults: an *incident* (``fail``, ``crash``, ``hang``,
    ``http``) happens once, on the first call, unless ``on_call=`` says which call or
    ``on_call=None`` makes it every call; a property of the *environment* (``delay``,
    ``duplicate``) holds for every call unless ``on_call=`` picks one.
    """

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._rules: list[Fault] = []
        #: Rules the test added itself: reported at teardown when they never fired.
        self._reported: list[Fault] = []
        self._fired: dict[int, int] = {}
        self._calls: dict[str, int] = {}
        self._scoped_calls: dict[tuple[str, str], int] = {}
        self._pending_after: dict[str, Fault] = {}
        #: ``_leave(point)``: with no ``after_apply`` error armed, a no-op in C (the services
        #: call it after every operation); ``_leave_due`` while one is armed
        self._leave: Callable[[str], Fault | None] = _NOTHING_DUE.get
        self._healed = False
        #: ``paused()`` blocks open: while > 0 no rule fires and no latency is drawn.
        self._paused = 0
        self.injected = 0
        """How many times a rule fired so far (the terminal summary's "faults injected")."""
        self._router: Any = None
        self._http_calls: dict[int, int] = {}
        #: Largest per-call latency (0: a service call only yields); set by a ``latency`` rule.
        self._latency = 0.0
        #: queue -> most fault points an attempt of it passed (chaos ``crash`` draws among them).
        self._depth: dict[str, int] = {}
        #: (queue, message id) -> the attempt chaos ``crash`` acts in: its first to pass a point.
        self._crash_owner: dict[tuple[str, str], Attempt] = {}
        self._watch_fn: Callable[[str, Attempt], bool | Awaitable[None]] | None = None
        #: No rule or latency in force (or healed) and no watcher: a call may take the fast path.
        self._open = True
        #: The simulation's loop when it is exactly a ``VirtualEventLoop`` (the skip's rule).
        self._loop: VirtualEventLoop | None = sim.loop if type(sim.loop) is VirtualEventLoop else None

    @property
    def healed(self) -> bool:
        """True once ``heal()`` stopped injecting (rules stay, none fires)."""
        return self._healed

    @healed.setter
    def healed(self, value: bool) -> None:
        self._healed = value
        self._reopen()

    @property
    def is_paused(self) -> bool:
        """True inside a ``paused()`` block."""
        return self._paused > 0

    @property
    def _off(self) -> bool:
        """No rule fires and no latency is drawn: healed, or inside ``paused()``."""
        return self._healed or self._paused > 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """``with sim.faults.paused(): ...``: no rule fires and no latency is drawn inside.

        For a scenario's set-up (seeding data, publishing the first message) that should
        not meet the faults an exploration injects. Calls are still counted and recorded,
        so ``on_call`` numbers stay those of the whole run. It pauses the whole simulation
        while the block runs, background work included; blocks nest.
        """
        self._paused += 1
        self._reopen()
        try:
            yield
        finally:
            self._paused -= 1
            self._reopen()

    @property
    def _watch(self) -> Callable[[str, Attempt], bool | Awaitable[None]] | None:
        """``watch(point, attempt) -> crash?``: sees every fault point an attempt enters,
        even when healed (``assert_idempotent`` records and crashes attempts with it); an
        awaitable instead of a bool makes the attempt wait there for it (an overlapping run)."""
        return self._watch_fn

    @_watch.setter
    def _watch(self, value: Callable[[str, Attempt], bool | Awaitable[None]] | None) -> None:
        self._watch_fn = value
        self._reopen()

    def _reopen(self) -> None:
        """Recompute ``_open`` after rules, latency, ``healed`` or ``watch`` changed."""
        self._open = (not (self._rules or self._latency) or self._off) and self._watch_fn is None

    # -- adding rules -----------------------------------------------------------
    def fail(
        self,
        point: str,
        *,
        on_call: int | None = 1,
        error: BaseException | type[BaseException] | str | None = None,
        after_apply: bool = False,
        times: int | None = None,
        queue: str | None = None,
    ) -> Fault:
        """Raise ``error`` from ``point`` on call ``on_call`` (``None``: every call).

        ``after_apply=True`` raises after the operation took effect, the "timeout
        after the write" that makes retries duplicate work.
        """
        where = "sim.faults.fail"
        return self._add(Fault("fail", _check_point(point), self._scope(queue, where),
                               _check_on_call(on_call, where), _error_text(error, where),
                               _check_flag(after_apply, where, "after_apply"), 0.0,
                               _check_times(times, where)))

    def crash(self, queue: str, *, at: str | None = None, point: str | None = None,
              on_call: int | None = 1) -> Fault:
        """Kill the worker of a ``queue`` attempt at fault point ``point``: a process death.

        ``point=`` is the keyword every fault method shares; ``at=`` is the same
        argument under its first name (``crash("jobs", at="stream.write")``). Give one.
        """
        where = "sim.faults.crash"
        return self._add(Fault("crash", _crash_point(at, point), _check_queue_name(queue, where),
                               _check_on_call(on_call, where)))

    def duplicate(self, queue: str, *, times: int = 2, on_call: int | None = None,
                  overlap: bool = False) -> Fault:
        """Deliver each message of ``queue`` ``times`` times in all (``on_call``: only the Nth publish).

        By default each copy follows the previous one's ack; ``overlap=True`` starts the
        copies at the same virtual instant, so their handlers run concurrently.
        """
        where = "sim.faults.duplicate"
        from .validate import integer

        if not isinstance(overlap, bool):
            raise TypeError(f"{where}(overlap=...) expects True or False; got {overlap!r}")
        count = integer(times, where, "times", lo=2, what="the total number of deliveries, "
                        "an int", fix="times=2 delivers each message twice"
                        + (" (overlap=True needs at least 2 copies to overlap)" if overlap else ""))
        return self._add(Fault("duplicate", "queue.publish", _check_queue_name(queue, where),
                               _check_on_call(on_call, where), times=count, overlap=overlap))

    def hang(self, queue: str, *, seconds: float, on_call: int | None = 1) -> Fault:
        """Stall a ``queue`` attempt for ``seconds`` before its handler runs."""
        where = "sim.faults.hang"
        return self._add(Fault("hang", "queue.deliver", _check_queue_name(queue, where),
                               _check_on_call(on_call, where),
                               seconds=self._check_seconds(seconds, where)))

    def delay(self, point: str, *, seconds: float, on_call: int | None = None,
              queue: str | None = None) -> Fault:
        """Make ``point`` take ``seconds`` of virtual time (``on_call``: only that call)."""
        where = "sim.faults.delay"
        return self._add(Fault("delay", _check_point(point), self._scope(queue, where),
                               _check_on_call(on_call, where),
                               seconds=self._check_seconds(seconds, where)))

    def http(
        self,
        url: str,
        *,
        status: int | None = None,
        timeout: bool = False,
        connect_error: bool = False,
        on_call: int | None = 1,
        times: int | None = None,
    ) -> Fault:
        """Make outbound ``httpx`` requests to ``url`` fail (through respx).

        ``url`` is a glob on the full URL (``"https://api.mail.example/*"``; the query
        string may be left off). Exactly one of: ``status=503`` (answer with it),
        ``timeout=True`` (``httpx.ReadTimeout``), ``connect_error=True``
        (``httpx.ConnectError``). ``on_call`` counts matching requests from 1
        (``None``: every one). Requests no rule fails go on to your own respx mocks.
        """
        where = "sim.faults.http"
        if not isinstance(url, str) or not url:
            raise ValueError(f"http(url=...) expects a URL or glob such as "
                             f"'https://api.example/*'; got {url!r}")
        chosen = [name for name, on in (("status", status is not None), ("timeout", timeout),
                                        ("connect_error", connect_error)) if on]
        if len(chosen) != 1:
            raise ValueError(
                "http() needs exactly one of status=<code>, timeout=True, connect_error=True; "
                f"got {', '.join(chosen) or 'none'}"
            )
        if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                                   or not 100 <= status <= 599):
            raise ValueError(f"http(status=...) expects an HTTP status code 100-599; got {status!r}")
        error = None if status is not None else ("timeout" if timeout else "connect_error")
        return self._add(Fault("http", "http", None, _check_on_call(on_call, where), error,
                               times=_check_times(times, where), url=url, status=status))

    def apply(self, plan: FaultPlan | Iterable[Fault | dict[str, Any]], *,
              report_unused: bool = True) -> None:
        """Add every fault of ``plan`` (a ``FaultPlan`` or a list of faults/dicts).

        ``report_unused=False`` leaves these rules out of the teardown report of rules
        that never fired (chaos mode's blanket rules use it).
        """
        for f in _faults_of(plan, "sim.faults.apply(plan=...)"):
            self._add(f, report=report_unused)

    def unused(self) -> list[Fault]:
        """Rules added by the test (not chaos) that never fired, in the order added."""
        return [f for f in self._reported if not self._fired.get(id(f))]

    def _unused_report(self, queues: Iterable[str] = ()) -> list[str]:
        """One line per rule that never fired, saying why when a named queue never existed."""
        from .validate import name_error

        known = list(queues)
        lines = []
        for f in self.unused():
            line = f.describe()
            if f.queue not in (None, "*") and f.queue not in known:
                shown = ", ".join(map(repr, known)) or "none"
                line += (f": queue {f.queue!r} never existed (queues: {shown})"
                         f"{name_error('', 'queue', f.queue, known)}")
            else:
                line += f": {f.point or 'its point'} was entered {self.calls(f.point or '')} " \
                        "time(s)" + (" while rules were healed" if self._healed else "")
            lines.append(line)
        return lines

    def clear(self) -> None:
        """Remove every rule (counters stay); removed rules are not reported as unused."""
        self._rules.clear()
        self._reported.clear()
        self._pending_after.clear()
        self._leave = _NOTHING_DUE.get
        self._latency = 0.0
        self._reopen()

    def heal(self) -> None:
        """Stop injecting: the second phase of an explored example."""
        self.healed = True

    @property
    def plan(self) -> FaultPlan:
        """The rules in force, as a ``FaultPlan`` (a ``latency`` rule is shown by ``latency``)."""
        return FaultPlan(self._rules)

    @property
    def latency(self) -> float:
        """The largest latency a service call may take (0: calls only yield)."""
        return self._latency

    def calls(self, point: str) -> int:
        """How many times ``point`` was entered so far."""
        return self._calls.get(point, 0)

    @staticmethod
    def _scope(queue: object, where: str) -> str | None:
        return None if queue is None else _check_queue_name(queue, where)

    def _add(self, fault: Fault, *, report: bool = True) -> Fault:
        if fault.kind == "latency":  # not a rule that fires: every call draws its latency
            self._latency = max(self._latency, fault.seconds)
            self._reopen()
            return fault
        self._rules.append(fault)
        self._reopen()
        if report:
            self._reported.append(fault)
        if fault.point == "http" and self._router is None:
            self._router = _start_http_router(self)
        return fault

    def _release(self) -> None:
        """Stop intercepting outbound HTTP (called when the simulation is disposed)."""
        router, self._router = self._router, None
        if router is not None:
            router.stop(quiet=True)

    def _http_rules(self, request: Any) -> Any:
        """Apply the ``http`` rules to ``request``: a response, an error, or ``None``."""
        import httpx

        url = str(request.url)
        bare = url.split("?", 1)[0]
        for rule in self._rules:
            if rule.kind != "http" or not (
                fnmatch.fnmatchcase(url, rule.url or "") or fnmatch.fnmatchcase(bare, rule.url or "")
            ):
                continue
            n = self._http_calls[id(rule)] = self._http_calls.get(id(rule), 0) + 1
            if not self._may_fire(rule, n):
                continue
            self._fire(rule, "http", method=request.method, url=url,
                       **({"status": rule.status} if rule.status else {"error": rule.error}))
            if rule.status is not None:
                return httpx.Response(rule.status, request=request,
                                      json={"error": "injected fault"},
                                      extensions={_RESPONSE_TAG: True})
            if rule.error == "timeout":
                raise _tag(httpx.ReadTimeout("injected timeout", request=request))
            raise _tag(httpx.ConnectError("injected connect error", request=request))
        return None

    async def _on_http_async(self, request: Any) -> Any:
        import httpx

        try:
            step = self._enter("http", call=True)
            if step is not None:
                await step
            self._leave("http")
        except (ConnectionError, TimeoutError) as exc:
            cls = httpx.ReadTimeout if isinstance(exc, TimeoutError) else httpx.ConnectError
            raise _tag(cls(str(exc) or type(exc).__name__, request=request)) from exc
        if self._off:
            return None
        return self._http_rules(request)

    @staticmethod
    def _check_seconds(value: float, where: str) -> float:
        from .validate import seconds

        out = seconds(value, where, "seconds")
        assert out is not None
        return out

    # -- hooks for services ------------------------------------------------------
    def _may_fire(self, rule: Fault, count: int) -> bool:
        if rule.on_call is not None and rule.on_call != count:
            return False
        return rule.times is None or rule.kind == "duplicate" or self._fired.get(id(rule), 0) < rule.times

    def _fire(self, rule: Fault, point: str, **detail: Any) -> None:
        self._fired[id(rule)] = self._fired.get(id(rule), 0) + 1
        self.injected += 1
        self._sim.history.record("fault", rule.kind, point=point, **detail,
                                 **({"queue": rule.queue} if rule.queue else {}))

    @staticmethod
    def _queue_matches(rule: Fault, queue: str | None) -> bool:
        return rule.queue is None or rule.queue == "*" or rule.queue == queue

    # -- the protocol services use: ``_enter`` before an operation, ``_leave`` after -------
    def _enter(self, point: str, queue: str | None = None, *,
               call: bool = False) -> Awaitable[None] | None:
        """A service reaches fault point ``point``, before its operation takes effect.

        ``None``: go straight on (no rule, latency or watcher in force, no crash due, and for
        ``call=True`` its yield would change nothing: ``VirtualEventLoop._yield_changes_nothing``);
        the call is counted. Otherwise an awaitable the service awaits before it applies the
        operation: it may raise (``fail``), wait (``delay``, ``hang``, latency, the yield of
        a ``call=True`` service call) or never return (``crash``). ``queue`` scopes the call
        to a queue's rules (default: the running attempt's queue).
        """
        if self._open and not self._sim._disposing:
            attempt = current_attempt.get()
            if attempt is None or not attempt.crashed:
                calls = self._calls
                calls[point] = calls.get(point, 0) + 1
                if not call:
                    return None
                loop = self._loop  # under run_sync the frame rule fails: the stepper gets the yield
                if loop is not None:
                    try:
                        caller = _getframe(2)  # the service method's caller: it must await the method
                    except ValueError:  # no Python frame below the service method
                        return _yield()
                    if loop._yield_changes_nothing(caller):
                        return None
                return _yield()
        return self._apply(point, queue, call)

    async def _apply(self, point: str, queue: str | None, call: bool) -> None:
        """``_enter`` when a rule, latency or watcher is in force: count the call, then apply them.

        ``call=True`` (a service call, a network round trip) first yields to the other ready
        tasks, after a latency drawn from ``sim.choices`` when a ``latency`` rule is on.
        """
        attempt = current_attempt.get()
        if self._sim._disposing:
            raise ProcessCrashed()
        if attempt is not None:
            if attempt.crashed:
                raise ProcessCrashed()
            queue = queue or attempt.queue
        count = self._calls[point] = self._calls.get(point, 0) + 1
        if point not in _registered and not point.startswith(PREFIXES):
            _registered[point] = None  # a point a service really passes is a known point
        if self._watch_fn is not None and attempt is not None:
            verdict: Any = self._watch_fn(point, attempt)
            if verdict is True:
                self._fire(Fault("crash", point, attempt.queue), point)
                await self._crash(attempt)
            elif verdict:  # an awaitable: the attempt waits here for it (an overlapping run)
                await verdict
        if call:
            lat = self._latency
            if lat and not self._off:
                step = self._sim.choices.integer(0, 1000, "latency")
                if _sync_call.get():  # a blocking client holds the loop: time passes, nothing else runs
                    self._sim.clock.advance_to(self._sim.clock.monotonic() + step * lat / 1000)
                else:
                    await (asyncio.sleep(step * lat / 1000) if step else suspend())
            elif not _sync_call.get():
                loop = self._loop
                if loop is None or not loop._yield_changes_nothing(_getframe(1)):
                    await _yield()
            if attempt is not None and attempt.crashed:
                raise ProcessCrashed()
        if not self._rules or self._off:
            return
        if attempt is not None and attempt.fail_next is not None and point != "queue.deliver":
            rule, attempt.fail_next = attempt.fail_next, None  # a pull attempt's fail-first
            assert isinstance(rule, Fault)
            self._fire(rule, point, error=rule.error)
            raise _make_error(rule.error or "")
        scoped = 0
        if queue is not None:
            key = (queue, point)
            scoped = self._scoped_calls[key] = self._scoped_calls.get(key, 0) + 1
        depth = 0
        if attempt is not None and point != "queue.deliver":
            depth = attempt.passed = attempt.passed + 1
            if depth > self._depth.get(attempt.queue, 0):
                self._depth[attempt.queue] = depth
        for rule in list(self._rules):
            if rule.kind == "duplicate":
                continue
            if rule.point == "*":  # chaos crash: a point drawn among those the attempt passes
                if rule.kind == "crash" and attempt is not None and depth and self._drawn_crash(
                        rule, attempt, point, depth):
                    self._fire(rule, point)
                    await self._crash(attempt)
                continue
            if rule.point != point:
                continue
            if rule.attempt is not None and (attempt is None or attempt.number != rule.attempt):
                continue
            if not self._queue_matches(rule, queue):
                continue
            n = scoped if rule.queue is not None else count
            if not self._may_fire(rule, n):
                continue
            if rule.kind in ("delay", "hang"):
                self._fire(rule, point, seconds=rule.seconds)
                if _sync_call.get():  # a blocking call holds the whole loop: time passes, nothing else runs
                    self._sim.clock.advance_to(self._sim.clock.monotonic() + (rule.seconds or 0.0))
                else:
                    await asyncio.sleep(rule.seconds)
            elif rule.kind == "fail":
                if rule.after_apply:
                    self._pending_after[point] = rule
                    self._leave = self._leave_due
                    continue
                self._fire(rule, point, error=rule.error)
                raise _make_error(rule.error or "")
            elif rule.kind == "crash" and attempt is not None:
                self._fire(rule, point)
                await self._crash(attempt)
            elif rule.kind == "reorder" and attempt is not None:  # pause before the handler
                pause = self._keyed_integer(0, 1000, "chaos.reorder", attempt.label) \
                    * rule.seconds / 1000
                if pause:
                    self._fire(rule, point, seconds=pause)
                    await asyncio.sleep(pause)

    def _drawn_crash(self, rule: Fault, attempt: Attempt, point: str, depth: int) -> bool:
        """Chaos ``crash``: does ``attempt`` die at its ``depth``-th point (``point``)?

        The attempt that first runs the handler (``rule.attempt``, 1 unless ``fail-first``
        took attempt 1) draws, at its first point, which of its points it dies at: uniformly
        among as many as the queue's attempts were seen to pass (``CRASH_DEPTH`` before any
        was seen). An attempt that returns before that point dies at its ack instead.
        """
        if not self._queue_matches(rule, attempt.queue):
            return False
        if rule.attempt is None:  # chaos: the first attempt of the message that got this far
            owner = self._crash_owner.setdefault((attempt.queue, attempt.message_id), attempt)
            if owner is not attempt:
                return False
        elif attempt.number != rule.attempt:
            return False
        if attempt.crash_at is None:
            known = self._depth.get(attempt.queue, 0)
            attempt.crash_at = self._keyed_integer(1, max(known, CRASH_DEPTH), "chaos.crash",
                                                  f"{attempt.queue}/{attempt.message_id}")
        return depth >= attempt.crash_at or (point == "queue.ack" and attempt.returning)

    def _arm_pull(self, attempt: Attempt) -> None:
        """A worker received a message (a pull attempt began): a ``fail`` rule at
        ``queue.deliver`` for this attempt number (chaos ``fail-first``) fails the worker's
        next service call, as a routed attempt fails before its handler runs."""
        if not self._rules or self.healed:
            return
        for rule in self._rules:
            if (rule.kind == "fail" and rule.point == "queue.deliver" and rule.attempt is not None
                    and rule.attempt == attempt.number and self._queue_matches(rule, attempt.queue)):
                attempt.fail_next = rule
                return

    def _keyed_integer(self, lo: int, hi: int, label: str, key: str) -> int:
        """A chaos draw for ``key`` (a message or attempt): from the seed and the key alone
        under a seeded simulation, so turning on another chaos mode (which draws too) does
        not change where this one acts; from ``sim.choices`` otherwise (exploration, replay)."""
        from .choices import SeededChoices

        if type(self._sim.choices) is SeededChoices:
            return random.Random(f"{self._sim.seed}/{label}/{key}").randint(lo, hi)
        return self._sim.choices.integer(lo, hi, label)

    @staticmethod
    def _mark_injected(exc: _E) -> _E:
        """Adapters' hook: mark an error they raise in place of an injected one (the chain
        to it may be cut by a library, as respx does) so ``bg.is_injected`` still sees it."""
        return _tag(exc)

    def _leave_due(self, point: str) -> None:
        """``_leave`` while an ``after_apply`` error is armed: a service left ``point`` after
        its operation took effect; raise the error armed there, if any."""
        rule = self._pending_after.pop(point, None)
        if not self._pending_after:
            self._leave = _NOTHING_DUE.get
        if rule is not None:
            self._fire(rule, point, error=rule.error, after_apply=True)
            raise _make_error(rule.error or "")

    def _run_sync(self, call: Coroutine[Any, Any, _T]) -> _T:
        """Run a service call to completion without suspending, for clients that block the loop.

        Some SDKs call blocking HTTP inside ``async def`` (agentuity's KV client): their
        adapter answers on the loop's thread, so the call cannot wait. Here a ``delay`` or
        ``hang`` fault moves the clock as a blocked loop would (nothing else runs meanwhile),
        a crash raises ``ProcessCrashed`` (the attempt is marked dead, so every later call
        in it raises too), and a bare yield (``sleep(0)``) just continues.
        """
        token = _sync_call.set(True)
        try:
            while True:
                try:
                    yielded = call.send(None)
                except StopIteration as done:
                    return cast(_T, done.value)
                if yielded is not None:
                    call.close()
                    raise RuntimeError(
                        f"run_sync(): the service call waited on {yielded!r}, which a blocking "
                        "client cannot do; this is a pytest-bgwork bug, please report it"
                    )
        finally:
            _sync_call.reset(token)

    def _deliveries(self, queue: str, publish_number: int, *, overlap: bool = False,
                   ordered: bool = False) -> int:
        """How many times the queue should deliver this message (1 unless duplicated).

        ``overlap=False`` counts the copies that follow each other's ack, ``True`` those
        that start together. ``ordered``: the message belongs to a group delivered one at a
        time (sqs-fifo); chaos ``overlap`` leaves it alone (the profile promises the group
        never runs twice at once), a rule the test added still applies.
        """
        if self._off:
            return 1
        total = 1
        for rule in self._rules:
            if overlap and ordered and not any(rule is r for r in self._reported):
                continue
            if rule.kind == "duplicate" and rule.overlap == overlap and self._queue_matches(
                    rule, queue) and (rule.on_call is None or rule.on_call == publish_number):
                self._fire(rule, "queue.publish", times=rule.times,
                           **({"overlap": True} if overlap else {}))
                total = max(total, rule.times or 2)
        return total

    async def _crash(self, attempt: Attempt) -> None:
        """Mark the attempt dead, tell whoever runs it, and never return."""
        attempt.crashed = True
        if attempt.crash_future is not None and not attempt.crash_future.done():
            attempt.crash_future.set_result(None)
        if _sync_call.get():  # a blocking call cannot park: unwind; later calls in it raise too
            raise ProcessCrashed()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None and hasattr(loop, "ignore_task"):
            loop.ignore_task(task)
            self._sim._frozen.append(task)
        await loop.create_future()  # the process is gone: this never resumes
        raise ProcessCrashed()  # pragma: no cover - unreachable



#: Never written: ``_NOTHING_DUE.get`` is ``FaultInjector._leave`` when no error is armed.
_NOTHING_DUE: dict[str, Fault] = {}

#: True while ``run_sync`` drives a service call for a client that blocks the loop.
_sync_call: contextvars.ContextVar[bool] = contextvars.ContextVar("bgwork_sync_call", default=False)

_in_async_handler: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bgwork_http_async", default=False
)


def _in_process(frame: types.FrameType | None) -> bool:
    """Whether the httpx client sending the request now sends it to an in-process app.

    respx answers at the client (``_transport_for_url``), before the transport: so look up
    the stack for the client's ``_send_single_request`` and at the transport it picked. An
    ``httpx.ASGITransport``/``WSGITransport``, or any transport holding an ``app`` (the
    adapters' ASGI transport), reaches no network.
    """
    import httpx

    while frame is not None:
        if frame.f_code.co_name == "_send_single_request":
            transport = frame.f_locals.get("transport")
            if transport is None:
                return False
            for inner in getattr(transport, "transports", (transport,)):
                if isinstance(inner, httpx.ASGITransport | httpx.WSGITransport) or (
                        not isinstance(inner, httpx.HTTPTransport | httpx.AsyncHTTPTransport
                                       | httpx.MockTransport)
                        and getattr(inner, "app", None) is not None):
                    return True
            return False
        frame = frame.f_back
    return False


def _start_http_router(injector: FaultInjector) -> Any:
    """A respx router at the front of httpx's transports that applies ``injector``'s rules.

    It answers only requests a rule fails, made while ``injector``'s simulation is current;
    anything else goes on to the next respx router (your own mocks) or the real transport.
    """
    import respx

    from . import context

    class _Router(respx.MockRouter):
        async def async_handler(self, request: Any) -> Any:
            token = _in_async_handler.set(True)
            try:
                return await super().async_handler(request)
            finally:
                _in_async_handler.reset(token)

    router = _Router(assert_all_called=False, assert_all_mocked=True, using="httpx")

    def others() -> bool:
        mocker = router.Mocker
        return mocker is not None and any(r is not router for r in mocker.routers)

    def decide(result: Any, request: Any) -> Any:
        # None: not ours; let the next respx router answer, else pass through to the network
        return result if result is not None else (None if others() else request)

    def side_effect(request: Any) -> Any:
        # queue deliveries to an in-process app are the platform's calls, not the app's; a
        # request to an in-process app (httpx.ASGITransport, adapters.asgi.transport) is not
        # outbound: the fault point ``http`` is the network
        if (context.active() is not injector._sim or request.url.host == "bgwork.invalid"
                or _in_process(_getframe(1))):
            return None if others() else request
        if _in_async_handler.get():
            async def run() -> Any:
                return decide(await injector._on_http_async(request), request)

            return run()
        return decide(None if injector._off else injector._http_rules(request), request)

    router.route().mock(side_effect=side_effect)
    router.start()
    mocker = router.Mocker
    if mocker is not None:  # go first, so a rule can fail a URL your own mocks answer
        mocker.routers.remove(router)
        mocker.routers.insert(0, router)
    return router
