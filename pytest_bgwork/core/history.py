"""The event history: every service operation, in order, on virtual time.

Events are the single source of truth for checks, the timeline report, the HTML
report and the determinism digest. ``outcome`` follows Jepsen: ``ok``, ``fail``, or
``unknown`` (the operation may or may not have taken effect).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .clock import VirtualClock
from .context import current_attempt

__all__ = ["Event", "History"]

OUTCOMES = ("ok", "fail", "unknown")


@dataclass(slots=True, eq=False)
class Event:
    """One thing that happened: when (virtual seconds), where (service, op), and details.

    Treat it as read-only. It is a plain slotted class, not a frozen dataclass,
    because every service operation builds one and frozen init costs twice as much.
    """

    seq: int
    """Its position in the history, from 0 (the order events happened in)."""
    t: float
    """When, in virtual seconds since the simulation began."""
    service: str
    """The service that recorded it, e.g. ``"queue"``, ``"kv"``, ``"fault"``."""
    op: str
    """The operation, e.g. ``"publish"``, ``"set"``; ``name`` is ``service.op``."""
    outcome: str = "ok"
    """``"ok"``, ``"fail"``, or ``"unknown"`` (it may have happened: an ``after_apply``
    error, a crash)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """The operation's details (queue, key, message id, error, ...), as plain values."""
    attempt: str | None = None
    """The queue attempt it ran in, e.g. ``"report-jobs/msg_1#2"`` (``None``: outside
    any attempt)."""

    @property
    def name(self) -> str:
        """``service.op``, the same spelling as the fault point."""
        return f"{self.service}.{self.op}"

    def canonical(self) -> str:
        """Stable text for hashing: sorted keys, times to the microsecond."""
        return _canonical(self.seq, self.t, self.service, self.op, self.outcome, self.attempt,
                          self.detail)

    def render(self) -> str:
        """One timeline line, e.g. ``+   120.000s queue.deliver      report-jobs id=msg_1``."""
        parts = []
        for key, value in self.detail.items():
            text = value if isinstance(value, str) else json.dumps(value, default=repr)
            if isinstance(text, str) and len(text) > 80:
                text = text[:77] + "..."
            parts.append(f"{key}={text}")
        if self.attempt:
            parts.append(f"in={self.attempt}")
        flag = "" if self.outcome == "ok" else f" [{self.outcome}]"
        return f"+{self.t:>11.3f}s {self.name:<22}{flag} {' '.join(parts)}".rstrip()


#: One stored event before anything reads it, flat:
#: ``(t, service, op, outcome, detail names, attempt, *detail values)``. Flat, so a row of
#: text and numbers holds no tracked object and the garbage collector stops tracking it
#: on its first pass (a nested values tuple would keep it tracked into an older generation).
_Row = tuple[Any, ...]


def _canonical(seq: int, t: float, service: str, op: str, outcome: str, attempt: str | None,
               detail: dict[str, Any]) -> str:
    """``Event.canonical`` of these fields (the digest hashes rows without building events)."""
    return _dumps([seq, round(t, 6), service, op, outcome, attempt, detail], sort_keys=True,
                  separators=(",", ":"), default=repr)


_dumps = json.dumps


