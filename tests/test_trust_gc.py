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
