"""``bg.explore``: search fault plans and schedules with Hypothesis for a failing check.

Each example gets a fresh ``Simulation`` whose every random choice is a Hypothesis
draw, so shrinking simplifies the schedule itself. An example has two phases: the
scenario and the work it started run with the fault plan on (until idle, at most
``FAULT_WINDOW`` virtual seconds); then faults heal, the simulation runs until idle,
and the checks judge safety and liveness. A failure is shrunk, run twice to
prove it deterministic, and raised with its seed, plan, timeline and replay token.

``explore`` is synchronous (each example runs on its own virtual loop through
``sim.run``): call it from a plain ``def test_...``, never ``await`` it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import hashlib
import inspect
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import hypothesis
import hypothesis.version
from freezegun import api as _fz
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Flaky, Frozen, StopTest

from ..core import context as _context
from ..core.choices import Choices
from ..core.clock import parse_start
from ..core.errors import BgworkError, CheckFailed, NotRunning, Stalled
from ..core.faults import LATENCY_MAX, Fault, FaultPlan, is_injected
from ..core.history import Event
from ..core.validate import seconds
from ..core.wallclock import wall_clock
from ..profiles import check_platform, current_test_platform
from ..simulation import Simulation
from ..strategies import _OFFSET, fault_plans, learned_points
from . import replay as _replay
from .checks import NothingToCheck, absence_ok, assert_no_task_errors
from .replay import ReplayChoices

__all__ = [
    "DEFAULT_CHECKS",
    "HEAL_TIME",
    "STATES",
    "ExplorationFailed",
    "ExploreCoverageWarning",
    "ExploreDatabaseWarning",
    "ExploreReport",
    "HypothesisChoices",
    "NonDeterministic",
    "database_key",
    "explore",
    "explore_test",
    "interesting_states",
    "set_budget",
]

Scenario = Callable[[Simulation], Awaitable[Any]]
Check = Callable[[Simulation], Any]

#: The interesting states a search should reach, and how the report names them.
STATES: dict[str, str] = {
    "redelivery_while_running": "a redelivery while an earlier attempt was still running",
    "dead_letter": "a dead letter",
    "crash_after_effect": "a crash after an effect",
    "stale_ack": "a stale ack",
}
DEFAULT_MAX_EXAMPLES = 200
#: Virtual seconds the work a scenario started runs with faults on before they heal.
FAULT_WINDOW = 3600.0
#: Virtual seconds recurring schedules run after the faults heal (``explore(heal_time=)``).
HEAL_TIME = 3600.0
#: Checks every exploration runs after the caller's own.
DEFAULT_CHECKS: tuple[Check, ...] = (assert_no_task_errors,)
_heal_time: contextvars.ContextVar[float] = contextvars.ContextVar("bgwork_heal_time",
                                                                  default=HEAL_TIME)
#: How an exception escaping the scenario is judged (``explore(scenario_errors=...)``):
#: ``"continue"`` records one caused by an injected fault as ``scenario.error`` and goes on;
#: ``"fail"`` fails the example on any.
SCENARIO_ERRORS = ("continue", "fail")
_scenario_errors: contextvars.ContextVar[str] = contextvars.ContextVar("bgwork_scenario_errors",
                                                                       default="continue")
_TIMELINE_LIMIT = 200
_NONDETERMINISM_CAUSES = (
    "wall-clock or timer reads the simulation does not drive (time.perf_counter in a thread, "
    "an external service)",
    "uuid.uuid4(), os.urandom() or the global `random` module instead of sim.random",
    "iteration over a set, or over a dict built from one, whose order changes between runs",
    "state kept between examples in module globals, caches or class attributes",
    "real I/O or threads whose timing decides what happens next",
)


class ExplorationFailed(CheckFailed):
    """``explore`` found an example that fails; the message has seed, plan, timeline, token."""

    def __init__(self, message: str, *, token: str, digest: str, plan: FaultPlan,
                 seed: int, error: BaseException, example: int = 0) -> None:
        super().__init__(message)
        self.example = example
        """The number of the first example that failed (before shrinking); 0 for a replay."""
        self.token = token
        """The replay token: ``@pytest.mark.bgwork(replay=token)`` runs this example again."""
        self.digest = digest
        """The failing run's history digest."""
        self.plan = plan
        """The fault plan of the failing example, shrunk."""
        self.seed = seed
        """The failing example's simulation seed."""
        self.error = error
        """What the example raised: a failed check or an error from the scenario."""


class NonDeterministic(CheckFailed):
    """The same example (seed, plan, choices) gave two different histories.

    When a failing example was found first, the message also holds that failure (its
    error, plan, timeline) and its replay token, also kept as ``token`` and ``error``.
    """

    token: str | None = None
    """The replay token of the failing example found first (``None``: none was)."""
    error: BaseException | None = None
    """That failing example's error (``None``: none was found)."""


class ExploreCoverageWarning(UserWarning):
    """An exploration never reached an interesting state, so it proved nothing about it."""


class ExploreDatabaseWarning(UserWarning):
    """The configured example database could not be reached; explore went on with the local one."""


@dataclass
class _Budget:
    """The run's exploration budget (``--bgwork-explore-budget``): a multiplier or wall seconds."""

    multiplier: float = 1.0
    seconds: float | None = None
    #: Explorations still expected in this run (collected tests that explore), counted down.
    remaining: int = 0
    spent: float = 0.0


_budget = _Budget()


