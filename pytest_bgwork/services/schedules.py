"""Schedules: cron jobs fired by the simulation's virtual wall clock (UTC).

``sim.schedules.create("nightly", cron="0 2 * * *", handler=fn)`` (or ``app=`` +
``path=``, or ``url=``) arms a recurring timer that ``run_until_idle()`` does not wait
for; each instant starts a run, recorded in ``runs(name)``. A failed run is recorded
and the schedule goes on. Runs overlap by default (``overlap="allow"``), as production
crons do, so a test can catch a job that double-runs; ``overlap="skip"`` records the
skipped instant instead.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextvars
import copy
import datetime as _dt
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from croniter import croniter

from .webhooks import ASGIApp, _check_app_target, _client_for

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["FIELDS", "OUTCOMES", "OVERLAP", "Run", "Schedule", "Schedules"]

#: What ``overlap=`` accepts: start a run while the last one still goes, or skip it.
OVERLAP = ("allow", "skip")
#: A run's ``outcome``: ``running`` until it ends, then ok / failed / skipped / cancelled.
OUTCOMES = ("running", "ok", "failed", "skipped", "cancelled")
#: The five cron fields, in order, with the values each takes.
FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 (0 and 7 are Sunday) or SUN-SAT"),
)
_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


@dataclass
class Run:
    """One instant of a schedule: when it was due, when it ran, and how it ended.

    ``overlapped`` is true when the run started while an earlier run of the same
    schedule was still going; ``status`` is the HTTP status for app/url schedules.
    """

    id: str
    schedule: str
    scheduled_at: _dt.datetime
    started_at: _dt.datetime | None = None
    finished_at: _dt.datetime | None = None
    outcome: str = "running"
    error: str | None = None
    status: int | None = None
    overlapped: bool = False

    def _copy(self) -> Run:
        """A shallow copy, as ``copy.copy`` makes it (a handler's ``Run`` is its own), ~10x faster."""
        twin = object.__new__(Run)
        twin.__dict__.update(self.__dict__)
        return twin


@dataclass(frozen=True)
class Schedule:
    """A schedule as it stands: its cron text, overlap policy, pause state and next instant."""

    name: str
    cron: str
    overlap: str
    paused: bool
    next_at: _dt.datetime | None
    target: str


@dataclass(eq=False)
class _Entry:
    name: str
    cron: str
    overlap: str
    target: str
    handler: Callable[..., Any] | None = None
    pass_run: bool = False
    app: ASGIApp | None = None
    url: str | None = None
    method: str = "POST"
    paused: bool = False
    next_at: _dt.datetime | None = None
    timer: asyncio.TimerHandle | None = None
    active: int = 0
    runs: builtins.list[Run] = field(default_factory=builtins.list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    #: The cron text parsed once (``_Instants``), on the first arming.
    instants: _Instants | None = None


class _Instants:
    """A cron schedule's instants: croniter's ``get_next``, parsed once, with a fast step.

    croniter parses the cron text in its constructor (about half the cost of a new
    ``croniter(cron, t).get_next()``), so one is kept per schedule. From an instant of the
    schedule itself, the next one in the same hour is the next listed minute: hour, day,
    month and weekday all matched already, so nothing in between can match (and croniter
    agrees: ``tests/test_schedules_instants.py``). That step is a ``bisect``
    and a ``replace``; every other next instant (a new hour, or after an arbitrary time:
    create, resume) is croniter's.
    """

    __slots__ = ("_iter", "_minutes")

    def __init__(self, cron: str, start: _dt.datetime) -> None:
        self._iter = croniter(cron, start)
        minute: builtins.list[Any] = builtins.list(self._iter.expanded[0])  # ["*"] or ints
        self._minutes: tuple[int, ...] | None = None
        if len(self._iter.expanded) == 5:  # no seconds field
            if minute == ["*"]:
                self._minutes = tuple(range(60))
            elif all(type(m) is int for m in minute):
                self._minutes = tuple(sorted(set(minute)))

    def after(self, when: _dt.datetime, *, on_instant: bool = False) -> _dt.datetime:
        """The first instant strictly after ``when`` (``on_instant``: ``when`` is one of them)."""
        minutes = self._minutes
        if on_instant and minutes is not None:
            i = bisect.bisect_right(minutes, when.minute)
            if i < len(minutes):
                return when.replace(minute=minutes[i])
        nxt: _dt.datetime = self._iter.get_next(_dt.datetime, start_time=when)
        return nxt


def _epoch(when: _dt.datetime) -> float:
    return (when - _EPOCH).total_seconds()


def _check_cron(cron: object, start: _dt.datetime) -> str:
    """Validate 5-field cron text (or an @alias); the error names the field at fault."""
    if not isinstance(cron, str):
        raise TypeError(f"cron= takes cron text such as '0 2 * * *'; got {type(cron).__name__}")
    text = " ".join(cron.split())
    if text.startswith("@"):
        if text.lower() not in _ALIASES:
            raise ValueError(f"cron= alias {cron!r} is unknown; use one of {', '.join(_ALIASES)}")
        return text.lower()
    parts = text.split(" ") if text else []
    if len(parts) != 5:
        names = " ".join(name for name, _ in FIELDS)
        raise ValueError(
            f"cron= needs 5 fields ({names}) or an @alias such as @daily; got {len(parts)} "
            f"field(s) in {cron!r}"
        )
    for i, (name, allowed) in enumerate(FIELDS):
        probe = ["*"] * 5
        probe[i] = parts[i]
        try:
            croniter(" ".join(probe), start)
        except (ValueError, KeyError) as exc:
            raise ValueError(
                f"cron= {cron!r}: the {name} field {parts[i]!r} is not valid (allowed: {allowed}, "
                f"lists a,b, ranges a-b and steps */n); croniter says: {exc}"
            ) from None
    try:
        croniter(text, start).get_next(_dt.datetime)
    except (ValueError, KeyError) as exc:
        raise ValueError(
            f"cron= {cron!r} never matches a real date (e.g. February 30); croniter says: {exc}"
        ) from None
    return text


def _takes_run(handler: Callable[..., Any]) -> bool:
    """True if ``handler`` wants the ``Run`` (one positional parameter), False if zero-arg."""
    try:
        params = builtins.list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in params if p.default is p.empty and p.kind in positional]
    keyword_only = [p for p in params if p.default is p.empty and p.kind is p.KEYWORD_ONLY]
    if len(required) > 1 or keyword_only:
        raise TypeError(
            f"handler= must be `async def handler(run)` or `async def handler()`; "
            f"{getattr(handler, '__qualname__', handler)!r} requires "
            f"{', '.join(p.name for p in required + keyword_only)}"
        )
    return bool(required) or any(p.kind is p.VAR_POSITIONAL for p in params)


class Schedules:
    """``sim.schedules``: cron jobs on virtual time; each is fault point ``schedule.<name>``."""

    OVERLAP = OVERLAP
    """The ``overlap=`` values: ``"allow"`` a run to start while the last still runs, or
    ``"skip"`` that instant."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._entries: dict[str, _Entry] = {}

    # -- defining ----------------------------------------------------------------------
    def create(
        self,
        name: str,
        cron: str,
        handler: Callable[..., Any] | None = None,
        *,
        app: ASGIApp | None = None,
        path: str | None = None,
        url: str | None = None,
        method: str = "POST",
        overlap: str = "allow",
    ) -> Schedule:
        """Fire ``handler`` (or POST to ``app`` at ``path``, or to ``url``) at each cron instant.

        ``handler`` is ``async def handler(run)`` or zero-arg (a sync function works too);
        app and url targets get a JSON body ``{"schedule", "run", "scheduled_at"}`` and
        fail the run on a non-2xx answer. The first instant is strictly after now.
        """
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(
                "name= must be 1-128 characters of letters, digits, '_', '.', ':' or '-' "
                f"(it becomes fault point 'schedule.<name>'); got {name!r}"
            )
        if name in self._entries:
            raise ValueError(
                f"schedule {name!r} already exists; delete({name!r}) it first or pick another name"
            )
        text = _check_cron(cron, self._sim.clock.now())
        if overlap not in OVERLAP:
            raise ValueError(f"overlap= must be one of {', '.join(OVERLAP)}; got {overlap!r}")
        if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
            raise ValueError(f"method= must be 'GET' or 'POST'; got {method!r}")
        given = [k for k, v in (("handler", handler), ("app", app), ("url", url)) if v is not None]
        if len(given) != 1:
            raise TypeError(
                "schedules.create() needs exactly one target: handler=fn, app=asgi_app with "
                f"path='/...', or url='https://...'; got {', '.join(given) or 'none'}"
            )
        entry = _Entry(name, text, overlap, "", method=method.upper())
        if handler is not None:
            if path is not None:
                raise TypeError("path= goes with app=; a handler= schedule takes no path")
            if inspect.iscoroutine(handler) or not callable(handler):
                if inspect.iscoroutine(handler):
                    handler.close()
                raise TypeError(
                    "handler= takes the function itself, e.g. handler=nightly not "
                    f"handler=nightly(); got {type(handler).__name__}"
                )
            entry.handler, entry.pass_run = handler, _takes_run(handler)
            entry.target = f"handler {getattr(handler, '__qualname__', repr(handler))}"
        elif app is not None:
            entry.app, entry.target = app, _check_app_target(app, path)
        else:
            if path is not None:
                raise TypeError("path= goes with app=; for url= put the path in the URL")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"url= must be an http(s) URL such as 'https://app.example/cron'; got {url!r}"
                )
            entry.url = entry.target = url
        self._entries[name] = entry
        self._arm(entry, self._sim.clock.now())
        self._sim.history.record(
            "schedule", "create", name=name, cron=text, overlap=overlap, target=entry.target,
            next=entry.next_at.isoformat() if entry.next_at else None,
        )
        return self._view(entry)

    def get(self, name: str) -> Schedule:
        """The schedule named ``name`` as it stands now."""
        return self._view(self._entry(name))

    def names(self) -> builtins.list[str]:
        """Every schedule's name, in creation order."""
        return builtins.list(self._entries)

    def runs(self, name: str) -> builtins.list[Run]:
        """Copies of every run of ``name`` so far (skipped instants included), oldest first."""
        return [r._copy() for r in self._entry(name).runs]

    def pause(self, name: str) -> None:
        """Stop firing ``name``; instants that pass while paused are not run later."""
        entry = self._entry(name)
        if entry.paused:
            return
        entry.paused = True
        self._disarm(entry)
        self._sim.history.record("schedule", "pause", name=name)

    def resume(self, name: str) -> None:
        """Fire ``name`` again from its next instant after now."""
        entry = self._entry(name)
        if not entry.paused:
            return
        entry.paused = False
        self._arm(entry, self._sim.clock.now())
        nxt = entry.next_at.isoformat() if entry.next_at else None
        self._sim.history.record("schedule", "resume", name=name, next=nxt)

    def delete(self, name: str) -> None:
        """Remove ``name``; a run already going finishes and is still recorded in the history."""
        entry = self._entry(name)
        self._disarm(entry)
        del self._entries[name]
        self._sim.history.record("schedule", "delete", name=name, runs=len(entry.runs))

    # -- snapshot ----------------------------------------------------------------------
    def _snapshot(self) -> object:
        return {name: copy.deepcopy(e.runs) for name, e in self._entries.items()}

    def _restore(self, state: object) -> None:
        """Put back each schedule's run list; definitions and timers stay as they are."""
        if not isinstance(state, dict):
            raise TypeError(f"_restore() takes what _snapshot() returned; got {type(state).__name__}")
        for name, entry in self._entries.items():
            entry.runs = copy.deepcopy(state.get(name, []))

    # -- internals ---------------------------------------------------------------------
    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none yet"
            raise KeyError(
                f"no schedule named {name!r} (known: {known}); create it with "
                "sim.schedules.create(name, cron=..., handler=...)"
            ) from None

    @staticmethod
    def _view(e: _Entry) -> Schedule:
        return Schedule(e.name, e.cron, e.overlap, e.paused, e.next_at, e.target)

    def _arm(self, entry: _Entry, after: _dt.datetime, *, on_instant: bool = False) -> None:
        instants = entry.instants
        if instants is None:
            instants = entry.instants = _Instants(entry.cron, after)
        nxt = instants.after(after, on_instant=on_instant)
        entry.next_at = nxt
        when = _epoch(nxt) - self._sim.clock.start
        # An empty context: the fire (and its run) never inherit the caller's queue attempt.
        entry.timer = contextvars.Context().run(
            self._sim.loop.call_at_recurring, when, self._fire, entry, nxt
        )

    @staticmethod
    def _disarm(entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.next_at = None

    def _fire(self, entry: _Entry, scheduled: _dt.datetime) -> None:
        # the next instant first: a slow run never delays it
        self._arm(entry, scheduled, on_instant=True)
        run = Run(self._sim._next_id("run"), entry.name, scheduled)
        entry.runs.append(run)
        history = self._sim.history
        if entry.active and entry.overlap == "skip":
            run.outcome = "skipped"
            run.error = f"{entry.active} earlier run(s) still going (overlap='skip')"
            history.record("schedule", "skip", name=entry.name, run=run.id,
                           scheduled=scheduled.isoformat(), running=entry.active)
            return
        run.overlapped = entry.active > 0
        entry.active += 1
        history.record("schedule", "fire", name=entry.name, run=run.id,
                       scheduled=scheduled.isoformat(), overlapped=run.overlapped)
        task = self._sim.loop.create_task(
            self._run(entry, run), name=f"schedule {entry.name} {run.id}"
        )
        entry.tasks.add(task)
        task.add_done_callback(entry.tasks.discard)

    async def _run(self, entry: _Entry, run: Run) -> None:
        sim = self._sim
        point = f"schedule.{entry.name}"
        run.started_at = sim.clock.now()
        outcome = "fail"
        try:
            step = sim.faults._enter(point)
            if step is not None:
                await step
            error = await self._call(entry, run)
            outcome = "unknown"  # it ran; only an after_apply fault can still fail it
            sim.faults._leave(point)
        except asyncio.CancelledError:
            self._finish(run, "cancelled", "CancelledError()", "unknown")
            raise
        except Exception as exc:
            self._finish(run, "failed", repr(exc), outcome)
        else:
            self._finish(run, "failed" if error else "ok", error, "fail" if error else "ok")
        finally:
            entry.active -= 1

    def _finish(self, run: Run, outcome: str, error: str | None, recorded: str) -> None:
        run.finished_at = self._sim.clock.now()
        run.outcome, run.error = outcome, error
        detail: dict[str, Any] = {"name": run.schedule, "run": run.id}
        if run.status is not None:
            detail["status"] = run.status
        if error is None:
            self._sim.history.record("schedule", "run_ok", **detail)
        else:
            self._sim.history.record("schedule", "run_failed", recorded, **detail, error=error)

    async def _call(self, entry: _Entry, run: Run) -> str | None:
        """Run the target; return an error text for a non-2xx answer (exceptions propagate)."""
        if entry.handler is not None:
            result = entry.handler(run._copy()) if entry.pass_run else entry.handler()
            if inspect.isawaitable(result):
                await result
            return None
        body = {"schedule": entry.name, "run": run.id, "scheduled_at": run.scheduled_at.isoformat()}
        client, target = (_client_for(entry.app), entry.target) if entry.app else (
            _client_for(None), entry.url or "")
        async with client:
            if entry.method == "GET":
                response = await client.get(target)
            else:
                response = await client.post(target, json=body)
        run.status = response.status_code
        if 200 <= response.status_code < 300:
            return None
        return f"{entry.method} {target} answered HTTP {response.status_code} (only 2xx is success)"
