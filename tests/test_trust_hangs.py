"""Never hang (docs/trust.md): horizons, the busy guard, the clock's range, callback errors."""

from __future__ import annotations

import asyncio
import math

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.clock import CLOCK_RANGE
from pytest_bgwork.core.loop import VirtualEventLoop

# -- a virtual-time horizon for sim.run and async test bodies ---------------------------------------
WAITS_WHILE_CRON_FIRES = """
import asyncio
import pytest

async def tick(run):
    pass

@pytest.mark.asyncio
{marker}
async def test_waits_for_nothing(bgwork):
    bgwork.schedules.create("tick", cron="0 * * * *", handler=tick)
    never = asyncio.Event()
    await never.wait()

def test_sync_run_waits_for_nothing(bgwork):
    async def main():
        bgwork.schedules.create("tick", cron="0 * * * *", handler=tick)
        await asyncio.Event().wait()
    bgwork.run(main())
"""


def test_waiting_forever_while_a_cron_fires_ends_in_stalled_at_the_horizon(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(WAITS_WHILE_CRON_FIRES.format(marker=""))
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "timeout", "--timeout=60")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*Stalled: virtual time would pass the horizon t=+604800s (the test's max_time=604800s*"
        "next timer is due at t=+608400s (Schedules._fire 'tick' [[]recurring[]])*",
        "*Waiting:",
        "*test_waits_for_nothing*waiting at *: await never.wait()*",
        "*Stalled: virtual time would pass the horizon t=+604800s (sim.run's max_time=604800s*",
    ])


def test_the_marker_sets_the_horizon(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WAITS_WHILE_CRON_FIRES.format(marker="@pytest.mark.bgwork(max_time=3600)"))
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_waits_for_nothing")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Stalled: virtual time would pass the horizon t=+3600s*"])


def test_explicit_advance_moves_the_horizon_along() -> None:
    sim = bg.Simulation(max_time=60)

    async def main() -> float:
        await sim.advance(3 * 86400)  # asked for: allowed past max_time
        await asyncio.sleep(59)  # within max_time of the last explicit move
        with pytest.raises(bg.Stalled, match="run_until_idle"):
            sim.loop.call_later(1000, lambda: None)
            await sim.run_until_idle(max_time=10)
        return sim.clock.monotonic()

    with sim:
        assert sim.run(main()) == 3 * 86400 + 59


def test_bad_max_time_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.bgwork(max_time=float("nan"))
        def test_x(bgwork):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*Simulation(max_time=...) needs a finite number >= 0; got nan*"])
    assert result.ret != 0


# -- the busy guard works in test bodies ------------------------------------------------------------
def test_a_busy_loop_in_the_test_body_ends_in_stalled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_spins(bgwork):
            while True:
                await asyncio.sleep(0)

        @pytest.mark.asyncio
        async def test_polls_a_queue(bgwork):
            q = await bgwork.queues.create("jobs")
            while True:
                await q.receive()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "timeout", "--timeout=60")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([
        "*Stalled: the loop ran * iterations (*s of real time) at virtual t=+0.000s without time "
        "moving or a thread working: code that polls without waiting*",
        "*test_spins*waiting at *await asyncio.sleep(0)*",
    ])


# -- the clock's range -----------------------------------------------------------------------------
def test_advance_past_the_clock_range_is_refused() -> None:
    async def main(sim: bg.Simulation) -> None:
        with pytest.raises(ValueError, match=r"advance\(seconds=...\) got 2e\+10, which reaches past "
                                             r"the virtual clock's range of 4\.295e\+09s"):
            await sim.advance(2e10)

    with bg.Simulation() as sim:
        sim.run(main(sim))


@pytest.mark.parametrize("start", [1e20, -1e20, "9999-06-01T00:00:00Z"])
def test_a_start_past_the_clock_range_is_refused(start: object) -> None:
    with pytest.raises(ValueError, match=r"start=.* is outside the range a simulation can start at"):
        bg.Simulation(start=start)  # type: ignore[arg-type]