def set_budget(multiplier: float = 1.0, seconds: float | None = None, explorations: int = 0) -> None:
    """Set the run's budget: ``multiplier`` scales every ``max_examples``; ``seconds`` of wall
    time are shared out evenly over the ``explorations`` expected (the plugin counts them)."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, int | float) or not multiplier > 0:
        raise ValueError(f"set_budget(multiplier=...) must be a number > 0; got {multiplier!r}")
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, int | float)
                                or not seconds > 0 or seconds == float("inf")):
        raise ValueError(f"set_budget(seconds=...) must be a finite number > 0 or None; got {seconds!r}")
    _budget.multiplier, _budget.seconds = float(multiplier), seconds
    _budget.remaining, _budget.spent = max(0, explorations), 0.0


def _qualified(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{_name(fn)}"


def database_key(scenario: Callable[..., Any], checks: Iterable[Callable[..., Any]] = ()) -> bytes:
    """The key under which failing plans are stored: the scenario's and checks' qualified names.

    Names, not source code: fixing the scenario or the app keeps the key, so the stored
    failure replays first and becomes a passing regression.
    """
    # DEFAULT_CHECKS run in every exploration: leave them out, so keys stay those of the
    # caller's own checks (and databases written before they existed still replay)
    names = "|".join([_qualified(scenario),
                      *(_qualified(c) for c in checks if c not in DEFAULT_CHECKS)])
    return b"bgwork.explore:" + hashlib.sha256(names.encode()).hexdigest()[:32].encode()


_reported_databases: set[str] = set()


def _describe_database(db: ExampleDatabase) -> str:
    """A URL-like name for a database (``redis://host:port/db`` for Redis)."""
    client = getattr(db, "redis", None)
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if isinstance(kwargs, dict) and "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return repr(db)


class _Resilient(ExampleDatabase):
    """The configured database, or the local directory database once it cannot be reached.

    An unreachable shared database (Redis down, no network in CI) is reported once per run,
    with its URL, as an ``ExploreDatabaseWarning``; the exploration goes on locally.
    """

    def __init__(self, db: ExampleDatabase) -> None:
        super().__init__()
        self._db = db
        self._url = _describe_database(db)
        self._local: ExampleDatabase | None = None
        if self._url in _reported_databases:  # known unreachable in this run: do not wait again
            self._local = self._local_database()

    @staticmethod
    def _local_database() -> ExampleDatabase:
        from hypothesis.configuration import storage_directory
        from hypothesis.database import DirectoryBasedExampleDatabase

        return DirectoryBasedExampleDatabase(str(storage_directory("examples")))

    def _fallback(self, exc: Exception) -> ExampleDatabase:
        if self._local is None:
            self._local = self._local_database()
            if self._url not in _reported_databases:
                _reported_databases.add(self._url)
                warnings.warn(ExploreDatabaseWarning(
                    f"bg.explore: the example database {self._url} cannot be reached "
                    f"({type(exc).__name__}: {exc}); going on with the local database "
                    f"{getattr(self._local, 'path', 'under .hypothesis/')}"), stacklevel=2)
        return self._local

    def _call(self, op: str, *args: Any) -> Any:
        # ``fetch`` may be a generator that only connects when iterated: drain it in here
        run = (lambda db: list(db.fetch(*args))) if op == "fetch" else (lambda db: getattr(db, op)(*args))
        if self._local is None:
            try:
                return run(self._db)
            except Exception as exc:  # any client error: connection refused, timeout, auth
                db = self._fallback(exc)
        else:
            db = self._local
        return run(db)

    def save(self, key: bytes, value: bytes) -> None:
        self._call("save", key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        fetched: list[bytes] = self._call("fetch", key)
        return fetched

    def delete(self, key: bytes, value: bytes) -> None:
        self._call("delete", key, value)

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self._call("move", src, dest, value)


_FLOATS = st.floats(0.0, 1.0, exclude_max=True)


@functools.lru_cache(maxsize=256)
def _integers(lo: int, hi: int) -> st.SearchStrategy[int]:
    # offset past any constant in the loaded modules' source: see ``strategies._OFFSET``
    return st.integers(_OFFSET + lo, _OFFSET + hi)


@functools.lru_cache(maxsize=256)
def _integer_draw(lo: int, hi: int) -> tuple[int, Callable[[Any], int]] | None:
    """The span label and ``do_draw`` of ``st.integers(lo, hi)``, for ``HypothesisChoices``."""
    try:
        from hypothesis.strategies._internal.lazy import unwrap_strategies

        inner: Any = cast(Any, unwrap_strategies)(_integers(lo, hi))
        inner.validate()
        return inner.label, inner.do_draw
    except Exception:  # another Hypothesis inside: take the public path
        return None


class HypothesisChoices:
    """Choices drawn from Hypothesis (``data.draw``): they shrink to the low end.

    ``values`` records every choice, for the replay token.
    """

    def __init__(self, data: st.DataObject) -> None:
        self._data = data
        # ``data.draw`` wraps each draw in a check that the strategy does not use the global
        # ``random`` (two ``Random.getstate()`` copies) and a description string, about a
        # third of a draw's cost; these strategies are ours, so draw from the underlying
        # ConjectureData: the same choices, hence the same examples and shrinking.
        conjecture = getattr(data, "conjecture_data", None)
        self._conjecture = conjecture if hasattr(conjecture, "start_span") else None
        self._draw_fast = getattr(conjecture, "draw", None)
        self.values: list[int | float] = []
        #: Each choice's kind of draw (its label), for a token keyed by kind.
        self.labels: list[str] = []
        # Latencies are drawn for as many service calls as the clean run passed points; later
        # calls (the retries a fault caused) take none. So a plan that causes more calls draws no
        # more choices than its neighbour: Hypothesis's mutations, which copy one example's
        # choices into another's, do not run out on exactly the plans that matter.
        learned = learned_points.get()
        self._latencies_left = sum(learned.values()) if learned else None
        #: Hypothesis ended this example (its choices ran out while shrinking): raise this
        #: from the test function once the simulation stops, so Hypothesis sees it.
        self.stopped: BaseException | None = None

    def _draw(self, strategy: st.SearchStrategy[Any], default: Any) -> Any:
        # Draws happen inside service tasks, where Hypothesis's StopTest would only kill
        # the task: note it, answer the unsurprising default, let the example wind down.
        if self.stopped is not None:
            return default
        try:
            if self._draw_fast is not None:
                return self._draw_fast(strategy)
            return self._data.draw(strategy)
        except (StopTest, Frozen) as exc:
            self.stopped = exc
            return default

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        if hi < lo:
            raise ValueError(f"integer(lo={lo}, hi={hi}): hi must be >= lo")
        if label == "latency" and self._latencies_left is not None:
            if self._latencies_left <= 0:
                self.values.append(lo)
                self.labels.append(label)
                return lo
            self._latencies_left -= 1
        value: int = lo
        if lo != hi and self.stopped is None:
            data, how = self._conjecture, _integer_draw(lo, hi)
            if data is None or how is None:
                value = self._draw(_integers(lo, hi), _OFFSET + lo) - _OFFSET
            else:
                # What ``ConjectureData.draw(st.integers(lo, hi))`` does for an unwrapped,
                # validated strategy: one span with its label around its ``do_draw``. The
                # same choices and spans, so the same examples and shrinking, without the
                # per-draw validation, unwrapping and timing (about 0.5 ms per example on a
                # scenario that draws a latency for each of ~35 service calls).
                span, do_draw = how
                try:
                    data.start_span(span)
                    try:
                        value = do_draw(data) - _OFFSET
                    finally:
                        data.stop_span()
                except (StopTest, Frozen) as exc:
                    self.stopped, value = exc, lo
        self.values.append(value)
        self.labels.append(label)
        return value

    def fraction(self, label: str = "") -> float:
        value: float = self._draw(_FLOATS, 0.0)
        self.values.append(value)
        self.labels.append(label)
        return value


def interesting_states(events: Iterable[Event]) -> set[str]:
    """Which of ``STATES`` a history shows (see ``STATES`` for their meaning)."""
    found: set[str] = set()
    running: dict[tuple[str, str], set[Any]] = {}
    with_effect: set[str] = set()
    for e in events:
        if e.service == "queue":
            d = e.detail
            key = (str(d.get("queue")), str(d.get("id")))
            n = d.get("attempt")
            if e.op == "deliver":
                if running.get(key):
                    found.add("redelivery_while_running")
                running.setdefault(key, set()).add(n)
            elif e.op in ("ack", "nack", "attempt_failed", "crashed"):
                running.get(key, set()).discard(n)
                if e.op == "ack" and d.get("stale"):
                    found.add("stale_ack")
                if e.op == "crashed" and f"{key[0]}/{key[1]}#{n}" in with_effect:
                    found.add("crash_after_effect")
            elif e.op == "dead_letter":
                found.add("dead_letter")
        elif e.service == "effect" and e.attempt:
            with_effect.add(e.attempt)
    return found


@dataclass
class ExploreReport:
    """What an exploration did: examples run, speed, interesting states reached, warnings."""

    scenario: str
    """The scenario's name (its function's qualified name)."""
    seed: int
    """The seed the exploration ran with (``bg.explore(seed=...)`` or the test's)."""
    examples: int = 0
    """Examples run, shrinking included."""
    seconds: float = 0.0
    """Real seconds the exploration took."""
    states: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    """Each interesting state (a key of ``STATES``) with how many examples reached it."""
    queue_traffic: bool = False
    """Whether any example published to a queue (else the queue states cannot apply)."""
    effects_seen: bool = False
    """Whether any example recorded an effect (else "a crash after an effect" cannot apply)."""
    warnings: list[str] = field(default_factory=list)
    """What the exploration warned about (a reachable state never reached, ...)."""
    replayed: bool = False
    """``True``: it replayed one token (``@pytest.mark.bgwork(replay=...)``), not a search."""
    first_failure_at: int = 0
    """The number of the first example that failed (0: none did)."""
    points: tuple[str, ...] = ()
    """The fault points a clean run of the scenario passed (what fault plans drew among)."""
    expected: tuple[str, ...] | None = None
    """The states the scenario declared it expects (``explore(expect_states=...)``), or None."""
    ingredients: set[str] = field(default_factory=set)
    """What the examples showed that states need (see ``_REACHABLE``)."""

    def reachable(self, state: str) -> bool:
        """Whether the scenario has what ``state`` needs (queue traffic; for a crash after an
        effect, an effect inside a queue attempt), so never reaching it is worth a warning."""
        return _REACHABLE[state] <= self.ingredients
    platform: str = "agentuity"
    """The platform every example's simulation models (its services' default profiles)."""
    scenario_errors: int = 0
    """Examples whose scenario saw an injected error (recorded as ``scenario.error``)."""

    @property
    def examples_per_second(self) -> float:
        """Examples run per real second (shrinking included)."""
        return self.examples / self.seconds if self.seconds > 0 else 0.0

    def reached(self, state: str) -> bool:
        """Whether at least one example reached ``state`` (a key of ``STATES``)."""
        if state not in STATES:
            raise KeyError(f"unknown state {state!r}; known: {', '.join(STATES)}")
        return self.states[state] > 0

    def summary(self) -> str:
        """A few lines: examples, speed, each state with how many examples reached it."""
        how = "replayed 1 example" if self.replayed else f"{self.examples} examples"
        lines = [f"bg.explore({self.scenario}): {how} in {self.seconds:.2f}s "
                 f"({self.examples_per_second:.0f}/s), seed {self.seed}"]
        for key, text in STATES.items():
            n = self.states[key]
            if not n and (not self.queue_traffic or (key == "crash_after_effect"
                                                     and not self.effects_seen)):
                lines.append(f"  n/a     {text} (the scenario "
                             + ("recorded no effect inside a queue attempt" if self.queue_traffic
                                else "used no queue") + ")")
                continue
            lines.append(f"  {'reached' if n else 'never  '} {text}" + (f" ({n} examples)" if n else ""))
        if self.scenario_errors:
            lines.append(f"  {self.scenario_errors} example(s): the scenario saw an injected error "
                         "(recorded as scenario.error; the example went on)")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


@dataclass
class _Outcome:
    error: BaseException | None
    phase: str
    events: list[Event]
    states: set[str]
    choices: list[int | float]
    queue_traffic: bool
    effects: bool
    #: The fault points the example passed, sorted, with how many calls each.
    points: dict[str, int] = field(default_factory=dict)
    #: Which ingredients of each state the example showed (see ``_REACHABLE``).
    ingredients: frozenset[str] = frozenset()
    #: The indexes of the plan's rules that fired in this example.
    fired: tuple[int, ...] = ()
    #: Each choice's kind of draw (its label), for a token keyed by kind.
    labels: list[str] = field(default_factory=list)
    #: Whether the scenario saw an injected error (``scenario.error``).
    scenario_error: bool = False


def _name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


async def _phases(sim: Simulation, scenario: Scenario, checks: Sequence[Check],
                  where: list[str], calls: dict[str, int], client_errors: list[str]) -> None:
    where[0] = "scenario"
    try:
        await scenario(sim)
    except Exception as exc:
        # The scenario is the world outside the system: a client that sees an injected error
        # is no bug of the system. Record it, and let the work already started go on.
        if _scenario_errors.get() == "fail" or not is_injected(exc):
            raise
        sim.history.record("scenario", "error", "fail", injected=True,
                           error=f"{type(exc).__name__}: {exc}")
        client_errors.append(type(exc).__name__)
    where[0] = "the scenario's work, faults on (run_until_idle)"
    with contextlib.suppress(Stalled):  # still busy after the fault window: heal and go on
        await sim.run_until_idle(max_time=FAULT_WINDOW)
    where[0] = "settle (faults healed, run_until_idle)"
    sim.faults.heal()
    await sim.run_until_idle()
    heal_time = _heal_time.get()
    if heal_time and _has_schedules(sim):
        # recurring schedules (a cron that recovers stuck work) run through the heal window
        where[0] = f"heal window ({heal_time:g}s of schedules, faults healed)"
        await sim.advance(heal_time)
        await sim.run_until_idle()
    calls.update(sim.faults._calls)  # the points the run passed, not those the checks read
    for check in checks:
        where[0] = f"check {_name(check)}"
        result = check(sim)
        if inspect.isawaitable(result):
            await result


#: The per-call latency every explored example draws (shrinking toward 0: plain yields).
LATENCY = Fault("latency", "*", seconds=LATENCY_MAX)


def _has_schedules(sim: Simulation) -> bool:
    """Whether a recurring timer (a schedule) is armed on the simulation's loop."""
    loop = sim.loop
    return any(not h.cancelled() for h in loop._recurring) and bool(loop._scheduled)


#: The default start instant, parsed once (every example's simulation starts there).
_START = parse_start(None)


class _DropLogs(logging.Filter):
    """A handler filter that drops every record: the logs of an example nobody will read."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


_DROP_LOGS = _DropLogs()


@contextlib.contextmanager
def _logs_shown(shown: bool) -> Iterator[None]:
    """Let the root logger's handlers (pytest's log capture) see this example's records or not.

    A search runs hundreds of examples, each logging its failed tasks' tracebacks: pytest
    would print every one of them under "Captured log call" (87,290 lines in one run). Only
    the example a failure reports (its final replay) keeps its logs.
    """
    if shown:
        yield
        return
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(_DROP_LOGS)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_DROP_LOGS)


def _run_example(scenario: Scenario, checks: Sequence[Check], seed: int, plan: FaultPlan,
                 choices: HypothesisChoices | ReplayChoices, keep_events: bool,
                 latency: bool = True, platform: str = "agentuity", logs: bool = False) -> _Outcome:
    with _logs_shown(logs):
        return _run_one(scenario, checks, seed, plan, choices, keep_events, latency, platform)


def _run_one(scenario: Scenario, checks: Sequence[Check], seed: int, plan: FaultPlan,
             choices: HypothesisChoices | ReplayChoices, keep_events: bool,
             latency: bool, platform: str) -> _Outcome:
    chooser: Choices = choices
    sim = Simulation(seed=seed, start=_START, choices=chooser, platform=platform)
    where = ["set-up"]
    calls: dict[str, int] = {}
    client_errors: list[str] = []
    error: BaseException | None = None
    try:
        sim.faults.apply(plan)
        if latency:
            sim.faults.apply([LATENCY])
        sim.run(_phases(sim, scenario, checks, where, calls, client_errors))
    except Exception as exc:
        error = exc
    finally:
        sim.close()
    events = sim.history.events
    ingredients = _ingredients(events)
    return _Outcome(error, where[0], events if (error is not None or keep_events) else [],
                    interesting_states(events) if "queue" in ingredients else set(),
                    list(choices.values), "queue" in ingredients, _AFTER_EFFECT in ingredients,
                    dict(sorted((calls or sim.faults._calls).items())), ingredients,
                    tuple(i for i, f in enumerate(plan) if sim.faults._fired.get(id(f))),
                    list(choices.labels), bool(client_errors))


#: A state is *reachable* when the scenario has what it needs: queue traffic, and for a
#: crash after an effect an effect recorded inside a queue attempt (not in the scenario).
_REACHABLE: dict[str, frozenset[str]] = {
    "redelivery_while_running": frozenset({"queue"}),
    "dead_letter": frozenset({"queue"}),
    "crash_after_effect": frozenset({"queue", "attempt_effect"}),
    "stale_ack": frozenset({"queue"}),
}


_AFTER_EFFECT = "attempt_effect"
_NONE: frozenset[str] = frozenset()
_QUEUE_ONLY = frozenset({"queue"})
_BOTH = frozenset({"queue", _AFTER_EFFECT})
_EFFECT_ONLY = frozenset({_AFTER_EFFECT})


def _ingredients(events: Iterable[Event]) -> frozenset[str]:
    """``queue`` if any queue event, ``attempt_effect`` if an effect recorded in an attempt."""
    queue = effect = False
    for e in events:
        service = e.service
        if service == "queue":
            queue = True
            if effect:
                break
        elif service == "effect" and e.attempt:
            effect = True
            if queue:
                break
    return (_BOTH if effect else _QUEUE_ONLY) if queue else (_EFFECT_ONLY if effect else _NONE)


def _digest(events: list[Event]) -> str:
    h = hashlib.sha256()
    for e in events:
        h.update(e.canonical().encode())
        h.update(b"\n")
    return h.hexdigest()


def _timeline(events: list[Event]) -> str:
    shown = events[-_TIMELINE_LIMIT:]
    lines = [f"... {len(events) - len(shown)} earlier event(s) not shown"] if len(shown) < len(
        events) else []
    lines += [e.render() for e in shown] or ["(no events)"]
    return "\n".join("  " + line for line in lines)


def _first_difference(a: list[Event], b: list[Event]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x.canonical() != y.canonical():
            return f"first difference at event #{i}:\n  run 1: {x.render()}\n  run 2: {y.render()}"
    return (f"run 1 has {len(a)} events, run 2 has {len(b)}; the longer one goes on with:\n  "
            + (a[len(b)] if len(a) > len(b) else b[len(a)]).render())


def _nondeterminism(report: ExploreReport, plan: FaultPlan, first: list[Event],
                    second: list[Event] | None,
                    failing: tuple[FaultPlan, _Outcome] | None = None) -> NonDeterministic:
    """The non-determinism report, with the first failing example and its token if any."""
    lines = [f"bg.explore({report.scenario}): the same example (seed {report.seed}, the same "
             "fault plan and choices) behaved differently when run again, so it cannot be shrunk "
             "or replayed."]
    if second is not None:
        lines.append(f"digests {_digest(first)[:16]} != {_digest(second)[:16]}; "
                     + _first_difference(first, second))
    else:
        lines.append("Hypothesis ran the failing example again and it did not fail the same way.")
    lines.append("fault plan:\n" + _indent(plan.describe()))
    lines.append("Likely causes in the code under test:")
    lines += [f"  - {cause}" for cause in _NONDETERMINISM_CAUSES]
    token = None
    if failing is not None:
        f_plan, f_out = failing
        token = _replay.encode(report.seed, f_plan, f_out.choices, scenario=report.scenario,
                               digest=_digest(f_out.events), labels=f_out.labels)
        lines.append(f"The first failing example (example {report.first_failure_at or '?'}, "
                     "before shrinking) failed so; its replay may not fail the same way again:")
        lines += [_indent(line) for line in _failure_lines(report, f_plan, f_out, token)]
        lines.append("  timeline:")
        lines.append(_indent(_timeline(f_out.events)))
        lines.append("  replay it with:")
        lines.append(f'    @pytest.mark.bgwork(replay="{token}")')
    out = NonDeterministic("\n".join(lines))
    out.token = token
    out.error = failing[1].error if failing is not None else None
    return out


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _settings(settings: hypothesis.settings | None, max_examples: int | None) -> hypothesis.settings:
    if max_examples is not None and (
        isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1
    ):
        raise ValueError(f"explore(max_examples=...) expects an int >= 1; got {max_examples!r}")
    if settings is not None and not isinstance(settings, hypothesis.settings):
        raise TypeError(
            f"explore(settings=...) expects a hypothesis.settings object, e.g. "
            f"settings(max_examples=500); got {settings!r}"
        )
    # The explain phase only adds notes to Hypothesis's own report, which explore replaces
    # with its own; it would rerun the failing example dozens of times for nothing.
    parent = settings if settings is not None else hypothesis.settings()  # the loaded profile
    phases = tuple(p for p in parent.phases if p is not hypothesis.Phase.explain)
    if max_examples is None:
        if settings is not None:
            max_examples = settings.max_examples
        elif (hypothesis.settings.get_current_profile_name() != "default"
              and parent.max_examples != hypothesis.settings.get_profile("default").max_examples):
            # a profile the user loaded that chose its own count; Hypothesis's own ``ci``
            # profile (loaded by itself when $CI is set) keeps the default 100, which must
            # not halve the search on CI only
            max_examples = parent.max_examples
        else:
            max_examples = DEFAULT_MAX_EXAMPLES
    max_examples = max(1, round(max_examples * _budget.multiplier))
    # Examples run on virtual time; a real-time deadline only measures machine load.
    return hypothesis.settings(
        parent,
        max_examples=max_examples,
        deadline=None,
        report_multiple_bugs=False,
        phases=phases,
    )


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep the garbage collector off the heap that existed before the exploration.

    Every example allocates thousands of short-lived objects, so full collections run
    often, and each one walked the whole process heap (pytest, Hypothesis, the app):
    ~25% of an exploration's CPU. ``gc.freeze()`` moves that older heap out of the
    collector's view for the duration; ``gc.unfreeze()`` gives it back. Left alone when
    the collector is off or something else froze the heap already.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _check_args(scenario: object, checks: object, faults: object, seed: object) -> list[Check]:
    if not inspect.iscoroutinefunction(scenario):
        raise TypeError(
            f"explore(scenario=...) expects an `async def scenario(sim)` function; got {scenario!r}"
        )
    if faults is not None and not isinstance(faults, st.SearchStrategy):
        raise TypeError(
            f"explore(faults=...) expects a strategy such as bgst.fault_plans(max_faults=3); "
            f"got {faults!r}"
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise TypeError(f"explore(seed=...) expects an int or None (>= 0); got {seed!r}")
    if callable(checks) or not isinstance(checks, Iterable):
        raise TypeError(
            "explore(checks=...) expects a list of checks, e.g. [bg.assert_nothing_lost]; "
            f"got {checks!r}"
        )
    out = list(checks)
    for check in out:
        if not callable(check):
            raise TypeError(f"explore(checks=...) expects callables taking `sim`; got {check!r}")
    out += [c for c in DEFAULT_CHECKS if c not in out]
    return out


def explore(
    scenario: Scenario,
    faults: st.SearchStrategy[FaultPlan] | None = None,
    checks: Iterable[Check] = (),
    max_examples: int | None = None,
    seed: int | None = None,
    settings: hypothesis.settings | None = None,
    expect_states: Iterable[str] | None = None,
    platform: str | None = None,
    heal_time: float = HEAL_TIME,
    scenario_errors: str = "continue",
) -> ExploreReport:
    """Search fault plans and schedules for an example where ``checks`` fail.

    ``scenario`` is ``async def scenario(sim)``; each example runs it on a fresh
    simulation with a plan drawn from ``faults`` (default: ``bgst.fault_plans()``, up to
    three faults at the points a clean run passes; ``faults=st.just(bg.FaultPlan())``
    explores interleavings only, without faults) and lets the work
    it started run until idle (at most an hour of virtual time) with faults on; then it
    heals, runs until idle, lets recurring schedules run for ``heal_time`` more virtual
    seconds (default an hour: a cron that recovers stuck work runs there), and calls each
    check with ``sim`` (async checks are awaited). ``DEFAULT_CHECKS``
    (``bg.assert_no_task_errors``) always run after ``checks``.
    ``max_examples`` wins over ``settings``; left out, it is ``settings.max_examples``
    when ``settings`` is given, else the loaded Hypothesis profile's, else 200. ``settings`` passes through (database,
    phases, verbosity...); the deadline is always off (examples run on virtual time). ``seed``
    fixes both the search and the simulations' seed and, like Hypothesis's ``@seed``,
    turns the example database off; without it the search is Hypothesis's own
    (``--hypothesis-seed``, ``derandomize``, the database apply) and the simulations'
    seed is 0. Returns an
    ``ExploreReport``; raises ``ExplorationFailed`` with a replay token on failure.
    ``platform`` picks the examples' default profiles (default: the platform of the test's
    ``bgwork`` simulation, else ``agentuity``).
    Synchronous: call it from a plain test function and do not ``await`` it.

    Before the search a clean run (no fault, no latency) runs the checks, which judge
    vacuity there once (a check whose effect name or namespace never appears is refused
    before the search, ``bg.NothingToCheck``; in faulty examples absence is no failure), and
    learns the fault points the scenario passes; ``bgst.fault_plans()`` without ``points=`` draws among those. Every
    example draws a latency (up to ``LATENCY_MAX``, shrinking to 0) for each service call,
    as many as the fault points the clean run passed; later calls (retries a fault caused)
    take none.
    ``ExploreCoverageWarning`` names the interesting states never reached that some example
    came close to (their ingredients seen); ``expect_states=[...]`` (keys of ``STATES``)
    declares which the scenario must reach instead, and warns for exactly those.

    ``scenario_errors``: an exception escaping ``scenario`` that an injected fault caused
    (the injected error, or one whose ``__cause__``/``__context__`` chain holds it) is a
    client seeing an error, not a bug: with ``"continue"`` (the default) it is recorded as
    ``scenario.error`` (``injected=True``) and the example goes on (the work already
    started runs, the heal phase, the checks); any other exception fails the example.
    ``"fail"`` fails the example on every exception that escapes the scenario.
    """
    __tracebackhide__ = True
    check_list = _check_args(scenario, checks, faults, seed)
    errors_mode = _check_scenario_errors(scenario_errors, "explore")
    expected = _check_states(expect_states)
    chosen = _settings(settings, max_examples)
    heal = seconds(heal_time, "explore", "heal_time", fix="Use 0 to skip the heal window.")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise BgworkError(
            "bg.explore() is synchronous and runs each example on its own virtual loop: call it "
            "from a plain `def test_...` (not `async def`), and do not await it"
        )
    name = _name(scenario)
    sim_seed = seed if seed is not None else 0
    plans = faults if faults is not None else fault_plans()
    report = ExploreReport(scenario=name, seed=sim_seed, expected=expected,
                           platform=_platform(platform))
    token = _replay.active()
    if chosen.database is not None:
        chosen = hypothesis.settings(chosen, database=_Resilient(chosen.database))
    wall_clock.start()
    started = _fz.real_perf_counter()
    heal_token = _heal_time.set(heal or 0.0)
    errors_token = _scenario_errors.set(errors_mode)
    absence_token = absence_ok.set(True)  # judged once, on the clean run (``_learn``)
    try:
        with _heap_frozen():
            if token is not None and token.scenario == name:
                _replay.mark_replayed(name)
                _replay_one(scenario, check_list, token, report)
            else:
                token_var = learned_points.set(_learn(scenario, sim_seed, report, check_list))
                try:
                    if _budget.seconds is None:
                        _search(scenario, check_list, plans, chosen, seed, report)
                    else:
                        _search_for_a_while(scenario, check_list, plans, chosen, seed, report,
                                            started)
                finally:
                    learned_points.reset(token_var)
    finally:
        absence_ok.reset(absence_token)
        _scenario_errors.reset(errors_token)
        _heal_time.reset(heal_token)
        report.seconds = _fz.real_perf_counter() - started
        wall_clock.stop()
    _warn_coverage(report)
    return report


def _check_scenario_errors(value: object, where: str) -> str:
    if not isinstance(value, str) or value not in SCENARIO_ERRORS:
        raise ValueError(
            f"{where}(scenario_errors=...) must be one of {', '.join(map(repr, SCENARIO_ERRORS))}; "
            f"got {value!r}. 'continue' (the default) records an error an injected fault caused "
            "as scenario.error and goes on; 'fail' fails the example on any scenario error.")
    return value


def _check_states(states: Iterable[str] | None) -> tuple[str, ...] | None:
    if states is None:
        return None
    if isinstance(states, str) or not isinstance(states, Iterable):
        raise TypeError(f"explore(expect_states=...) expects a list of state names such as "
                        f"['dead_letter']; got {states!r}")
    out = tuple(states)
    unknown = [s for s in out if s not in STATES]
    if unknown:
        raise ValueError(f"explore(expect_states=...): unknown state(s) {unknown!r}; known: "
                         f"{', '.join(STATES)}. Leave it out to warn for every state the search "
                         "came close to.")
    return out


def _learn(scenario: Scenario, seed: int, report: ExploreReport,
           checks: Sequence[Check] = ()) -> dict[str, int] | None:
    """The fault points a clean run of ``scenario`` passes (no fault, no latency).

    The checks judge vacuity there, once: a check given a name or namespace that never
    appears in the clean run could only pass vacuously, so it is refused before the search
    (in the faulty examples, a name a fault kept from appearing is no failure).
    """
    __tracebackhide__ = True
    strict = absence_ok.set(False)
    try:
        clean = _run_example(scenario, checks, seed, FaultPlan(), ReplayChoices(()),
                             keep_events=False, latency=False, platform=report.platform)
    finally:
        absence_ok.reset(strict)
    if isinstance(clean.error, NothingToCheck):
        raise NothingToCheck(
            f"bg.explore({report.scenario}): refused before the search: on the clean run (no "
            f"faults) {clean.phase} found nothing to check, so no example could test it:\n"
            f"{clean.error}") from None
    report.points = tuple(clean.points)
    return clean.points or None


def _platform(platform: str | None, where: str = "explore") -> str:
    """``platform``, checked; else the current test simulation's; else the running test's
    (its marker, ``--bgwork-platform``, ini ``bgwork_platform``); else ``agentuity``."""
    if platform is not None:
        return check_platform(platform, f"{where}(platform=...)")
    try:
        return _context.current().platform
    except NotRunning:  # no simulation runs this test
        return current_test_platform.get() or "agentuity"


def explore_test(
    scenario: Scenario,
    faults: st.SearchStrategy[FaultPlan] | None = None,
    checks: Iterable[Check] = (),
    max_examples: int | None = None,
    seed: int | None = None,
    settings: hypothesis.settings | None = None,
    platform: str | None = None,
    heal_time: float = HEAL_TIME,
    scenario_errors: str = "continue",
) -> Callable[[], None]:
    """``bg.explore`` as a Hypothesis test function, for pytest and for HypoFuzz.

    ``faults`` left out draws ``bgst.fault_plans()``, as in ``explore``.

    ``test_reports_fuzz = bg.explore_test(scenario, faults=..., checks=[...])`` at module
    level is collected by pytest like any test (it runs ``max_examples`` examples, with the
    same settings, database key and failure report as ``explore``) and found by
    ``hypothesis fuzz``, which then searches the same fault plans for hours with coverage
    guidance. The example database is shared with ``explore`` of the same scenario and checks.
    ``platform`` picks the examples' default profiles; left out, it is the running test's
    (``@pytest.mark.bgwork(platform=...)``, ``--bgwork-platform``, ini ``bgwork_platform``),
    else ``agentuity``.
    """
    check_list = _check_args(scenario, checks, faults, seed)
    errors_mode = _check_scenario_errors(scenario_errors, "explore_test")
    chosen = _settings(settings, max_examples)
    heal = seconds(heal_time, "explore_test", "heal_time", fix="Use 0 to skip the heal window.")
    name = _name(scenario)
    plans = faults if faults is not None else fault_plans()
    if platform is not None:
        check_platform(platform, "explore_test(platform=...)")
    report = ExploreReport(scenario=name, seed=seed if seed is not None else 0)

    def example(plan: FaultPlan, data: st.DataObject) -> None:
        __tracebackhide__ = True
        choices = HypothesisChoices(data)
        heal_token = _heal_time.set(heal or 0.0)  # here, not in test(): HypoFuzz calls given
        errors_token = _scenario_errors.set(errors_mode)
        absence_token = absence_ok.set(True)  # judged once, on the clean run (``_learn``)
        try:
            out = _run_example(scenario, check_list, report.seed, plan, choices,
                               keep_events=False, platform=report.platform)
            if choices.stopped is not None:
                raise choices.stopped
            _tally(report, out)
            if out.error is not None:
                report.first_failure_at = report.first_failure_at or report.examples
                _fail(scenario, check_list, report, plan, out, replayed=False)
        finally:
            absence_ok.reset(absence_token)
            _scenario_errors.reset(errors_token)
            _heal_time.reset(heal_token)

    ident = getattr(scenario, "__name__", "scenario")
    example.__name__ = example.__qualname__ = f"explore_{ident}"
    example.__module__ = getattr(scenario, "__module__", __name__)
    given = chosen(hypothesis.given(plan=plans, data=st.data())(example))
    if seed is not None:
        given = hypothesis.seed(seed)(given)
    given._hypothesis_internal_database_key = database_key(scenario, check_list)  # type: ignore[attr-defined]

    @functools.wraps(given)
    def test() -> None:
        __tracebackhide__ = True
        report.examples = report.first_failure_at = 0
        # resolved when the test runs: its marker, --bgwork-platform or ini bgwork_platform
        report.platform = _platform(platform, "explore_test")
        wall_clock.start()  # once per run, not per example (HypoFuzz calls ``given`` directly)
        try:
            token_var = learned_points.set(_learn(scenario, report.seed, report, check_list))
            try:
                with _heap_frozen():
                    given()
            finally:
                learned_points.reset(token_var)
        finally:
            wall_clock.stop()

    test.__name__ = test.__qualname__ = f"test_explore_{ident}"
    del test.__wrapped__  # pytest would read the signature of ``given`` (plan, data) as fixtures
    test._bgwork_explores = True  # type: ignore[attr-defined]
    return test

def _search_for_a_while(scenario: Scenario, checks: list[Check], plans: st.SearchStrategy[FaultPlan],
                        settings: hypothesis.settings, seed: int | None, report: ExploreReport,
                        started: float) -> None:
    """Rounds of ``_search`` until this exploration's share of the wall-time budget is spent.

    The share is what is left of the budget over the explorations still expected; each
    round is a fresh Hypothesis search (a derived seed when ``seed`` is given), so rounds
    do not repeat each other, and the database replays known failures first in each.
    """
    __tracebackhide__ = True
    assert _budget.seconds is not None
    share = max(0.0, _budget.seconds - _budget.spent) / max(1, _budget.remaining)
    try:
        for round_ in range(1_000_000):
            _search(scenario, checks, plans, settings, None if seed is None else seed + round_, report)
            if _fz.real_perf_counter() - started >= share:
                break
    finally:
        _budget.spent += _fz.real_perf_counter() - started
        _budget.remaining = max(0, _budget.remaining - 1)


def _replay_one(scenario: Scenario, checks: list[Check], token: _replay.Replay,
                report: ExploreReport) -> None:
    __tracebackhide__ = True
    report.replayed = True
    report.seed = token.seed
    choices = ReplayChoices.of(token)
    out = _run_example(scenario, checks, token.seed, token.plan, choices, keep_events=True,
                       platform=report.platform)
    _tally(report, out)
    if choices.mismatch is not None:  # another version's draws: refuse, never NonDeterministic
        from .. import __version__

        raise _replay.ReplayRefused(
            f"bg.explore({report.scenario}): the replay token was recorded by "
            f"{_replay.recorded_by(token)}, which drew its choices differently from this "
            f"version ({__version__}): {choices.mismatch}. Nothing was judged. Record a fresh "
            f"token: run this test without the replay marker and with --bgwork-seed={token.seed} "
            f"(or bg.explore(..., seed={token.seed})), then put the token it prints in "
            "@pytest.mark.bgwork(replay=...).")
    notes: list[str] = []
    if token.digest is not None and _digest(out.events)[:16] != token.digest:
        notes.append(
            f"this replay's history (digest {_digest(out.events)[:16]}) differs from the one "
            f"recorded by {_replay.recorded_by(token)} (digest {token.digest}): the code or "
            "pytest-bgwork changed since the token was made, so this run is the same plan and "
            "choices, not the recorded run; explore again for a fresh token")
    if not choices.exhausted:
        notes.append(
            "the replay used fewer choices than the token recorded: the code changed since the "
            "token was made, so this run is not the recorded one; explore again for a fresh token"
        )
    report.warnings += notes
    if out.error is not None:
        _fail(scenario, checks, report, token.plan, out, replayed=True, notes=notes)


def _tally(report: ExploreReport, out: _Outcome) -> None:
    report.examples += 1
    report.queue_traffic = report.queue_traffic or out.queue_traffic
    report.effects_seen = report.effects_seen or out.effects
    report.ingredients |= out.ingredients
    for state in out.states:
        report.states[state] += 1
    report.scenario_errors += out.scenario_error


def _draw_plan(data: st.DataObject, plans: st.SearchStrategy[FaultPlan]) -> FaultPlan:
    """``data.draw(plans)``, without its global-``random`` audit except on the final replay.

    The audit copies the global ``random`` state twice per draw; every example runs under
    Hypothesis's seeded global ``random`` either way. The final replay of a failure takes
    the public path, so the failure's notes still say which plan it drew. The same
    choices either way, hence the same examples.
    """
    conjecture = getattr(data, "conjecture_data", None)
    if conjecture is None or _final():
        plan: FaultPlan = data.draw(plans, label="fault plan")
    else:
        plan = conjecture.draw(plans, observe_as="generate:Draw 1 (fault plan)")
    return plan


def _final() -> bool:
    """Whether Hypothesis is replaying its final (reported) example."""
    try:
        return bool(current_build_context().is_final)
    except hypothesis.errors.InvalidArgument:  # no build context: not under Hypothesis
        return True


def _search(scenario: Scenario, checks: list[Check], plans: st.SearchStrategy[FaultPlan],
            settings: hypothesis.settings, seed: int | None, report: ExploreReport) -> None:
    __tracebackhide__ = True
    failures: list[tuple[FaultPlan, _Outcome]] = []
    #: The first failing example (before shrinking): reported even if shrinking then meets
    #: non-determinism.
    first: list[tuple[FaultPlan, _Outcome]] = []

    def run(data: st.DataObject) -> None:
        plan = _draw_plan(data, plans)
        choices = HypothesisChoices(data)
        out = _run_example(scenario, checks, report.seed, plan, choices, keep_events=False,
                           platform=report.platform)
        if choices.stopped is not None:
            raise choices.stopped
        _tally(report, out)
        if out.error is not None:
            report.first_failure_at = report.first_failure_at or report.examples
            failures.append((plan, out))
            del failures[:-1]
            if not first:
                first.append((plan, out))
            raise out.error

    key = database_key(scenario, checks)
    try:
        if _engine_ok(settings):
            _run_engine(run, settings, seed, key)
        else:
            test = hypothesis.given(st.data())(run)
            test = settings(test)
            if seed is not None:
                test = hypothesis.seed(seed)(test)
            test._hypothesis_internal_database_key = key  # type: ignore[attr-defined]
            test()
    except Flaky:
        if failures:
            plan, out = failures[-1]
            raise _nondeterminism(report, plan, out.events, None,
                                  first[0] if first else None) from None
        raise
    except Exception as exc:
        if not failures or failures[-1][1].error is not exc:
            raise
        plan, out = failures[-1]
        _fail(scenario, checks, report, plan, out, replayed=False,
              first=first[0] if first else None)


#: The Hypothesis versions the engine path was run on (inclusive): the test suite, the
#: examples and ``bench/digests.py`` through both paths, on each bound. It drives private
#: internals that change without notice, so any other version, older or newer, takes
#: ``@given``: correct, only slower. See ``_engine``.
ENGINE_TESTED = ((6, 157, 0), (6, 170, 17))


def _engine_ok(settings: hypothesis.settings) -> bool:
    """Whether ``_run_engine`` may drive this search (else ``@given`` does, for its output).

    Only a Hypothesis in ``ENGINE_TESTED`` does; verbose runs print each example,
    observability and other backends need ``@given``'s own bookkeeping; any Hypothesis
    without the internals ``_run_engine`` uses falls back too.
    """
    low, high = ENGINE_TESTED
    if not low <= tuple(hypothesis.version.__version_info__[:3]) <= high:
        return False
    if (settings.verbosity > hypothesis.Verbosity.normal
            or getattr(settings, "backend", "hypothesis") != "hypothesis"):
        return False
    try:
        from hypothesis.internal.observability import observability_enabled

        from . import _engine  # noqa: F401  (the internals it needs are importable)
    except (ImportError, AttributeError):  # a Hypothesis that renamed an internal
        return False
    return not observability_enabled()


def _run_engine(run: Callable[[st.DataObject], None], settings: hypothesis.settings,
                seed: int | None, key: bytes) -> None:
    """Run ``run`` as ``@given(st.data())`` would, on Hypothesis's engine directly."""
    __tracebackhide__ = True
    from . import _engine

    _engine.run(run, settings, seed, key)