class History:
    """Append-only list of ``Event``; ``clock`` gives the virtual time of each record.

    Services append positional rows (``add``), and an ``Event`` is built from a row the
    first time something reads it (iteration, ``events``, ``filter``, ``timeline``), then
    kept in its place, so the same event is always the same object. A row of text and
    numbers is one flat tuple, which the garbage collector stops tracking on its first
    pass (a dict or a nested tuple would keep it tracked): a long history costs little
    collection time.
    """

    __slots__ = ("_append", "_clock", "_events", "_listeners", "_read", "_virtual")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        #: the ``VirtualClock`` when ``clock`` is its ``monotonic`` (read directly by ``add``)
        owner = getattr(clock, "__self__", None)
        self._virtual = owner if type(owner) is VirtualClock and getattr(
            clock, "__func__", None) is VirtualClock.monotonic else None
        #: ``Event``, or a row not read yet; the index is the event's ``seq``
        self._events: list[Event | _Row] = []
        #: every entry before this index is an ``Event`` already
        self._read = 0
        self._listeners: list[Callable[[Event], None]] = []
        #: The one way an entry enters the history (``record`` and ``add`` use it; a service's
        #: hottest path may hand it a row it built itself): the list's own ``append`` while no
        #: one listens, ``_append_and_tell`` once someone does. An entry is an ``Event`` whose
        #: ``seq`` is its index, or a flat row ``(t, service, op, outcome, detail names,
        #: attempt label, *detail values)`` with ``t`` the history's current time, an outcome
        #: of ``OUTCOMES`` and values that never change.
        self._append: Callable[[Event | _Row], None] = self._events.append

    def record(self, service: str, op: str, outcome: str = "ok", **detail: Any) -> Event:
        """Append an event at the current virtual time, tagged with the attempt running it."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome= must be one of {OUTCOMES}; got {outcome!r}")
        attempt = current_attempt.get()
        event = Event(
            len(self._events), self._clock(), service, op, outcome, detail,
            attempt.label if attempt is not None else None,
        )
        self._append(event)
        return event

    def add(self, service: str, op: str, outcome: str, names: tuple[str, ...],
            values: tuple[Any, ...]) -> None:
        """``record(service, op, outcome, **dict(zip(names, values, strict=True)))`` for services' hot
        paths, without building the ``Event`` until it is read. ``outcome`` must be one of
        ``OUTCOMES``; the values must not change later (text, numbers, ``None``)."""
        attempt = current_attempt.get()
        virtual = self._virtual
        self._append((virtual._mono if virtual is not None else self._clock(), service, op,
                      outcome, names, attempt.label if attempt is not None else None, *values))

    def _append_and_tell(self, entry: Event | _Row) -> None:
        """``_append`` once someone listens: append ``entry``, then hand its event to each
        listener."""
        events = self._events
        events.append(entry)
        event = self._event(len(events) - 1)
        for listener in self._listeners:
            listener(event)

    def _event(self, i: int) -> Event:
        """Entry ``i`` as an ``Event``: a row is turned into one, in place."""
        row = self._events[i]
        if type(row) is not tuple:
            return row  # type: ignore[return-value]
        event = self._events[i] = Event(i, row[0], row[1], row[2], row[3],
                                        dict(zip(row[4], row[6:], strict=True)), row[5])
        return event

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` for each new event (used by reports and chaos mode)."""
        self._listeners.append(listener)
        self._append = self._append_and_tell

    def _all(self) -> list[Event]:
        """Every event, oldest first: rows not read yet become events, in place."""
        events = self._events
        for i in range(self._read, len(events)):
            if type(events[i]) is tuple:
                self._event(i)
        self._read = len(events)
        return events  # type: ignore[return-value]

    @property
    def events(self) -> list[Event]:
        """A copy of all events, oldest first."""
        return list(self._all())

    def __iter__(self) -> Iterator[Event]:
        return iter(list(self._all()))

    def __len__(self) -> int:
        return len(self._events)

    def filter(
        self, service: str | None = None, op: str | None = None, **detail: Any
    ) -> list[Event]:
        """Events matching ``service``, ``op`` and every given detail value."""
        return [
            e for e in self._all()
            if (service is None or e.service == service)
            and (op is None or e.op == op)
            and all(e.detail.get(k) == v for k, v in detail.items())
        ]

    def count(self, service: str | None = None, op: str | None = None, **detail: Any) -> int:
        """How many events match (see ``filter``)."""
        return len(self.filter(service, op, **detail))

    def digest(self) -> str:
        """SHA-256 over every event's canonical text: equal digests mean identical runs."""
        h = hashlib.sha256()
        update = h.update
        for seq, e in enumerate(self._events):
            if type(e) is tuple:
                update(_canonical(seq, e[0], e[1], e[2], e[3], e[5],
                                  dict(zip(e[4], e[6:], strict=True))).encode())
            else:
                update(e.canonical().encode())  # type: ignore[union-attr]
            update(b"\n")
        return h.hexdigest()

    def timeline(
        self,
        events: Iterable[Event] | None = None,
        *,
        limit: int | None = None,
    ) -> str:
        """The events as text, one per line, in virtual time; ``limit`` keeps the last N."""
        chosen = list(self._all() if events is None else events)
        skipped = 0
        if limit is not None and len(chosen) > limit:
            skipped = len(chosen) - limit
            chosen = chosen[-limit:]
        lines = [f"... {skipped} earlier event(s) not shown"] if skipped else []
        lines.extend(e.render() for e in chosen)
        return "\n".join(lines) if lines else "(no events)"
