"""The virtual clock: one monotonic counter and the wall-clock instant it started at."""

from __future__ import annotations

import datetime as _dt
import math

__all__ = ["CLOCK_RANGE", "DEFAULT_START", "VirtualClock", "check_span", "parse_start"]

DEFAULT_START = "2026-01-01T00:00:00Z"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
#: Virtual seconds a clock can count (2**32 s, about 136 years). The loop fires timers with
#: a 1 µs resolution; past 2**34 s a float cannot hold a microsecond and time stops moving.
CLOCK_RANGE = float(2**32)
_RANGE_TEXT = f"{CLOCK_RANGE:.4g}s (about 136 years)"
#: Start instants (epoch seconds) whose whole clock range is a valid ``datetime``.
_MIN_START = (_dt.datetime(1, 1, 2, tzinfo=_dt.UTC) - _EPOCH).total_seconds()
_MAX_START = (_dt.datetime(9999, 12, 31, tzinfo=_dt.UTC) - _EPOCH).total_seconds() - CLOCK_RANGE


def check_span(name: str, value: object, now: float = 0.0) -> float:
    """Validate a span of virtual seconds taken at ``now``: finite, >= 0, within the clock's range.

    ``name`` is how the user wrote the argument, e.g. ``"advance(seconds=...)"``.
    """
    if (isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
            or value < 0):
        raise ValueError(f"{name} needs a finite number >= 0; got {value!r}")
    span = float(value)
    if now + span > CLOCK_RANGE:
        raise ValueError(
            f"{name} got {span:g}, which reaches past the virtual clock's range of "
            f"{_RANGE_TEXT} (now t=+{now:g}s): the clock counts microseconds, which a float "
            "loses beyond it. Use a smaller finite value, e.g. 7 * 86400 for a week."
        )
    return span


def _check_start(seconds: float, given: object) -> float:
    if not _MIN_START <= seconds <= _MAX_START:
        raise ValueError(
            f"start={given!r} is outside the range a simulation can start at: from year 1 to "
            f"{_MAX_START:.0f} epoch seconds (year 9863), so that the clock's {_RANGE_TEXT} still "
            "ends before year 10000. Use an instant such as '2026-01-01T00:00:00Z'."
        )
    return seconds


def parse_start(start: str | float | int | _dt.datetime | None) -> float:
    """Turn ``start=`` (ISO text, aware/naive datetime, or epoch seconds) into epoch seconds."""
    if start is None:
        start = DEFAULT_START
    if isinstance(start, bool):
        raise TypeError(f"start= expects an ISO-8601 string, a datetime or epoch seconds; got {start!r}")
    if isinstance(start, int | float):
        if not math.isfinite(start):
            raise ValueError(f"start= must be a finite number of epoch seconds; got {start!r}")
        return _check_start(float(start), start)
    if isinstance(start, str):
        text = start.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"start= expects an ISO-8601 instant such as '2026-01-01T00:00:00Z'; got {start!r}"
            ) from None
        start = parsed
    if isinstance(start, _dt.datetime):
        given = start
        if start.tzinfo is None:
            start = start.replace(tzinfo=_dt.UTC)
        try:
            return _check_start((start - _EPOCH).total_seconds(), given)
        except OverflowError:  # an aware instant near year 1 or 9999
            return _check_start(math.inf, given)
    raise TypeError(
        f"start= expects an ISO-8601 string, a datetime or epoch seconds; got {type(start).__name__}"
    )


class VirtualClock:
    """Virtual time: ``monotonic()`` counts seconds since the simulation began.

    ``time()`` and ``now()`` are the wall clock: the start instant plus that count.
    Only the event loop moves the clock forward; nothing ever moves it back.
    """

    __slots__ = ("_mono", "start")

    def __init__(self, start: str | float | int | _dt.datetime | None = None) -> None:
        self.start = parse_start(start)
        """The virtual wall clock at the simulation's start, as epoch seconds."""
        self._mono = 0.0

    def monotonic(self) -> float:
        """Seconds of virtual time since the simulation began."""
        return self._mono

    def time(self) -> float:
        """Virtual wall clock as epoch seconds (what ``time.time()`` returns in a simulation)."""
        return self.start + self._mono

    def now(self) -> _dt.datetime:
        """Virtual wall clock as an aware UTC datetime."""
        return _EPOCH + _dt.timedelta(seconds=self.start + self._mono)

    def utc_naive(self) -> _dt.datetime:
        """Naive UTC datetime, the form freezegun's factories return."""
        return _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=self.start + self._mono)

    def advance_to(self, mono: float) -> None:
        """Move virtual time forward to ``mono``; earlier values are ignored (time never runs back).

        Past ``CLOCK_RANGE`` it raises ``ValueError``: the clock would stop moving there.
        """
        if mono > self._mono:
            if mono > CLOCK_RANGE:
                raise ValueError(
                    f"virtual time cannot move to t=+{mono:g}s: that is past the virtual clock's "
                    f"range of {_RANGE_TEXT}, where a float loses the microseconds timers need. "
                    "Something sleeps or waits far too long (a timeout of 1e12 seconds?)."
                )
            self._mono = mono

    def __repr__(self) -> str:
        return f"<VirtualClock t=+{self._mono:.3f}s {self.now().isoformat()}>"
