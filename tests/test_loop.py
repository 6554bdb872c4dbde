"""The virtual loop: jumps to timers, waits for threads, reports deadlocks, keeps order."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.loop import VirtualEventLoop


def run(coro):  # type: ignore[no-untyped-def]
    loop = VirtualEventLoop()
    try:
        return loop.run_until_complete(coro), loop
    finally:
        loop.close()


def test_sleep_jumps_virtual_time_without_waiting() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(3 * 86400)
        return loop.time()

    started = time.perf_counter()
    result, _ = run(main())
    assert result == 3 * 86400
    assert time.perf_counter() - started < 5, "three virtual days must not take real time"


def test_timers_fire_in_virtual_order() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, float]] = []
        for name, delay in [("c", 30.0), ("a", 1.0), ("b", 5.0)]:
            loop.call_later(delay, lambda n=name: seen.append((n, loop.time())))
        await asyncio.sleep(60)
        return seen

    result, _ = run(main())
    assert result == [("a", 1.0), ("b", 5.0), ("c", 30.0)]


def test_wait_for_times_out_on_virtual_time() -> None:
    async def main() -> float:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), timeout=5)
        return asyncio.get_running_loop().time()

    result, _ = run(main())
    assert result == 5.0


def test_thread_work_is_waited_for_not_skipped() -> None:
    """A timer due while a thread works must not fire before the thread returns."""
    release = threading.Event()

    def blocking() -> str:
        release.wait(5)
        return "thread-done"

    async def main() -> tuple[str, float, list[str]]:
        loop = asyncio.get_running_loop()
        order: list[str] = []
        loop.call_later(1, lambda: order.append("timer"))
        loop.call_soon(release.set)
        result = await asyncio.to_thread(blocking)
        order.append("thread")
        await asyncio.sleep(2)
        return result, loop.time(), order

    result, _ = run(main())
    assert result == ("thread-done", 2.0, ["thread", "timer"])


def test_run_in_executor_result_arrives() -> None:
    async def main() -> int:
        return await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])

    result, _ = run(main())
    assert result == 6


def test_deadlock_is_reported_with_the_waiting_line() -> None:
    async def stuck_worker(ev: asyncio.Event) -> None:
        await ev.wait()  # nobody sets it

    async def main() -> None:
        ev = asyncio.Event()
        worker = asyncio.create_task(stuck_worker(ev), name="worker-1")
        await worker

    loop = VirtualEventLoop()
    try:
        with pytest.raises(bg.Deadlock) as info:
            loop.run_until_complete(main())
        text = str(info.value)
        assert "task 'worker-1' (" in text
        assert "stuck_worker) waiting at" in text
        assert "test_loop.py" in text
        assert "await ev.wait()" in text
        assert "no timer is pending" in text
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_recurring_timers_are_not_pending_work() -> None:
    async def main() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        loop.call_at_recurring(loop.time() + 10, lambda: None)
        loop.call_later(5, lambda: None)
        return len(loop.pending_timers()), len(loop._scheduled)

    result, _ = run(main())
    assert result == (1, 2)


def test_timers_due_at_the_same_instant_fire_in_creation_order() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        seen: list[int] = []
        for i in range(12):
            loop.call_at(30.0, seen.append, i)
        await asyncio.sleep(31)
        return seen

    result, _ = run(main())
    assert result == list(range(12))


def test_timers_far_in_virtual_time_still_fire() -> None:
    """Past ~97 days a 1 ns resolution vanishes in float precision; a year must still work."""

    async def main() -> float:
        await asyncio.sleep(86400 * 365 * 10)
        await asyncio.sleep(1)
        return asyncio.get_running_loop().time()

    result, _ = run(main())
    assert result == 86400 * 365 * 10 + 1
