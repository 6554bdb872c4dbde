"""No lie: leftovers at teardown are cancelled and described in creation order, with local names."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import strategies as st

import pytest_bgwork as bg


async def consumer(inbox: asyncio.Queue[object]) -> None:
    while True:
        await inbox.get()


async def scenario(sim: bg.Simulation) -> None:
    for _ in range(3):  # other tasks come and go first, moving asyncio's global Task-N counter
        await asyncio.create_task(asyncio.sleep(1))
    asyncio.create_task(consumer(asyncio.Queue()))  # unnamed, idle, never cancelled
    asyncio.create_task(consumer(asyncio.Queue()))
    await sim.kv.set("orders", "o1", "pending")


def order_completed(sim: bg.Simulation) -> None:
    assert False, "order o1 never completed"


def test_explore_reports_the_real_failure_when_an_example_leaves_a_task() -> None:
    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[order_completed], max_examples=3, seed=1)
    assert not isinstance(info.value, bg.NonDeterministic)
    assert "order o1 never completed" in str(info.value)
    assert "sim.cancelled_at_teardown" in str(info.value)


def _leftover_digest(extra_tasks: int) -> tuple[str, list[str]]:
    async def unrelated() -> None:
        for _ in range(extra_tasks):
            await asyncio.create_task(asyncio.sleep(0))

    asyncio.run(unrelated())  # moves the process-global task counter between runs
    with bg.Simulation(seed=3) as sim:
        sim.run(scenario(sim))
        described = sim._cancel_leftovers()
        return sim.history.digest(), described


def test_same_seed_same_digest_with_leftover_tasks() -> None:
    first, described = _leftover_digest(0)
    second, _ = _leftover_digest(7)
    assert first == second
    assert [d.split(" (")[0] for d in described] == ["task 'sim-task-5'", "task 'sim-task-6'"]
