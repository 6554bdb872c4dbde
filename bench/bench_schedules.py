"""Cron firing: a week of one-minute runs (10,080) on ``sim.schedules``, against croniter alone.

Run ``python bench/bench_schedules.py [DAYS]``. Each run of ``* * * * *`` is a timer, a
``Run`` record, two history events and a task calling a no-op ``async def handler(run)``.
The bound is croniter alone iterating the same schedule (one ``croniter``, ``get_next``
per instant, no simulation): the next-instant arithmetic a cron service cannot skip.
"croniter, one per instant" is what firing cost before (a new ``croniter`` parsed the
cron text for each instant). CPU seconds, best of interleaved rounds. To measure another
copy of the package in the same way: ``PYTHONPATH=<its checkout> python bench/bench_schedules.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from croniter import croniter

sys.path.insert(0, os.path.dirname(__file__))
from _common import interleaved

import pytest_bgwork as bg

CRON = "* * * * *"
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def bgwork_week(days: int) -> int:
    """``days`` of one-minute runs fired by ``sim.schedules``; the number of runs."""
    sim = bg.Simulation(seed=1)
    count = 0

    async def tick(run: object) -> None:
        nonlocal count
        count += 1

    async def main() -> None:
        sim.schedules.create("tick", cron=CRON, handler=tick)
        await sim.advance(days * 24 * 3600)

    try:
        sim.run(main())
    finally:
        sim.close()
    assert count == days * 24 * 60, count
    return count


def croniter_alone(days: int) -> dt.datetime:
    """One croniter iterating the same instants: the bound."""
    it = croniter(CRON, START)
    last = START
    for _ in range(days * 24 * 60):
        last = it.get_next(dt.datetime)
    return last


def croniter_per_instant(days: int) -> dt.datetime:
    """A new croniter per instant (the cron text parsed each time)."""
    last = START
    for _ in range(days * 24 * 60):
        last = croniter(CRON, last).get_next(dt.datetime)
    return last


def main() -> None:
    days = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    runs = days * 24 * 60
    assert croniter_alone(1) == croniter_per_instant(1) == START + dt.timedelta(days=1)
    best = interleaved({
        "sim.schedules": lambda: bgwork_week(days),
        "croniter alone": lambda: croniter_alone(days),
        "croniter, one per instant": lambda: croniter_per_instant(days),
    }, rounds=3)
    load = os.getloadavg()[0]
    print(f"cron {CRON!r}, {days} day(s) = {runs} runs; CPU s, best of 3 interleaved rounds "
          f"(load average {load:.1f}); package {os.path.dirname(bg.__file__)}")
    print(f"  {'':<28}{'CPU s':>9}{'µs/run':>9}{'vs bound':>10}")
    bound = best["croniter alone"]
    for name, t in best.items():
        print(f"  {name:<28}{t:>9.3f}{t / runs * 1e6:>9.1f}{t / bound:>9.2f}x")


if __name__ == "__main__":
    main()
