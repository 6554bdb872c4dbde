"""The checks: each catches a deliberately buggy handler and passes its fixed twin."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import pytest

import pytest_bgwork as bg

# -- assert_status_terminal ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_status_terminal_passes_when_every_key_finished(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("jobs", "a", {"kind": "done"})
    await bgwork.kv.set("jobs", "b", {"kind": "failed", "error": "x"})
    await bgwork.kv.set("other", "c", {"kind": "processing"})  # another namespace
    bg.assert_status_terminal(bgwork, "jobs")
    bg.assert_status_terminal(bgwork, "empty-namespace", allow_empty=True)


@pytest.mark.asyncio
async def test_status_terminal_names_stuck_keys_and_their_history(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("jobs", "a", {"kind": "queued"})
    await bgwork.advance(3)
    await bgwork.kv.set("jobs", "a", {"kind": "processing"})
    await bgwork.kv.set("jobs", "b", {"state": "done"})
    await bgwork.kv.set("jobs", "c", {"kind": "done"})
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_status_terminal(bgwork, "jobs")
    text = str(info.value)
    assert text.startswith(
        "assert_status_terminal('jobs'): expected every key's 'kind' to be one of "
        "{'done', 'failed'}; 2 keys are stuck:\n"
        "  - a: kind='processing' since +3.000s\n"
        "      history: +0.000s set kind='queued'; +3.000s set kind='processing'\n"
        "  - b: kind='<no field>' since +3.000s\n"
    )
    assert "Timeline of those keys and the attempts that wrote them:" in text
    assert re.search(r"\+\s+3\.000s kv\.set .* key=a .*processing", text)
    assert "key=c" not in text


@pytest.mark.asyncio
async def test_status_terminal_takes_field_and_terminal_values(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("runs", "r1", {"state": "SUCCEEDED"})
    bg.assert_status_terminal(bgwork, "runs", field="state", terminal={"SUCCEEDED", "FAILED"})
    with pytest.raises(bg.CheckFailed, match="'state' to be one of \\{'CANCELLED'\\}"):
        bg.assert_status_terminal(bgwork, "runs", field="state", terminal={"CANCELLED"})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ns": ""}, ValueError, "assert_status_terminal(ns=...) expects a KV namespace name"),
        ({"field": ""}, ValueError, "field=...) expects a field name such as 'kind'"),
        ({"terminal": "done"}, TypeError, "expects a set of values, e.g. {'done'}"),
        ({"terminal": set()}, ValueError, "must name at least one value"),
    ],
)
def test_status_terminal_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception],
                                               message: str) -> None:
    sim = bg.Simulation()
    args: dict[str, Any] = {"ns": "jobs", **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        bg.assert_status_terminal(sim, **args)
    with pytest.raises(TypeError, match=r"expects a bg\.Simulation"):
        bg.assert_status_terminal("sim", "jobs")  # type: ignore[arg-type]
    sim.close()


# -- assert_effects_once -------------------------------------------------------------------------
def test_effects_once_passes_one_effect_per_key() -> None:
    sim = bg.Simulation()
    sim.effects.record("email", key="o1")
    sim.effects.record("email", key="o2")
    sim.effects.record("sms", key="o1")
    bg.assert_effects_once(sim, "email")
    bg.assert_effects_once(sim, "email", keys=["o1", "o2"])
    sim.close()


def test_effects_once_shows_every_duplicate_and_missing_keys() -> None:
    sim = bg.Simulation()
    sim.effects.record("email", key="o1")
    sim.effects.record("email", key="o1")
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_effects_once(sim, "email", keys=["o1", "o9"])
    assert str(info.value).startswith(
        "assert_effects_once('email'): expected each key's 'email' effect exactly once; "
        "1 key had it more than once:\n"
        "  - key 'o1': 2 times\n"
        "      at +0.000s in no queue attempt\n"
        "      at +0.000s in no queue attempt\n"
        "  1 key never had it: 'o9'\n"
    )
    with pytest.raises(ValueError, match="expects the effect's name"):
        bg.assert_effects_once(sim, "")
    sim.close()


# -- assert_streams_closed (outside queue attempts) ------------------------------------------------
@pytest.mark.asyncio
async def test_a_stream_left_open_outside_any_attempt_fails(bgwork: bg.Simulation) -> None:
    done = await bgwork.streams.create("exports")
    await done.close()
    leaked = await bgwork.streams.create("exports", content_type="text/csv")
    await leaked.write("a,b\n")
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_streams_closed(bgwork)
    text = str(info.value)
    assert text.startswith(
        "assert_streams_closed: expected every stream opened by a finished or failed attempt "
        "(or outside any attempt) to be closed; 1 stream is still open:\n"
        f"  - {leaked.id} 'exports' opened at +0.000s, 4 bytes written outside any queue "
        "attempt; never closed\n"
        "Close streams in `finally` (or `async with`)"
    )
    assert re.search(rf"stream\.write +id={leaked.id} name=exports bytes=4", text)
    await leaked.close()
    bg.assert_streams_closed(bgwork)


# -- assert_idempotent ----------------------------------------------------------------------------
class Mailer:
    """A mail provider that, like SES or Stripe, honours an idempotency key when given one."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim

    def send(self, to: str, idempotency_key: str | None = None) -> None:
        # the provider's memory of keys is the effects themselves, so restores rewind it
        if idempotency_key is not None and any(
            e.detail.get("idempotency_key") == idempotency_key for e in self.sim.effects.all()
        ):
            return
        self.sim.effects.record("email", key=to, idempotency_key=idempotency_key)