def _same_failure(a: _Outcome, b: _Outcome) -> bool:
    """Whether two outcomes failed the same way: the same phase, the same type of error."""
    return (a.error is not None and b.error is not None and a.phase == b.phase
            and type(a.error) is type(b.error))


def _fired_only(scenario: Scenario, checks: list[Check], report: ExploreReport, plan: FaultPlan,
                out: _Outcome) -> tuple[FaultPlan, _Outcome]:
    """The plan without the rules that never fired, if the example still fails the same way.

    Shrinking keeps a rule whose deletion Hypothesis did not try or whose draws it could not
    spare; a report naming it would blame a fault that never happened. Re-verified: the
    smaller plan is kept only when it fails in the same phase with the same type of error.
    """
    if len(out.fired) == len(plan):
        return plan, out
    fewer = FaultPlan([f for i, f in enumerate(plan) if i in out.fired])
    trial = _run_example(scenario, checks, report.seed, fewer, ReplayChoices(out.choices),
                         keep_events=True, platform=report.platform)
    if _same_failure(trial, out):
        return fewer, trial
    return plan, out


def _describe_plan(plan: FaultPlan, fired: Sequence[int]) -> str:
    """The plan, one rule a line, each rule that never fired in this example said so."""
    if not plan.faults:
        return "no faults"
    return "\n".join(f"{i + 1}. {f.describe()}" + ("" if i in fired else " (never fired)")
                     for i, f in enumerate(plan))


