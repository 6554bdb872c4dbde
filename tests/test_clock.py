"""The virtual clock: parsing start=, wall and monotonic time, never running back."""

from __future__ import annotations

import datetime as dt

import pytest

from pytest_bgwork.core.clock import DEFAULT_START, VirtualClock, parse_start


def test_default_start_is_fixed_and_utc() -> None:
    clock = VirtualClock()
    assert DEFAULT_START == "2026-01-01T00:00:00Z"
    assert clock.now() == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert clock.monotonic() == 0.0


@pytest.mark.parametrize(
    "start",
    ["2026-03-01T12:00:00Z", "2026-03-01T13:00:00+01:00", dt.datetime(2026, 3, 1, 12),
     dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC), 1772366400, 1772366400.0],
)
def test_start_forms_agree(start: object) -> None:
    assert parse_start(start) == 1772366400.0  # type: ignore[arg-type]


def test_advance_moves_wall_and_monotonic_together() -> None:
    clock = VirtualClock("2026-01-01T00:00:00Z")
    clock.advance_to(90.5)
    assert clock.monotonic() == 90.5
    assert clock.time() == clock.start + 90.5
    assert clock.now() == dt.datetime(2026, 1, 1, 0, 1, 30, 500000, tzinfo=dt.UTC)
    assert clock.utc_naive() == dt.datetime(2026, 1, 1, 0, 1, 30, 500000)


def test_time_never_runs_back() -> None:
    clock = VirtualClock()
    clock.advance_to(10)
    clock.advance_to(5)
    assert clock.monotonic() == 10


@pytest.mark.parametrize(
    ("start", "error", "text"),
    [
        ("yesterday", ValueError, "start= expects an ISO-8601 instant"),
        (True, TypeError, "start= expects"),
        (float("nan"), ValueError, "finite"),
        ([2026], TypeError, "got list"),
    ],
)
def test_bad_start_names_the_argument(start: object, error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=text):
        parse_start(start)  # type: ignore[arg-type]