@pytest.mark.asyncio
async def test_idempotent_catches_a_handler_that_emails_on_every_delivery(
    bgwork: bg.Simulation,
) -> None:
    mailer = Mailer(bgwork)

    async def buggy(payload: dict[str, Any]) -> None:
        mailer.send(payload["to"])
        await bgwork.kv.set("orders", payload["id"], {"kind": "done"})

    with pytest.raises(bg.CheckFailed) as info:
        await bg.assert_idempotent(bgwork, buggy, {"id": "o1", "to": "ann@example.com"})
    text = str(info.value)
    assert text.startswith(
        "assert_idempotent(test_idempotent_catches_a_handler_that_emails_on_every_delivery."
        "<locals>.buggy): expected every schedule to leave the same KV data, effects, closed "
        "streams and published messages as one clean run; 3 of 3 schedules differ:\n"
        "schedule 'duplicate delivery: 2 runs in a row':\n"
        "  effect email key='ann@example.com': clean run 1 time; this schedule 2 times\n"
        "schedule 'crash at kv.set (entry 1), then restart':\n"
        "  effect email key='ann@example.com': clean run 1 time; this schedule 2 times\n"
        "schedule 'overlap: a second delivery runs while the first is at kv.set (entry 1)':\n"
        "  effect email key='ann@example.com': clean run 1 time; this schedule 2 times\n"
    )
    assert "Timeline of schedule 'duplicate delivery: 2 runs in a row':" in text
    assert "check.idempotent_run   schedule=duplicate delivery: 2 runs in a row attempt=2" in text


