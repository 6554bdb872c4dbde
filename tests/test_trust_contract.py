"""The trust rules (docs/trust.md) as a user reads them: never hang, never lie, bad input, threads, network."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import pytest

import pytest_bgwork as bg

# loaded once here: pytester's in-process runs would import (and assert-rewrite) it again each run
import pytest_bgwork.checking.explore

# -- no hang ----------------------------------------------------------------------------------------


def test_sim_run_waiting_forever_on_a_cron_ends_in_stalled() -> None:
    sim = bg.Simulation(seed=0, max_time=6 * 3600)  # the default horizon is a week: same rule, fewer ticks

    async def tick() -> None:
        pass

    sim.schedules.create("every-minute", cron="* * * * *", handler=tick)

    async def main() -> None:
        await asyncio.Event().wait()  # waits forever while the cron keeps firing

    with pytest.raises(bg.Stalled) as info:
        sim.run(main())
    assert "main" in str(info.value)


def test_busy_loop_ends_in_stalled() -> None:
    sim = bg.Simulation(seed=0)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    real = time.perf_counter()
    with pytest.raises(bg.Stalled) as info:
        sim.run(spin())
    assert "spin" in str(info.value)
    assert time.perf_counter() - real < 120


def test_max_time_on_simulation_and_marker(pytester: pytest.Pytester) -> None:
    sim = bg.Simulation(seed=0, max_time=3600)

    async def sleepy() -> None:
        await asyncio.sleep(7200)

    with pytest.raises(bg.Stalled):
        sim.run(sleepy())

    pytester.makepyfile(
        """
        import asyncio, pytest
        import pytest_bgwork as bg

        @pytest.mark.bgwork(max_time=60)
        @pytest.mark.asyncio
        async def test_horizon(bgwork):
            with pytest.raises(bg.Stalled):
                await bgwork.run_until_idle() if False else await _wait()

        async def _wait():
            await asyncio.sleep(120)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    # the body's own sleep past the horizon ends in Stalled (caught or reported), never a hang
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 1
    assert "Stalled" in result.stdout.str() or outcomes.get("passed") == 1


def test_advance_past_a_busy_loop_is_stalled() -> None:
    sim = bg.Simulation(seed=0)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    async def main() -> None:
        asyncio.ensure_future(spin())
        await sim.advance(10)

    with pytest.raises(bg.Stalled):
        sim.run(main())


def test_error_in_loop_callback_fails_the_run() -> None:
    sim = bg.Simulation(seed=0)

    def boom() -> None:
        raise RuntimeError("callback blew up")

    async def main() -> None:
        asyncio.get_running_loop().call_later(1, boom)
        await asyncio.sleep(5)

    with pytest.raises(Exception, match="callback blew up"):
        sim.run(main())


def test_keyboard_interrupt_is_not_swallowed() -> None:
    sim = bg.Simulation(seed=0)

    async def main() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sim.run(main())


def test_pytest_outcome_in_task_is_not_swallowed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.asyncio
        async def test_fail_inside(bgwork):
            async def worker():
                await asyncio.sleep(1)
                pytest.fail("stop here")
            await asyncio.ensure_future(worker())
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*stop here*"])
    assert "RuntimeError" not in result.stdout.str()


def test_failing_test_with_leftover_task_has_no_teardown_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.asyncio
        async def test_fails_mid_flight(bgwork):
            bgwork.runtime.wait_until(asyncio.sleep(100))
            pytest.fail("stopped on purpose")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "Event loop stopped" not in result.stdout.str()


# -- no lie -----------------------------------------------------------------------------------------


def test_same_seed_same_digest_with_leftover_tasks() -> None:
    def run() -> str:
        sim = bg.Simulation(seed=11)

        async def worker(n: int) -> None:
            await asyncio.sleep(1000 + n)

        async def main() -> None:
            for n in range(3):
                asyncio.ensure_future(worker(n))
            await asyncio.sleep(1)

        sim.run(main())
        sim.close()
        return sim.history.digest()

    assert run() == run()


