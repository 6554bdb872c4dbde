"""Sync code on virtual time: a simulation's threads wait on the virtual clock (issues 24, 26)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import pytest

import pytest_bgwork as bg
from pytest_bgwork.adapters._threads import Fiber
from pytest_bgwork.core import threads

WAITS = '''
import asyncio
import concurrent.futures
import queue
import threading
import time

import pytest


async def test_time_sleep_in_a_worker_thread_is_virtual(bgwork):
    started = time.perf_counter()

    def backoff():
        for _ in range(3):
            time.sleep(20)
        return time.monotonic()

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(backoff)
    assert loop.time() == 60.0
    assert time.perf_counter() - started < 5


async def test_event_wait_times_out_or_wakes_when_set(bgwork):
    event = threading.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(3, event.set)

    def worker():
        first = event.wait(1)
        at = loop.time()
        return first, at, event.wait(10), loop.time()

    assert await asyncio.to_thread(worker) == (False, 1.0, True, 3.0)


async def test_queue_get_times_out_or_gets_the_item(bgwork):
    jobs = queue.Queue()
    loop = asyncio.get_running_loop()
    loop.call_later(4, jobs.put, "job")

    def worker():
        try:
            jobs.get(timeout=2)
        except queue.Empty:
            empty_at = loop.time()
        return empty_at, jobs.get(timeout=10), loop.time()

    assert await asyncio.to_thread(worker) == (2.0, "job", 4.0)


async def test_future_result_times_out_or_returns(bgwork):
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def slow():
        time.sleep(10)
        return 7

    def worker():
        try:
            pool.submit(slow).result(timeout=3)
        except concurrent.futures.TimeoutError:
            timed_out_at = loop.time()
        return timed_out_at, pool.submit(slow).result(), loop.time()

    assert await asyncio.to_thread(worker) == (3.0, 7, 20.0)  # the second waits behind the first
    pool.shutdown()


async def test_a_working_thread_still_holds_the_clock(bgwork):
    loop = asyncio.get_running_loop()
    fired = []
    loop.call_later(0.01, lambda: fired.append(loop.time()))

    def real_work():
        began = time.perf_counter()
        while time.perf_counter() - began < 0.2:
            pass
        return list(fired)

    assert await asyncio.to_thread(real_work) == []  # the timer waited for the work
    await asyncio.sleep(1)
    assert fired == [0.01]


def test_a_sync_test_body_polls_on_virtual_time(bgwork):
    seen = []

    async def background():
        await asyncio.sleep(1)
        seen.append(time.monotonic())

    bgwork.loop.create_task(background())
    start = time.monotonic()
    deadline = start + 3
    while time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(seen) == 1  # the loop ran while the body slept
    assert 3.0 <= bgwork.clock.monotonic() < 3.2


def test_a_sync_test_body_waits_for_an_event_a_task_sets(bgwork):
    done = threading.Event()

    async def job():
        await asyncio.sleep(42)
        done.set()

    bgwork.loop.create_task(job())
    assert not done.wait(10)
    assert bgwork.clock.monotonic() == 10.0
    assert done.wait(60)
    assert bgwork.clock.monotonic() == 42.0


def test_a_thread_the_simulation_did_not_start_may_end_a_wait(bgwork):
    event = threading.Event()
    threading.Timer(0.3, event.set).start()  # e.g. a real server thread's shutdown
    assert event.wait()  # no timeout: not a deadlock while a foreign thread may still act


def test_a_child_process_is_waited_for_in_real_time(bgwork):
    import subprocess

    assert subprocess.run(["sleep", "0.3"], timeout=2).returncode == 0  # no false TimeoutExpired


def wait_forever(event):
    event.wait()  # nobody sets it


async def test_a_thread_waiting_forever_is_a_deadlock(bgwork):
    await asyncio.to_thread(wait_forever, threading.Event())
'''


def test_each_kind_of_wait_runs_on_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(WAITS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:looptime")
    result.assert_outcomes(passed=9, failed=1)
    result.stdout.fnmatch_lines([
        "*Deadlock: nothing can run and no timer is pending, yet 1 task(s) still wait*",
        "*thread blocked in Condition.wait() at *test_each_kind_of_wait_runs_on_virtual_time.py:*"
        " in wait_forever: event.wait()  # nobody sets it*",
    ])


ON_THE_LOOP = '''
import asyncio
import concurrent.futures
import time

import anyio.from_thread
import anyio.to_thread


async def later(value):
    await asyncio.sleep(10)
    return value


async def test_run_coroutine_threadsafe_from_a_worker_thread(bgwork):
    loop = asyncio.get_running_loop()

    def worker():
        return asyncio.run_coroutine_threadsafe(later("done"), loop).result()

    assert await asyncio.to_thread(worker) == "done"
    assert loop.time() == 10.0


async def test_anyio_from_thread_run(bgwork):
    def worker():
        return anyio.from_thread.run(later, "done")

    assert await anyio.to_thread.run_sync(worker) == "done"
    assert bgwork.clock.monotonic() == 10.0


def work():
    began = time.perf_counter()
    while time.perf_counter() - began < 0.3:
        pass
    time.sleep(2)  # then a virtual back-off
    return "worked"


async def test_executor_submit_and_wrap_future_hold_the_clock(bgwork):
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert await asyncio.wait_for(asyncio.wrap_future(pool.submit(work)), 5) == "worked"
    assert bgwork.clock.monotonic() == 2.0


async def test_run_in_executor_with_an_own_pool_holds_the_clock(bgwork):
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert await asyncio.wait_for(loop.run_in_executor(pool, work), 5) == "worked"
    assert loop.time() == 2.0


async def test_a_subprocess_holds_the_clock(bgwork):
    proc = await asyncio.create_subprocess_exec("sleep", "0.3")
    assert await asyncio.wait_for(proc.wait(), 0.1) == 0  # 0.1 virtual seconds never passed
    assert bgwork.clock.monotonic() == 0.0
'''


def test_threads_waiting_on_the_loop_let_it_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ON_THE_LOOP)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:looptime")
    result.assert_outcomes(passed=5)


def test_a_sync_task_body_sleeps_on_virtual_time() -> None:
    """A Celery/dramatiq body (a ``Fiber``) sleeping lets the loop run and time move."""
    ticks: list[float] = []

    def body() -> float:
        time.sleep(5)
        return time.monotonic()

    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()

        async def tick() -> None:
            await asyncio.sleep(2)
            ticks.append(loop.time())

        task = asyncio.create_task(tick())
        await Fiber(body).run()
        await task
        return loop.time(), ticks

    with bg.Simulation(seed=1) as sim:
        assert sim.run(main()) == (5.0, [2.0])


def test_wait_until_returns_when_the_predicate_holds_or_at_the_deadline() -> None:
    """The internal call adapters use for a sync ``result.get()``: virtual deadline, early wake."""
    box: list[str] = []

    async def main() -> tuple[bool, float, bool, float]:
        loop = asyncio.get_running_loop()
        loop.call_later(7, box.append, "result")

        def worker() -> tuple[bool, float, bool, float]:
            early = threads.wait_until(lambda: bool(box), timeout=3)
            at = loop.time()
            return early, at, threads.wait_until(lambda: bool(box), timeout=30), loop.time()

        return await asyncio.to_thread(worker)

    with bg.Simulation(seed=1) as sim:
        assert sim.run(main()) == (False, 3.0, True, 7.0)
    with pytest.raises(bg.NotRunning, match="wait_until"):
        threads.wait_until(lambda: False, timeout=1)


def test_threads_the_simulation_did_not_start_keep_real_time() -> None:
    out: list[float] = []

    def foreign() -> None:
        began = time.perf_counter()
        time.sleep(0.05)
        out.append(time.perf_counter() - began)

    async def main() -> None:
        thread = threading.Thread(target=foreign)
        thread.start()
        while thread.is_alive():
            await asyncio.to_thread(thread.join, 0.01)

    with bg.Simulation(seed=1) as sim:
        sim.run(main())
        assert out and out[0] >= 0.05
    assert time.sleep is threads._REAL["sleep"]  # restored once no simulation is current
    assert threading.Condition.wait is threads._REAL["cond_wait"]


def test_starting_a_real_thread_waits_for_it_in_real_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading

        def test_start(bgwork):
            fired = []
            bgwork.loop.call_later(10, fired.append, 1)
            for _ in range(20):
                t = threading.Thread(target=lambda: None)
                t.start()  # waits (Event.wait) until the thread runs: real start-up time
                t.join()
            assert bgwork.clock.monotonic() == 0 and fired == []
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.timeout(20)
def test_a_notify_before_the_loop_armed_the_wait_is_not_lost(bgwork: bg.Simulation,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Another thread may notify a condition between the waiter joining its list and the
    loop's side of the wait starting (OpenTelemetry's resource detectors finish that fast
    in a pool thread): the wait must end, not wait for a wake that already happened."""
    cond = threading.Condition()
    real_block = threads._block

    def notify_first(mode: tuple[str, object], wait: threads.Wait) -> bool:
        with cond:  # as a pool thread that finished at once: the waiter is listed, unarmed
            cond.notify()
        return real_block(mode, wait)  # type: ignore[arg-type]

    monkeypatch.setattr(threads, "_block", notify_first)
    with cond:
        assert cond.wait(timeout=30) is True  # notified, not timed out
    assert bgwork.clock.monotonic() == 0.0