@pytest.mark.asyncio
async def test_idempotent_passes_the_fixed_twin_and_restores_the_state(
    bgwork: bg.Simulation,
) -> None:
    mailer = Mailer(bgwork)
    await bgwork.kv.set("orders", "before", {"kind": "done"})

    async def fixed(payload: dict[str, Any], delivery: bg.checks.IdempotentDelivery) -> None:
        seen.append(delivery.attempt)
        if (await bgwork.kv.get("orders", payload["id"])).exists:
            return
        async with await bgwork.streams.create("receipts", metadata={"order": payload["id"]}) as s:
            await s.write(f"receipt for {payload['id']}\n")
        mailer.send(payload["to"], idempotency_key=f"receipt-{payload['id']}")
        # set only if absent: a delivery that ran meanwhile (overlap) already wrote it
        await bgwork.kv.set("orders", payload["id"], {"kind": "done", "receipt": s.url},
                            if_absent=True)

    seen: list[int] = []
    report = await bg.assert_idempotent(bgwork, fixed, {"id": "o1", "to": "ann@example.com"},
                                        times=3)
    assert report.points == ["kv.get", "stream.create", "stream.write", "stream.close", "kv.set"]
    assert report.schedules == [
        "duplicate delivery: 3 runs in a row",
        "crash at kv.get (entry 1), then restart",
        "crash at stream.create (entry 1), then restart",
        "crash at stream.write (entry 1), then restart",
        "crash at stream.close (entry 1), then restart",
        "crash at kv.set (entry 1), then restart",
        "overlap: a second delivery runs while the first is at kv.get (entry 1)",
        "overlap: a second delivery runs while the first is at stream.create (entry 1)",
        "overlap: a second delivery runs while the first is at stream.write (entry 1)",
        "overlap: a second delivery runs while the first is at stream.close (entry 1)",
        "overlap: a second delivery runs while the first is at kv.set (entry 1)",
    ]
    assert seen[:4] == [1, 1, 2, 3]  # the clean run, then three deliveries in a row
    # the simulation is as it was: only the key written before the check is there
    assert bgwork.kv.items("orders") == {"before": {"kind": "done"}}
    assert bgwork.effects.all() == []
    assert [s for s in bgwork.streams.all() if s.closed] == []


@pytest.mark.asyncio
async def test_idempotent_sees_a_crash_that_leaves_a_status_behind(bgwork: bg.Simulation) -> None:
    async def buggy(payload: dict[str, Any]) -> None:
        await bgwork.kv.set("jobs", payload["id"], {"kind": "processing"})
        await bgwork.kv.set("jobs", payload["id"] + ":log", {"kind": "started"})
        await bgwork.kv.set("jobs", payload["id"], {"kind": "done"})

    # duplicates and restarts all converge: this handler is idempotent
    await bg.assert_idempotent(bgwork, buggy, {"id": "j1"})


@pytest.mark.asyncio
async def test_idempotent_ignore_leaves_fields_out_of_the_comparison(
    bgwork: bg.Simulation,
) -> None:
    async def handler(payload: dict[str, Any], delivery: Any) -> None:
        await bgwork.kv.set("jobs", payload["id"], {"kind": "done", "attempt": delivery.attempt})

    with pytest.raises(bg.CheckFailed, match=re.escape(
            'kv jobs/j1: clean run {"attempt": 1, "kind": "done"}; this schedule '
            '{"attempt": 2, "kind": "done"}')):
        await bg.assert_idempotent(bgwork, handler, {"id": "j1"})
    await bg.assert_idempotent(bgwork, handler, {"id": "j1"}, ignore=["attempt"])


@pytest.mark.asyncio
async def test_idempotent_reports_a_rerun_that_raises(bgwork: bg.Simulation) -> None:
    async def create_once(payload: dict[str, Any]) -> None:
        if (await bgwork.kv.get("users", payload["id"])).exists:
            raise ValueError("user already exists")
        await bgwork.kv.set("users", payload["id"], {"name": "ann"})

    with pytest.raises(bg.CheckFailed, match=re.escape(
            "schedule 'duplicate delivery: 2 runs in a row':\n"
            "  run #2 raised ValueError: user already exists")):
        await bg.assert_idempotent(bgwork, create_once, {"id": "u1"})


@pytest.mark.asyncio
async def test_idempotent_needs_a_clean_run_that_succeeds(bgwork: bg.Simulation) -> None:
    async def broken(payload: dict[str, Any]) -> None:
        raise KeyError("missing")

    with pytest.raises(bg.CheckFailed, match=re.escape(
            "assert_idempotent(test_idempotent_needs_a_clean_run_that_succeeds.<locals>.broken): "
            "the clean run (one delivery, no faults) raised KeyError: 'missing'")):
        await bg.assert_idempotent(bgwork, broken, {})


