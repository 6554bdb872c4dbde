"""Checks: the properties background work must keep, judged from a simulation.

Each check raises ``bg.CheckFailed`` (an ``AssertionError``) whose message says what
was expected, what happened, and the part of the timeline that shows it. Messages
are written in full because pytest does not rewrite asserts inside plugins.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import inspect
import json
import re
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.context import Attempt, current_attempt
from ..core.errors import CheckFailed
from ..core.faults import is_injected
from ..core.history import Event
from ..core.loop import describe_task
from ..core.validate import name_error

if TYPE_CHECKING:
    from ..services.streams import Stream
    from ..simulation import Simulation

__all__ = [
    "assert_drained",
    "assert_effects_once",
    "assert_idempotent",
    "assert_no_task_errors",
    "assert_nothing_lost",
    "assert_status_terminal",
    "assert_streams_closed",
]

_EXCERPT_LIMIT = 40


class NothingToCheck(CheckFailed):
    """A check named an effect or namespace that never appeared: it would pass vacuously."""


#: Inside ``bg.explore``'s examples, where vacuity was judged once on the clean run: a name
#: that a fault kept from appearing (``fail at kv.get``: no charge at all) is no failure.
absence_ok: contextvars.ContextVar[bool] = contextvars.ContextVar("bgwork_absence_ok",
                                                                  default=False)


# -- reading attempts out of the history --------------------------------------------------
@dataclass
class AttemptInfo:
    """One queue attempt as the history tells it: when it started and how it ended."""

    label: str
    queue: str
    message_id: str
    number: int
    started: float
    status: str = "running"  # running | acked | nacked | failed | crashed
    ended: float | None = None
    error: str | None = None

    def describe(self) -> str:
        """E.g. ``report-jobs/msg_1#2 (crashed at +3.000s)``."""
        if self.status == "running":
            how = f"still running since +{self.started:.3f}s"
        elif self.status == "failed":
            how = f"failed at +{self.ended or 0:.3f}s: {self.error}"
        else:
            how = f"{self.status} at +{self.ended or 0:.3f}s"
        return f"{self.label} ({how})"


def _label(detail: dict[str, Any]) -> str:
    return f"{detail.get('queue')}/{detail.get('id')}#{detail.get('attempt')}"


def attempts(events: Iterable[Event]) -> dict[str, AttemptInfo]:
    """Every queue attempt in ``events``, by label (``queue/msg_id#n``), oldest first."""
    found: dict[str, AttemptInfo] = {}
    ends = {"ack": "acked", "nack": "nacked", "attempt_failed": "failed", "crashed": "crashed"}
    for e in events:
        if e.service != "queue":
            continue
        if e.op == "deliver":
            label = _label(e.detail)
            found[label] = AttemptInfo(label, str(e.detail.get("queue")), str(e.detail.get("id")),
                                       int(e.detail.get("attempt", 1)), e.t)
        elif e.op in ends:
            info = found.get(_label(e.detail))
            # a crash or failure after a (stale) ack is the truer ending
            if info is not None and (info.status == "running" or (
                info.status in ("acked", "nacked") and e.op in ("crashed", "attempt_failed")
            )):
                info.status, info.ended = ends[e.op], e.t
                if e.op == "attempt_failed":
                    info.error = str(e.detail.get("error"))
    return found


def _excerpt(events: list[Event], *, labels: Iterable[str] = (), ids: Iterable[Any] = (),
             keys: Iterable[tuple[str, str]] = ()) -> str:
    """The events of the given attempts (and their messages' queue events), message or
    stream ids and (ns, key) pairs, indented."""
    label_set, id_set, key_set = set(labels), set(ids), set(keys)
    messages_of = {tuple(label.rsplit("#", 1)[0].split("/", 1)) for label in label_set}
    chosen = [
        e for e in events
        if (e.attempt is not None and e.attempt in label_set)
        or (e.detail.get("id") in id_set if id_set else False)
        or ((e.detail.get("ns"), e.detail.get("key")) in key_set if key_set else False)
        or (e.service == "queue"
            and (e.detail.get("queue"), e.detail.get("id")) in messages_of)
    ]
    if not chosen:
        return "  (no events)"
    lines = []
    if len(chosen) > _EXCERPT_LIMIT:
        lines.append(f"  ... {len(chosen) - _EXCERPT_LIMIT} earlier event(s) not shown")
        chosen = chosen[-_EXCERPT_LIMIT:]
    lines += ["  " + e.render() for e in chosen]
    return "\n".join(lines)


def _has(sim: Simulation, service: str) -> bool:
    """Whether ``sim`` created ``service`` (checks never create one just to look at it)."""
    return service in vars(sim)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _check_sim(sim: object, where: str) -> None:
    from ..simulation import Simulation

    if not isinstance(sim, Simulation):
        raise TypeError(f"{where} expects a bg.Simulation (e.g. the `bgwork` fixture); got {sim!r}")


