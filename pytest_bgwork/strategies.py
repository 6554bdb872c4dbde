"""Hypothesis strategies for exploration: fault plans, retry schedules, delivery orders.

Every strategy yields plain data (``FaultPlan``, dicts, lists) and shrinks toward
the empty or default form, so a failure found by ``bg.explore`` shrinks to the
fewest faults, the queue defaults and the original order.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Sequence
from typing import Any

from hypothesis import strategies as st

from .core.faults import KINDS, Fault, FaultPlan, _check_point

__all__ = ["DEFAULT_MAX_ON_CALL", "DEFAULT_POINTS", "MAX_FAULTS", "delivery_orders", "fault_plans",
           "learned_points", "retry_schedules"]

DEFAULT_POINTS = (
    "queue.deliver", "queue.ack", "queue.publish",
    "kv.get", "kv.set", "kv.delete",
    "stream.create", "stream.write", "stream.close",
    "http", "webhook.deliver",
)
"""Points ``fault_plans`` draws from outside ``bg.explore`` (inside it, by default, the points a
clean run of the scenario passed): the writes that can fail after applying
(``queue.publish``, ``http``, ``webhook.deliver``) as well as the queue worker's points."""
MAX_FAULTS = 100
"""The most faults one plan may hold (``fault_plans(max_faults=...)``): drawing a plan costs
time in its size, and a failure needing more faults than this is not one shrinking can
explain."""
DEFAULT_MAX_ON_CALL = 3
"""``on_call`` is drawn from 1 to this outside ``bg.explore`` (inside it, among every call the
clean run made at that point) when ``fault_plans(max_on_call=...)`` is left out."""
#: Points where an error can come *after* the operation applied (a timeout after the write).
_WRITES = frozenset({
    "queue.publish", "queue.ack", "queue.extend", "kv.set", "kv.delete",
    "stream.create", "stream.write", "stream.close", "http", "webhook.deliver",
})
#: Where the integers explore draws start. Hypothesis now and then draws an integer from the
#: constants in the source of the loaded modules, a pool that differs from process to
#: process and shifts every later draw: a seeded search found a bug at example 11 alone and
#: at 98 once one more module was imported. No module holds a constant this large, so
#: integers drawn from ``_OFFSET + lo .. _OFFSET + hi`` (and the offset taken away) come out
#: the same in every process, and still shrink to ``lo``.
_OFFSET = 2**80
#: A wide integer taken modulo a small range: Hypothesis leans to the low end of a small
#: range (the first targets, short hangs), far less of a wide one; it still shrinks to 0.
_WIDE: st.SearchStrategy[int] = st.integers(_OFFSET, _OFFSET + 2**32 - 1)


def _wide() -> st.SearchStrategy[int]:
    """``_WIDE`` unwrapped: ``st.integers`` is a lazy wrapper every draw unwraps again.

    Drawing from what it wraps gives the same choices and labels for ~8% less of
    Hypothesis's time per plan; done at the first draw, not at import (Hypothesis warns
    about a strategy evaluated while pytest loads plugins).
    """
    global _WIDE
    _WIDE = getattr(_WIDE, "wrapped_strategy", _WIDE)
    return _WIDE
learned_points: contextvars.ContextVar[dict[str, int] | None] = contextvars.ContextVar(
    "bgwork_learned_points", default=None)
"""The fault points ``bg.explore`` saw a clean run of the scenario pass, with how many calls
each had (set while it searches): a fault's call number is drawn among calls that happen."""
#: A fault's target: kind, point, queue, and whether an error comes after the write applied.
_Cell = tuple[str, str, str | None, bool]
_ERRORS = ("ConnectionError('injected fault')", "TimeoutError('injected timeout')")


def _names(values: Iterable[str] | str | None, arg: str, default: Sequence[str]) -> tuple[str, ...]:
    if values is None:
        return tuple(default)
    if isinstance(values, str):
        raise TypeError(f"{arg}= expects a list of names, e.g. [{values!r}]; got the string {values!r}")
    out = tuple(values)
    if not out:
        raise ValueError(f"{arg}= must not be empty; leave it out to use the default {list(default)}")
    return out


