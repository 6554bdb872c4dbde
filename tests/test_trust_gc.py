"""The garbage collector never decides a run: the simulation's loop holds its tasks strongly.

asyncio keeps tasks only weakly, so a task waiting on an object only it references is
collected whenever the collector happens to run, and its ``finally`` acts at that moment.
"""

from __future__ import annotations

import asyncio
import gc

import pytest

import pytest_bgwork as bg


def _blocked_forever_digest(garbage: int) -> str:
    sim = bg.Simulation(seed=3)

    async def blocked(i: int) -> None:
        try:
            await asyncio.Future()  # referenced only by this task
        finally:
            sim.effects.record("cleanup", key=str(i))

    async def main() -> None:
        for i in range(5):
            asyncio.ensure_future(blocked(i))
        await asyncio.sleep(1)
        junk = [[] for _ in range(garbage)]  # allocations: the collector may run here
        del junk
        await asyncio.sleep(1)

    sim.run(main())
    sim.close()
    return sim.history.digest()


def test_tasks_left_blocked_forever_give_one_digest_over_30_runs() -> None:
    assert len({_blocked_forever_digest(k * 37) for k in range(30)}) == 1


def test_leftovers_are_cancelled_at_close_in_creation_order_not_collected_mid_run() -> None:
    sim = bg.Simulation(seed=3)

    async def waiter(i: int) -> None:
        try:
            await asyncio.Event().wait()  # an event nothing else references
        finally:
            sim.history.record("app", "finally", i=i)

    async def main() -> None:
        for i in range(3):
            asyncio.ensure_future(waiter(i))
        await asyncio.sleep(1)
        gc.collect()
        await asyncio.sleep(1)
        sim.history.record("app", "end")

    sim.run(main())
    sim.close()
    rows = [(e.service, e.op, e.detail.get("i")) for e in sim.history.events
            if e.service == "app"]
    assert rows == [("app", "end", None), ("app", "finally", 0), ("app", "finally", 1),
                    ("app", "finally", 2)]
    assert sim.history.filter("sim", "cancelled_at_teardown")


def test_assert_drained_after_run_returned_sees_a_bare_pending_task() -> None:
    sim = bg.Simulation(seed=3)

    async def main() -> None:
        asyncio.ensure_future(asyncio.Event().wait())
        await asyncio.sleep(0)

    sim.run(main())
    gc.collect()
    try:
        with pytest.raises(AssertionError, match=r"1 other task still pending on the simulation's loop"):
            bg.assert_drained(sim)
    finally:
        sim.close()


def test_a_finished_task_is_not_kept_alive() -> None:
    sim = bg.Simulation(seed=3)

    async def main() -> None:
        await asyncio.ensure_future(asyncio.sleep(1))

    sim.run(main())
    assert sim.loop._task_order == {}
    sim.close()


def test_no_finished_tests_simulation_stays_alive(pytester: pytest.Pytester) -> None:
    """Each test's ``Simulation`` is dropped at teardown: the reports keep plain data only."""
    pytester.makeconftest("""
        import gc
        import weakref

        import pytest

        refs = []

        @pytest.fixture(autouse=True)
        def _track(request):
            for name in ("bgwork", "bgwork_factory"):
                if name in request.fixturenames:
                    value = request.getfixturevalue(name)
                    if name == "bgwork":
                        refs.append(weakref.ref(value))
            yield
            if "bgwork_factory" in request.fixturenames:
                refs.extend(weakref.ref(s) for s in request.getfixturevalue("bgwork_factory").made)

        def pytest_sessionfinish(session):
            gc.collect()
            alive = sum(1 for r in refs if r() is not None)
            print(f"\\nsimulations tracked {len(refs)} alive {alive}")
    """)
    pytester.makepyfile("""
        import asyncio

        import pytest

        @pytest.mark.parametrize("i", range(30))
        def test_sync(bgwork, i):
            async def main():
                await bgwork.kv.set("ns", "k", i)
                asyncio.ensure_future(asyncio.sleep(5))  # a leftover, cancelled at teardown
                await asyncio.sleep(1)
            bgwork.run(main())

        @pytest.mark.asyncio
        @pytest.mark.parametrize("i", range(10))
        async def test_async(bgwork, i):
            await bgwork.kv.set("ns", "k", i)
            await asyncio.sleep(1)

        @pytest.mark.parametrize("i", range(10))
        def test_factory(bgwork_factory, i):
            for _ in range(2):
                sim = bgwork_factory()
                sim.run(asyncio.sleep(1))
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s", "-W", "ignore::pytest_bgwork.LeftoverWorkWarning")
    result.assert_outcomes(passed=50)
    result.stdout.fnmatch_lines(["*simulations tracked 60 alive 0*",
                                 "*40 simulation(s): simulated 40.0s*"])
