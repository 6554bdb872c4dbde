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


# -- the cached patch (issue 16: a test pays ~0.1 ms, not freezegun's 10 ms module scan) --------
def test_module_level_clocks_follow_each_bgwork_test_and_are_real_in_between(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import datetime as dt
        import time
        from datetime import datetime as D
        from time import time as T

        from freezegun.api import real_datetime, real_time

        def test_first(bgwork):
            assert D.now(dt.UTC) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
            assert T() == bgwork.clock.time()

        def test_plain_in_between():
            assert D is real_datetime and T is real_time
            assert dt.datetime is real_datetime and time.time is real_time

        def test_again(bgwork):
            bgwork.run(bgwork.advance(60))
            assert D.now(dt.UTC) == dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
            assert T() == bgwork.clock.time()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_module_imported_while_patched_gets_real_clocks_back_then_fakes_again() -> None:
    import sys
    import types

    from freezegun.api import FakeDatetime, real_datetime

    name = "_bgwork_probe_imported_while_patched"
    with wall_clock:
        module = types.ModuleType(name)
        exec("from datetime import datetime", module.__dict__)
        sys.modules[name] = module
        assert module.datetime is FakeDatetime
    try:
        assert module.datetime is real_datetime
        with wall_clock:
            assert module.datetime is FakeDatetime
        assert module.datetime is real_datetime
    finally:
        del sys.modules[name]


def test_an_attribute_added_after_the_first_scan_is_patched_at_the_next_start() -> None:
    import sys
    import types

    from freezegun.api import fake_time, real_time

    name = "_bgwork_probe_grows"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        with wall_clock:
            pass  # scanned: nothing to patch
        module.now = real_time  # type: ignore[attr-defined]
        with wall_clock:
            assert module.now is fake_time  # type: ignore[attr-defined]
        assert module.now is real_time  # type: ignore[attr-defined]
    finally:
        del sys.modules[name]


def test_the_patch_triggers_no_lazy_import() -> None:
    """freezegun's scan calls getattr on every name of every module (importing lazy ones)."""
    import subprocess
    import sys

    probe = (
        "import sys, pytest_bgwork\n"
        "from pytest_bgwork.core.wallclock import wall_clock\n"
        "wall_clock.start(); wall_clock.stop()\n"
        "print(sorted(m for m in ('hypothesis', 'httpx', 'respx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_freeze_time_inside_a_bgwork_test_nests(bgwork: bg.Simulation) -> None:
    from freezegun import freeze_time

    assert dt.datetime.now(dt.UTC) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with freeze_time("2030-06-01"):
        assert dt.date.today() == dt.date(2030, 6, 1)
    assert dt.datetime.now(dt.UTC) == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert wall_clock.active


def test_a_patch_that_fails_half_way_leaves_every_real_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error while patching (a module that breaks when scanned) must not leave fake
    clocks behind for later tests and for pytest's own timing."""
    from pytest_bgwork.core import wallclock

    real_datetime, real_time = dt.datetime, time.time

    def broken(*args: object) -> list[tuple[object, str]]:
        raise RuntimeError("a module broke the scan")

    monkeypatch.setattr(wallclock._Patcher, "_find_sites", broken)
    with pytest.raises(RuntimeError, match="broke the scan"):
        wall_clock.start()
    assert not wall_clock.active
    assert dt.datetime is real_datetime and time.time is real_time
    assert wallclock._api().freeze_factories == []
    monkeypatch.undo()
    with wall_clock:  # and the next start works as usual
        assert dt.datetime is not real_datetime
    assert dt.datetime is real_datetime
