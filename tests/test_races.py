"""Issue 11: suspension points, latency, overlapping duplicates, conditional writes,
versions, leases, and an explorer that finds the races they make possible."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from hypothesis import strategies as st
from races_cases import CASES

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking import chaos
from pytest_bgwork.core.faults import Fault, FaultPlan

pytestmark = pytest.mark.filterwarnings("ignore::pytest_bgwork.ExploreCoverageWarning")


# -- suspension points ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_kv_call_yields_to_other_ready_tasks_before_it_takes_effect(
        bgwork: bg.Simulation) -> None:
    order: list[str] = []

    async def worker(name: str) -> None:
        r = await bgwork.kv.get("locks", "job")
        order.append(f"{name} read exists={r.exists}")
        if not r.exists:
            await bgwork.kv.set("locks", "job", name)
            order.append(f"{name} wrote")

    await asyncio.gather(worker("a"), worker("b"))
    # both read before either wrote: the check-then-act race, with no time passing
    assert order == ["a read exists=False", "b read exists=False", "a wrote", "b wrote"]
    assert bgwork.clock.monotonic() == 0
    assert (await bgwork.kv.get("locks", "job")).data == "b"  # a's write was lost


@pytest.mark.asyncio
async def test_every_service_call_is_a_suspension_point(bgwork: bg.Simulation) -> None:
    ticks: list[int] = []

    async def ticker() -> None:
        for i in range(100):
            ticks.append(i)
            await asyncio.sleep(0)

    bgwork.queues.create("jobs")
    task = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    calls = [
        lambda: bgwork.kv.set("ns", "k", 1), lambda: bgwork.kv.get("ns", "k"),
        lambda: bgwork.kv.keys("ns"), lambda: bgwork.kv.delete("ns", "k"),
        lambda: bgwork.streams.create("out"),
        lambda: bgwork.queues.publish("jobs", 1),
    ]
    for call in calls:
        before = len(ticks)
        await call()
        assert len(ticks) == before + 1, call  # the ticker ran once during the call
    s = await bgwork.streams.create("out2")
    for op in (lambda: s.write("x"), lambda: bgwork.streams.read(s.url), s.close):
        before = len(ticks)
        await op()
        assert len(ticks) == before + 1
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    for op in (lambda: d.extend(60), d.ack):
        before = len(ticks)
        await op()
        assert len(ticks) == before + 1
    task.cancel()
    assert bgwork.clock.monotonic() == 0  # plain tests: a yield, no time passes


def _latency_run(seed: int) -> tuple[list[tuple[str, float]], str]:
    with bg.Simulation(seed=seed) as sim:
        chaos.apply(sim, "latency")
        done: list[tuple[str, float]] = []

        async def worker(name: str) -> None:
            for i in range(5):
                await sim.kv.set("ns", name, i)
                done.append((name, sim.clock.monotonic()))

        async def main() -> None:
            await asyncio.gather(worker("a"), worker("b"))
            await sim.kv.set("ns", "alone", 1)  # no other task ready: a plain yield

        sim.run(main())
        return done, sim.history.digest()


def test_chaos_latency_draws_a_seeded_latency_when_other_tasks_are_ready() -> None:
    done, digest = _latency_run(3)
    times = [t for _, t in done]
    assert all(0 <= t <= 1.0 for t in times) and len(set(times)) > 1
    assert [n for n, _ in done] != ["a", "b"] * 5  # the latencies reordered the writers
    assert _latency_run(3) == (done, digest)  # same seed, same latencies, same history
    assert _latency_run(4)[0] != done


# -- overlapping duplicates ------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_overlapping_copies_start_at_the_same_instant(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", retry_delay=0)
    running: list[tuple[int, float]] = []
    peak = [0]
    live = [0]

    async def handler(payload: Any, delivery: Any) -> None:
        running.append((delivery.attempt, bgwork.clock.monotonic()))
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        await asyncio.sleep(5)
        live[0] -= 1

    bgwork.faults.duplicate("jobs", times=3, overlap=True)
    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert running == [(1, 0.0), (2, 0.0), (3, 0.0)] and peak[0] == 3
    delivers = bgwork.history.filter("queue", "deliver")
    assert [e.detail.get("overlap", False) for e in delivers] == [False, True, True]
    stats = bgwork.queues.stats("jobs")
    assert (stats["acked"], stats["delivered"], stats["stale_acks"]) == (1, 3, 0)
    bg.assert_nothing_lost(bgwork)


@pytest.mark.asyncio
async def test_overlap_and_duplicate_compose(bgwork: bg.Simulation) -> None:
    """chaos duplicate,overlap: two copies at once, and a third after the ack."""
    chaos.apply(bgwork, "duplicate,overlap")
    bgwork.queues.create("jobs", retry_delay=0)
    seen: list[tuple[int, float]] = []

    async def handler(payload: Any, delivery: Any) -> None:
        seen.append((delivery.attempt, bgwork.clock.monotonic()))
        await asyncio.sleep(1)

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", 1)
    await bgwork.run_until_idle()
    assert seen == [(1, 0.0), (2, 0.0), (3, 1.0)]


@pytest.mark.asyncio
async def test_an_overlapping_copy_is_visible_to_a_pull_consumer(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    bgwork.faults.duplicate("jobs", overlap=True)
    await bgwork.queues.publish("jobs", "x")
    first, second = await bgwork.queues.receive("jobs"), await bgwork.queues.receive("jobs")
    assert first is not None and second is not None
    assert (first.attempt, second.attempt, second.message is first.message) == (1, 2, True)
    assert await bgwork.queues.receive("jobs") is None
    await second.ack()
    await first.ack()
    assert bgwork.queues.stats("jobs")["acked"] == 1


def test_overlap_needs_two_copies_and_a_bool() -> None:
    with bg.Simulation() as sim:
        with pytest.raises(ValueError, match=r"sim.faults.duplicate\(times=\.\.\.\) must be the "
                                             r"total number of deliveries, an int >= 2; got 1\. "
                                             r"times=2 delivers each message twice \(overlap=True "
                                             r"needs at least 2 copies to overlap\)"):
            sim.faults.duplicate("jobs", times=1, overlap=True)
        with pytest.raises(TypeError, match=r"sim.faults.duplicate\(overlap=\.\.\.\) expects True or False"):
            sim.faults.duplicate("jobs", overlap="yes")  # type: ignore[arg-type]


# -- versions and conditional writes -----------------------------------------------------------------
@pytest.mark.asyncio
async def test_versions_count_writes_and_restart_after_delete_and_expiry(
        bgwork: bg.Simulation) -> None:
    kv = bgwork.kv
    assert (await kv.get("ns", "k")).version is None
    await kv.set("ns", "k", 1)
    assert (await kv.get("ns", "k")).version == 1
    await kv.set("ns", "k", 2)
    assert (await kv.get("ns", "k")).version == 2
    await kv.delete("ns", "k")
    await kv.set("ns", "k", 3, ttl=60)
    assert (await kv.get("ns", "k")).version == 1
    await bgwork.advance(60)
    assert (await kv.get("ns", "k")).version is None
    await kv.set("ns", "k", 4)
    assert (await kv.get("ns", "k")).version == 1
    state = kv._snapshot()
    await kv.set("ns", "k", 5)
    kv._restore(state)
    assert (await kv.get("ns", "k")).version == 1  # snapshots keep versions


@pytest.mark.asyncio
async def test_conditional_set_and_delete_say_whether_they_applied(bgwork: bg.Simulation) -> None:
    kv = bgwork.kv
    assert await kv.set("ns", "k", "a", if_absent=True) is True
    assert await kv.set("ns", "k", "b", if_absent=True) is False
    assert (await kv.get("ns", "k")).data == "a"
    assert await kv.set("ns", "k", "c", if_version=2) is False
    assert await kv.set("ns", "k", "c", if_version=1) is True
    assert await kv.delete("ns", "k", if_version=1) is False
    assert await kv.delete("ns", "k", if_version=2) is True
    assert not (await kv.get("ns", "k")).exists
    assert await kv.set("ns", "k", "d", if_version=1) is False  # missing: no version matches
    assert await kv.delete("ns", "k") is True
    assert [v.data for v in kv.history("ns", "k")] == ["a", "c", None]
    refused = [e.detail for e in bgwork.history.filter("kv", "set") if not e.detail.get(
        "applied", True)]
    assert refused[0] == {"ns": "ns", "key": "k", "ttl": None, "applied": False, "version": 1,
                          "if_absent": True}


@pytest.mark.asyncio
@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"if_version": "1"}, TypeError, r"if_version= must be an int >= 1 .*got str '1'"),
    ({"if_version": 1.0}, TypeError, r"if_version= must be an int >= 1 .*got float 1.0"),
    ({"if_version": True}, TypeError, r"if_version= must be an int >= 1 .*got bool True"),
    ({"if_version": 0}, ValueError, r"if_version= must be >= 1 .*use if_absent=True"),
    ({"if_absent": 1}, TypeError, r"if_absent= must be True or False; got 1"),
    ({"if_absent": True, "if_version": 1}, ValueError, r"give if_absent=True or if_version=n, "
                                                       r"not both"),
])
async def test_bad_conditions_are_refused_at_the_call(bgwork: bg.Simulation, kwargs: dict[str, Any],
                                                      error: type[Exception], text: str) -> None:
    with pytest.raises(error, match=r"kv.set\(ns='ns', key='k'\): " + text):
        await bgwork.kv.set("ns", "k", 1, **kwargs)
    assert len(bgwork.history) == 0


@pytest.mark.asyncio
async def test_a_bad_delete_condition_is_refused(bgwork: bg.Simulation) -> None:
    with pytest.raises(TypeError, match=r"kv.delete\(ns='ns', key='k'\): if_version= must be an "
                                        r"int >= 1"):
        await bgwork.kv.delete("ns", "k", if_version="2")  # type: ignore[arg-type]


# -- leases ------------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_extend_makes_the_remaining_visibility_seconds_from_now(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30, retry_delay=0)
    attempts: list[int] = []

    async def long_job(payload: Any, delivery: Any) -> None:
        attempts.append(delivery.attempt)
        for _ in range(4):  # 80 s of work on a 30 s lease, renewed every 20 s
            await asyncio.sleep(20)
            await delivery.extend(30)

    bgwork.queues.route("jobs", long_job)
    await bgwork.queues.publish("jobs", 1)
    await bgwork.run_until_idle()
    assert attempts == [1]  # never redelivered while it worked
    assert bgwork.queues.stats("jobs")["extended"] == 4
    ext = bgwork.history.filter("queue", "extend")
    assert [(e.t, e.detail["seconds"]) for e in ext] == [(20, 30.0), (40, 30.0), (60, 30.0),
                                                          (80, 30.0)]


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::pytest_bgwork.LeftoverWorkWarning")  # both slow attempts are the point
async def test_without_extend_the_same_job_is_redelivered_while_running(
        bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30, retry_delay=0)
    attempts: list[int] = []

    async def long_job(payload: Any, delivery: Any) -> None:
        attempts.append(delivery.attempt)
        await asyncio.sleep(80)

    bgwork.queues.route("jobs", long_job)
    await bgwork.queues.publish("jobs", 1)
    await bgwork.advance(31)
    assert attempts == [1, 2]


@pytest.mark.asyncio
async def test_extend_is_refused_on_a_settled_or_lapsed_delivery(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    await bgwork.queues.publish("jobs", 1)
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    await d.ack()
    with pytest.raises(bg.DeliverySettled, match=r"extend\(\): the delivery msg_1 attempt 1 "
                                                 r"already ended \(acked\)"):
        await d.extend(10)
    await bgwork.queues.publish("jobs", 2)
    d2 = await bgwork.queues.receive("jobs")
    assert d2 is not None
    await bgwork.advance(31)
    with pytest.raises(bg.DeliverySettled, match=r"visibility of msg_2 attempt 1 already lapsed"):
        await d2.extend(10)


@pytest.mark.asyncio
@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf, 43_200.5, "10", True])
async def test_extend_refuses_bad_seconds_naming_the_limit(bgwork: bg.Simulation,
                                                           seconds: Any) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", 1)
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    with pytest.raises(ValueError, match=r"extend\(seconds=\.\.\.\): profile 'agentuity' allows "
                                         r"seconds >= 0 and <= 43200; got .*Extend again before"):
        await d.extend(seconds)


@pytest.mark.asyncio
@pytest.mark.parametrize(("profile", "name", "good", "bad", "limit"), [
    ("sqs-standard", "jobs", [43_200, 0], [-1, 43_201], ">= 0 and <= 43200"),  # 0 last: visible at once
    ("alien", "jobs", [1, 600], [0, 0.5, 601, 43_200], ">= 1 and <= 600"),
])
async def test_extend_honours_the_queue_profiles_lease_range(
        bgwork: bg.Simulation, profile: str, name: str, good: list[float], bad: list[float],
        limit: str) -> None:
    """SQS ChangeMessageVisibility takes 0..43,200 s, Alien renew_lease 1..600 s."""
    bgwork.queues.create(name, profile=profile)
    await bgwork.queues.publish(name, 1)
    d = await bgwork.queues.receive(name)
    assert d is not None
    for seconds in bad:
        with pytest.raises(ValueError, match=rf"extend\(seconds=\.\.\.\): profile '{profile}' allows "
                                             rf"seconds {limit}; got {seconds!r}\."):
            await d.extend(seconds)
    for seconds in good:
        await d.extend(seconds)
    assert [e.detail["seconds"] for e in bgwork.history.filter("queue", "extend")] == good
    await d.ack()


@pytest.mark.asyncio
async def test_extend_is_a_fault_point(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", 1)
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    bgwork.faults.fail("queue.extend", error=TimeoutError("lease api timed out"))
    with pytest.raises(TimeoutError):
        await d.extend(60)
    assert bgwork.history.filter("queue", "extend")[0].outcome == "fail"
    await d.extend(60)
    assert bgwork.faults.calls("queue.extend") == 2


# -- plans and chaos --------------------------------------------------------------------------------
def test_a_plan_without_a_call_number_says_on_every_call() -> None:
    plan = FaultPlan([Fault("fail", "queue.deliver", error="ConnectionError('x')"),
                      Fault("fail", "kv.set", on_call=2, error="ConnectionError('x')")])
    assert plan.describe() == ("1. fail at queue.deliver on every call raising ConnectionError('x')"
                               "\n2. fail at kv.set on call 2 raising ConnectionError('x')")


def test_default_points_reach_writes_that_fail_after_applying() -> None:
    for point in ("queue.publish", "http", "webhook.deliver"):
        assert point in bgst.DEFAULT_POINTS


# -- the explorer finds each race, and passes each fixed twin ------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_the_default_search_finds_the_race_and_passes_its_twin(case: str) -> None:
    scenario, checks = CASES[case](False)
    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(scenario, faults=bgst.fault_plans(), checks=checks, seed=1, max_examples=200)
    assert 1 <= info.value.example <= 200
    scenario, checks = CASES[case](True)
    report = bg.explore(scenario, faults=bgst.fault_plans(), checks=checks, seed=1,
                        max_examples=60)
    assert report.examples >= 60


def test_explore_learns_the_points_the_scenario_passes() -> None:
    scenario, checks = CASES["webhook double-enqueue"](True)
    report = bg.explore(scenario, faults=bgst.fault_plans(), checks=checks, seed=1,
                        max_examples=5)
    assert "webhook.deliver" in report.points and "queue.publish" in report.points
    assert "stream.write" not in report.points


def test_expect_states_warns_for_exactly_the_declared_states() -> None:
    scenario, checks = CASES["check-then-act"](True)
    with pytest.warns(bg.ExploreCoverageWarning, match=r"never reached: a dead letter\. "):
        report = bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=checks, seed=1, max_examples=3,
                            expect_states=["dead_letter"])
    assert len(report.warnings) == 1
    with pytest.raises(ValueError, match=r"expect_states=\.\.\.\): unknown state\(s\) \['nope'\]"):
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), expect_states=["nope"])


def test_a_crash_after_an_effect_is_not_expected_when_effects_happen_outside_attempts() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("jobs")

        async def handler(payload: Any, delivery: Any) -> None:
            await sim.kv.set("done", "x", True)

        sim.queues.route("jobs", handler)
        sim.effects.record("request", key="r1")  # in the scenario: no attempt to crash after
        await sim.queues.publish("jobs", 1, idempotency_key="j1")

    with pytest.warns(bg.ExploreCoverageWarning) as caught:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), seed=1, max_examples=3)
    assert "crash after an effect" not in str(caught[0].message)
