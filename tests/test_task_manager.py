"""The BackgroundTaskManager fake: 10xgraph's (agentflow's) class on virtual time, surprises included."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.context import Attempt, current_attempt
from pytest_bgwork.services.task_manager import BackgroundTaskManager

LOGGER = "pytest_bgwork.task_manager"


async def work(seconds: float, result: Any = None) -> Any:
    await asyncio.sleep(seconds)
    return result


async def fail_after(seconds: float, message: str) -> None:
    await asyncio.sleep(seconds)
    raise ValueError(message)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


# -- construction ----------------------------------------------------------------------------
def test_constructor_defaults_and_validation() -> None:
    manager = BackgroundTaskManager()
    assert (manager.default_shutdown_timeout, manager.max_pending_tasks) == (30.0, 1000)
    with pytest.raises(ValueError, match=r"default_shutdown_timeout=\.\.\.\) expects a finite number of "
                                         r"seconds >= 0 \(virtual time\); got -1"):
        BackgroundTaskManager(default_shutdown_timeout=-1)
    with pytest.raises(ValueError, match=r"max_pending_tasks=\.\.\.\) expects an int >= 0 .*0 means no cap.*got -1"):
        BackgroundTaskManager(max_pending_tasks=-1)
    assert BackgroundTaskManager(max_pending_tasks=0).max_pending_tasks == 0  # no cap, as the real class


@pytest.mark.asyncio
async def test_the_simulation_has_one(bgwork: bg.Simulation) -> None:
    assert isinstance(bgwork.task_manager, BackgroundTaskManager)
    assert bgwork.task_manager is bgwork.task_manager


# -- create_task -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_create_task_runs_the_coroutine_and_tracks_it(bgwork: bg.Simulation) -> None:
    manager = bgwork.task_manager
    task = manager.create_task(work(3, "saved"), name="save_memory", timeout=10, context={"thread_id": "t1"})
    assert isinstance(task, asyncio.Task) and task.get_name() == "save_memory"
    assert manager.get_task_count() == 1
    await bgwork.advance(1)
    [info] = manager.get_task_info()
    assert info == {"name": "save_memory", "age_seconds": 1.0, "timeout": 10,
                    "context": {"thread_id": "t1"}, "done": False, "cancelled": False}  # the real six keys
    assert await task == "saved"
    await asyncio.sleep(0)  # the manager forgets a task in its done callback, one step later
    assert manager.get_task_count() == 0 and manager.get_task_info() == []
    assert [(e.op, e.t) for e in bgwork.history.filter("task_manager")] == [("create_task", 0.0),
                                                                           ("task_done", 3.0)]
    [done] = bgwork.history.filter("task_manager", "task_done")
    assert done.detail == {"name": "save_memory", "id": "bgtask_1", "context": {"thread_id": "t1"}, "seconds": 3.0}
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() == 3.0  # the timeout timer went with the task


@pytest.mark.asyncio
async def test_passing_a_coroutine_function_raises_naming_the_fix(bgwork: bg.Simulation) -> None:
    with pytest.raises(TypeError, match=r"create_task\(\) takes a coroutine object; got the function work\. "
                                        r"Call it: create_task\(work\(\.\.\.\)\), not create_task\(work\) "
                                        r"\(passed uncalled, the work never runs\)"):
        bgwork.task_manager.create_task(work)  # type: ignore[arg-type]
    fut = asyncio.get_running_loop().create_future()
    with pytest.raises(TypeError, match=r"create_task\(\) takes a coroutine object such as .*got Future"):
        bgwork.task_manager.create_task(fut)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got int 3"):
        bgwork.task_manager.create_task(3)  # type: ignore[arg-type]
    assert bgwork.task_manager.get_task_count() == 0 and bgwork.history.count("task_manager") == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"name": 5}, TypeError, r"create_task\(name=\.\.\.\) expects a string; got int 5"),
        ({"timeout": -5}, ValueError, r"create_task\(timeout=\.\.\.\) expects None or a finite number"),
        ({"context": ["t1"]}, TypeError, r"create_task\(context=\.\.\.\) expects a dict .*got list"),
    ],
)
@pytest.mark.asyncio
async def test_create_task_validates_and_closes_the_coroutine(
    bgwork: bg.Simulation, kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    coro = work(1)
    with pytest.raises(error, match=pattern):
        bgwork.task_manager.create_task(coro, **kwargs)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


@pytest.mark.asyncio
async def test_past_the_cap_the_coroutine_is_closed_counted_and_warned(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    manager = BackgroundTaskManager(max_pending_tasks=2, sim=bgwork)
    assert manager.create_task(work(1)) is not None
    assert manager.create_task(work(1)) is not None
    extra = work(1)
    assert manager.create_task(extra, name="export_trace", context={"turn": 3}) is None
    assert inspect.getcoroutinestate(extra) == inspect.CORO_CLOSED
    assert manager.dropped_count == 1 and manager.get_task_count() == 2
    [dropped] = bgwork.history.filter("task_manager", "dropped")
    assert (dropped.outcome, dropped.detail) == ("fail", {"name": "export_trace", "context": {"turn": 3},
                                                          "max_pending_tasks": 2})
    assert messages(caplog, logging.WARNING) == [
        "BackgroundTaskManager at max_pending_tasks=2: dropped task 'export_trace' (context {'turn': 3}); "
        "its coroutine was closed and never ran (1 dropped so far)"]
    await manager.wait_for_all()
    assert manager.create_task(work(1)) is not None  # room again once they finished
    await manager.wait_for_all()


# -- outcomes --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_task_past_its_timeout_is_cancelled_and_warned_with_its_context(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    task = bgwork.task_manager.create_task(work(60), name="export_trace", timeout=2,
                                           context={"thread_id": "t9"})
    assert task is not None
    await bgwork.run_until_idle()
    assert task.cancelled() and bgwork.clock.monotonic() == 2.0
    [rec] = bgwork.task_manager.tasks
    assert (rec.status, rec.cancel_reason, rec.finished_at) == ("timeout", "timeout", 2.0)
    [event] = bgwork.history.filter("task_manager", "timeout")
    assert (event.t, event.outcome, event.detail) == (2.0, "fail", {
        "name": "export_trace", "id": "bgtask_1", "context": {"thread_id": "t9"}, "timeout": 2.0})
    assert bgwork.history.count("task_manager", "cancelled") == 0  # recorded once, as a timeout
    assert messages(caplog, logging.WARNING) == [
        "background task 'export_trace' [bgtask_1] exceeded its timeout of 2s and was cancelled "
        "(context {'thread_id': 't9'})"]


@pytest.mark.asyncio
async def test_a_failing_task_is_logged_recorded_and_keeps_its_exception(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    task = bgwork.task_manager.create_task(fail_after(1, "trace backend 503"), name="export_trace",
                                           context={"turn": 1})
    other = bgwork.task_manager.create_task(work(2, "ok"))
    assert task is not None and other is not None
    await bgwork.run_until_idle()
    assert isinstance(task.exception(), ValueError) and other.result() == "ok"
    [event] = bgwork.history.filter("task_manager", "task_failed")
    assert (event.t, event.outcome, event.detail["error"]) == (1.0, "fail", "ValueError('trace backend 503')")
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == ("background task 'export_trace' [bgtask_1] failed (context {'turn': 1}): "
                                   "ValueError: trace backend 503")


@pytest.mark.asyncio
async def test_a_failed_task_nobody_awaits_does_not_warn_never_retrieved(bgwork: bg.Simulation) -> None:
    task = bgwork.task_manager.create_task(fail_after(1, "x"))
    assert task is not None
    await bgwork.run_until_idle()
    # asyncio logs "Task exception was never retrieved" when a task with this flag set is collected
    assert task._log_traceback is False


@pytest.mark.asyncio
async def test_each_task_is_the_fault_point_task_name(bgwork: bg.Simulation) -> None:
    ran: list[int] = []

    async def save_memory(n: int) -> None:
        ran.append(n)

    bgwork.faults.fail("task.save_memory", on_call=1, error=ConnectionError("kv down"))
    first = bgwork.task_manager.create_task(save_memory(1), name="save_memory")
    second = bgwork.task_manager.create_task(save_memory(2), name="save_memory")
    assert first is not None and second is not None
    await bgwork.run_until_idle()
    assert ran == [2]
    assert repr(first.exception()) == "ConnectionError('kv down')"
    assert [r.status for r in bgwork.task_manager.tasks] == ["failed", "done"]


@pytest.mark.asyncio
async def test_a_frozen_task_is_not_counted_and_its_timeout_does_not_revive_it(bgwork: bg.Simulation) -> None:
    finals: list[str] = []

    async def save_memory() -> None:
        try:
            await bgwork.kv.set("mem", "t1", {"n": 1})
        finally:
            finals.append("finally ran")

    bgwork.faults.crash("jobs", at="kv.set")
    token = current_attempt.set(Attempt("jobs", "msg_1", 1))
    try:
        bgwork.task_manager.create_task(save_memory(), name="save_memory", timeout=5)
    finally:
        current_attempt.reset(token)
    await bgwork.advance(1)  # the task starts and freezes in the crash
    await bgwork.task_manager.wait_for_all()  # returns at once: a frozen task is not waited for
    await bgwork.advance(10)
    assert bgwork.task_manager.get_task_count() == 0 and finals == []
    assert [r.status for r in bgwork.task_manager.tasks] == ["crashed"]
    assert bgwork.history.count("task_manager", "timeout") == 0


# -- wait_for_all / cancel_all -----------------------------------------------------------------
@pytest.mark.asyncio
async def test_wait_for_all_waits_on_virtual_time(bgwork: bg.Simulation) -> None:
    manager = bgwork.task_manager
    tasks = [manager.create_task(work(s, s)) for s in (3, 1, 2)]
    await manager.wait_for_all()
    assert bgwork.clock.monotonic() == 3.0 and [t.result() for t in tasks if t] == [3, 1, 2]
    await manager.wait_for_all()  # nothing running: returns at once


@pytest.mark.asyncio
async def test_wait_for_all_raises_the_first_failure_at_once_unless_return_exceptions(bgwork: bg.Simulation) -> None:
    manager = bgwork.task_manager
    manager.create_task(fail_after(2, "second"))
    manager.create_task(fail_after(1, "first"))
    slow = manager.create_task(work(5))
    with pytest.raises(ValueError, match=r"^first$"):
        await manager.wait_for_all()
    assert bgwork.clock.monotonic() == 1.0 and slow is not None and not slow.done()  # like gather
    await manager.wait_for_all(return_exceptions=True)
    assert bgwork.clock.monotonic() == 5.0 and slow.done()


@pytest.mark.asyncio
async def test_wait_for_all_timeout_cancels_the_stragglers_returns_none_and_says_which(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    manager = bgwork.task_manager
    quick = manager.create_task(work(1), name="save_memory")
    slow = manager.create_task(work(30), name="export_trace", context={"turn": 2})
    assert quick is not None and slow is not None
    assert await manager.wait_for_all(timeout=5) is None  # the real class swallows the TimeoutError
    assert quick.done() and not quick.cancelled() and slow.cancelled()
    [event] = bgwork.history.filter("task_manager", "cancelled")
    assert (event.t, event.detail) == (5.0, {"name": "export_trace", "id": "bgtask_2", "context": {"turn": 2},
                                             "reason": "wait_for_all timeout"})
    [timeout] = bgwork.history.filter("task_manager", "wait_timeout")
    assert timeout.detail == {"timeout": 5.0, "cancelled": ["export_trace"]}
    assert messages(caplog, logging.WARNING) == [
        "wait_for_all(timeout=5) timed out at t=+5.000s: 1 task(s) still running were cancelled (the real "
        "class logs 'some may still be running'): export_trace [bgtask_2]"]


@pytest.mark.asyncio
async def test_wait_for_all_swallows_a_tasks_own_timeout_error(bgwork: bg.Simulation) -> None:
    async def call_with_timeout() -> None:
        await asyncio.sleep(1)
        raise TimeoutError("the tracing backend did not answer")

    manager = bgwork.task_manager
    manager.create_task(call_with_timeout(), name="export_trace")
    slow = manager.create_task(work(3))
    assert await manager.wait_for_all() is None  # gather raised the task's TimeoutError; swallowed
    assert bgwork.clock.monotonic() == 1.0 and slow is not None and not slow.done()
    assert bgwork.history.count("task_manager", "task_failed", name="export_trace") == 1


@pytest.mark.asyncio
async def test_zero_means_no_limit(bgwork: bg.Simulation) -> None:
    manager = BackgroundTaskManager(max_pending_tasks=0, sim=bgwork)
    tasks = [manager.create_task(work(3), timeout=0) for _ in range(1500)]  # past the default cap of 1000
    assert all(t is not None for t in tasks) and manager.get_task_count() == 1500
    await manager.wait_for_all(timeout=0)  # waits for all, however long
    assert bgwork.clock.monotonic() == 3.0 and all(t is not None and t.result() is None for t in tasks)
    assert bgwork.history.count("task_manager", "timeout") == 0


@pytest.mark.asyncio
async def test_cancel_all_cancels_sleeps_a_tenth_and_returns_while_cleanup_runs(bgwork: bg.Simulation) -> None:
    flushed: list[float] = []

    async def buffered() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(1)  # flush the buffer
            flushed.append(bgwork.clock.monotonic())
            raise

    manager = bgwork.task_manager
    tasks = [manager.create_task(buffered(), name=n) for n in ("a", "b")]
    await bgwork.advance(1)
    await manager.cancel_all()
    assert bgwork.clock.monotonic() == 1.1 and flushed == [] and manager.get_task_count() == 2
    await manager.wait_for_all(return_exceptions=True)
    assert flushed == [2.0, 2.0] and all(t is not None and t.cancelled() for t in tasks)
    assert [(e.detail["name"], e.detail["reason"]) for e in bgwork.history.filter("task_manager", "cancelled")] == [
        ("a", "cancel_all"), ("b", "cancel_all")]
    await manager.cancel_all()  # nothing left: a no-op, no sleep
    assert bgwork.clock.monotonic() == 2.0


# -- shutdown --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_shutdown_cancels_first_then_waits(bgwork: bg.Simulation) -> None:
    manager = bgwork.task_manager
    tasks = [manager.create_task(work(4)), manager.create_task(work(6))]
    await bgwork.advance(1)
    result = await manager.shutdown(timeout=10)
    # "completed": the cancellations completed; the work in flight was lost
    assert result == {"status": "completed", "initial_tasks": 2, "completed_tasks": 2, "remaining_tasks": 0,
                      "duration_seconds": pytest.approx(0.1)}
    assert all(t is not None and t.cancelled() for t in tasks) and manager.is_shutdown
    assert await manager.shutdown() == {"status": "already_shutdown", "tasks_remaining": 0}
    [event] = bgwork.history.filter("task_manager", "shutdown")
    assert (event.t, event.outcome, event.detail["result"], event.detail["cancelled"]) == (
        pytest.approx(1.1), "ok", "completed", ["background_task", "background_task"])


@pytest.mark.asyncio
async def test_shutdown_timeout_is_for_the_cancellations(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def slow_cleanup() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(20)  # longer than the shutdown timeout; cut short by a second cancel
            raise

    manager = BackgroundTaskManager(default_shutdown_timeout=8, sim=bgwork)
    manager.create_task(work(4), name="save_memory")
    slow = manager.create_task(slow_cleanup(), name="export_trace", context={"thread_id": "t1"})
    await asyncio.sleep(0)
    result = await manager.shutdown()  # default_shutdown_timeout applies
    # at the timeout the gather is cancelled: a second cancellation cuts the clean-up short and
    # shutdown waits for that; by then nothing remains, yet the status is "timeout"
    assert result == {"status": "timeout", "initial_tasks": 2, "completed_tasks": 2, "remaining_tasks": 0,
                      "duration_seconds": pytest.approx(8.1)}
    assert slow is not None and slow.cancelled()
    assert messages(caplog, logging.WARNING) == [
        "shutdown(timeout=8) timed out: 1 task(s) still running after their cancellation were cancelled "
        "again, cutting their clean-up short; shutdown waits for them to end (forever for a task that "
        "catches CancelledError and goes on): export_trace [bgtask_2] (context {'thread_id': 't1'})"]
    [overdue] = bgwork.history.filter("task_manager", "shutdown_overdue")
    assert (overdue.t, overdue.detail) == (pytest.approx(8.1), {"timeout": 8.0, "waiting_for": ["export_trace"]})


@pytest.mark.asyncio
async def test_a_second_concurrent_shutdown_waits_on_the_first(bgwork: bg.Simulation) -> None:
    async def cleanup() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(2)
            raise

    manager = bgwork.task_manager
    manager.create_task(cleanup())
    await asyncio.sleep(0)
    first, second = await asyncio.gather(manager.shutdown(), manager.shutdown())
    assert first["status"] == "completed" and second == {"status": "already_shutdown", "tasks_remaining": 0}
    assert bgwork.clock.monotonic() == pytest.approx(2.0)


@pytest.mark.asyncio
async def test_create_task_after_shutdown_runs_the_task_as_the_real_class(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await bgwork.task_manager.shutdown()
    task = bgwork.task_manager.create_task(work(1, "sent"), name="late")
    assert task is not None and await task == "sent"
    assert bgwork.history.count("task_manager", "create_task", name="late", after_shutdown=True) == 1
    assert "create_task(name='late') after shutdown(): the task runs" in caplog.text


@pytest.mark.asyncio
async def test_async_with_shuts_down_on_exit_cancelling_what_runs(bgwork: bg.Simulation) -> None:
    async with BackgroundTaskManager(default_shutdown_timeout=5, sim=bgwork) as manager:
        task = manager.create_task(work(3, "done"))
    assert manager.is_shutdown and task is not None and task.cancelled()
    assert bgwork.clock.monotonic() == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [-1, float("inf"), "10"])
@pytest.mark.asyncio
async def test_timeouts_are_validated(bgwork: bg.Simulation, bad: object) -> None:
    with pytest.raises(ValueError, match=r"wait_for_all\(timeout=\.\.\.\) expects None or a finite number"):
        await bgwork.task_manager.wait_for_all(timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shutdown\(timeout=\.\.\.\) expects None or a finite number"):
        await bgwork.task_manager.shutdown(timeout=bad)  # type: ignore[arg-type]
    assert not bgwork.task_manager.is_shutdown


# -- app-built managers, checks, snapshots -------------------------------------------------------
@pytest.mark.asyncio
async def test_a_manager_built_without_sim_uses_the_current_simulation(bgwork: bg.Simulation) -> None:
    manager = BackgroundTaskManager()  # as app code builds it
    task = manager.create_task(work(2), name="save_memory", context={"thread_id": "t1"})
    assert task is not None
    assert bgwork.history.count("task_manager", "create_task", name="save_memory") == 1
    [line] = bgwork.task_manager.outstanding()  # the simulation's manager sees it too
    assert line.startswith("save_memory [bgtask_1] (another BackgroundTaskManager), context {'thread_id': 't1'}, "
                           "created t=+0.000s (0s ago): task 'save_memory'")
    assert manager.outstanding()[0].startswith("save_memory [bgtask_1], context")
    with pytest.raises(bg.CheckFailed, match=r"(?s)1 task-manager task still pending.*save_memory \[bgtask_1\]"):
        bg.assert_drained(bgwork)
    await manager.shutdown()
    bg.assert_drained(bgwork)


def test_a_manager_without_sim_outside_a_simulation_raises() -> None:
    manager = BackgroundTaskManager()
    coro = work(1)
    with pytest.raises(bg.NotRunning, match=r"bg.current\(\) was called outside a simulation"):
        manager.create_task(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED


def test_create_task_outside_the_running_loop_raises_as_asyncio_does() -> None:
    sim = bg.Simulation(seed=1)
    coro = work(1)
    with pytest.raises(RuntimeError, match=r"create_task\(name='late'\) needs the simulation's loop running"):
        sim.task_manager.create_task(coro, name="late")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    sim.close()


@pytest.mark.asyncio
async def test_snapshot_restores_records_drops_and_shutdown(bgwork: bg.Simulation) -> None:
    manager = BackgroundTaskManager(max_pending_tasks=1, sim=bgwork)
    manager.create_task(work(1))
    await manager.wait_for_all()
    state = manager._snapshot()
    manager.create_task(work(1))
    assert manager.create_task(work(1)) is None
    await manager.shutdown()
    manager._restore(state)
    assert ([r.id for r in manager.tasks], manager.dropped_count, manager.is_shutdown) == (["bgtask_1"], 0, False)
    with pytest.raises(TypeError, match=r"_restore\(\) takes what _snapshot\(\) returned"):
        manager._restore(None)


def test_a_users_agent_test_with_the_task_manager(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest
        import pytest_bgwork as bg

        async def save_memory(kv, thread_id):
            await asyncio.sleep(1)
            await kv.set("memory", thread_id, {"turns": 1})

        async def export_trace(thread_id):
            await asyncio.sleep(30)  # the tracing backend hangs

        async def answer_node(manager, kv, thread_id):
            ctx = {"thread_id": thread_id}
            manager.create_task(save_memory(kv, thread_id), name="save_memory", timeout=5, context=ctx)
            manager.create_task(export_trace(thread_id), name="export_trace", timeout=2, context=ctx)
            return "Thanks!"

        @pytest.mark.asyncio
        async def test_node_answers_and_chores_are_bounded(bgwork, caplog):
            manager = bgwork.task_manager
            assert await answer_node(manager, bgwork.kv, "t1") == "Thanks!"
            assert bgwork.clock.monotonic() == 0.0 and manager.get_task_count() == 2
            # shutdown alone would cancel them; without return_exceptions the timed-out export's
            # CancelledError would escape wait_for_all (as with the real class)
            await manager.wait_for_all(timeout=10, return_exceptions=True)
            result = await manager.shutdown(timeout=10)
            assert result["status"] == "completed" and bgwork.clock.monotonic() == 2.0
            assert (await bgwork.kv.get("memory", "t1")).data == {"turns": 1}
            [timeout] = bgwork.history.filter("task_manager", "timeout")
            assert timeout.detail["name"] == "export_trace" and timeout.t == 2.0
            assert "exceeded its timeout of 2s" in caplog.text and "'thread_id': 't1'" in caplog.text
            bg.assert_drained(bgwork)

        @pytest.mark.asyncio
        async def test_the_classic_mistake_is_caught(bgwork):
            with pytest.raises(TypeError, match="Call it: create_task"):
                bgwork.task_manager.create_task(export_trace, name="export_trace")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error::DeprecationWarning")
    result.assert_outcomes(passed=2)
