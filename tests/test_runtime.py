"""The waitUntil runtime: starting, requests, isolation, drain, shutdown, faults, checks."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.context import Attempt, current_attempt
from pytest_bgwork.services.runtime import Request, RuntimeTask, TaskError, clean_name


def times(sim: bg.Simulation, op: str) -> list[tuple[float, Any]]:
    return [(e.t, e.detail.get("task", e.detail.get("request"))) for e in sim.history.filter("runtime", op)]


async def sleeper(sim: bg.Simulation, seconds: float, log: list[tuple[str, float]], label: str) -> None:
    await asyncio.sleep(seconds)
    log.append((label, sim.clock.monotonic()))


async def send_email(to: str) -> None:
    await asyncio.sleep(1)


async def boom() -> None:
    await asyncio.sleep(0.5)
    raise ValueError("smtp down")


# -- starting tasks --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_coroutine_starts_at_once_and_is_tracked(bgwork: bg.Simulation) -> None:
    ran: list[float] = []

    async def note() -> None:
        ran.append(bgwork.clock.monotonic())
        await asyncio.sleep(5)

    rec = bgwork.runtime.wait_until(note())
    assert isinstance(rec, RuntimeTask)
    assert bgwork.runtime.pending == [rec] and rec.status == "running" and not rec.done
    await asyncio.sleep(0)
    assert ran == [0.0]  # started without any time passing
    await bgwork.runtime.drain()
    assert (rec.status, rec.started_at, rec.finished_at, rec.seconds) == ("done", 0.0, 5.0, 5.0)
    assert bgwork.runtime.pending == []


@pytest.mark.asyncio
async def test_several_tasks_run_concurrently(bgwork: bg.Simulation) -> None:
    log: list[tuple[str, float]] = []
    for label, seconds in (("a", 3), ("b", 1), ("c", 2)):
        bgwork.runtime.wait_until(sleeper(bgwork, seconds, log, label))
    await bgwork.runtime.drain()
    assert log == [("b", 1.0), ("c", 2.0), ("a", 3.0)]
    assert bgwork.clock.monotonic() == 3.0  # the longest, not the sum


@pytest.mark.asyncio
async def test_zero_argument_callables_are_called_and_named_after_their_coroutine(bgwork: bg.Simulation) -> None:
    calls: list[str] = []

    async def refresh_cache() -> None:
        calls.append("refresh")

    class Mailer:
        async def send(self) -> None:
            calls.append("send")

    a = bgwork.runtime.wait_until(refresh_cache)
    b = bgwork.runtime.wait_until(lambda: send_email("ada@example.com"))
    c = bgwork.runtime.wait_until(Mailer().send)
    d = bgwork.runtime.wait_until(functools.partial(send_email, "x@example.com"))
    e = bgwork.runtime.wait_until(send_email("y@example.com"), name="welcome_mail")
    await bgwork.runtime.drain()
    assert [r.name for r in (a, b, c, d, e)] == ["refresh_cache", "send_email", "Mailer.send", "send_email",
                                                 "welcome_mail"]
    assert [r.id for r in (a, b, c, d, e)] == ["wu_1", "wu_2", "wu_3", "wu_4", "wu_5"]
    assert calls == ["refresh", "send"]
    assert [e.detail["task"] for e in bgwork.history.filter("runtime", "wait_until")] == [
        "refresh_cache", "send_email", "Mailer.send", "send_email", "welcome_mail"]


def test_clean_name_strips_locals_and_unsafe_characters() -> None:
    assert clean_name("create_app.<locals>.notify_warehouse") == "notify_warehouse"
    assert clean_name("<lambda>") == "lambda"
    assert clean_name("Mailer.send") == "Mailer.send"
    assert clean_name("<>") == "task"


@pytest.mark.asyncio
async def test_any_awaitable_is_accepted(bgwork: bg.Simulation) -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    rec = bgwork.runtime.wait_until(fut)
    task = asyncio.ensure_future(send_email("z@example.com"))
    rec2 = bgwork.runtime.wait_until(task)
    assert (rec.name, rec2.name) == ("Future", "send_email")
    await asyncio.sleep(0)
    assert rec in bgwork.runtime.pending
    fut.set_result(1)
    await bgwork.runtime.drain()
    assert (rec.status, rec2.status) == ("done", "done")


@pytest.mark.parametrize(
    ("target", "pattern"),
    [
        (send_email, r"wait_until\(send_email\): send_email needs arguments \(to\) but wait_until calls it "
                     r"with none\. Pass a coroutine, wait_until\(send_email\(to\)\), or a zero-argument "
                     r"callable, wait_until\(lambda: send_email\(to\)\)"),
        (lambda: 42, r"wait_until\(lambda\): lambda\(\) returned int, not an awaitable.*Pass an async function"),
        (42, r"wait_until\(\) takes a coroutine .* an awaitable, or a zero-argument callable returning one; "
             r"got int 42"),
    ],
    ids=["needs-args", "not-awaitable-result", "not-callable"],
)
@pytest.mark.asyncio
async def test_wrong_targets_raise_type_error_naming_the_fix(
    bgwork: bg.Simulation, target: object, pattern: str
) -> None:
    with pytest.raises(TypeError, match=pattern):
        bgwork.runtime.wait_until(target)  # type: ignore[arg-type]
    assert bgwork.runtime.tasks == [] and bgwork.history.count("runtime") == 0


@pytest.mark.asyncio
async def test_an_already_awaited_coroutine_and_a_bad_name_are_refused(bgwork: bg.Simulation) -> None:
    coro = send_email("a@example.com")
    await coro
    with pytest.raises(TypeError, match=r"got a coroutine that already ran \(send_email\); pass a fresh one"):
        bgwork.runtime.wait_until(coro)
    fresh = send_email("b@example.com")
    with pytest.raises(ValueError, match=r"wait_until\(name=\.\.\.\) expects letters.*got 'send mail'"):
        bgwork.runtime.wait_until(fresh, name="send mail")
    assert inspect.getcoroutinestate(fresh) == inspect.CORO_CLOSED  # closed, so no "never awaited" warning


@pytest.mark.asyncio
async def test_a_callable_that_raises_as_it_starts_is_an_isolated_task_failure(bgwork: bg.Simulation) -> None:
    def start_upload() -> Awaitable[None]:
        raise ConnectionError("bucket gone")

    rec = bgwork.runtime.wait_until(start_upload)
    await bgwork.runtime.drain()
    assert rec.status == "failed" and rec.name == "start_upload"
    [err] = bgwork.runtime.errors
    assert isinstance(err.exception, ConnectionError)


# -- requests --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_the_response_does_not_wait_for_its_tasks(bgwork: bg.Simulation) -> None:
    async with bgwork.runtime.request("checkout") as ctx:
        await asyncio.sleep(0.25)  # the handler's own work
        ctx.wait_until(send_email("ada@example.com"))
    assert isinstance(ctx, Request)
    assert (ctx.name, ctx.id, ctx.started_at, ctx.responded_at, ctx.response_time) == (
        "checkout", "req_1", 0.0, 0.25, 0.25)
    assert [t.name for t in ctx.tasks] == ["send_email"] and ctx.pending == ctx.tasks
    [response] = bgwork.history.filter("runtime", "response")
    assert (response.t, response.detail) == (0.25, {"request": "checkout", "id": "req_1", "seconds": 0.25,
                                                   "tasks": 1})
    await bgwork.runtime.drain()
    assert times(bgwork, "task_done") == [(1.25, "send_email")]  # separate from the response
    [done] = bgwork.history.filter("runtime", "task_done")
    assert done.detail == {"task": "send_email", "id": "wu_1", "seconds": 1.0, "request": "checkout",
                           "request_id": "req_1"}
    assert ctx.pending == []


@pytest.mark.asyncio
async def test_a_failing_handler_records_a_failed_response_and_its_tasks_go_on(bgwork: bg.Simulation) -> None:
    with pytest.raises(KeyError):
        async with bgwork.runtime.request("checkout") as ctx:
            ctx.wait_until(send_email("ada@example.com"))
            raise KeyError("cart")
    [response] = bgwork.history.filter("runtime", "response")
    assert response.outcome == "fail" and response.detail["error"] == "KeyError('cart')"
    assert isinstance(ctx.error, KeyError)
    await bgwork.runtime.drain()
    assert [t.status for t in ctx.tasks] == ["done"]


@pytest.mark.asyncio
async def test_request_misuse_is_refused(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError, match=r"request\(name=\.\.\.\) expects a non-empty string.*got ''"):
        bgwork.runtime.request("")
    req = bgwork.runtime.request("late")
    coro = send_email("a@example.com")
    with pytest.raises(RuntimeError, match=r"before the request began: use it inside `async with"):
        req.wait_until(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    async with req:
        pass
    with pytest.raises(RuntimeError, match=r"was already entered"):
        async with req:
            pass
    assert [r.id for r in bgwork.runtime.requests] == ["req_1"]  # the refused name made none


# -- isolation -------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_failing_task_is_logged_and_recorded_never_raised(
    bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture
) -> None:
    log: list[tuple[str, float]] = []
    caplog.set_level(logging.ERROR, logger="pytest_bgwork.runtime")
    async with bgwork.runtime.request("signup") as ctx:
        ctx.wait_until(boom())
        ctx.wait_until(sleeper(bgwork, 2, log, "analytics"))
    assert ctx.response_time == 0.0
    await bgwork.runtime.drain()  # does not raise either
    assert log == [("analytics", 2.0)]  # the other task was untouched
    [err] = bgwork.runtime.errors
    assert isinstance(err, TaskError)
    assert (err.task, err.id, err.request, err.time) == ("boom", "wu_1", "signup", 0.5)
    assert isinstance(err.exception, ValueError)
    assert str(err) == "waitUntil task boom [wu_1] in request 'signup' failed at t=+0.500s: ValueError: smtp down"
    assert ctx.errors == [err] and ctx.tasks[0].error is err.exception
    [record] = [r for r in caplog.records if r.name == "pytest_bgwork.runtime"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == ("waitUntil task boom [wu_1] (request 'signup') failed at t=+0.500s: "
                                   "ValueError: smtp down")
    [failed] = bgwork.history.filter("runtime", "task_failed")
    assert (failed.outcome, failed.t, failed.detail["error"]) == ("fail", 0.5, "ValueError('smtp down')")


@pytest.mark.asyncio
async def test_a_task_cancelled_by_someone_else_is_recorded(bgwork: bg.Simulation) -> None:
    rec = bgwork.runtime.wait_until(send_email("a@example.com"))
    await asyncio.sleep(0.5)
    assert rec.task is not None
    rec.task.cancel()
    await bgwork.runtime.drain()
    assert rec.status == "cancelled" and rec.finished_at == 0.5
    [event] = bgwork.history.filter("runtime", "cancelled")
    assert (event.outcome, event.detail["task"]) == ("unknown", "send_email")


# -- faults ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_each_task_is_the_fault_point_task_name(bgwork: bg.Simulation) -> None:
    body_ran: list[str] = []

    async def send_receipt(n: int) -> None:
        body_ran.append(f"receipt {n}")

    bgwork.faults.fail("task.send_receipt", on_call=2, error=ConnectionError("mail api down"))
    async with bgwork.runtime.request("checkout") as ctx:
        for n in (1, 2, 3):
            ctx.wait_until(send_receipt(n))
    await bgwork.runtime.drain()
    assert body_ran == ["receipt 1", "receipt 3"]  # the faulted one never ran, the others did
    assert [t.status for t in ctx.tasks] == ["done", "failed", "done"]
    [err] = bgwork.runtime.errors
    assert (err.id, repr(err.exception)) == ("wu_2", "ConnectionError('mail api down')")
    assert ctx.response_time == 0.0


@pytest.mark.asyncio
async def test_a_crash_of_the_worker_cuts_its_tasks_off(bgwork: bg.Simulation) -> None:
    attempt = Attempt("jobs", "msg_1", 1, crashed=True)

    async def start() -> RuntimeTask:
        token = current_attempt.set(attempt)
        try:
            return bgwork.runtime.wait_until(send_email("a@example.com"))
        finally:
            current_attempt.reset(token)

    rec = await start()
    await bgwork.runtime.drain()
    assert rec.status == "crashed"
    [cut] = bgwork.history.filter("runtime", "cut_off")
    assert cut.detail["reason"] == "crashed" and cut.attempt == "jobs/msg_1#1"


@pytest.mark.asyncio
async def test_a_task_frozen_by_an_injected_crash_is_not_pending(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("jobs", at="task.send_email")
    token = current_attempt.set(Attempt("jobs", "msg_1", 1))
    try:
        rec = bgwork.runtime.wait_until(send_email("a@example.com"))
    finally:
        current_attempt.reset(token)
    await bgwork.runtime.drain()  # returns: the frozen task will never resume
    assert rec.status == "crashed" and bgwork.runtime.pending == [] and bgwork.runtime.outstanding() == []
    assert bgwork.history.count("fault", "crash", point="task.send_email") == 1


# -- drain -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_drain_waits_for_tasks_started_by_tasks(bgwork: bg.Simulation) -> None:
    log: list[tuple[str, float]] = []

    async def parent() -> None:
        await asyncio.sleep(1)
        bgwork.runtime.wait_until(sleeper(bgwork, 2, log, "child"))

    bgwork.runtime.wait_until(parent())
    await bgwork.runtime.drain()
    assert log == [("child", 3.0)] and bgwork.runtime.pending == []
    await bgwork.runtime.drain()  # nothing pending: returns at once
    assert bgwork.clock.monotonic() == 3.0


@pytest.mark.asyncio
async def test_drain_timeout_raises_and_leaves_tasks_running(bgwork: bg.Simulation) -> None:
    log: list[tuple[str, float]] = []
    rec = bgwork.runtime.wait_until(sleeper(bgwork, 60, log, "report"), name="build_report")
    with pytest.raises(TimeoutError) as info:
        await bgwork.runtime.drain(timeout=10)
    text = str(info.value)
    assert text.startswith("runtime.drain(timeout=10) timed out at t=+10.000s with 1 waitUntil task(s) "
                           "still running (they keep running; runtime.shutdown(grace=...) cancels them):")
    assert "build_report [wu_1], started t=+0.000s (10s ago)" in text and "sleeper" in text
    assert bgwork.clock.monotonic() == 10.0 and rec.status == "running"
    await bgwork.runtime.drain()
    assert log == [("report", 60.0)]


@pytest.mark.parametrize("bad", [-1, float("nan"), "5", True])
@pytest.mark.asyncio
async def test_drain_and_shutdown_validate_their_arguments(bgwork: bg.Simulation, bad: object) -> None:
    with pytest.raises(ValueError, match=r"drain\(timeout=\.\.\.\) expects None or a finite number of seconds"):
        await bgwork.runtime.drain(timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shutdown\(grace=\.\.\.\) expects a finite number of seconds >= 0"):
        await bgwork.runtime.shutdown(grace=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shutdown\(late=\.\.\.\) expects one of 'raise', 'drop'; got 'ignore'"):
        await bgwork.runtime.shutdown(late="ignore")
    assert not bgwork.runtime.shutting_down


# -- shutdown --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_shutdown_waits_for_tasks_within_grace(bgwork: bg.Simulation) -> None:
    log: list[tuple[str, float]] = []
    bgwork.runtime.wait_until(sleeper(bgwork, 20, log, "export"))
    cut = await bgwork.runtime.shutdown(grace=30)
    assert cut == [] and log == [("export", 20.0)]
    assert bgwork.clock.monotonic() == 20.0  # returns as soon as the work is done
    [event] = bgwork.history.filter("runtime", "shutdown")
    assert event.detail == {"grace": 30.0, "late": "raise", "pending": 1}
    assert bgwork.runtime.shutting_down


@pytest.mark.asyncio
async def test_shutdown_cuts_off_tasks_past_grace(bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pytest_bgwork.runtime")
    log: list[tuple[str, float]] = []
    cleaned: list[float] = []

    async def slow_sync() -> None:
        try:
            await asyncio.sleep(45)
            log.append(("slow", bgwork.clock.monotonic()))
        finally:
            cleaned.append(bgwork.clock.monotonic())

    async with bgwork.runtime.request("checkout") as ctx:
        ctx.wait_until(slow_sync())
        ctx.wait_until(sleeper(bgwork, 5, log, "fast"))
    cut = await bgwork.runtime.shutdown(grace=30)
    assert bgwork.clock.monotonic() == 30.0
    assert [r.name for r in cut] == ["slow_sync"] and bgwork.runtime.cut_off == cut
    assert log == [("fast", 5.0)] and cleaned == [30.0]  # cancelled: its finally ran at the cut
    assert (cut[0].status, cut[0].finished_at) == ("cut_off", 30.0)
    [event] = bgwork.history.filter("runtime", "cut_off")
    assert (event.t, event.outcome, event.detail) == (30.0, "unknown", {
        "task": "slow_sync", "id": "wu_1", "grace": 30.0, "request": "checkout", "request_id": "req_1"})
    assert bgwork.runtime.pending == [] and bgwork.runtime.errors == []
    assert [r.getMessage() for r in caplog.records if r.name == "pytest_bgwork.runtime"] == [
        "waitUntil task slow_sync [wu_1] cut off: still running 30s after shutdown began"]


@pytest.mark.asyncio
async def test_wait_until_after_shutdown_began_raises(bgwork: bg.Simulation) -> None:
    refused: list[BaseException] = []

    async def spawns_late() -> None:
        await asyncio.sleep(1)
        coro = send_email("late@example.com")
        try:
            bgwork.runtime.wait_until(coro)
        except bg.RuntimeShuttingDown as exc:
            refused.append(exc)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

    bgwork.runtime.wait_until(spawns_late())
    await bgwork.runtime.shutdown(grace=30)
    [exc] = refused
    assert str(exc).startswith("wait_until(send_email) was called after runtime.shutdown() began at t=+0.000s: "
                               "the task was not started.")
    assert "late='drop'" in str(exc)
    called: list[int] = []
    with pytest.raises(bg.RuntimeShuttingDown):
        bgwork.runtime.wait_until(lambda: called.append(1))  # type: ignore[arg-type, return-value]
    assert called == []  # a callable is never called
    assert bgwork.history.count("runtime", "wait_until") == 1


@pytest.mark.asyncio
async def test_late_drop_closes_records_and_warns(bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pytest_bgwork.runtime")
    await bgwork.runtime.shutdown(grace=0, late="drop")
    coro = send_email("late@example.com")
    async with bgwork.runtime.request("checkout") as ctx:
        rec = ctx.wait_until(coro)
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
    assert (rec.status, rec.name, rec.task) == ("dropped", "send_email", None)
    assert bgwork.runtime.dropped == [rec] and ctx.tasks == [rec] and bgwork.runtime.pending == []
    [event] = bgwork.history.filter("runtime", "dropped")
    assert (event.outcome, event.detail) == ("fail", {"task": "send_email", "id": "wu_1", "request": "checkout",
                                                      "request_id": "req_1"})
    assert [r.getMessage() for r in caplog.records] == [
        "waitUntil task send_email [wu_1] dropped: shutdown began at t=+0.000s (late='drop')"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


# -- checks, snapshots, sync use ------------------------------------------------------------
@pytest.mark.asyncio
async def test_outstanding_feeds_assert_drained(bgwork: bg.Simulation) -> None:
    async with bgwork.runtime.request("checkout") as ctx:
        ctx.wait_until(send_email("ada@example.com"))
    [line] = bgwork.runtime.outstanding()
    assert line.startswith("send_email [wu_1] of request 'checkout', started t=+0.000s (0s ago): task ")
    with pytest.raises(bg.CheckFailed, match=r"(?s)1 waitUntil task still pending.*send_email \[wu_1\]"):
        bg.assert_drained(bgwork)
    await bgwork.runtime.drain()
    assert bgwork.runtime.outstanding() == []
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_snapshot_restores_records_and_errors_but_not_running_tasks(bgwork: bg.Simulation) -> None:
    bgwork.runtime.wait_until(boom())
    await bgwork.runtime.drain()
    state = bgwork.runtime._snapshot()
    bgwork.runtime.wait_until(boom())
    await bgwork.runtime.drain()
    await bgwork.runtime.shutdown(grace=0)
    assert len(bgwork.runtime.errors) == 2
    bgwork.runtime._restore(state)
    assert [e.id for e in bgwork.runtime.errors] == ["wu_1"]
    assert [t.id for t in bgwork.runtime.tasks] == ["wu_1"] and not bgwork.runtime.shutting_down
    with pytest.raises(TypeError, match=r"_restore\(\) takes what _snapshot\(\) returned; got list"):
        bgwork.runtime._restore([])


def test_sync_code_can_start_tasks_before_sim_run() -> None:
    with bg.Simulation(seed=1) as sim:
        log: list[tuple[str, float]] = []
        rec = sim.runtime.wait_until(sleeper(sim, 2, log, "warmup"))
        sim.run(sim.runtime.drain())
        assert (rec.status, log) == ("done", [("warmup", 2.0)])


def test_wait_until_outside_the_simulations_loop_is_refused() -> None:
    sim = bg.Simulation(seed=2)

    async def elsewhere() -> None:  # a plain asyncio loop, not the simulation's
        coro = send_email("a@example.com")
        with pytest.raises(bg.NotRunning, match=r"wait_until\(\) must run on this simulation's virtual loop"):
            sim.runtime.wait_until(coro)
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED

    asyncio.run(elsewhere())
    sim.close()
    with pytest.raises(bg.NotRunning):
        sim.runtime.wait_until(lambda: send_email("b@example.com"))
    assert sim.runtime.tasks == []


def test_same_seed_same_history() -> None:
    def run() -> str:
        with bg.Simulation(seed=3) as sim:
            async def main() -> None:
                async with sim.runtime.request("checkout") as ctx:
                    ctx.wait_until(boom())
                    ctx.wait_until(send_email("a@example.com"))
                await sim.runtime.shutdown(grace=0.75)

            sim.run(main())
            return sim.history.digest()

    assert run() == run()


# -- through pytest ----------------------------------------------------------------------------
def test_a_users_handler_test_sees_three_tasks_run_concurrently_after_the_response(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest

        async def send_email(sim, to):
            await asyncio.sleep(1)
            sim.effects.record("email", key=to)

        async def track(sim, event):
            await asyncio.sleep(1)

        async def notify_warehouse(sim, order):
            await asyncio.sleep(1)

        async def checkout(runtime, sim, order):
            async with runtime.request("checkout") as ctx:
                ctx.wait_until(send_email(sim, order["email"]))
                ctx.wait_until(track(sim, "purchase"))
                ctx.wait_until(notify_warehouse(sim, order))
                return {"status": "accepted"}, ctx

        @pytest.mark.asyncio
        async def test_checkout_answers_before_its_chores(bgwork, bg_runtime):
            body, ctx = await checkout(bg_runtime, bgwork, {"email": "ada@example.com"})
            assert body == {"status": "accepted"}
            assert ctx.response_time == 0.0 and len(bg_runtime.pending) == 3
            await bg_runtime.drain()
            [response] = bgwork.history.filter("runtime", "response")
            done = bgwork.history.filter("runtime", "task_done")
            assert response.t == 0.0 and response.detail["seconds"] == 0.0
            assert sorted(e.detail["task"] for e in done) == ["notify_warehouse", "send_email", "track"]
            assert [e.t for e in done] == [1.0, 1.0, 1.0]   # concurrently, not one after another
            assert bgwork.clock.monotonic() == 1.0
            assert bgwork.effects.count("email") == 1

        @pytest.mark.asyncio
        async def test_forgetting_to_drain_is_caught(bgwork, bg_runtime):
            import pytest_bgwork as bg
            await checkout(bg_runtime, bgwork, {"email": "ada@example.com"})
            bg.assert_drained(bgwork)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*assert_drained: expected no background work left*",
        "*3 waitUntil tasks still pending:*",
        "*- send_email [[]wu_1] of request 'checkout', started t=+0.000s*",
    ])

