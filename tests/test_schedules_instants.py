"""Cron instants: the schedule's fast step within an hour agrees with croniter everywhere.

``sim.schedules`` keeps one croniter per schedule and, from one of the schedule's own
instants, steps to the next listed minute of the same hour itself. These tests pin that
the instants it fires at are exactly croniter's (a new ``croniter(cron, t).get_next()``
per instant, as before), over generated cron texts and start times, and through the
public API.
"""

from __future__ import annotations

import datetime as dt

from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork.services.schedules import _Instants


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    ranges = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    steps = st.tuples(st.sampled_from(["*", f"{low}-{high}"]), st.integers(1, high - low + 1)).map(
        lambda rs: f"{rs[0]}/{rs[1]}")
    single = st.one_of(st.just("*"), value.map(str), ranges, steps)
    return st.lists(single, min_size=1, max_size=3).map(",".join).map(
        lambda f: "*" if "*" in f.split(",") else f)


crons = st.one_of(
    st.tuples(_field(0, 59), _field(0, 23), _field(1, 28), _field(1, 12), _field(0, 6)).map(" ".join),
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "0 0 L * *",
                     "15,45 9-17 * * 1-5", "*/20 * 13 * 5", "5 * * * 1#2", "30 12 15W * *",
                     "59 23 31 12 *", "0-59/7 */5 * * *"]),
)
starts = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 12, 31)).map(
    lambda d: d.replace(tzinfo=dt.UTC))


@settings(max_examples=150, deadline=None)
@given(cron=crons, start=starts)
def test_the_instants_are_croniters(cron: str, start: dt.datetime) -> None:
    instants = _Instants(cron, start)
    ours = [instants.after(start)]
    theirs = [croniter(cron, start).get_next(dt.datetime)]
    for _ in range(40):
        ours.append(instants.after(ours[-1], on_instant=True))
        theirs.append(croniter(cron, theirs[-1]).get_next(dt.datetime))
    assert ours == theirs
    assert all(type(a) is type(b) for a, b in zip(ours, theirs, strict=True))


def test_a_schedule_fires_at_croniters_instants_through_pause_and_resume(bgwork: bg.Simulation) -> None:
    cron = "*/7 1-2,23 * * *"

    async def main() -> None:
        bgwork.schedules.create("tick", cron=cron, handler=lambda: None)
        await bgwork.advance(3 * 3600 + 30)
        bgwork.schedules.pause("tick")
        await bgwork.advance(20 * 3600)
        bgwork.schedules.resume("tick")
        await bgwork.advance(5 * 3600)

    bgwork.run(main())
    fired = [r.scheduled_at for r in bgwork.schedules.runs("tick")]
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    paused, resumed = start + dt.timedelta(seconds=3 * 3600 + 30), start + dt.timedelta(seconds=23 * 3600 + 30)
    expected, t = [], start
    while True:
        t = croniter(cron, t).get_next(dt.datetime)
        if paused < t <= resumed:
            t = resumed
            continue
        if t > start + dt.timedelta(seconds=28 * 3600 + 30):
            break
        expected.append(t)
    assert fired == expected
    assert len(fired) == 18 + 8 + 18  # 01:00-02:56; after the resume at 23:00:30, 23:07-02:56
