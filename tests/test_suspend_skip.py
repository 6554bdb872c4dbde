"""A service call's yield is skipped only when it could change nothing (``suspend``'s rule).

Every service call is a suspension point (docs/interleavings.md). When nothing else is ready, no
timer is due and the task was stepped by the loop itself, the yield would only make the
loop step the same task again: ``suspend`` skips it. Whatever else is ready still runs
before the call takes effect, and histories are byte-identical with or without the skip.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.loop import VirtualEventLoop


def _iterations(sim: bg.Simulation) -> list[int]:
    """Count the loop's iterations from now on (the skip saves exactly these)."""
    loop: Any = sim.loop
    count = [0]
    real = loop._run_once

    def counting() -> None:
        count[0] += 1
        real()

    loop._run_once = counting
    return count


def test_lone_service_calls_take_no_loop_iteration() -> None:
    with bg.Simulation(seed=1) as sim:
        async def main() -> None:
            await asyncio.sleep(0)  # the counter sees this one
            for i in range(50):
                await sim.kv.set("ns", f"k{i}", {"n": i})
                assert (await sim.kv.get("ns", f"k{i}")).data == {"n": i}

        count = _iterations(sim)
        sim.run(main())
        assert count[0] <= 3  # the sleep(0) and run_until_complete's own, not 100 service calls
        assert len(sim.history.filter("kv")) == 100


def test_two_workers_still_interleave_at_each_service_call() -> None:
    with bg.Simulation(seed=1) as sim:
        order: list[str] = []

        async def worker(name: str) -> None:
            for i in range(3):
                await sim.kv.set("ns", name, i)
                order.append(f"{name}{i}")

        async def main() -> None:
            await asyncio.gather(worker("a"), worker("b"))

        sim.run(main())
        assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_a_callback_made_ready_before_the_call_runs_before_it_takes_effect() -> None:
    with bg.Simulation(seed=1) as sim:
        seen: list[Any] = []

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await sim.kv.set("ns", "k", "old")
            loop.call_soon(lambda: seen.append("callback"))
            r = await sim.kv.get("ns", "k")
            seen.append(r.data)
            loop.call_soon(lambda: sim.kv.set_sync("ns", "k", "new"))
            seen.append((await sim.kv.get("ns", "k")).data)

        sim.run(main())
        assert seen == ["callback", "old", "new"]


def _timer_due_now() -> list[str]:
    with bg.Simulation(seed=1) as sim:
        async def main() -> list[str]:
            loop = asyncio.get_running_loop()
            seen: list[str] = []
            loop.call_later(0, seen.append, "timer")
            for i in range(3):
                await sim.kv.set("ns", "k", i)
                seen.append(f"set {i}")
            return seen

        return sim.run(main())


def test_a_timer_due_now_keeps_its_place(monkeypatch: pytest.MonkeyPatch) -> None:
    # the loop makes a due timer ready behind the yielding task, so it fires during the
    # task's next step: skipping the first yield would let a second call in before it
    with_skip = _timer_due_now()
    monkeypatch.setattr(VirtualEventLoop, "_yield_changes_nothing", lambda loop, frame: False)
    assert with_skip == _timer_due_now() == ["set 0", "timer", "set 1", "set 2"]


def test_a_task_that_cancelled_itself_is_cancelled_at_the_service_call() -> None:
    with bg.Simulation(seed=1) as sim:
        async def main() -> str:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            try:
                await sim.kv.set("ns", "k", 1)
            except asyncio.CancelledError:
                return "cancelled at the call"
            return "not cancelled"

        assert sim.run(main()) == "cancelled at the call"
        assert sim.kv.items("ns") == {}  # the write never happened


def test_a_coroutine_stepped_by_hand_still_sees_the_yield() -> None:
    with bg.Simulation(seed=1) as sim:
        async def main() -> Any:
            call = sim.kv.set("ns", "k", 1)
            try:
                return call.send(None)  # a stepper gets the bare yield, as before
            finally:
                call.close()

        assert sim.run(main()) is None
        assert sim.history.filter("kv", "set") == []  # it stopped at the yield