def test_a_sleep_past_the_clock_range_is_refused_not_spun() -> None:
    loop = VirtualEventLoop()  # no simulation, so no horizon: the clock itself refuses
    try:
        with pytest.raises(ValueError, match=r"cannot move to t=\+2e\+10s: that is past the virtual "
                                             r"clock's range"):
            loop.run_until_complete(asyncio.sleep(2e10))
    finally:
        loop.close()


def test_the_horizon_never_exceeds_the_clock_range() -> None:
    with bg.Simulation(max_time=CLOCK_RANGE) as sim, pytest.raises(bg.Stalled, match="horizon"):
        sim.run(asyncio.sleep(2e10))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 2e10])
def test_run_until_idle_refuses_max_time_it_cannot_keep(bad: float) -> None:
    async def main(sim: bg.Simulation) -> None:
        async def periodic() -> None:
            while True:
                await asyncio.sleep(60)

        asyncio.create_task(periodic())
        await sim.run_until_idle(max_time=bad)

    with bg.Simulation() as sim, pytest.raises(ValueError, match=r"run_until_idle\(max_time=...\)"):
        sim.run(main(sim))


def test_run_until_idle_with_a_periodic_task_stalls_at_max_time() -> None:
    async def main(sim: bg.Simulation) -> None:
        async def periodic() -> None:
            while True:
                await asyncio.sleep(60)

        asyncio.create_task(periodic())
        await sim.run_until_idle(max_time=3600)

    with bg.Simulation() as sim, pytest.raises(bg.Stalled, match="max_time=3600s"):
        sim.run(main(sim))


# -- errors in loop callbacks, and exceptions that are not ours --------------------------------------
def test_an_error_in_a_loop_callback_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest

        def broken():
            raise RuntimeError("callback broke")

        @pytest.mark.asyncio
        async def test_callback(bgwork):
            asyncio.get_running_loop().call_later(5, broken)
            await bgwork.advance(10)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*RuntimeError: callback broke*",
        "*bgwork: raised in a loop callback (Exception in callback broken()*",
    ])


def test_pytest_outcomes_raised_in_background_are_never_swallowed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest

        async def times_out():
            await asyncio.sleep(1)
            pytest.fail("Timeout >1.0s")  # what pytest-timeout raises from its signal handler

        @pytest.mark.asyncio
        async def test_task(bgwork):
            asyncio.create_task(times_out())
            await bgwork.advance(5)

        @pytest.mark.asyncio
        async def test_callback(bgwork):
            asyncio.get_running_loop().call_later(1, pytest.fail, "Timeout in a callback")
            await bgwork.advance(5)

        def test_sync_run(bgwork):
            async def main():
                asyncio.create_task(times_out())
                await asyncio.sleep(5)
            bgwork.run(main())
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*Failed: Timeout >1.0s*", "*Failed: Timeout in a callback*"])


def test_runaway_work_under_duplicate_chaos_ends_in_stalled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.asyncio
        @pytest.mark.bgwork(chaos="duplicate")
        async def test_republishes_itself(bgwork):
            bgwork.loop.real_limit = 0.5  # REAL_LIMIT (10 s) is too long for this suite
            q = bgwork.queues
            q.create("jobs")

            async def handler(payload, delivery):
                await q.publish("jobs", {"n": payload["n"] + 1})

            q.route("jobs", handler=handler)
            await q.publish("jobs", {"n": 0})
            await bgwork.run_until_idle()
    """)
    # in a fresh process: after a long in-process session the run was once not stopped in CI
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "timeout", "--timeout=120",
                                           timeout=240)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*Stalled: runaway work: more than 0.5s of real time at virtual t=+0.000s*"
        "(DeliveryEngine._run x*re-publishes its own message*",
    ])
