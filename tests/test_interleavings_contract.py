"""Interleavings (docs/interleavings.md) as a user reads them: suspension points, KV versions and conditional writes,
leases, overlapping duplicates, chaos ``latency`` / ``overlap``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pytest_bgwork as bg


@pytest.mark.asyncio
async def test_every_service_call_is_a_suspension_point(bgwork: bg.Simulation) -> None:
    winners: list[str] = []

    async def worker(name: str) -> None:
        r = await bgwork.kv.get("locks", "job-1")
        if not r.exists:  # check-then-act: both see the key missing
            await bgwork.kv.set("locks", "job-1", name)
            winners.append(name)

    await asyncio.gather(worker("a"), worker("b"))
    assert sorted(winners) == ["a", "b"]


@pytest.mark.asyncio
async def test_if_absent_lets_one_worker_win(bgwork: bg.Simulation) -> None:
    winners: list[str] = []

    async def worker(name: str) -> None:
        if await bgwork.kv.set("locks", "job-1", name, if_absent=True):
            winners.append(name)

    await asyncio.gather(worker("a"), worker("b"))
    assert len(winners) == 1
    assert (await bgwork.kv.get("locks", "job-1")).data == winners[0]


@pytest.mark.asyncio
async def test_versions_start_at_one_and_count_writes(bgwork: bg.Simulation) -> None:
    assert (await bgwork.kv.get("ns", "k")).version is None
    await bgwork.kv.set("ns", "k", {"n": 1})
    r = await bgwork.kv.get("ns", "k")
    assert r.version == 1 and isinstance(r.version, int)
    await bgwork.kv.set("ns", "k", {"n": 2})
    assert (await bgwork.kv.get("ns", "k")).version == 2
    await bgwork.kv.delete("ns", "k")
    assert (await bgwork.kv.get("ns", "k")).version is None
    await bgwork.kv.set("ns", "k", {"n": 3})
    assert (await bgwork.kv.get("ns", "k")).version == 1


@pytest.mark.asyncio
async def test_version_restarts_after_expiry(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("ns", "k", 1, ttl=60)
    await bgwork.kv.set("ns", "k", 2, ttl=60)
    await bgwork.advance(61)
    await bgwork.kv.set("ns", "k", 3)
    assert (await bgwork.kv.get("ns", "k")).version == 1


@pytest.mark.asyncio
async def test_set_returns_true_when_applied(bgwork: bg.Simulation) -> None:
    assert await bgwork.kv.set("ns", "k", 1) is True
    assert await bgwork.kv.set("ns", "k", 2, if_absent=True) is False
    assert (await bgwork.kv.get("ns", "k")).data == 1


@pytest.mark.asyncio
async def test_if_version_compare_and_set(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("ns", "k", {"n": 1})
    r = await bgwork.kv.get("ns", "k")
    assert await bgwork.kv.set("ns", "k", {"n": 2}, if_version=r.version) is True
    assert await bgwork.kv.set("ns", "k", {"n": 99}, if_version=r.version) is False  # stale version
    assert (await bgwork.kv.get("ns", "k")).data == {"n": 2}


@pytest.mark.asyncio
async def test_delete_if_version(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("ns", "k", 1)
    await bgwork.kv.set("ns", "k", 2)
    assert await bgwork.kv.delete("ns", "k", if_version=1) is False
    assert (await bgwork.kv.get("ns", "k")).exists
    assert await bgwork.kv.delete("ns", "k", if_version=2) is True
    assert not (await bgwork.kv.get("ns", "k")).exists


@pytest.mark.asyncio
async def test_kv_result_version_on_the_type(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("ns", "k", 1)
    r = await bgwork.kv.get("ns", "k")
    assert isinstance(r, bg.KVResult)
    assert r.version == 1


@pytest.mark.asyncio
async def test_extend_keeps_the_lease(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    await bgwork.queues.publish("jobs", {"n": 1})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    await bgwork.advance(20)
    await d.extend(60)  # remaining visibility: 60 s from now
    await bgwork.advance(50)  # 70 s after receive: the old lease would have lapsed
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.advance(11)
    d2 = await bgwork.queues.receive("jobs")
    assert d2 is not None and d2.attempt == 2


@pytest.mark.asyncio
async def test_extend_refused_on_settled_delivery(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {"n": 1})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    await d.ack()
    with pytest.raises(Exception) as info:
        await d.extend(30)
    assert not isinstance(info.value, AssertionError)


@pytest.mark.asyncio
async def test_queue_extend_is_a_fault_point(bgwork: bg.Simulation) -> None:
    assert "queue.extend" in set(bg.fault_points())
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {"n": 1})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    bgwork.faults.fail("queue.extend", on_call=1, error=ConnectionError("lease lost"))
    with pytest.raises(ConnectionError):
        await d.extend(30)
    await d.ack()


@pytest.mark.asyncio
async def test_duplicate_overlap_starts_copies_at_the_same_instant(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    starts: list[float] = []
    running = 0
    max_running = 0

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        nonlocal running, max_running
        starts.append(bgwork.clock.monotonic())
        running += 1
        max_running = max(max_running, running)
        await asyncio.sleep(5)
        running -= 1

    bgwork.queues.route("jobs", handler)
    bgwork.faults.duplicate("jobs", times=2, overlap=True)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert len(starts) == 2 and starts[0] == starts[1]
    assert max_running == 2


_CHECK_THEN_ACT = """
import asyncio, pytest
import pytest_bgwork as bg

@pytest.mark.asyncio
async def test_charge(bgwork):
    bgwork.queues.create("charges")
    async def handler(payload, delivery):
        r = await bgwork.kv.get("charged", payload["order"])
        if not r.exists:
            bgwork.effects.record("charge", key=payload["order"])
            await bgwork.kv.set("charged", payload["order"], True)
    bgwork.queues.route("charges", handler)
    await bgwork.queues.publish("charges", {"order": "o1"})
    await bgwork.run_until_idle()
    bg.assert_effects_once(bgwork, "charge")
"""


def test_chaos_overlap_breaks_check_then_act(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_CHECK_THEN_ACT)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=duplicate").assert_outcomes(passed=1)
    pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=overlap").assert_outcomes(failed=1)


def test_chaos_latency_and_combined_modes_accepted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_CHECK_THEN_ACT)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=latency")
    assert result.ret in (0, 1)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=latency,overlap,crash")
    assert result.ret in (0, 1)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=laggy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "latency" in result.stderr.str() + result.stdout.str()


def test_sim_choices_exists() -> None:
    sim = bg.Simulation(seed=0)
    assert sim.choices is not None
