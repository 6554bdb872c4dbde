"""Never lie (issue 9, docs/trust.md): no stranded message, no typo'd rule, no vacuous check.

Each test here failed before its fix: the retry backoff overflowed at attempt 1025, fault
rules with typos were accepted and never fired, checks passed on names that never
appeared, ``assert_drained`` missed bare tasks, expired statuses went unseen, explore's
heal phase skipped schedules, and a missing ``await`` only warned.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.services.delivery import BACKOFF_CAP, retry_backoff


# -- 1. retries never overflow; no message is stranded -------------------------------------------
def test_backoff_is_capped_before_exponentiating() -> None:
    assert retry_backoff(1025, 0.0) == BACKOFF_CAP  # 2.0 ** 1024 raised OverflowError
    assert retry_backoff(10**9, 0.999) == BACKOFF_CAP
    assert retry_backoff(1, 0.0) == 1.0


def test_thousands_of_retries_end_in_the_dead_letter_list(bgwork: bg.Simulation) -> None:
    sim = bgwork
    sim.queues.create("jobs", max_retries=2000, visibility_timeout=300)

    async def always_fails(payload: Any, delivery: bg.Delivery) -> None:
        raise RuntimeError("down")

    async def main() -> None:
        sim.queues.route("jobs", always_fails)
        await sim.queues.publish("jobs", {"n": 1})
        await sim.run_until_idle(max_time=30 * 86400)

    sim.run(main())
    stats = sim.queues.stats("jobs")
    assert (stats["in_flight"], stats["pending"], stats["dead_letters"]) == (0, 0, 1)
    assert sim.queues.dead_letters("jobs")[0].attempts == 2001
    bg.assert_nothing_lost(sim)


# -- 2. fault points: refused when unknown, reported when unused ---------------------------------
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda f: f.fail("kv.sett"), "point= must be a fault point bgwork knows; got 'kv.sett'; "
                                      "did you mean 'kv.set'?"),
        (lambda f: f.crash("jobs", at="stream.wirte"), "at= must be a fault point bgwork knows; "
                                                       "got 'stream.wirte'; did you mean "
                                                       "'stream.write'?"),
        (lambda f: f.delay("tasks.craete", seconds=1), "did you mean 'tasks.create'?"),
        (lambda f: f.duplicate("invoice render"), "duplicate(queue=...) must name a queue"),
        (lambda f: f.apply([{"kind": "fail", "point": "bogus"}]), "got 'bogus'"),
    ],
)
def test_unknown_fault_points_are_refused_at_the_call(call: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call(bg.Simulation().faults)
    assert message in str(info.value)
    assert "register_fault_point" in str(info.value) or "queue" in message


def test_fault_plans_refuse_unknown_points() -> None:
    with pytest.raises(ValueError, match="got 'bogus'"):
        bgst.fault_plans(points=["bogus"])


def test_task_and_schedule_points_take_any_name_and_adapters_register_theirs() -> None:
    faults = bg.Simulation().faults
    faults.fail("task.send_email")
    faults.fail("schedule.nightly")
    with pytest.raises(ValueError, match=r"got 'sqs\.receive'"):
        faults.fail("sqs.receive")
    assert bg.register_fault_point("sqs.receive") == "sqs.receive"
    faults.fail("sqs.receive")
    assert "sqs.receive" in bg.fault_points()
    with pytest.raises(ValueError, match=r"register_fault_point\(name=...\) expects 'service.op'"):
        bg.register_fault_point("no dot")


UNUSED_RULES = """
import pytest
import pytest_bgwork as bg

@pytest.mark.asyncio
async def test_typo_in_queue(bgwork):
    bgwork.queues.create("invoice-render")
    bgwork.faults.duplicate("invoice-rendr")
    bgwork.faults.fail("kv.set", on_call=5)
    await bgwork.kv.set("s", "k", 1)

