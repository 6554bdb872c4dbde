"""The virtual clock: one monotonic counter and the wall-clock instant it started at."""

from __future__ import annotations

import datetime as _dt
import math

__all__ = ["DEFAULT_START", "VirtualClock", "parse_start"]

DEFAULT_START = "2026-01-01T00:00:00Z"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def parse_start(start: str | float | int | _dt.datetime | None) -> float:
    """Turn ``start=`` (ISO text, aware/naive datetime, or epoch seconds) into epoch seconds."""
    if start is None:
        start = DEFAULT_START
    if isinstance(start, bool):
        raise TypeError(f"start= expects an ISO-8601 string, a datetime or epoch seconds; got {start!r}")
    if isinstance(start, int | float):
        if not math.isfinite(start):
            raise ValueError(f"start= must be a finite number of epoch seconds; got {start!r}")
        return float(start)
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
        if start.tzinfo is None:
            start = start.replace(tzinfo=_dt.UTC)
        return (start - _EPOCH).total_seconds()
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
        """Move virtual time forward to ``mono``; earlier values are ignored (time never runs back)."""
        if mono > self._mono:
            self._mono = mono

    def __repr__(self) -> str:
        return f"<VirtualClock t=+{self._mono:.3f}s {self.now().isoformat()}>"