def _failure_lines(report: ExploreReport, plan: FaultPlan, out: _Outcome, token: str) -> list[str]:
    """What failed, where, with which seed, plan and choices (the body of every failure)."""
    error = out.error
    what = str(error) if isinstance(error, CheckFailed) else f"{type(error).__name__}: {error}"
    non_default = sum(1 for v in out.choices if v)
    return [
        f"failed in: {out.phase}",
        _indent(what),
        f"seed: {report.seed}",
        "fault plan:",
        _indent(_describe_plan(plan, out.fired)),
        f"choices: {len(out.choices)} drawn, {non_default} away from the default",
    ]


def _fail(scenario: Scenario, checks: list[Check], report: ExploreReport, plan: FaultPlan,
          out: _Outcome, *, replayed: bool, first: tuple[FaultPlan, _Outcome] | None = None,
          notes: Sequence[str] = ()) -> None:
    __tracebackhide__ = True
    assert out.error is not None
    if not replayed:
        plan, out = _fired_only(scenario, checks, report, plan, out)
    again = _run_example(scenario, checks, report.seed, plan, ReplayChoices(out.choices),
                         keep_events=True, platform=report.platform, logs=True)  # the final replay
    first_digest = _digest(out.events)
    token = _replay.encode(report.seed, plan, out.choices, scenario=report.scenario,
                           digest=first_digest, labels=out.labels)
    if _digest(again.events) != first_digest:
        raise _nondeterminism(report, plan, out.events, again.events, first or (plan, out))
    error = out.error
    assert error is not None
    head = ("replayed the example from the token" if replayed
            else f"found a failing example at example {report.first_failure_at} "
                 f"({report.examples} run in all, shrinking included), shrunk to "
                 f"{len(plan)} fault{'s' if len(plan) != 1 else ''}")
    message = "\n".join([
        f"bg.explore({report.scenario}): {head}.",
        *(f"note: {note}" for note in notes),
        *_failure_lines(report, plan, out, token),
        f"timeline (digest {first_digest[:16]}, identical on a second run):",
        _timeline(out.events),
        "replay it exactly with:",
        f'  @pytest.mark.bgwork(replay="{token}")',
    ])
    failure = ExplorationFailed(message, token=token, digest=first_digest, plan=plan,
                                seed=report.seed, error=error,
                                example=0 if replayed else report.first_failure_at)
    if isinstance(error, CheckFailed):
        raise failure from None
    raise failure from error


def _warn_coverage(report: ExploreReport) -> None:
    if report.replayed:
        return
    if report.expected is not None:
        missing = [STATES[key] for key in report.expected if not report.states[key]]
    elif not report.queue_traffic:
        return
    else:
        missing = [text for key, text in STATES.items()
                   if not report.states[key] and report.reachable(key)]
    if missing:
        text = (f"bg.explore({report.scenario}) never reached: {'; '.join(missing)}. "
                "A search that never got there proved nothing about it: widen the fault plans "
                "(kinds=, points=, max_faults=) or raise max_examples.")
        report.warnings.append(text)
        warnings.warn(ExploreCoverageWarning(text), stacklevel=3)