def fault_plans(
    max_faults: int = 3,
    *,
    points: Iterable[str] | None = None,
    queues: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    max_on_call: int | None = None,
    max_hang: float = 900.0,
    max_delay: float = 60.0,
) -> st.SearchStrategy[FaultPlan]:
    """Fault plans of at most ``max_faults`` faults; they shrink to ``FaultPlan([])``.

    ``points`` are the fault points ``fail``/``crash``/``delay`` target (default: inside
    ``bg.explore``, the points a clean run of the scenario passed; elsewhere
    ``DEFAULT_POINTS``); ``queues`` scope ``crash``/``duplicate``/``hang`` (default
    ``["*"]``, every queue); ``kinds`` chooses among ``fail``, ``crash``, ``duplicate``,
    ``hang``, ``delay`` (default all; earlier kinds are the ones shrinking prefers).
    ``on_call`` is drawn uniformly among the calls the clean run of ``bg.explore`` made at
    that point (outside it, from 1 to ``DEFAULT_MAX_ON_CALL``), shrinking toward call 1;
    ``max_on_call`` caps it (an int >= 1). ``fail``, ``delay`` and ``duplicate`` may also
    hit every call, which can exhaust retries. Hangs last up to ``max_hang`` seconds (enough
    to pass a visibility timeout), delays up to ``max_delay``. ``max_faults`` is at most
    ``MAX_FAULTS``.

    The distribution: the number of faults is uniform in ``0..max_faults``; each fault's
    *mode* is uniform among the kinds plus "fail after the write applied" (when ``fail`` is
    a kind and a write is among the points: a timeout that hid a success, what makes
    at-least-once systems do work twice), then its point (a write, for that mode) and queue
    uniformly; 3 in 4 duplicates overlap. Each draw shrinks to 0: no fault, else the first
    kind at the first point, call 1, a ConnectionError before the write, copies in turn, 1 s.
    """
    if isinstance(max_faults, bool) or not isinstance(max_faults, int) or not 0 <= max_faults \
            <= MAX_FAULTS:
        raise ValueError(
            f"fault_plans(max_faults=...) expects an int from 0 to {MAX_FAULTS} (MAX_FAULTS); got "
            f"{max_faults!r}. A failure is shrunk to the fewest faults that cause it: a few "
            "(the default is 3) find what many would, far faster.")
    if max_on_call is not None and (isinstance(max_on_call, bool) or not isinstance(max_on_call, int)
                                    or max_on_call < 1):
        raise ValueError(
            f"fault_plans(max_on_call=...) expects an int >= 1 or None; got {max_on_call!r}. "
            "None draws among every call the clean run made at the point (outside bg.explore: "
            f"1 to {DEFAULT_MAX_ON_CALL}).")
    for arg, value in (("max_hang", max_hang), ("max_delay", max_delay)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
            raise ValueError(f"fault_plans({arg}=...) expects seconds >= 1; got {value!r}")
    fixed = None if points is None else tuple(
        _check_point(p, "points") for p in _names(points, "points", DEFAULT_POINTS))
    queue_list = _names(queues, "queues", ("*",))
    for q in queue_list:
        if not isinstance(q, str) or not q:
            raise ValueError(f"queues= expects queue names (or '*'); got {q!r}")
    kind_list = _names(kinds, "kinds", KINDS)
    unknown = [k for k in kind_list if k not in KINDS]
    if unknown:
        raise ValueError(f"kinds= may hold {', '.join(KINDS)}; got unknown {unknown!r}")
    hang_max, delay_max = int(max_hang), int(max_delay)
    cache: dict[tuple[str, ...], list[list[_Cell]]] = {}

    def modes_for(point_list: tuple[str, ...]) -> list[list[_Cell]]:
        """Per failure mode, every (kind, point, queue, after_apply) it can take.

        The modes are the ``kinds`` in order, then "fail after the write applied" (when
        ``fail`` is a kind and a write is among the points): the error that hides a success
        is a mode of its own, as a crash is, rather than one fail in two at one point in n.
        """
        found = cache.get(point_list)
        if found is None:
            found = []
            for kind in kind_list:
                if kind in ("fail", "delay"):
                    found.append([(kind, p, None, False) for p in point_list])
                elif kind == "crash":
                    found.append([(kind, p, q, False) for p in point_list for q in queue_list])
                elif kind == "duplicate":
                    found.append([(kind, "queue.publish", q, False) for q in queue_list])
                else:
                    found.append([(kind, "queue.deliver", q, False) for q in queue_list])
            writes: list[_Cell] = [("fail", p, None, True) for p in point_list if p in _WRITES]
            if "fail" in kind_list and writes:
                found.append(writes)
            cache[point_list] = found
        return found

    def build(cell: _Cell, call: int, w: int) -> Fault:
        """The fault of ``cell`` on call ``call``; ``w`` (0 for a crash) holds its options,
        each off when ``w`` is 0: one call, a ConnectionError, 2 copies one after the
        other (3 in 4 duplicates overlap), 1 s."""
        kind, point, queue, after = cell
        every = w & 1
        if kind == "fail":
            return Fault("fail", point, None, None if every else call,
                         _ERRORS[(w >> 1) & 1], after)
        if kind == "crash":
            return Fault("crash", point, queue, call)
        if kind == "duplicate":
            # overlapping copies are what concurrent consumers of at-least-once queues see
            return Fault("duplicate", point, queue, None if every else call,
                         times=2 + (w >> 3) % 2, overlap=(w >> 1) % 4 != 0)
        if kind == "hang":
            return Fault("hang", point, queue, call, seconds=float(1 + w % hang_max))
        return Fault("delay", point, None, None if every else call,
                     seconds=float(1 + (w >> 1) % delay_max))

    @st.composite
    def fault(draw: st.DrawFn) -> Fault:
        # One draw picks the mode uniformly, one its cell (point, queue) uniformly, one the
        # call number (only when more than one call happens), one the options (none for a
        # crash). Each shrinks to 0: the first kind at the first point, call 1, no option.
        wide = _wide()
        learned = learned_points.get()
        point_list = fixed if fixed is not None else (tuple(learned) if learned else DEFAULT_POINTS)
        modes = modes_for(point_list)
        cells = modes[(draw(wide) - _OFFSET) % len(modes)]
        cell = cells[(draw(wide) - _OFFSET) % len(cells)] if len(cells) > 1 else cells[0]
        made = learned.get(cell[1]) if learned else None  # the calls the clean run made there
        calls = made if made is not None else DEFAULT_MAX_ON_CALL
        if max_on_call is not None:  # a cap; outside explore, the range itself
            calls = min(calls, max_on_call) if made is not None else max_on_call
        call = 1 + (draw(wide) - _OFFSET) % calls if calls > 1 else 1
        return build(cell, call, 0 if cell[0] == "crash" else (draw(wide) - _OFFSET))

    @st.composite
    def plans(draw: st.DrawFn) -> FaultPlan:
        # The number of faults is uniform in 0..max_faults (st.lists would make 40% of plans
        # empty); shrinking lowers it and deletes faults, down to FaultPlan([]).
        count = (draw(_wide()) - _OFFSET) % (max_faults + 1) if max_faults else 0
        return FaultPlan([draw(fault()) for _ in range(count)])

    return plans()


def retry_schedules(
    *,
    max_retries: tuple[int, int] = (0, 5),
    visibility_timeout: tuple[float, float] = (1, 300),
    retry_delay: tuple[float, float] = (0, 60),
) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments for ``sim.queues.create``; they shrink to ``{}`` (the defaults).

    Each present key is drawn from its ``(lo, hi)`` range:
    ``sim.queues.create("jobs", **schedule)``.
    """
    ranges = {"max_retries": max_retries, "visibility_timeout": visibility_timeout,
              "retry_delay": retry_delay}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for name, bounds in ranges.items():
        if not (isinstance(bounds, tuple) and len(bounds) == 2 and bounds[0] <= bounds[1]):
            raise ValueError(f"retry_schedules({name}=...) expects a (lo, hi) tuple with lo <= hi; "
                             f"got {bounds!r}")
        lo, hi = bounds
        if name == "max_retries":
            optional[name] = st.integers(int(lo), int(hi))
        else:
            optional[name] = st.integers(int(lo), int(hi)).map(float)
    return st.fixed_dictionaries({}, optional=optional)


def delivery_orders(n: int) -> st.SearchStrategy[list[int]]:
    """Permutations of ``range(n)``, shrinking toward ``[0, 1, ..., n-1]`` (publish order).

    Publish your messages in the drawn order: ``for i in order: await publish(jobs[i])``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"delivery_orders(n=...) expects the number of messages, an int >= 0; "
                         f"got {n!r}")
    return st.permutations(list(range(n)))