@pytest.mark.timeout(30)
def test_an_event_set_before_the_wait_reaches_the_loop_wakes_the_sync_body(bgwork: bg.Simulation) -> None:
    """The event is set by a callback that runs before the wait's own step on the loop (a
    task body publishing while a sync ``result.get()`` starts to wait): the wait still ends."""
    event = threading.Event()
    bgwork.loop.call_soon(event.set)
    assert event.wait(5)
    assert bgwork.clock.monotonic() == 0

def _pool_work(i: int, calls: list[float]) -> None:
    if i == 0:
        calls.append(time.monotonic())
        time.sleep(0.3)


@pytest.mark.timeout(30)
def test_a_pool_shut_down_in_a_sync_test_body_runs_on_virtual_time(bgwork: bg.Simulation) -> None:
    """Eight submits then shutdown's ``Thread.join``: a wait notified before its future
    existed (``submit``'s idle semaphore) and a join of a sleeping pool thread both hung."""
    calls: list[float] = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for future in [pool.submit(_pool_work, i, calls) for i in range(8)]:
            future.result()
    assert calls == [0.0] and bgwork.clock.monotonic() == 0.3


@pytest.mark.timeout(30)
def test_thread_join_waits_on_virtual_time(bgwork: bg.Simulation) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(time.sleep, 50)
        thread = next(iter(pool._threads))
        thread.join(timeout=20)  # virtual: the pool thread still sleeps
        assert thread.is_alive() and bgwork.clock.monotonic() == 20
    assert bgwork.clock.monotonic() == 50  # shutdown joined it once its sleep ended
    assert not thread.is_alive()
