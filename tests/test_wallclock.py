"""Wall clock inside a simulation follows virtual time (freezegun), without hanging asyncio."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.wallclock import wall_clock


@pytest.mark.asyncio
@pytest.mark.bgwork(start="2026-05-01T08:00:00Z")
async def test_wall_clock_follows_virtual_time(bgwork: bg.Simulation) -> None:
    assert dt.datetime.now(dt.UTC) == dt.datetime(2026, 5, 1, 8, tzinfo=dt.UTC)
    await asyncio.sleep(90)
    assert dt.datetime.utcnow() == dt.datetime(2026, 5, 1, 8, 1, 30)
    assert time.time() == bgwork.clock.time()
    await bgwork.advance(86400)
    assert dt.date.today() == dt.date(2026, 5, 2)


@pytest.mark.asyncio
async def test_asyncio_keeps_working_under_the_frozen_wall_clock(bgwork: bg.Simulation) -> None:
    """Plain freeze_time freezes time.monotonic and asyncio waits forever; here it moves."""
    before = time.monotonic()
    await asyncio.wait_for(asyncio.sleep(30), timeout=60)
    assert time.monotonic() - before == 30
    assert asyncio.get_running_loop().time() == 30


def test_sync_test_sees_virtual_wall_time(bgwork: bg.Simulation) -> None:
    async def main() -> dt.datetime:
        await asyncio.sleep(3600)
        return dt.datetime.now(dt.UTC)

    assert bgwork.run(main()) == dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC)


def test_patch_is_gone_outside_a_simulation() -> None:
    from freezegun.api import real_datetime, real_time

    assert not wall_clock.active
    assert dt.datetime is real_datetime
    assert time.time is real_time


def test_freezegun_tick_is_refused_with_the_fix(bgwork: bg.Simulation) -> None:
    from freezegun import api

    with pytest.raises(RuntimeError, match=r"await sim.advance\(seconds\)"):
        api.freeze_factories[-1].tick()  # type: ignore[union-attr]


def test_nested_start_stop_is_reference_counted() -> None:
    wall_clock.start()
    wall_clock.start()
    wall_clock.stop()
    assert wall_clock.active
    wall_clock.stop()
    assert not wall_clock.active
    wall_clock.stop()  # an extra stop is harmless
    assert not wall_clock.active