def test_unused_fault_rule_is_reported_and_fails_under_strict(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_lenient(bgwork):
            bgwork.faults.fail("kv.set", on_call=1)

        @pytest.mark.bgwork(strict=True)
        def test_strict(bgwork):
            bgwork.faults.fail("kv.set", on_call=1)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1
    assert outcomes.get("warnings", 0) >= 1
    assert "kv.set" in result.stdout.str()


@pytest.mark.asyncio
async def test_unknown_point_refused_everywhere(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError):
        bgwork.faults.fail("kv.sett")
    with pytest.raises(ValueError):
        bgwork.faults.delay("queue.delivr", seconds=1)
    with pytest.raises(ValueError):
        bgwork.faults.crash("jobs", at="stream.wrte")


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 1e300])
def test_numbers_refused_at_the_call(bad: float) -> None:
    sim = bg.Simulation(seed=0)

    async def main() -> None:
        sim.queues.create("jobs")
        with pytest.raises((ValueError, TypeError)) as info:
            await sim.advance(bad)
        assert "seconds" in str(info.value)
        with pytest.raises((ValueError, TypeError)) as info:
            await sim.kv.set("ns", "k", 1, ttl=bad)
        assert "ttl" in str(info.value)
        with pytest.raises((ValueError, TypeError)) as info:
            await sim.queues.publish("jobs", {"a": 1}, delay=bad)
        assert "delay" in str(info.value)
        with pytest.raises((ValueError, TypeError)):
            sim.faults.hang("jobs", seconds=bad)
        with pytest.raises((ValueError, TypeError)):
            await sim.run_until_idle(max_time=bad)

    sim.run(main())


@pytest.mark.asyncio
async def test_lone_surrogates_refused(bgwork: bg.Simulation) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        await bgwork.kv.set("ns", "bad\ud800", 1)
    assert "surrogate" in str(info.value).lower()
    with pytest.raises((ValueError, TypeError)):
        bgwork.queues.create("jobs\ud800")


# -- threads ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_threads_hold_the_clock(bgwork: bg.Simulation) -> None:
    def blocking() -> str:
        # real work in a worker thread: virtual time does not jump past it
        total = 0
        for i in range(200_000):
            total += i
        return str(total)

    t0 = bgwork.clock.monotonic()
    timer_fired: list[float] = []
    asyncio.get_running_loop().call_later(5, lambda: timer_fired.append(bgwork.clock.monotonic()))
    loop = asyncio.get_running_loop()
    a, b = await asyncio.gather(asyncio.to_thread(blocking), loop.run_in_executor(None, blocking))
    assert a == b
    assert bgwork.clock.monotonic() - t0 < 5  # the timer did not get skipped to while the thread worked
    assert not timer_fired


@pytest.mark.asyncio
async def test_starlette_run_in_threadpool_holds_the_clock(bgwork: bg.Simulation) -> None:
    from starlette.concurrency import run_in_threadpool

    t0 = bgwork.clock.monotonic()
    asyncio.get_running_loop().call_later(60, lambda: None)
    assert await run_in_threadpool(lambda: sum(range(100_000))) == sum(range(100_000))
    assert bgwork.clock.monotonic() - t0 < 60


# -- network ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unmocked_request_raises_naming_method_and_url(bgwork: bg.Simulation) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(bg.UnmockedRequest) as info:
            await client.post("https://api.nowhere.example/v1/charge")
    assert "POST" in str(info.value) and "https://api.nowhere.example/v1/charge" in str(info.value)


def test_swallowed_unmocked_request_still_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import httpx, pytest

        @pytest.mark.asyncio
        async def test_swallow(bgwork):
            try:
                async with httpx.AsyncClient() as c:
                    await c.get("https://api.nowhere.example/x")
            except Exception:
                pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1
    result.stdout.fnmatch_lines(["*api.nowhere.example*"])


def test_allow_network_marker_is_accepted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bgwork(allow_network=True)
        def test_allowed(bgwork):
            assert bgwork.allow_network is True
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_unmocked_sync_client_too() -> None:
    sim = bg.Simulation(seed=0)

    async def main() -> Any:
        with httpx.Client() as c:
            return c.get("https://api.nowhere.example/y")

    with pytest.raises(bg.UnmockedRequest):
        sim.run(main())