@pytest.mark.asyncio
@pytest.mark.bgwork(strict=True)
async def test_strict(bgwork):
    bgwork.faults.fail("kv.get")

@pytest.mark.asyncio
async def test_fired(bgwork):
    bgwork.faults.fail("kv.get")
    with pytest.raises(ConnectionError):
        await bgwork.kv.get("s", "k")

@pytest.mark.asyncio
@pytest.mark.bgwork(chaos="duplicate,crash")
async def test_chaos_rules_are_not_reported(bgwork):
    pass
"""


def test_rules_that_never_fired_are_reported_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(UNUSED_RULES)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=4, errors=1)  # test_strict passes, then errors
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_strict*",
        "bgwork strict mode: 1 fault rule(s) never fired*",
        "  - fail at kv.get on call 1 raising ConnectionError('injected fault'): kv.get was "
        "entered 0 time(s)",
    ])
    result.stdout.fnmatch_lines([
        "*UnusedFaultRuleWarning: 2 fault rule(s) never fired, so the test never saw the fault it asked for:",
        "*- duplicate invoice-rendr at queue.publish x2: queue 'invoice-rendr' never existed "
        "(queues: 'invoice-render'); did you mean 'invoice-render'?",
        "*- fail at kv.set on call 5 raising ConnectionError('injected fault'): kv.set was "
        "entered 1 time(s)",
    ])
    assert result.stdout.str().count("UnusedFaultRuleWarning: ") == 1  # only test_typo_in_queue


# -- 3. checks never pass vacuously ---------------------------------------------------------------
def test_effects_check_fails_on_a_name_never_recorded() -> None:
    sim = bg.Simulation()
    sim.effects.record("charge", key="o1")
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_effects_once(sim, "chrage")
    assert str(info.value).startswith(
        "assert_effects_once('chrage'): no effect named 'chrage' was ever recorded, so there is "
        "nothing to check (recorded: 'charge' x1); did you mean 'charge'?")
    assert "allow_empty=True" in str(info.value)
    bg.assert_effects_once(sim, "refund", allow_empty=True)
    bg.assert_effects_once(sim, "charge")


@pytest.mark.asyncio
async def test_status_check_fails_on_a_namespace_never_written(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("report-status", "j1", {"kind": "done"})
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_status_terminal(bgwork, "report-stauts")
    assert ("no key was ever written to KV namespace 'report-stauts', so there is no status to "
            "check (namespaces written: 'report-status'); did you mean 'report-status'?"
            in str(info.value))
    bg.assert_status_terminal(bgwork, "report-stauts", allow_empty=True)
    with pytest.raises(bg.CheckFailed, match="namespaces written: none at all"):
        bg.assert_status_terminal(bg.Simulation(), "report-status")


# -- 4. assert_drained sees bare tasks; failed background tasks are reported ----------------------
@pytest.mark.asyncio
async def test_drained_sees_a_bare_task_left_pending(bgwork: bg.Simulation) -> None:
    never = asyncio.Event()

    async def send_receipt() -> None:
        await never.wait()

    task = asyncio.create_task(send_receipt())
    await bgwork.advance(1)
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_drained(bgwork)
    text = str(info.value)
    assert "1 other task still pending on the simulation's loop" in text
    assert "send_receipt" in text and "await never.wait()" in text
    never.set()
    await task
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_no_task_errors_reports_failed_wait_until_and_manager_tasks(
    bgwork: bg.Simulation,
) -> None:
    async def boom() -> None:
        raise ValueError("smtp down")

    bg.assert_no_task_errors(bgwork)
    bgwork.runtime.wait_until(boom(), name="send_email")
    bgwork.task_manager.create_task(boom(), name="sync")
    await bgwork.run_until_idle()
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_no_task_errors(bgwork)
    text = str(info.value)
    assert "expected every background task to succeed; 2 tasks failed:" in text
    assert "waitUntil task send_email [wu_1] failed at t=+0.000s: ValueError: smtp down" in text
    assert "task-manager task sync [" in text and "ValueError: smtp down" in text


def test_explore_runs_the_task_error_check_by_default() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        async def flaky() -> None:
            try:
                await sim.kv.set("s", "k", 1)
            except ConnectionError:
                failed = True
            else:
                failed = False
            if failed:  # the task's own bug on its error path (a fault's own error is not one)
                raise RuntimeError("no retry on the error path")

        sim.runtime.wait_until(flaky(), name="flaky")

    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(scenario, faults=bgst.fault_plans(points=["kv.set"], kinds=["fail"]),
                   seed=1, settings=settings(database=None, max_examples=20))
    assert "failed in: check assert_no_task_errors" in str(info.value)
    assert "waitUntil task flaky" in str(info.value)


# -- 5. a status that expired while not terminal --------------------------------------------------
@pytest.mark.asyncio
async def test_status_that_expired_while_running_is_reported(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("report-status", "j1", {"kind": "done"}, ttl=60)
    await bgwork.kv.set("report-status", "j2", {"kind": "processing"}, ttl=60)
    await bgwork.advance(61)
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_status_terminal(bgwork, "report-status")
    text = str(info.value)
    assert "1 key is stuck:" in text
    assert ("  - j2: expired at +60.000s while kind='processing' (a poller now gets 'not "
            "found')") in text
    assert "j1" not in text.split("Timeline")[0]


# -- 6. explore's heal phase runs recurring schedules ----------------------------------------------
async def cron_recovers(sim: bg.Simulation) -> None:
    """A job left 'processing'; a cron every 5 minutes finishes stuck jobs."""
    await sim.kv.set("status", "j1", {"kind": "processing"})

    async def sweep() -> None:
        for key, value in sim.kv.items("status").items():
            if value["kind"] == "processing":
                await sim.kv.set("status", key, {"kind": "done"})

    sim.schedules.create("sweep", cron="*/5 * * * *", handler=sweep)


def status_done(sim: bg.Simulation) -> None:
    bg.assert_status_terminal(sim, "status")


def test_heal_phase_runs_schedules() -> None:
    report = bg.explore(cron_recovers, faults=st.just(bg.FaultPlan()), checks=[status_done], seed=1, max_examples=1)
    assert report.examples == 1
    with pytest.raises(bg.ExplorationFailed, match="j1: kind='processing'"):
        bg.explore(cron_recovers, faults=st.just(bg.FaultPlan()),
                   checks=[status_done], seed=1, max_examples=1, heal_time=0)
    with pytest.raises(ValueError, match=r"explore\(heal_time=...\) must be a number of seconds"):
        bg.explore(cron_recovers, faults=st.just(bg.FaultPlan()), heal_time=float("nan"))


# -- 8. a pytest-bgwork coroutine that is never awaited fails the test -----------------------------
def test_never_awaited_api_coroutines_fail_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_forgot_await(bgwork):
            bgwork.queues.create("jobs")
            bgwork.queues.publish("jobs", {"n": 1})

        def test_forgot_await_sync(bgwork):
            async def handler(payload):
                pass
            bg.assert_idempotent(bgwork, handler, {"n": 1})

        @pytest.mark.asyncio
        async def test_awaited(bgwork):
            bgwork.queues.create("jobs")
            await bgwork.queues.publish("jobs", {"n": 1})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*bgwork: 1 pytest-bgwork coroutine(s) were never awaited, so they did nothing:",
        "*- Queues.publish(name='jobs', payload={'n': 1}, *) at *test_never_awaited_api_"
        "coroutines_fail_the_test.py:7",
        "*Add `await` before the call*",
        "*- assert_idempotent(sim=<Simulation*, handler=<function*, payload={'n': 1}, times=2, "
        "ignore=()) at *test_never_awaited_api_coroutines_fail_the_test.py:12",
    ])
