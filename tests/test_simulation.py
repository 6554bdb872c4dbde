"""Simulation: run/advance/run_until_idle, seeds, determinism, current(), bad arguments."""

from __future__ import annotations

import asyncio

import pytest

import pytest_bgwork as bg


def test_run_returns_the_result_and_moves_time() -> None:
    sim = bg.Simulation(seed=1)

    async def main() -> str:
        await asyncio.sleep(120)
        return "ok"

    assert sim.run(main()) == "ok"
    assert sim.clock.monotonic() == 120
    sim.close()


def test_run_rejects_a_coroutine_function() -> None:
    sim = bg.Simulation()

    async def main() -> None: ...

    with pytest.raises(TypeError, match=r"sim.run\(main\(\)\) not sim.run\(main\)"):
        sim.run(main)  # type: ignore[arg-type]
    sim.close()


def test_run_inside_a_running_loop_is_an_error() -> None:
    outer = bg.Simulation()
    inner = bg.Simulation()

    async def main() -> None:
        async def nothing() -> None: ...

        inner.run(nothing())

    with pytest.raises(bg.NotRunning, match="`await` the coroutine instead"):
        outer.run(main())
    outer.close()
    inner.close()


@pytest.mark.asyncio
async def test_advance_fires_everything_due_in_order(bgwork: bg.Simulation) -> None:
    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    loop.call_later(50, lambda: fired.append(("b", bgwork.clock.monotonic())))
    loop.call_later(10, lambda: fired.append(("a", bgwork.clock.monotonic())))
    loop.call_later(200, lambda: fired.append(("late", bgwork.clock.monotonic())))
    await bgwork.advance(120)
    assert fired == [("a", 10.0), ("b", 50.0)]
    assert bgwork.clock.monotonic() == 120


@pytest.mark.asyncio
async def test_advance_rejects_negative_time(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError, match=r"advance\(seconds=...\) needs a finite number >= 0; got -1"):
        await bgwork.advance(-1)


@pytest.mark.asyncio
async def test_run_until_idle_waits_for_sleepers_not_recurring_timers(bgwork: bg.Simulation) -> None:
    done: list[float] = []

    async def job() -> None:
        await asyncio.sleep(3600)
        done.append(bgwork.clock.monotonic())

    asyncio.create_task(job())
    bgwork.loop.call_at_recurring(bgwork.loop.time() + 86400, lambda: None)
    await bgwork.run_until_idle()
    assert done == [3600.0]
    assert bgwork.clock.monotonic() == 3600.0


@pytest.mark.asyncio
async def test_run_until_idle_raises_stalled_past_max_time(bgwork: bg.Simulation) -> None:
    async def forever() -> None:
        while True:
            await asyncio.sleep(60)

    ticker = asyncio.create_task(forever(), name="ticker")
    with pytest.raises(bg.Stalled) as info:
        await bgwork.run_until_idle(max_time=600)
    ticker.cancel()
    text = str(info.value)
    assert "still busy after max_time=600s of virtual time" in text
    assert "task 'ticker' (" in text
    assert bgwork.clock.monotonic() <= 600


@pytest.mark.asyncio
async def test_idle_with_tasks_blocked_on_events(bgwork: bg.Simulation) -> None:
    """Tasks waiting on an event with no timer are idle, not stalled."""
    ev = asyncio.Event()
    waiter = asyncio.create_task(ev.wait())
    await bgwork.run_until_idle()
    assert not waiter.done()
    ev.set()
    await bgwork.run_until_idle()
    assert waiter.done()


def test_same_seed_same_history_digest() -> None:
    def scenario(seed: int) -> str:
        sim = bg.Simulation(seed=seed)

        async def main() -> None:
            for i in range(20):
                jitter = sim.choices.fraction("jitter")
                await asyncio.sleep(jitter * 10)
                sim.history.record("demo", "tick", i=i, jitter=round(jitter, 9))

        sim.run(main())
        digest = sim.history.digest()
        sim.close()
        return digest

    assert scenario(7) == scenario(7)
    assert scenario(7) != scenario(8)


def test_seed_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="seed= must be an int"):
        bg.Simulation(seed="7")  # type: ignore[arg-type]


def test_ids_are_deterministic_per_prefix() -> None:
    sim = bg.Simulation()
    assert [sim._next_id("msg"), sim._next_id("msg"), sim._next_id("stream")] == [
        "msg_1", "msg_2", "stream_1"
    ]
    sim.close()


def test_current_names_the_running_simulation() -> None:
    sim = bg.Simulation()

    async def main() -> bg.Simulation:
        return bg.current()

    assert sim.run(main()) is sim
    with pytest.raises(bg.NotRunning, match="outside a simulation"):
        bg.current()
    sim.close()


def test_close_cancels_leftover_tasks_and_records_them() -> None:
    sim = bg.Simulation()
    cancelled: list[bool] = []

    async def background() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main() -> None:
        asyncio.create_task(background(), name="bg-job")
        await asyncio.sleep(1)

    sim.run(main())
    sim.close()
    assert cancelled == [True]
    [event] = sim.history.filter("sim", "cancelled_at_teardown")
    assert "task 'bg-job'" in event.detail["task"]
    assert sim.loop.is_closed()


def test_stats_count_from_history() -> None:
    sim = bg.Simulation()
    sim.history.record("queue", "deliver", queue="q", id="msg_1", attempt=1)
    sim.history.record("queue", "deliver", queue="q", id="msg_1", attempt=2)
    sim.history.record("queue", "dead_letter", queue="q", id="msg_1", attempts=2)
    assert sim.stats() == {
        "simulated_seconds": 0.0, "deliveries": 2, "redeliveries": 1, "faults": 0, "dead_letters": 1
    }
    sim.close()