def test_a_lone_poll_of_a_service_still_ends_in_stalled() -> None:
    with bg.Simulation(seed=1) as sim:
        async def main() -> None:
            while not (await sim.kv.get("ns", "never")).exists:
                pass

        with pytest.raises(bg.Stalled, match="iterations"):
            sim.run(main())


def _polls_until_runaway(monkeypatch: pytest.MonkeyPatch, skip: bool) -> tuple[int, str]:
    """A lone poll with no real-time budget: how many calls it made before ``Stalled``."""
    if not skip:
        monkeypatch.setattr(VirtualEventLoop, "_yield_changes_nothing", lambda loop, frame: False)
    with bg.Simulation(seed=1) as sim:
        loop: Any = sim.loop
        loop.real_limit = 0.0  # the loop reads the real clock every 16th busy iteration
        calls = [0]

        async def main() -> None:
            await asyncio.sleep(1)  # a fresh run of busy iterations
            while True:
                calls[0] += 1
                await sim.kv.get("ns", "never")

        with pytest.raises(bg.Stalled) as info:
            sim.run(main())
        monkeypatch.undo()
        return calls[0], str(info.value).split(".")[0]


def test_the_real_time_guard_stops_a_poll_at_the_same_call(monkeypatch: pytest.MonkeyPatch) -> None:
    skipped = _polls_until_runaway(monkeypatch, skip=True)
    assert skipped == _polls_until_runaway(monkeypatch, skip=False)
    # the iteration that ends the sleep is busy iteration 1; the 15th call's is the 16th
    assert skipped[0] == 15 and "runaway work" in skipped[1]


def _scenario(seed: int, listen: bool = False) -> tuple[str, list[str]]:
    """Queues, KV, streams, timers and concurrent tasks: its digest and its order of steps."""
    with bg.Simulation(seed=seed) as sim:
        steps: list[str] = []
        if listen:  # a listener makes services record through History.record, not rows
            sim.history.subscribe(lambda e: steps.append(f"event {e.name}"))
        sim.queues.create("jobs", visibility_timeout=5)

        async def handler(payload: Any, delivery: Any) -> None:
            r = await sim.kv.get("status", str(payload["id"]))
            steps.append(f"handle {payload['id']} seen={r.exists}")
            await sim.kv.set("status", str(payload["id"]), {"kind": "running"})
            async with await sim.streams.create("out") as s:
                await s.write("a\n")
                await asyncio.sleep(payload["id"] % 3)
                await s.write("b\n")
            await sim.kv.set("status", str(payload["id"]), "done")

        sim.queues.route("jobs", handler)

        async def poller(i: int) -> None:
            for _ in range(3):
                r = await sim.kv.get("status", str(i))
                steps.append(f"poll {i} {r.data}")
                await asyncio.sleep(1)

        async def main() -> None:
            for i in range(4):
                await sim.queues.publish("jobs", {"id": i})
            await asyncio.gather(*(poller(i) for i in range(4)))
            await sim.run_until_idle()

        sim.faults.duplicate("jobs", times=2, overlap=True)
        sim.run(main())
        return sim.history.digest(), steps


def test_histories_are_identical_with_and_without_the_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    with_skip = _scenario(3)
    monkeypatch.setattr(VirtualEventLoop, "_yield_changes_nothing", lambda loop, frame: False)
    without_skip = _scenario(3)
    assert with_skip == without_skip
    assert len(with_skip[1]) > 12


def test_a_service_call_that_is_the_task_itself_still_runs_in_order() -> None:
    with bg.Simulation(seed=1) as sim:
        async def main() -> list[str]:
            order: list[str] = []
            first = asyncio.ensure_future(sim.kv.set("ns", "k", "task"))  # the call is the task
            first.add_done_callback(lambda _: order.append("set done"))
            order.append("created")
            await first
            order.append((await sim.kv.get("ns", "k")).data)
            return order

        assert sim.run(main()) == ["created", "set done", "task"]


def test_histories_are_identical_with_a_listener() -> None:
    digest, steps = _scenario(3)
    heard, heard_steps = _scenario(3, listen=True)
    assert heard == digest
    assert [s for s in heard_steps if not s.startswith("event ")] == steps
    assert sum(s.startswith("event kv.") for s in heard_steps) > 12