@pytest.mark.asyncio
async def test_idempotent_switches_fault_rules_off_and_back_on(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("kv.set", on_call=None)

    async def handler(payload: dict[str, Any]) -> None:
        await bgwork.kv.set("jobs", "j", {"kind": "done"})

    await bg.assert_idempotent(bgwork, handler, {})
    assert not bgwork.faults.healed
    with pytest.raises(ConnectionError):
        await bgwork.kv.set("jobs", "j", 1)


@pytest.mark.asyncio
async def test_idempotent_rejects_bad_arguments(bgwork: bg.Simulation) -> None:
    async def handler(payload: Any) -> None: ...

    async def no_args() -> None: ...

    with pytest.raises(ValueError, match=re.escape("times=...) is how many deliveries in a row, "
                                                   "at least 2; got 1")):
        await bg.assert_idempotent(bgwork, handler, {}, times=1)
    with pytest.raises(TypeError, match=re.escape("expects `async def handler(payload)` or")):
        await bg.assert_idempotent(bgwork, no_args, {})
    with pytest.raises(TypeError, match=re.escape("ignore=...) expects field names, e.g. "
                                                  "['attempt']")):
        await bg.assert_idempotent(bgwork, handler, {}, ignore="attempt")


def test_idempotent_must_run_on_the_simulation_loop() -> None:
    sim = bg.Simulation()

    async def handler(payload: Any) -> None: ...

    coro = bg.assert_idempotent(sim, handler, {})
    with pytest.raises(bg.NotRunning):
        asyncio.run(coro)
    sim.close()


# -- failure texts through pytest (asserts in plugins are not rewritten) ---------------------------
def test_check_failures_print_in_full_under_pytest(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_stuck(bgwork):
            await bgwork.kv.set("report-status", "job-1", {"kind": "processing"})
            bg.assert_status_terminal(bgwork, "report-status")

        def test_twice(bgwork):
            bgwork.effects.record("email", key="o1")
            bgwork.effects.record("email", key="o1")
            bg.assert_effects_once(bgwork, "email")

        @pytest.mark.asyncio
        async def test_open_stream(bgwork):
            bgwork.queues.create("reports", max_retries=0)

            async def worker(payload, delivery):
                s = await bgwork.streams.create("monthly")
                await s.write("a,b\\n")
                raise ValueError("db timeout")

            bgwork.queues.route("reports", worker)
            await bgwork.queues.publish("reports", {})
            await bgwork.run_until_idle()
            bg.assert_streams_closed(bgwork)

        @pytest.mark.asyncio
        async def test_lost(bgwork):
            bgwork.queues.create("inbox")
            await bgwork.queues.publish("inbox", {"n": 1}, idempotency_key="k1")
            bg.assert_nothing_lost(bgwork)

        @pytest.mark.asyncio
        async def test_not_drained(bgwork):
            async def forever():
                await asyncio.Event().wait()

            bgwork.runtime.wait_until(forever())
            await bgwork.run_until_idle()
            bg.assert_drained(bgwork)

        @pytest.mark.asyncio
        async def test_not_idempotent(bgwork):
            async def handler(payload):
                bgwork.effects.record("charge", key=payload["order"])

            await bg.assert_idempotent(bgwork, handler, {"order": "o1"})
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=6)
    result.stdout.fnmatch_lines([
        "E*CheckFailed: assert_status_terminal('report-status'): expected every key's 'kind' to "
        "be one of {'done', 'failed'}; 1 key is stuck:",
        "E*- job-1: kind='processing' since +0.000s",
        "E*history: +0.000s set kind='processing'",
        "E*Timeline of those keys and the attempts that wrote them:",
        "E*kv.set*ns=report-status key=job-1*",
    ])
    result.stdout.fnmatch_lines([
        "E*CheckFailed: assert_effects_once('email'): expected each key's 'email' effect exactly "
        "once; 1 key had it more than once:",
        "E*- key 'o1': 2 times",
    ])
    result.stdout.fnmatch_lines([
        "E*CheckFailed: assert_streams_closed: expected every stream opened by a finished or "
        "failed attempt (or outside any attempt) to be closed; 1 stream is still open:",
        "E*- stream_1 'monthly' opened at +0.000s, 4 bytes written in reports/msg_1#1 (failed at "
        "+0.000s: ValueError: db timeout); never closed",
        "E*Close streams in `finally` (or `async with`), so an exception mid-write still closes "
        "them.",
    ])
    result.stdout.fnmatch_lines([
        "E*CheckFailed: assert_nothing_lost: expected every published message to be acked or "
        "dead-lettered; 1 of 1 was neither:",
        "E*- inbox/msg_1 (key='k1') published at +0.000s: never delivered; now waiting for "
        "delivery",
    ])
    result.stdout.fnmatch_lines([
        "E*CheckFailed: assert_drained: expected no background work left (waitUntil tasks, "
        "task-manager tasks, queue deliveries, other tasks on the loop); found:",
        "E*1 waitUntil task still pending:",
        "E*- forever [[]wu_1], started t=+0.000s (0s ago): task 'waitUntil forever wu_1'*",
    ])
    result.stdout.fnmatch_lines([
        "E*CheckFailed: assert_idempotent(test_not_idempotent.<locals>.handler): expected every "
        "schedule to leave the same KV data, effects, closed streams and published messages as "
        "one clean run; 1 of 1 schedules differ:",
        "E*schedule 'duplicate delivery: 2 runs in a row':",
        "E*effect charge key='o1': clean run 1 time; this schedule 2 times",
    ])
    # the helpers hide their own frames: the traceback ends in the test
    assert "checks.py" not in result.stdout.str()


# -- queue workers: a buggy worker and its fixed twin for each check ------------------------------
async def email_worker(sim: bg.Simulation, *, fixed: bool) -> None:
    """Orders queue whose worker emails the customer; the buggy one emails on every delivery."""
    sim.queues.create("orders", visibility_timeout=30, max_retries=2)

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        order = payload["id"]
        if fixed and (await sim.kv.get("emailed", order)).exists:
            return
        sim.effects.record("email", key=order)
        await sim.kv.set("emailed", order, True)

    sim.queues.route("orders", worker)


@pytest.mark.asyncio
@pytest.mark.parametrize("fixed", [False, True])
async def test_effects_once_catches_an_email_sent_again_on_redelivery(
    bgwork: bg.Simulation, fixed: bool
) -> None:
    await email_worker(bgwork, fixed=fixed)
    bgwork.faults.hang("orders", seconds=60)  # attempt 1 stalls past the 30 s visibility timeout
    await bgwork.queues.publish("orders", {"id": "o1"})
    await bgwork.run_until_idle()
    bg.assert_nothing_lost(bgwork)
    if fixed:
        bg.assert_effects_once(bgwork, "email", keys=["o1"])
        return
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_effects_once(bgwork, "email")
    text = str(info.value)
    assert "  - key 'o1': 2 times\n      at +30.000s in orders/msg_1#2\n" \
           "      at +60.000s in orders/msg_1#1\n" in text
    assert re.search(r"\+\s+30\.000s queue\.visibility_expired\s+queue=orders id=msg_1 attempt=1",
                     text)


async def report_worker(sim: bg.Simulation, *, fixed: bool) -> None:
    """Writes a CSV report to a stream; the buggy one closes it only when nothing fails."""
    sim.queues.create("reports", visibility_timeout=60, max_retries=3, retry_delay=5)

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        stream = await sim.streams.create("monthly", content_type="text/csv")
        if fixed:
            try:
                for row in ("a,b\n", "1,2\n", "3,4\n"):
                    await stream.write(row)
            finally:
                await stream.close()
        else:
            for row in ("a,b\n", "1,2\n", "3,4\n"):
                await stream.write(row)
            await stream.close()

    sim.queues.route("reports", worker)


@pytest.mark.asyncio
@pytest.mark.parametrize("fixed", [False, True])
async def test_streams_closed_catches_a_stream_left_open_by_an_error_mid_write(
    bgwork: bg.Simulation, fixed: bool
) -> None:
    await report_worker(bgwork, fixed=fixed)
    bgwork.faults.fail("stream.write", on_call=2, error=ConnectionError("stream reset"))
    await bgwork.queues.publish("reports", {"month": "2026-01"})
    await bgwork.run_until_idle()
    bg.assert_nothing_lost(bgwork)  # the retry finished the job either way
    if fixed:
        bg.assert_streams_closed(bgwork)
        return
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_streams_closed(bgwork)
    text = str(info.value)
    assert text.startswith(
        "assert_streams_closed: expected every stream opened by a finished or failed attempt "
        "(or outside any attempt) to be closed; 1 stream is still open:\n"
        "  - stream_1 'monthly' opened at +0.000s, 4 bytes written in reports/msg_1#1 "
        "(failed at +0.000s: ConnectionError: stream reset); never closed\n"
    )
    assert "stream_2" not in text.split("Timeline")[0]  # the retry closed its stream


@pytest.mark.asyncio
async def test_streams_abandoned_by_a_crash_are_not_counted_and_said_so(
    bgwork: bg.Simulation,
) -> None:
    await report_worker(bgwork, fixed=True)
    bgwork.faults.crash("reports", at="stream.write", on_call=2)
    await bgwork.queues.publish("reports", {"month": "2026-01"})
    await bgwork.advance(0)  # attempt 1 opens its stream and crashes mid-write
    leaked = await bgwork.streams.create("scratch")  # opened outside any attempt, never closed
    await bgwork.run_until_idle()
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_streams_closed(bgwork)
    text = str(info.value)
    assert f"  - {leaked.id} 'scratch' opened at +0.000s outside any queue attempt; never closed" \
        in text
    assert ("Not counted:\n  - stream_1 'monthly' opened at +0.000s, 4 bytes written in "
            "reports/msg_1#1 (crashed at +0.000s): abandoned by a crashed attempt, whose "
            "`finally` never ran\n") in text
    await leaked.close()
    bg.assert_streams_closed(bgwork)


async def status_worker(sim: bg.Simulation, *, fixed: bool) -> None:
    """Keeps a job status; the buggy one trusts a 'processing' left by a dead worker."""
    sim.queues.create("jobs", visibility_timeout=120, max_retries=3)

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        job = payload["job_id"]
        current = await sim.kv.get("job-status", job)
        if current.exists:
            kind = current.data["kind"]
            if kind == "done" or (not fixed and kind == "processing"):
                return  # buggy: "someone else is on it", but that someone crashed
        await sim.kv.set("job-status", job, {"kind": "processing", "attempt": delivery.attempt})
        async with await sim.streams.create("job-output") as out:
            await out.write("result\n")
        await sim.kv.set("job-status", job, {"kind": "done"})

    sim.queues.route("jobs", worker)


@pytest.mark.asyncio
@pytest.mark.parametrize("fixed", [False, True])
async def test_status_terminal_catches_processing_left_by_a_crash(
    bgwork: bg.Simulation, fixed: bool
) -> None:
    await status_worker(bgwork, fixed=fixed)
    await bgwork.kv.set("job-status", "j1", {"kind": "queued"})
    bgwork.faults.crash("jobs", at="stream.write", on_call=1)
    await bgwork.queues.publish("jobs", {"job_id": "j1"})
    await bgwork.run_until_idle()
    bg.assert_nothing_lost(bgwork)  # the redelivery acked: the queue thinks all is well
    if fixed:
        bg.assert_status_terminal(bgwork, "job-status")
        return
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_status_terminal(bgwork, "job-status")
    assert str(info.value).startswith(
        "assert_status_terminal('job-status'): expected every key's 'kind' to be one of "
        "{'done', 'failed'}; 1 key is stuck:\n"
        "  - j1: kind='processing' since +0.000s, written by jobs/msg_1#1 (crashed at +0.000s)\n"
        "      history: +0.000s set kind='queued'; +0.000s set kind='processing' by jobs/msg_1#1\n"
    )


async def click_app(sim: bg.Simulation, *, fixed: bool) -> Any:
    """A "create report" endpoint; the buggy one publishes without an idempotency key."""
    sim.queues.create("report-jobs")

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        sim.effects.record("report", key=payload["job_id"])

    sim.queues.route("report-jobs", worker)

    async def create_report(body: dict[str, Any]) -> None:
        job_id = f"rpt_{body['account']}_{body['month']}"
        key = job_id if fixed else None
        await sim.queues.publish("report-jobs", {"job_id": job_id}, idempotency_key=key)

    return create_report


@pytest.mark.asyncio
@pytest.mark.parametrize("fixed", [False, True])
async def test_a_double_click_without_an_idempotency_key_queues_the_job_twice(
    bgwork: bg.Simulation, fixed: bool
) -> None:
    create_report = await click_app(bgwork, fixed=fixed)
    body = {"account": "acct_1", "month": "2026-01"}
    if fixed:
        await bg.assert_idempotent(bgwork, create_report, body)
    else:
        with pytest.raises(bg.CheckFailed) as info:
            await bg.assert_idempotent(bgwork, create_report, body)
        assert ("schedule 'duplicate delivery: 2 runs in a row':\n"
                "  effect report key='rpt_acct_1_2026-01': clean run 1 time; this schedule 2 times\n"
                "  published messages: clean run 1; this schedule 2\n"
                "    (the same item more times)\n") in str(info.value)
    await create_report(body)
    await create_report(body)  # the double click
    await bgwork.run_until_idle()
    bg.assert_nothing_lost(bgwork)
    if fixed:
        bg.assert_effects_once(bgwork, "report")
    else:
        with pytest.raises(bg.CheckFailed, match="key 'rpt_acct_1_2026-01': 2 times"):
            bg.assert_effects_once(bgwork, "report")


# -- assert_nothing_lost ---------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("fixed", [False, True])
async def test_nothing_lost_catches_a_consumer_that_forgets_to_ack(
    bgwork: bg.Simulation, fixed: bool
) -> None:
    bgwork.queues.create("inbox", visibility_timeout=30)
    await bgwork.queues.publish("inbox", {"n": 1}, idempotency_key="n1")
    await bgwork.queues.publish("inbox", {"n": 2})
    for _ in range(2):
        delivery = await bgwork.queues.receive("inbox")
        assert delivery is not None
        if fixed or delivery.payload["n"] == 1:
            await delivery.ack()
    await bgwork.run_until_idle()
    if fixed:
        bg.assert_nothing_lost(bgwork)
        return
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_nothing_lost(bgwork)
    assert str(info.value).startswith(
        "assert_nothing_lost: expected every published message to be acked or dead-lettered; "
        "1 of 2 was neither:\n"
        "  - inbox/msg_2 published at +0.000s: 1 attempt: #1 (still running since +0.000s); "
        "now waiting for delivery\n"
    )


@pytest.mark.asyncio
async def test_nothing_lost_treats_an_unknown_publish_as_may_have_happened(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("inbox")  # no route, no consumer
    bgwork.faults.fail("queue.publish", after_apply=True, error=TimeoutError("gateway timeout"))
    with pytest.raises(TimeoutError):
        await bgwork.queues.publish("inbox", {"n": 1})
    bg.assert_nothing_lost(bgwork)  # the caller saw an error; nobody can count on it
    await bgwork.queues.publish("inbox", {"n": 2})
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_nothing_lost(bgwork)
    text = str(info.value)
    assert "  - inbox/msg_2 published at +0.000s: never delivered; now waiting for delivery\n" \
        in text
    assert "Not counted: 1 message whose publish raised into the caller (unknown outcome) and " \
           "never showed up." in text


# -- the explorer finds the email bug within its default budget -------------------------------------
def test_explore_finds_the_redelivery_email_bug_with_default_plans() -> None:
    import hypothesis

    from pytest_bgwork import strategies as bgst

    async def buggy(sim: bg.Simulation) -> None:
        await email_worker(sim, fixed=False)
        for order in ("o1", "o2"):
            await sim.queues.publish("orders", {"id": order}, idempotency_key=order)

    def emails_once(sim: bg.Simulation) -> None:
        bg.assert_effects_once(sim, "email")

    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(buggy, faults=bgst.fault_plans(), checks=[emails_once, bg.assert_nothing_lost],
                   seed=1, settings=hypothesis.settings(database=None))
    assert len(info.value.plan) == 1


# -- assert_drained --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_drained_names_queue_work_still_in_flight_or_waiting(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("slow", visibility_timeout=600)
    bgwork.queues.create("later")

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        await asyncio.sleep(100)

    bgwork.queues.route("slow", worker)
    await bgwork.queues.publish("slow", {"n": 1})
    await bgwork.queues.publish("later", {"n": 2}, delay=60)
    await bgwork.advance(10)
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_drained(bgwork)
    assert str(info.value).startswith(
        "assert_drained: expected no background work left (waitUntil tasks, task-manager "
        "tasks, queue deliveries, other tasks on the loop); found:\n"
        "  1 queue attempt still in flight:\n"
        "    - slow/msg_1#1 (still running since +0.000s)\n"
        "  1 queue message not yet acked or dead-lettered:\n"
        "    - later/msg_2 published at +0.000s: never delivered; now waiting for its delay "
        "or a retry\n"
    )
    bgwork.queues.route("later", worker)
    await bgwork.run_until_idle()
    bg.assert_drained(bgwork)


async def checkout(sim: bg.Simulation, *, fixed: bool) -> asyncio.Event:
    """A request whose waitUntil task batches receipts; the buggy one waits for a full batch."""
    batch_full = asyncio.Event()

    async def send_receipts() -> None:
        if fixed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(batch_full.wait(), timeout=5)
        else:
            await batch_full.wait()  # nobody fills the batch: this never returns
        sim.effects.record("receipts-sent", key="batch-1")

    async with sim.runtime.request("checkout") as ctx:
        ctx.wait_until(send_receipts())
    return batch_full


@pytest.mark.asyncio
@pytest.mark.parametrize("fixed", [False, True])
async def test_drained_catches_a_wait_until_task_that_never_finishes(
    bgwork: bg.Simulation, fixed: bool
) -> None:
    batch_full = await checkout(bgwork, fixed=fixed)
    await bgwork.run_until_idle()
    if fixed:
        bg.assert_drained(bgwork)
        bg.assert_effects_once(bgwork, "receipts-sent", keys=["batch-1"])
        return
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_drained(bgwork)
    text = str(info.value)
    assert text.startswith(
        "assert_drained: expected no background work left (waitUntil tasks, task-manager "
        "tasks, queue deliveries, other tasks on the loop); found:\n"
        "  1 waitUntil task still pending:\n"
        "    - send_receipts [wu_1] of request 'checkout', started t=+0.000s"
    )
    assert "await batch_full.wait()  # nobody fills the batch" in text
    assert re.search(r"runtime\.wait_until\s+task=send_receipts id=wu_1", text)
    batch_full.set()
    await bgwork.runtime.drain()
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_drained_sees_managers_the_app_built_itself(bgwork: bg.Simulation) -> None:
    from pytest_bgwork.services.task_manager import BackgroundTaskManager

    manager = BackgroundTaskManager()
    never = asyncio.Event()
    manager.create_task(never.wait(), name="index_documents", context={"tenant": "t1"})
    await bgwork.run_until_idle()
    with pytest.raises(bg.CheckFailed, match=re.escape(
            "  1 task-manager task still pending:\n"
            "    - index_documents [bgtask_1] (another BackgroundTaskManager), context "
            "{'tenant': 't1'}")):
        bg.assert_drained(bgwork)
    never.set()
    await manager.wait_for_all()
    bg.assert_drained(bgwork)