# -- streams --------------------------------------------------------------------------------
def assert_streams_closed(sim: Simulation) -> None:
    """Every stream that a finished or failed attempt (or code outside any attempt) opened is closed.

    Left out, and named in the message: streams abandoned by a crashed attempt (whose
    ``finally`` never ran), opened by an attempt still running, whose ``close()`` was
    called and raised, or whose create raised into the caller (unknown outcome).
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_streams_closed(sim)")
    if not _has(sim, "streams"):
        return
    events = sim.history.events
    runs = attempts(events)
    unknown = {e.detail.get("id") for e in events
               if e.service == "stream" and e.op == "create" and e.outcome == "unknown"}
    close_failed = {e.detail.get("id"): e.detail.get("error") for e in events
                    if e.service == "stream" and e.op == "close" and e.outcome == "fail"}
    bad: list[Stream] = []
    excused: list[str] = []
    for stream in sim.streams.open_streams():
        label = stream.attempt_label
        info = runs.get(label) if label else None
        if stream.id in unknown:
            excused.append(f"  - {_describe_stream(stream)}: its create raised into the caller "
                           "(unknown outcome), so nobody held it to close")
        elif stream.id in close_failed:
            excused.append(f"  - {_describe_stream(stream)}: its close was tried and raised "
                           f"({close_failed[stream.id]}); it stays open until its ttl")
        elif info is not None and info.status in ("crashed", "running"):
            why = ("abandoned by a crashed attempt, whose `finally` never ran"
                   if info.status == "crashed" else "its attempt is still running")
            excused.append(f"  - {_describe_stream(stream)} in {info.describe()}: {why}")
        else:
            bad.append(stream)
    if not bad:
        return
    lines = [
        "assert_streams_closed: expected every stream opened by a finished or failed attempt "
        "(or outside any attempt) to be closed; "
        f"{_plural(len(bad), 'stream')} {'is' if len(bad) == 1 else 'are'} still open:"
    ]
    labels: list[str] = []
    for stream in bad:
        label = stream.attempt_label
        info = runs.get(label) if label else None
        where = (f" in {info.describe()}" if info else f" in {label}" if label
                 else " outside any queue attempt")
        lines.append(f"  - {_describe_stream(stream)}{where}; never closed")
        if label:
            labels.append(label)
    lines.append("Close streams in `finally` (or `async with`), so an exception mid-write "
                 "still closes them.")
    if excused:
        lines.append("Not counted:")
        lines += excused
    lines.append("Timeline of those streams and their attempts:")
    lines.append(_excerpt(events, labels=labels, ids=[s.id for s in bad]))
    raise CheckFailed("\n".join(lines))


def _describe_stream(stream: Stream) -> str:
    writes = "" if not stream.size else f", {_plural(stream.size, 'byte')} written"
    return f"{stream.id} {stream.name!r} opened at +{stream.created_at:.3f}s{writes}"


# -- effects --------------------------------------------------------------------------------
def assert_effects_once(sim: Simulation, name: str, keys: Iterable[Any] | None = None, *,
                        allow_empty: bool = False) -> None:
    """Each key's effect ``name`` was recorded exactly once (``keys``: also none missing).

    A duplicate shows every attempt that did it, and their timeline. No effect named
    ``name`` at all fails too (a misspelt name would pass vacuously), naming the effects
    that were recorded; ``allow_empty=True`` says none is expected. Inside ``bg.explore``
    that is judged once, on the clean run; in faulty examples absence is no failure.
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_effects_once(sim, name)")
    if not isinstance(name, str) or not name:
        raise ValueError(f"assert_effects_once(name=...) expects the effect's name, e.g. 'email'; "
                         f"got {name!r}")
    effects = sim.effects.all(name)
    if not effects and not allow_empty and not absence_ok.get():
        counts: dict[str, int] = {}
        for eff in sim.effects.all():
            counts[eff.name] = counts.get(eff.name, 0) + 1
        seen = ", ".join(f"{n!r} x{c}" for n, c in counts.items()) or "none at all"
        raise NothingToCheck(
            f"assert_effects_once({name!r}): no effect named {name!r} was ever recorded, so "
            f"there is nothing to check (recorded: {seen}){name_error('', 'name', name, counts)}"
            ". Fix the name, make sure the code under test ran (sim.effects.record("
            f"{name!r}, key=...)), or pass allow_empty=True if none is expected."
        )
    by_key: dict[str, list[Any]] = {}
    for eff in effects:
        by_key.setdefault(repr(eff.key), []).append(eff)
    twice = {k: v for k, v in by_key.items() if len(v) > 1}
    missing = [k for k in (keys or ()) if repr(k) not in by_key]
    if not twice and not missing:
        return
    lines = [f"assert_effects_once({name!r}): expected each key's {name!r} effect exactly once;"]
    labels: list[str] = []
    if twice:
        lines[0] += f" {_plural(len(twice), 'key')} had it more than once:"
        for key, items in twice.items():
            lines.append(f"  - key {key}: {len(items)} times")
            for eff in items:
                lines.append(f"      at +{eff.t:.3f}s in {eff.attempt or 'no queue attempt'}")
                if eff.attempt:
                    labels.append(eff.attempt)
    if missing:
        lines.append(f"  {_plural(len(missing), 'key')} never had it: "
                     + ", ".join(repr(k) for k in missing))
    if twice:
        lines.append("Make the effect idempotent: claim the business key with one atomic write "
                     "before acting (`if await sim.kv.set(ns, key, ..., if_absent=True):`, or "
                     "`if_version=`), not a get then a set, which two deliveries at once both "
                     "pass; or pass the key to the provider as an idempotency key.")
    lines.append("Timeline of the attempts involved:")
    events = sim.history.events
    if labels:
        lines.append(_excerpt(events, labels=labels))
    else:
        mine = [e for e in events if e.service == "effect" and e.op == name]
        lines.append("\n".join("  " + e.render() for e in mine[-_EXCERPT_LIMIT:])
                     or "  (no events)")
    raise CheckFailed("\n".join(lines))


