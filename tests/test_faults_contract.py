"""Faults, checks and the Hypothesis explorer, as a user reads their docs."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import re
from typing import Any

import pytest

import pytest_bgwork as bg

# -- §3 faults ------------------------------------------------------------------------------------


def _report_worker(sim: bg.Simulation, log: list[str]) -> Any:
    """The README's worker: status queued -> running -> done, a CSV stream, one email."""

    async def handler(payload: dict, delivery: bg.Delivery) -> None:
        job = payload["job"]
        await sim.kv.set("report-status", job, {"kind": "running"})
        s = await sim.streams.create("reports", content_type="text/csv")
        try:
            await s.write("a,b\n")
            log.append(f"wrote {delivery.attempt}")
        finally:
            log.append(f"finally {delivery.attempt}")
            await s.close()
        sim.effects.record("email", key=job)
        await sim.kv.set("report-status", job, {"kind": "done"})

    return handler


@pytest.mark.asyncio
async def test_fail_on_call_raises_into_user_code(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("kv.set", on_call=2, error=ConnectionError("kv down"))
    await bgwork.kv.set("ns", "a", 1)
    with pytest.raises(ConnectionError, match="kv down"):
        await bgwork.kv.set("ns", "b", 2)
    await bgwork.kv.set("ns", "c", 3)
    assert not (await bgwork.kv.get("ns", "b")).exists


@pytest.mark.parametrize("point", ["queue.publish", "kv.get", "kv.set", "kv.delete", "stream.create"])
@pytest.mark.asyncio
async def test_every_documented_point_can_fail(bgwork: bg.Simulation, point: str) -> None:
    bgwork.queues.create("jobs")
    bgwork.faults.fail(point, on_call=1, error=ConnectionError(point))

    async def call() -> None:
        if point == "queue.publish":
            await bgwork.queues.publish("jobs", {"a": 1})
        elif point == "kv.get":
            await bgwork.kv.get("ns", "k")
        elif point == "kv.set":
            await bgwork.kv.set("ns", "k", 1)
        elif point == "kv.delete":
            await bgwork.kv.delete("ns", "k")
        else:
            await bgwork.streams.create("s")

    with pytest.raises(ConnectionError):
        await call()


@pytest.mark.asyncio
async def test_stream_write_and_close_points(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("s")
    bgwork.faults.fail("stream.write", on_call=1, error=OSError("w"))
    bgwork.faults.fail("stream.close", on_call=1, error=OSError("c"))
    with pytest.raises(OSError, match="w"):
        await s.write("x")
    with pytest.raises(OSError, match="c"):
        await s.close()


def test_fault_points_listed() -> None:
    points = set(bg.fault_points())
    for p in ["queue.publish", "queue.deliver", "queue.ack", "kv.get", "kv.set", "kv.delete",
              "stream.create", "stream.write", "stream.close", "http"]:
        assert p in points, p


def test_unknown_fault_point_refused_at_the_call() -> None:
    sim = bg.Simulation(seed=0)
    with pytest.raises(ValueError) as info:
        sim.faults.fail("kv.sett", on_call=1)
    assert "kv.sett" in str(info.value)


@pytest.mark.asyncio
async def test_crash_stops_the_attempt_no_finally_nothing_acked(bgwork: bg.Simulation) -> None:
    log: list[str] = []
    bgwork.queues.create("report-jobs", retry_delay=0)
    bgwork.queues.route("report-jobs", _report_worker(bgwork, log))
    bgwork.faults.crash("report-jobs", at="stream.write", on_call=1)
    await bgwork.queues.publish("report-jobs", {"job": "j1"})
    await bgwork.run_until_idle()
    assert "finally 1" not in log  # no finally of the crashed handler ran
    assert "wrote 2" in log  # redelivered: nothing was acked
    # what was written durably before the crash stays: attempt 1's running status
    statuses = [repr(v) for v in bgwork.kv.history("report-status", "j1")]
    assert sum("running" in s for s in statuses) == 2
    assert len(bgwork.streams.open_streams()) == 1  # attempt 1's stream never closed
    bg.assert_streams_closed(bgwork)  # the rule: only finished or failed attempts' streams count


@pytest.mark.asyncio
async def test_duplicate_delivers_each_message_twice(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    seen: list[int] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        seen.append(payload["n"])

    bgwork.queues.route("jobs", handler)
    bgwork.faults.duplicate("jobs", times=2)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert seen == [1, 1]


@pytest.mark.asyncio
async def test_hang_past_visibility_timeout_redelivers(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    attempts: list[int] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        attempts.append(delivery.attempt)

    bgwork.queues.route("jobs", handler)
    bgwork.faults.hang("jobs", seconds=300)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert 2 in attempts


@pytest.mark.asyncio
async def test_delay_moves_delivery_later(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    at: list[float] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        at.append(bgwork.clock.monotonic())

    bgwork.queues.route("jobs", handler)
    bgwork.faults.delay("queue.deliver", seconds=30)
    t0 = bgwork.clock.monotonic()
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert at and at[0] - t0 >= 30


@pytest.mark.asyncio
async def test_fail_after_apply_raises_although_the_write_happened(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("kv.set", on_call=1, after_apply=True, error=TimeoutError("lost reply"))
    with pytest.raises(TimeoutError):
        await bgwork.kv.set("ns", "k", {"v": 1})
    assert (await bgwork.kv.get("ns", "k")).data == {"v": 1}
    outcomes = {e.outcome for e in bgwork.history if getattr(e, "op", None) == "set"}
    assert "unknown" in outcomes


@pytest.mark.asyncio
async def test_history_outcomes_ok_and_fail(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("kv.set", on_call=2, error=ConnectionError("x"))
    await bgwork.kv.set("ns", "a", 1)
    with pytest.raises(ConnectionError):
        await bgwork.kv.set("ns", "b", 1)
    outcomes = [e.outcome for e in bgwork.history if getattr(e, "op", None) == "set"]
    assert outcomes == ["ok", "fail"]


@pytest.mark.asyncio
async def test_stale_ack_deletes_nothing_by_default(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30, retry_delay=0)
    await bgwork.queues.publish("jobs", {"n": 1})
    d1 = await bgwork.queues.receive("jobs")
    assert d1 is not None
    await bgwork.advance(31)
    with contextlib.suppress(Exception):  # the docs only say a stale ack deletes nothing
        await d1.ack()  # stale: its visibility lapsed
    d2 = await bgwork.queues.receive("jobs")
    assert d2 is not None and d2.attempt == 2


@pytest.mark.asyncio
async def test_stale_ack_deletes_when_configured(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30, stale_ack="deletes")
    await bgwork.queues.publish("jobs", {"n": 1})
    d1 = await bgwork.queues.receive("jobs")
    assert d1 is not None
    await bgwork.advance(31)
    await d1.ack()
    assert await bgwork.queues.receive("jobs") is None


def test_fault_plan_is_plain_data() -> None:
    plan = bg.FaultPlan([bg.Fault("fail", "kv.set", on_call=2), bg.Fault("crash", "stream.write", queue="report-jobs")])
    assert len(plan) == 2
    data = plan.to_data()
    assert json.loads(json.dumps(data)) == data
    assert bg.FaultPlan(data).to_data() == data
    assert len(bg.FaultPlan([])) == 0  # the empty plan: no fault


@pytest.mark.asyncio
async def test_apply_plan(bgwork: bg.Simulation) -> None:
    bgwork.faults.apply(bg.FaultPlan([bg.Fault("fail", "kv.set", on_call=1, error="ConnectionError")]))
    with pytest.raises(Exception):  # noqa: B017
        await bgwork.kv.set("ns", "k", 1)


def test_http_fault_through_respx() -> None:
    import httpx
    import respx

    async def main() -> int:
        with respx.mock:
            respx.get("https://api.example/x").mock(return_value=httpx.Response(200))
            async with httpx.AsyncClient() as c:
                with pytest.raises(httpx.ConnectError):
                    await c.get("https://api.example/x")
                return (await c.get("https://api.example/x")).status_code

    with bg.Simulation(seed=0) as sim:  # closing it ends the interception of outbound HTTP
        sim.faults.fail("http", on_call=1, error=httpx.ConnectError("down"))
        assert sim.run(main()) == 200


@pytest.mark.asyncio
async def test_task_point_fails_a_wait_until_task(bgwork: bg.Simulation) -> None:
    async def send_email() -> None:
        await asyncio.sleep(1)

    bgwork.faults.fail("task.send_email", on_call=1, error=RuntimeError("smtp"))
    bgwork.runtime.wait_until(send_email())
    await bgwork.runtime.drain()
    assert len(bgwork.runtime.errors) == 1


# -- §4 checks -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_checks_pass_on_a_good_run(bgwork: bg.Simulation) -> None:
    log: list[str] = []
    bgwork.queues.create("report-jobs")
    bgwork.queues.route("report-jobs", _report_worker(bgwork, log))
    await bgwork.queues.publish("report-jobs", {"job": "j1"})
    await bgwork.run_until_idle()
    bg.assert_streams_closed(bgwork)
    bg.assert_drained(bgwork)
    bg.assert_nothing_lost(bgwork)
    bg.assert_status_terminal(bgwork, "report-status", field="kind", terminal={"done", "failed"})
    bg.assert_effects_once(bgwork, "email")


@pytest.mark.asyncio
async def test_checks_fail_with_an_assertion_error_subclass(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.kv.set("report-status", "j1", {"kind": "running"})
    await bgwork.streams.create("s")
    bgwork.effects.record("email", key="o1")
    bgwork.effects.record("email", key="o1")
    bgwork.runtime.wait_until(asyncio.sleep(100))
    for check in [
        lambda: bg.assert_nothing_lost(bgwork),
        lambda: bg.assert_streams_closed(bgwork),
        lambda: bg.assert_drained(bgwork),
        lambda: bg.assert_status_terminal(bgwork, "report-status", field="kind", terminal={"done", "failed"}),
        lambda: bg.assert_effects_once(bgwork, "email"),
    ]:
        with pytest.raises(AssertionError) as info:
            check()
        assert type(info.value) is not AssertionError  # a subclass
        assert isinstance(info.value, bg.CheckFailed)
        assert len(str(info.value)) > 40  # says what was expected and what happened
    await bgwork.runtime.drain()


@pytest.mark.asyncio
async def test_check_on_a_name_that_never_appeared_fails(bgwork: bg.Simulation) -> None:
    with pytest.raises(AssertionError):
        bg.assert_effects_once(bgwork, "emial")
    with pytest.raises(AssertionError):
        bg.assert_status_terminal(bgwork, "report-statuss", field="kind", terminal={"done"})


@pytest.mark.asyncio
async def test_assert_drained_sees_any_pending_task(bgwork: bg.Simulation) -> None:
    t = asyncio.ensure_future(asyncio.sleep(100))
    with pytest.raises(AssertionError):
        bg.assert_drained(bgwork)
    t.cancel()


@pytest.mark.asyncio
async def test_assert_no_task_errors(bgwork: bg.Simulation) -> None:
    async def bad() -> None:
        raise ValueError("boom")

    bgwork.runtime.wait_until(bad())
    await bgwork.runtime.drain()
    with pytest.raises(AssertionError, match="boom"):
        bg.assert_no_task_errors(bgwork)


@pytest.mark.asyncio
async def test_assert_idempotent_passes_for_idempotent_handler(bgwork: bg.Simulation) -> None:
    async def handler(payload: dict, delivery: Any = None) -> None:
        await bgwork.kv.set("orders", payload["id"], {"kind": "paid"})

    await bg.assert_idempotent(bgwork, handler, {"id": "o1"}, times=2)


@pytest.mark.asyncio
async def test_assert_idempotent_catches_a_counter(bgwork: bg.Simulation) -> None:
    async def handler(payload: dict, delivery: Any = None) -> None:
        r = await bgwork.kv.get("counts", payload["id"])
        n = r.data if r.exists else 0
        await bgwork.kv.set("counts", payload["id"], n + 1)
        bgwork.effects.record("charge", key=payload["id"])

    with pytest.raises(AssertionError):
        await bg.assert_idempotent(bgwork, handler, {"id": "o1"}, times=2)


def test_check_failure_prints_expected_happened_and_timeline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_twice(bgwork):
            bgwork.queues.create("charges")
            async def handler(payload, delivery):
                bgwork.effects.record("charge", key=payload["order"])
            bgwork.queues.route("charges", handler)
            bgwork.faults.duplicate("charges", times=2)
            await bgwork.queues.publish("charges", {"order": "o1"})
            await bgwork.run_until_idle()
            bg.assert_effects_once(bgwork, "charge")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "charge" in out and "o1" in out
    assert "2" in out
    result.stdout.fnmatch_lines(["*charge*"])
    # the helper's own frames are hidden (__tracebackhide__)
    assert "checks.py" not in "\n".join(ln for ln in result.stdout.lines if ln.startswith(("pytest_bgwork", "/")))


# -- §5 exploration -------------------------------------------------------------------------------


def test_explore_finds_and_shrinks_a_lost_message() -> None:
    from pytest_bgwork import strategies as bgst

    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("jobs", max_retries=0)

        async def handler(payload: Any, delivery: bg.Delivery) -> None:
            await sim.kv.set("status", payload["id"], {"kind": "done"})
            sim.effects.record("email", key=payload["id"])

        sim.queues.route("jobs", handler)
        await sim.queues.publish("jobs", {"id": "j1"})

    def effect_once(sim: bg.Simulation) -> None:
        # keys=: the job's email must exist (absence alone is no failure in a faulty example)
        bg.assert_effects_once(sim, "email", keys=["j1"])

    with pytest.raises(AssertionError) as info:
        bg.explore(scenario, faults=bgst.fault_plans(max_faults=3),
                   checks=[bg.assert_streams_closed, effect_once], max_examples=60)
    text = str(info.value)
    assert "seed" in text.lower()
    assert "replay" in text


def test_explore_passing_returns_a_report() -> None:
    from pytest_bgwork import strategies as bgst

    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("jobs")

        async def handler(payload: Any, delivery: bg.Delivery) -> None:
            await sim.kv.set("status", payload["id"], {"kind": "done"})

        sim.queues.route("jobs", handler)
        for _ in range(5):  # a publish may fail (or time out after it applied): retry under one key
            try:
                await sim.queues.publish("jobs", {"id": "j1"}, idempotency_key="j1")
                break
            except (ConnectionError, TimeoutError):
                continue

    report = bg.explore(scenario, faults=bgst.fault_plans(max_faults=2),
                        checks=[bg.assert_nothing_lost, bg.assert_streams_closed], max_examples=20)
    assert isinstance(report, bg.ExploreReport)
    assert report.examples > 1


def test_strategies_exist() -> None:
    from pytest_bgwork import strategies as bgst

    for name in ["fault_plans", "retry_schedules", "delivery_orders"]:
        assert callable(getattr(bgst, name)), name


def test_explore_reports_non_determinism() -> None:
    import itertools

    from pytest_bgwork import strategies as bgst

    counter = itertools.count()  # state outside the simulation: each run differs

    async def scenario(sim: bg.Simulation) -> None:
        await sim.kv.set("ns", f"k{next(counter)}", 1)

    def always_fails(sim: bg.Simulation) -> None:
        raise AssertionError("always")

    with pytest.raises(bg.NonDeterministic):
        bg.explore(scenario, faults=bgst.fault_plans(max_faults=1), checks=[always_fails], max_examples=5)


def test_explore_failure_replays_with_marker(pytester: pytest.Pytester) -> None:
    # load them here: pytester's in-process runs drop modules first imported inside a run
    importlib.import_module("pytest_bgwork.checking.explore")
    importlib.import_module("pytest_bgwork.strategies")
    pytester.makepyfile(
        """
        import re
        import pytest
        import pytest_bgwork as bg
        from pytest_bgwork import strategies as bgst

        async def scenario(sim):
            sim.queues.create("jobs", max_retries=0)
            async def handler(payload, delivery):
                sim.effects.record("email", key=payload["id"])
            sim.queues.route("jobs", handler)
            await sim.queues.publish("jobs", {"id": "j1"})

        def once(sim):
            bg.assert_effects_once(sim, "email")

        def test_explore():
            bg.explore(scenario, faults=bgst.fault_plans(max_faults=2), checks=[once], max_examples=50)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    m = re.search(r'@pytest.mark.bgwork\(replay="([^"]+)"\)', out)
    assert m, out
    replayed = pytester.path / "test_explore_failure_replays_with_marker.py"
    src = replayed.read_text().replace(
        "def test_explore():", f'@pytest.mark.bgwork(replay="{m.group(1)}")\ndef test_explore():')
    replayed.write_text(src)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)  # the recorded example, run again: the same failure
    result.stdout.fnmatch_lines(["*email*"])


def test_explored_token_on_a_test_that_never_explores_is_not_ignored(pytester: pytest.Pytester) -> None:
    from pytest_bgwork.checking import replay

    token = replay.encode(0, [bg.Fault(kind="fail", point="queue.deliver", queue="jobs", on_call=1)],
                          scenario="scenario")
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.bgwork(replay="{token}")
        def test_plain(bgwork):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)  # a replay that replays nothing must not pass
    result.stdout.fnmatch_lines(["*bg.explore*"])


def test_explore_warns_when_an_interesting_state_never_happened() -> None:
    from pytest_bgwork import strategies as bgst

    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("jobs")

        async def handler(payload: Any, delivery: bg.Delivery) -> None:
            await sim.kv.set("status", payload["id"], {"kind": "done"})
            sim.effects.record("email", key=payload["id"])

        sim.queues.route("jobs", handler)
        await sim.queues.publish("jobs", {"id": "j1"})

    # delays only: nothing is redelivered, nothing dead-lettered, nothing crashes
    with pytest.warns(UserWarning) as warned:
        report = bg.explore(scenario, faults=bgst.fault_plans(max_faults=1, kinds=["delay"]), checks=[],
                            max_examples=5)
    assert report is not None
    text = " ".join(str(w.message) for w in warned).lower()
    assert "never reached" in text and "crash" in text