# -- status records -------------------------------------------------------------------------
def status_terminal_args(where: tuple[str, object, str], field: object,
                         terminal: Iterable[str]) -> set[str]:
    """Validate ``assert_status_terminal``'s arguments (``bg``'s on KV, and the Redis
    adapter's on hashes): ``where`` is (argument name, value, what it must be); returns the
    terminal values as a set. One validator, so both refuse bad input alike.
    """
    arg, value, expected = where
    if not isinstance(value, str) or not value:
        raise ValueError(f"assert_status_terminal({arg}=...) expects {expected}; got {value!r}")
    if not isinstance(field, str) or not field:
        raise ValueError(f"assert_status_terminal(field=...) expects a field name such as 'kind'; "
                         f"got {field!r}")
    if isinstance(terminal, str):
        raise TypeError(f"assert_status_terminal(terminal=...) expects a set of values, e.g. "
                        f"{{{terminal!r}}}; got the string {terminal!r}")
    final = set(terminal)
    if not final:
        raise ValueError("assert_status_terminal(terminal=...) must name at least one value")
    return final


def assert_status_terminal(
    sim: Simulation,
    ns: str,
    field: str = "kind",
    terminal: Iterable[str] = frozenset({"done", "failed"}),
    *,
    allow_empty: bool = False,
) -> None:
    """Every key in KV namespace ``ns`` has ``value[field]`` in ``terminal``.

    A stuck key is named with its status history and who wrote each value; so is a key
    whose TTL ran out while its status was not terminal (a poller then gets "not
    found"). A namespace that never had a key fails (a misspelt namespace would pass
    vacuously), naming those that did; ``allow_empty=True`` says none is expected. Inside
    ``bg.explore`` that is judged once, on the clean run; in faulty examples absence is no
    failure.
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_status_terminal(sim, ns)")
    final = status_terminal_args(("ns", ns, "a KV namespace name"), field, terminal)
    written = _written_keys(sim)
    if ns not in written:
        if allow_empty or absence_ok.get():
            return
        raise NothingToCheck(
            f"assert_status_terminal({ns!r}): no key was ever written to KV namespace {ns!r}, "
            "so there is no status to check (namespaces written: "
            f"{', '.join(map(repr, written)) or 'none at all'}"
            f"){name_error('', 'ns', ns, written)}. Fix the namespace, make sure the code under "
            "test ran, or pass allow_empty=True if no status is expected."
        )
    items = sim.kv.items(ns)
    stuck = {k: v for k, v in items.items() if _status(v, field) not in final}
    for key in written[ns]:
        if key in items:
            continue
        versions = sim.kv.history(ns, key)
        if len(versions) >= 2 and versions[-1].op == "expire" and versions[-2].op == "set" \
                and _status(versions[-2].data, field) not in final:
            stuck[key] = _Expired(versions[-2].data, versions[-1].t)
    if not stuck:
        return
    runs = attempts(sim.history.events)
    shown = ", ".join(repr(v) for v in sorted(final))
    lines = [f"assert_status_terminal({ns!r}): expected every key's {field!r} to be one of "
             f"{{{shown}}}; {_plural(len(stuck), 'key')} {'is' if len(stuck) == 1 else 'are'} "
             "stuck:"]
    labels: list[str] = []
    for key, value in stuck.items():
        versions = sim.kv.history(ns, key)
        last = versions[-1] if versions else None
        if isinstance(value, _Expired) and len(versions) >= 2:
            last = versions[-2]  # the write whose status expired
        who = ""
        if last is not None and last.attempt:
            info = runs.get(last.attempt)
            who = f", written by {info.describe() if info else last.attempt}"
            labels.append(last.attempt)
        if isinstance(value, _Expired):
            lines.append(f"  - {key}: expired at +{value.t:.3f}s while {field}="
                         f"{_status(value.data, field)!r}{who} (a poller now gets 'not found')")
        else:
            since = f" since +{last.t:.3f}s" if last is not None else ""
            lines.append(f"  - {key}: {field}={_status(value, field)!r}{since}{who}")
        trail = [f"+{v.t:.3f}s {v.op} {field}={_status(v.data, field)!r}"
                 + (f" by {v.attempt}" if v.attempt else "")
                 + (" [unknown]" if v.outcome == "unknown" else "")
                 for v in versions]
        lines.append("      history: " + "; ".join(trail))
    lines.append("A crash or an error between writing the in-progress status and the final one "
                 "leaves it stuck: write the final status from every exit path, or let a retry "
                 "finish the job.")
    lines.append("Timeline of those keys and the attempts that wrote them:")
    lines.append(_excerpt(sim.history.events, labels=labels, keys=[(ns, k) for k in stuck]))
    raise CheckFailed("\n".join(lines))


@dataclass
class _Expired:
    """A status key whose TTL ran out while it was not terminal: its last value and when."""

    data: Any
    t: float


def _written_keys(sim: Simulation) -> dict[str, list[str]]:
    """Every KV namespace ever written (live, deleted or expired) and its keys, in order."""
    out: dict[str, list[str]] = {}
    if _has(sim, "kv"):
        for ns, key in sim.kv._log:
            out.setdefault(ns, []).append(key)
    return out


def _status(value: Any, field: str) -> Any:
    if isinstance(value, dict):
        return value.get(field, "<no field>")
    return value if isinstance(value, str) else f"<not a dict: {value!r}>"


# -- queues: nothing lost, nothing left -----------------------------------------------------
@dataclass
class MessageInfo:
    """One published message: where it is now, and what the history says happened to it."""

    queue: str
    id: str
    key: Any
    state: str  # delayed | ready | in_flight | acked | dead | expired
    published_t: float
    uncertain: bool  # its publish raised into the caller although it may have happened
    deliveries: int


def messages(sim: Simulation) -> list[MessageInfo]:
    """Every message the queues hold (dedup hits left out), oldest first per queue."""
    if not _has(sim, "queues"):
        return []
    published: dict[tuple[str, str], Event] = {}
    for e in sim.history.events:
        if e.service == "queue" and e.op == "publish" and not e.detail.get("duplicate"):
            published.setdefault((str(e.detail.get("queue")), str(e.detail.get("id"))), e)
    found = []
    for name in sim.queues.names():
        for m in sim.queues.messages(name):
            event = published.get((name, m.id))
            found.append(MessageInfo(
                name, m.id, m.idempotency_key, m.state,
                event.t if event is not None else 0.0,
                event is not None and event.outcome == "unknown", m.attempts,
            ))
    return found


_STATE_TEXT = {"delayed": "waiting for its delay or a retry", "ready": "waiting for delivery",
               "in_flight": "in flight", "acked": "acked", "dead": "dead-lettered",
               "expired": "expired: the queue's retention ran out and deleted it unconsumed"}


def _message_story(info: MessageInfo, runs: dict[str, AttemptInfo]) -> str:
    mine = [a for a in runs.values() if a.queue == info.queue and a.message_id == info.id]
    key = f" (key={info.key!r})" if info.key is not None else ""
    head = f"{info.queue}/{info.id}{key} published at +{info.published_t:.3f}s"
    story = (f"{_plural(len(mine), 'attempt')}: "
             + ", ".join(f"#{a.number} {a.describe().split(' ', 1)[1]}" for a in mine)
             if mine else "never delivered")
    return f"{head}: {story}; now {_STATE_TEXT.get(info.state, info.state)}"


def assert_nothing_lost(sim: Simulation) -> None:
    """Every published message was acked or dead-lettered.

    A message moved to a dead-letter queue (``sim.queues.move_to_dead_letter_queue``, which
    the SQS adapter's redrive uses) is dead-lettered, and its copy there is accounted for.

    Unknown outcomes count as "may have happened": a message whose publish raised into
    the caller is only required once it was delivered; an ack that raised after it
    applied counts as an ack.
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_nothing_lost(sim)")
    found = messages(sim)
    # a copy a dead-letter move published (SQS redrive) stands for a message dead-lettered
    moved = {(str(e.detail.get("dlq")), str(e.detail.get("dlq_id")))
             for e in sim.history.events if e.service == "queue" and e.op == "dead_letter"
             and "dlq_id" in e.detail}
    open_ = [m for m in found if m.state not in ("acked", "dead")
             and (m.queue, m.id) not in moved]
    skipped = [m for m in open_ if m.uncertain and not m.deliveries]
    lost = [m for m in open_ if m not in skipped]
    if not lost:
        return
    events = sim.history.events
    runs = attempts(events)
    lines = [f"assert_nothing_lost: expected every published message to be acked or "
             f"dead-lettered; {len(lost)} of {len(found)} {'was' if len(lost) == 1 else 'were'} "
             "neither:"]
    lines += [f"  - {_message_story(m, runs)}" for m in lost]
    if skipped:
        lines.append(f"Not counted: {_plural(len(skipped), 'message')} whose publish raised "
                     "into the caller (unknown outcome) and never showed up.")
    expired = sum(1 for m in lost if m.state == "expired")
    if expired:
        lines.append(f"{_plural(expired, 'message')} expired: the queue's retention "
                     "(create(..., retention=)) deleted it before any consumer acked it, as SQS "
                     "does; consume faster, or keep messages longer.")
    if expired < len(lost):
        lines.append("A message neither acked nor dead-lettered was never consumed, is still in "
                     "flight, or waits for a retry: route the queue (or receive and ack), and run "
                     "the simulation until idle before checking.")
    lines.append("Timeline of those messages:")
    ids = {m.id for m in lost}
    lines.append(_excerpt(events, ids=ids,
                          labels=[a.label for a in runs.values() if a.message_id in ids]))
    raise CheckFailed("\n".join(lines))


def assert_drained(sim: Simulation) -> None:
    """No pending ``wait_until`` task, no live task-manager task, no queue work in flight.

    Queue work means an attempt still running or a message not yet acked or
    dead-lettered (waiting for delivery, a retry or its visibility timeout).
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_drained(sim)")
    events = sim.history.events
    sections: list[tuple[str, list[str]]] = []
    names: list[str] = []
    from ..services.task_manager import _managers

    for service, title in (("runtime", "waitUntil task"), ("task_manager", "task-manager task")):
        # managers the app built itself register with the simulation: ask sim.task_manager
        if not _has(sim, service) and not (service == "task_manager" and _managers.get(sim)):
            continue
        pending = [str(item) for item in getattr(sim, service).outstanding()]
        if pending:
            sections.append((f"{_plural(len(pending), title)} still pending", pending))
            names += pending
    runs = attempts(events)
    running = [a for a in runs.values() if a.status == "running"]
    if running:
        sections.append((f"{_plural(len(running), 'queue attempt')} still in flight",
                         [a.describe() for a in running]))
    others = [describe_task(t) for t in _other_tasks(sim)]
    if others:
        sections.append((f"{_plural(len(others), 'other task')} still pending on the "
                         "simulation's loop (asyncio.create_task, schedule runs...)", others))
    busy = {(a.queue, a.message_id) for a in running}
    waiting = [m for m in messages(sim) if m.state not in ("acked", "dead", "expired")
               and (m.queue, m.id) not in busy]
    if waiting:
        sections.append((f"{_plural(len(waiting), 'queue message')} not yet acked or "
                         "dead-lettered", [_message_story(m, runs) for m in waiting]))
    if not sections:
        return
    lines = ["assert_drained: expected no background work left (waitUntil tasks, task-manager "
             "tasks, queue deliveries, other tasks on the loop); found:"]
    for title, items in sections:
        lines.append(f"  {title}:")
        lines += [f"    - {item}" for item in items]
    lines.append("Await it before the request or test ends: `await sim.runtime.drain()`, "
                 "`await manager.wait_for_all()`, `await sim.run_until_idle()`.")
    lines.append("Timeline of that work:")
    ids = re.findall(r"\[([A-Za-z]+_\d+)\]", "\n".join(names))
    lines.append(_excerpt(events, ids=ids + [m.id for m in waiting],
                          labels=[a.label for a in running]))
    raise CheckFailed("\n".join(lines))


def _managers_of(sim: Simulation) -> list[Any]:
    """Every BackgroundTaskManager on ``sim``: its own and those the app built on it."""
    from ..services.task_manager import _managers

    found = list(_managers.get(sim, ()))
    own = vars(sim).get("task_manager")
    if own is not None and own not in found:
        found.insert(0, own)
    return sorted(found, key=lambda m: m._first_number())


def _other_tasks(sim: Simulation) -> list[asyncio.Task[Any]]:
    """Tasks pending on ``sim``'s loop that no service accounts for (a bare create_task)."""
    loop = sim.loop
    if loop.is_closed():
        return []
    try:
        me = asyncio.current_task(loop) if loop.is_running() else None
    except RuntimeError:
        me = None
    known: set[asyncio.Task[Any]] = set()
    if _has(sim, "queues"):
        known |= set(sim.queues._running)
    if _has(sim, "runtime"):
        known |= {rec.task for rec in sim.runtime._live() if rec.task is not None}
    if _has(sim, "workers"):  # supervised workers run until the simulation ends
        known |= sim.workers._tasks()
    for manager in _managers_of(sim):
        for rec in manager._running():
            known |= {rec.task, *rec.companions} - {None}
    return [t for t in loop.live_tasks() if t is not me and t not in known]


def assert_no_task_errors(sim: Simulation) -> None:
    """No ``wait_until`` or task-manager task failed because of the user's code.

    Those failures are logged and recorded, never raised into the caller (as on the real
    platforms), so nothing else fails the test: this check does. ``bg.explore`` runs it
    on every example. A task that failed *because of an injected fault* (the injected
    error, or one whose ``__cause__``/``__context__`` chain holds it: see
    ``bg.is_injected``) is the fault's consequence, left to the business checks.
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_no_task_errors(sim)")
    failed: list[str] = []
    if _has(sim, "runtime"):
        failed += [str(e) for e in sim.runtime.errors if not is_injected(e.exception)]
    if _has(sim, "workers"):  # a worker failing because of an injected fault is its consequence
        for name in sim.workers.names():
            failed += [f"worker {name} failed: {error}" for error in sim.workers.get(name).errors]
    for manager in _managers_of(sim):
        for rec in manager.tasks:
            if rec.status == "failed" and not is_injected(rec.error):
                err = rec.error
                failed.append(f"task-manager task {rec.name} [{rec.id}] failed at "
                              f"t=+{rec.finished_at or 0:.3f}s: {type(err).__name__}: {err}")
    if not failed:
        return
    lines = [f"assert_no_task_errors: expected every background task to succeed; "
             f"{_plural(len(failed), 'task')} failed:"]
    lines += [f"  - {line}" for line in failed]
    lines.append("Their errors were logged, not raised: catch and handle them in the task, "
                 "or retry the work through a queue.")
    ids = re.findall(r"\[([A-Za-z]+_\d+)\]", "\n".join(failed))
    lines.append("Timeline of those tasks:")
    lines.append(_excerpt(sim.history.events, ids=ids))
    raise CheckFailed("\n".join(lines))


# -- idempotence ----------------------------------------------------------------------------
_IDEM_QUEUE = "assert_idempotent"
_SNAPSHOT_SERVICES = ("kv", "streams", "queues")


@dataclass
class IdempotenceReport:
    """What ``assert_idempotent`` ran: every schedule's name, the clean run's fault points."""

    schedules: list[str]
    """Every schedule it ran, by name, e.g. ``"crash at kv.set (entry 1), then restart"``."""
    points: list[str]
    """The fault points the clean run passed, in order (one entry per call)."""


@dataclass(frozen=True)
class IdempotentMessage:
    """The ``delivery.message`` of an ``assert_idempotent`` run: ``id``, ``queue``, ``payload``."""

    id: str
    queue: str
    payload: Any


class IdempotentDelivery:
    """The ``delivery`` a two-argument handler gets from ``assert_idempotent``.

    Shaped like a queue delivery: ``attempt`` (1-based), ``payload``, ``queue``,
    ``message`` (``id``, ``payload``); ``ack()``/``nack()`` are accepted and change nothing.
    """

    def __init__(self, message_id: str, payload: Any, attempt: int) -> None:
        self.queue = _IDEM_QUEUE
        self.attempt = attempt
        self.payload = payload
        self.message = IdempotentMessage(message_id, _IDEM_QUEUE, payload)

    async def ack(self) -> None:
        """Accepted; the check decides what a run left behind."""

    async def nack(self, delay: float = 0) -> None:
        """Accepted; the check decides what a run left behind."""


@dataclass
class _Run:
    crashed: bool
    error: BaseException | None
    first_seq: int
    last_seq: int


def _arity(handler: Any) -> int:
    """1 for ``handler(payload)``, 2 for ``handler(payload, delivery)``."""
    try:
        sig = inspect.signature(handler)
    except (TypeError, ValueError):
        return 2
    params = [p for p in sig.parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()) or len(params) >= 2:
        return 2
    if len(params) == 1:
        return 1
    raise TypeError(
        f"assert_idempotent(handler=...) expects `async def handler(payload)` or "
        f"`async def handler(payload, delivery)`; {_callable_name(handler)} takes {sig}"
    )


def _callable_name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _snapshot(sim: Simulation) -> dict[str, Any]:
    state: dict[str, Any] = {"effects": sim.effects._snapshot(), "ids": dict(sim._ids)}
    for name in _SNAPSHOT_SERVICES:
        if _has(sim, name):
            state[name] = getattr(sim, name)._snapshot()
    return state


def _restore(sim: Simulation, state: dict[str, Any]) -> None:
    sim.effects._restore(state["effects"])
    sim._ids = dict(state["ids"])
    for name in _SNAPSHOT_SERVICES:
        if name in state:
            getattr(sim, name)._restore(state[name])


async def _run_once(sim: Simulation, handler: Any, payload: Any, arity: int, number: int,
                    schedule: str) -> _Run:
    loop = asyncio.get_running_loop()
    attempt = Attempt(_IDEM_QUEUE, "msg_idempotent", number)
    attempt.crash_future = loop.create_future()
    delivery = IdempotentDelivery(attempt.message_id, copy.deepcopy(payload), number)

    async def body() -> Any:
        current_attempt.set(attempt)
        args = (delivery.payload, delivery) if arity == 2 else (delivery.payload,)
        return await handler(*args)

    start = sim.history.record("check", "idempotent_run", schedule=schedule, attempt=number)
    task = loop.create_task(body(), name=f"assert_idempotent {schedule} #{number}")
    await asyncio.wait({task, attempt.crash_future}, return_when=asyncio.FIRST_COMPLETED)
    await sim._settle()  # work the run started at this instant (a routed delivery) finishes
    error: BaseException | None = None
    if not attempt.crashed:
        error = asyncio.CancelledError() if task.cancelled() else task.exception()
    else:
        attempt.crash_future.cancel()
    last = len(sim.history) - 1
    return _Run(attempt.crashed, error, start.seq, last)


def _strip(value: Any, ignore: frozenset[str]) -> Any:
    if not ignore:
        return value
    if isinstance(value, dict):
        return {k: _strip(v, ignore) for k, v in value.items() if k not in ignore}
    if isinstance(value, list):
        return [_strip(v, ignore) for v in value]
    return value


def _observe(sim: Simulation, base_ids: dict[str, int], ignore: frozenset[str]) -> dict[str, Any]:
    """The comparable state: KV data, effects, closed streams, published messages.

    Ids minted during the run (``stream_3``) are renamed by order of appearance, so two
    runs that made the same things compare equal whatever their counters said.
    """
    state: dict[str, Any] = {"kv": {}, "effects": {}, "streams": [], "published": []}
    if _has(sim, "kv"):
        state["kv"] = {f"{ns}/{key}": _strip(value, ignore)
                       for ns in sim.kv.namespaces() for key, value in sim.kv.items(ns).items()}
    counts: dict[str, int] = {}
    for eff in sim.effects.all():
        k = f"{eff.name} key={eff.key!r}"
        counts[k] = counts.get(k, 0) + 1
    state["effects"] = counts
    if _has(sim, "streams"):
        # distinct contents: an identical copy a retry wrote again is not a difference
        unique = {json.dumps(s, sort_keys=True): s for s in _closed_streams(sim)}
        state["streams"] = [unique[k] for k in sorted(unique)]
    if _has(sim, "queues"):
        state["published"] = sorted(_published(sim), key=lambda m: json.dumps(m, sort_keys=True))
    text = json.dumps(state, sort_keys=True, default=repr)
    minted = {f"{p}_{n}" for p, top in sim._ids.items() for n in range(base_ids.get(p, 0) + 1,
                                                                        top + 1)}
    if minted:
        names: dict[str, str] = {}

        def rename(m: re.Match[str]) -> str:
            token = m.group(0)
            if token not in minted:
                return token
            if token not in names:
                prefix = token.rsplit("_", 1)[0]
                names[token] = f"<new {prefix} {sum(1 for v in names if v.startswith(prefix + '_')) + 1}>"
            return names[token]

        text = _ID_RE.sub(rename, text)
    result: dict[str, Any] = json.loads(text)
    return result


_ID_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9]*_\d+\b")


def _diff(clean: dict[str, Any], other: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for key in sorted(set(clean["kv"]) | set(other["kv"])):
        a, b = clean["kv"].get(key, _ABSENT), other["kv"].get(key, _ABSENT)
        if a != b:
            lines.append(f"kv {key}: clean run {_show(a)}; this schedule {_show(b)}")
    for key in sorted(set(clean["effects"]) | set(other["effects"])):
        a, b = clean["effects"].get(key, 0), other["effects"].get(key, 0)
        if a != b:
            lines.append(f"effect {key}: clean run {_plural(a, 'time')}; "
                         f"this schedule {_plural(b, 'time')}")
    for section, what in (("streams", "closed streams"), ("published", "published messages")):
        a_items, b_items = clean[section], other[section]
        if a_items != b_items:
            extra = [x for x in b_items if x not in a_items]
            gone = [x for x in a_items if x not in b_items]
            lines.append(f"{what}: clean run {len(a_items)}; this schedule {len(b_items)}")
            lines += [f"  + {_show(x)}" for x in extra[:5]]
            lines += [f"  - {_show(x)}" for x in gone[:5]]
            if len(b_items) > len(a_items) and not extra:
                lines.append("  (the same item more times)")
    return lines


_ABSENT = "<absent>"


def _show(value: Any) -> str:
    if value == _ABSENT:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, default=repr)
    return text if len(text) <= 200 else text[:197] + "..."


async def assert_idempotent(
    sim: Simulation,
    handler: Any,
    payload: Any,
    times: int = 2,
    *,
    ignore: Iterable[str] = (),
) -> IdempotenceReport:
    """Prove ``handler`` safe under at-least-once delivery, against one clean run.

    ``handler`` is ``async def handler(payload)`` or ``async def handler(payload,
    delivery)`` (``delivery.attempt`` counts runs from 1). It runs once from the current
    state (the clean run); then, each time from that same restored state (KV, streams,
    queues, effects and id counters), ``times`` times in a row (duplicate delivery), once
    per fault point the clean run passed: crashed there, then rerun to completion, and
    once per fault point overlapped: the first run pauses there while a second delivery
    runs to its end (two workers racing; a run that raised is delivered once more).
    Every schedule must leave the same KV data, effects, closed streams and published
    messages as the clean run; ``ignore`` names dict fields (e.g. ``"attempt"``) left
    out of the KV comparison. Fault rules are off during the check; afterwards the
    simulation's state is restored to what it was before (its history keeps the runs).
    """
    __tracebackhide__ = True
    _check_sim(sim, "assert_idempotent(sim, handler, payload)")
    if not callable(handler):
        raise TypeError(f"assert_idempotent(handler=...) expects an async function; got {handler!r}")
    arity = _arity(handler)
    if isinstance(times, bool) or not isinstance(times, int) or times < 2:
        raise ValueError(f"assert_idempotent(times=...) is how many deliveries in a row, at least "
                         f"2; got {times!r}")
    if isinstance(ignore, str):
        raise TypeError(f"assert_idempotent(ignore=...) expects field names, e.g. [{ignore!r}]; "
                        f"got the string {ignore!r}")
    skip = frozenset(ignore)
    sim._require_loop("assert_idempotent()")
    for name in _SNAPSHOT_SERVICES:
        getattr(sim, name)  # create it now, so its state before the first run is snapshotted
    base = _snapshot(sim)
    faults = sim.faults
    saved = (faults.healed, faults._watch)
    faults.healed = True
    trace: list[str] = []
    schedules: list[str] = []
    failures: list[tuple[str, list[str], _Run]] = []
    #: effects the duplicate schedule recorded less often than the clean run: remembered outside
    outside: list[str] = []
    crash_schedules = False
    hname = _callable_name(handler)
    try:
        def record(point: str, attempt: Attempt) -> bool:
            if attempt.queue == _IDEM_QUEUE:
                trace.append(point)
            return False

        faults._watch = record
        clean_run = await _run_once(sim, handler, payload, arity, 1, "clean")
        faults._watch = None
        if clean_run.error is not None:
            raise CheckFailed(
                f"assert_idempotent({hname}): the clean run (one delivery, no faults) raised "
                f"{type(clean_run.error).__name__}: {clean_run.error}. Fix the handler or the "
                "payload first; idempotence is judged against a run that succeeds.\n"
                "Timeline of the clean run:\n"
                + _excerpt(sim.history.events[clean_run.first_seq:clean_run.last_seq + 1],
                           labels=[f"{_IDEM_QUEUE}/msg_idempotent#1"])
            ) from clean_run.error
        clean = _observe(sim, base["ids"], skip)

        async def schedule(name: str, runs: list[tuple[str, int] | None]) -> None:
            """Run each entry (``None``: a plain run; ``(point, n)``: crash at its nth entry)."""
            schedules.append(name)
            _restore(sim, base)
            first: _Run | None = None
            last: _Run | None = None
            number = 0
            for number, crash in enumerate(runs, start=1):
                if crash is not None:
                    point, nth = crash
                    seen = [0]

                    def crash_at(p: str, attempt: Attempt, point: str = point, nth: int = nth,
                                 seen: list[int] = seen) -> bool:
                        if attempt.queue != _IDEM_QUEUE or p != point:
                            return False
                        seen[0] += 1
                        return seen[0] == nth

                    faults._watch = crash_at
                run = await _run_once(sim, handler, payload, arity, number, name)
                faults._watch = None
                first = first or run
                last = run
                if run.error is not None:
                    break
            assert first is not None and last is not None
            span = _Run(last.crashed, last.error, first.first_seq, last.last_seq)
            observed = _observe(sim, base["ids"], skip)
            diff = _diff(clean, observed)
            if not crash_schedules and last.error is None:  # its run #1 starts as the clean run did
                outside.extend(k for k, n in clean["effects"].items()
                               if observed["effects"].get(k, 0) < n and k not in outside)
            if last.error is not None:
                diff.insert(0, f"run #{number} raised {type(last.error).__name__}: {last.error}")
            if diff:
                failures.append((name, diff, span))

        async def overlap(point: str, nth: int) -> None:
            """Run #1 pauses as it enters ``point`` the ``nth`` time while a duplicate delivery
            (run #2) runs to its end, then goes on: the check-then-act race of two workers.
            A run that raised is delivered once more afterwards, alone, as a queue would."""
            name = f"overlap: a second delivery runs while the first is at {point} (entry {nth})"
            schedules.append(name)
            _restore(sim, base)
            seen = [0]
            second: list[_Run] = []

            async def run_second() -> None:
                second.append(await _run_once(sim, handler, payload, arity, 2, name))

            def pause_at(p: str, attempt: Attempt) -> bool | Awaitable[None]:
                if attempt.queue != _IDEM_QUEUE or attempt.number != 1 or p != point:
                    return False
                seen[0] += 1
                return run_second() if seen[0] == nth else False

            faults._watch = pause_at
            try:
                first = await _run_once(sim, handler, payload, arity, 1, name)
            finally:
                faults._watch = None
            runs = [first, *second]
            end = max(r.last_seq for r in runs)
            last: _Run | None = None
            if any(r.error is not None for r in runs):
                last = await _run_once(sim, handler, payload, arity, 3, name)
                end = last.last_seq
            diff = _diff(clean, _observe(sim, base["ids"], skip))
            if last is not None and last.error is not None:
                diff.insert(0, f"run #3 (redelivered alone) raised {type(last.error).__name__}: "
                               f"{last.error}")
            if diff:
                failures.append((name, diff, _Run(False, None, first.first_seq, end)))

        await schedule(f"duplicate delivery: {times} runs in a row", [None] * times)
        crash_schedules = True
        counts: dict[str, int] = {}
        entries: list[tuple[str, int]] = []
        for point in trace:
            counts[point] = counts.get(point, 0) + 1
            entries.append((point, counts[point]))
        for point, nth in entries:
            await schedule(f"crash at {point} (entry {nth}), then restart", [(point, nth), None])
        for point, nth in entries:
            await overlap(point, nth)
    finally:
        faults.healed, faults._watch = saved
        _restore(sim, base)
    if failures:
        lines = [
            f"assert_idempotent({hname}): expected every schedule to leave the same KV data, "
            "effects, closed streams and published messages as one clean run; "
            f"{len(failures)} of {len(schedules)} schedules differ:"
        ]
        for name, diff, _ in failures:
            lines.append(f"schedule {name!r}:")
            lines += [f"  {line}" for line in diff]
        if outside:
            lines.append(
                f"Effect(s) {', '.join(outside)} were recorded less often by the duplicate-delivery "
                "schedule than by the clean run, although its first run starts from the very same "
                "state: something outside the simulation remembered the clean run (a mock's own "
                "dict of idempotency keys it has seen, a module-level cache). assert_idempotent "
                "restores the simulation's state only: keep such state in the simulation, in "
                "sim.kv (a namespace of the mock's own) or sim.effects (e.g. record the effect "
                "only when sim.effects.count(name, key=...) is 0).")
        name, _, span = failures[0]
        lines.append(f"Timeline of schedule {name!r}:")
        lines.append("\n".join("  " + e.render()
                               for e in sim.history.events[span.first_seq:span.last_seq + 1]))
        raise CheckFailed("\n".join(lines))
    return IdempotenceReport(schedules, trace)


def _closed_streams(sim: Simulation) -> list[dict[str, Any]]:
    """Closed streams as comparable data (name, content type, metadata, content)."""
    return [
        {"name": s.name, "content_type": s.content_type, "metadata": s.metadata,
         "content": b"".join(s._chunks).decode("utf-8", "backslashreplace")}
        for s in sim.streams.all() if s.closed
    ]


def _published(sim: Simulation) -> list[dict[str, Any]]:
    """Messages published to queues as comparable data (queue, payload, keys, metadata)."""
    return [
        {"queue": name, "payload": m.payload, "key": m.idempotency_key,
         "partition_key": m.partition_key, "metadata": m.metadata}
        for name in sim.queues.names() for m in sim.queues.messages(name)
    ]
