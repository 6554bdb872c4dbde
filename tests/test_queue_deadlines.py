"""Visibility leases: each queue keeps its deliveries' deadlines and arms one loop timer for
them (``DeadlineTimer``). A lease must still end exactly where a timer of its own would:
at its time, in creation order among everything due at that instant, never moving the clock
once released, also when ``extend`` moves it later or earlier and queues' timeouts differ."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.services.queues import Delivery


def expiries(sim: bg.Simulation) -> list[tuple[float, str]]:
    return [(e.t, e.detail["id"]) for e in sim.history.filter("queue", "visibility_expired")]


@pytest.mark.asyncio
async def test_a_lease_ends_in_creation_order_among_timers_due_at_the_same_instant(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    seen: list[str] = []
    bgwork.history.subscribe(
        lambda e: seen.append(f"{e.op} {e.detail['id']}#{e.detail['attempt']}")
        if e.op in ("visibility_expired", "deliver") and e.t == 30 else None)

    async def handler(payload: Any, delivery: Delivery) -> None:
        if delivery.attempt == 1:
            await asyncio.sleep(100)  # past the lease: redelivered at 30 s

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"n": 1})  # its lease ends at 30 s
    asyncio.get_running_loop().call_at(30, seen.append, "a timer made between the two leases")
    await bgwork.queues.publish("jobs", {"n": 2})  # its lease ends at 30 s too, made after
    await bgwork.advance(30)
    assert seen == [
        "visibility_expired msg_1#1", "deliver msg_1#2",
        "a timer made between the two leases",
        "visibility_expired msg_2#1", "deliver msg_2#2",
    ]
    await bgwork.run_until_idle()


@pytest.mark.asyncio
async def test_extend_later_or_earlier_and_mixed_timeouts_keep_each_lease_time(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("slow", visibility_timeout=50)
    bgwork.queues.create("fast", visibility_timeout=20)

    async def handler(payload: Any, delivery: Delivery) -> None:
        if delivery.attempt == 1:
            if payload["extend"] is not None:
                await asyncio.sleep(5)
                await delivery.extend(payload["extend"])
            await asyncio.sleep(1000)  # never acks in time

    bgwork.queues.route("slow", handler)
    bgwork.queues.route("fast", handler)
    for queue, extend in (("slow", None), ("fast", None), ("slow", 2), ("fast", 40),
                          ("slow", 10)):
        await bgwork.queues.publish(queue, {"extend": extend})
    await bgwork.run_until_idle()
    assert expiries(bgwork) == [(7.0, "msg_3"), (15.0, "msg_5"), (20.0, "msg_2"),
                                (45.0, "msg_4"), (50.0, "msg_1")]
    redelivered = [(e.t, e.detail["id"]) for e in bgwork.history.filter("queue", "deliver",
                                                                          attempt=2)]
    assert redelivered == expiries(bgwork)


@pytest.mark.asyncio
async def test_many_leases_end_at_their_deadlines_in_deadline_then_creation_order(
    bgwork: bg.Simulation,
) -> None:
    rng = random.Random(16)
    timeouts = {"a": 10, "b": 20, "c": 30}
    for name, timeout in timeouts.items():
        bgwork.queues.create(name, visibility_timeout=timeout)
    plan: dict[str, tuple[str, int, int | None]] = {}  # id -> (queue, sleep, extend seconds)
    for i in range(1, 61):
        queue = rng.choice("abc")
        plan[f"msg_{i}"] = (queue, rng.randint(1, 9), rng.choice([None, rng.randint(1, 60)]))

    async def handler(payload: Any, delivery: Delivery) -> None:
        if delivery.attempt == 1:
            _, pause, extend = plan[delivery.message.id]
            await asyncio.sleep(pause)
            if extend is not None:
                await delivery.extend(extend)
            await asyncio.sleep(10_000)

    for name in timeouts:
        bgwork.queues.route(name, handler)
    for i in range(1, 61):
        await bgwork.queues.publish(plan[f"msg_{i}"][0], {"i": i})
    await bgwork.run_until_idle()
    # a lease made at publish (t=0) or by extend at t=pause; ties: the lease made first
    expected = sorted(
        ((float(pause + extend), pause, i) if extend is not None
         else (float(timeouts[queue]), 0, i))
        for i, (queue, pause, extend) in ((int(k[4:]), v) for k, v in plan.items()))
    assert expiries(bgwork) == [(t, f"msg_{i}") for t, _, i in expected]


@pytest.mark.asyncio
async def test_a_released_lease_never_moves_the_clock(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)

    async def handler(payload: Any, delivery: Delivery) -> None:
        await asyncio.sleep(payload["work"])

    bgwork.queues.route("jobs", handler)
    for _ in range(3):
        await bgwork.queues.publish("jobs", {"work": 0})
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() == 0.0  # acked at once: no lease is left to wait for
    await bgwork.queues.publish("jobs", {"work": 5})
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() == 5.0  # not 30: the lease ended with the ack
    assert expiries(bgwork) == []


@pytest.mark.asyncio
async def test_a_nacked_lease_does_not_expire_later(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30, retry_delay=40)
    seen: list[tuple[float, int]] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        seen.append((bgwork.clock.monotonic(), delivery.attempt))
        if delivery.attempt == 1:
            await delivery.extend(10)  # a second entry for the same lease (ends at 10)
            await delivery.nack()  # released before either entry is due

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert seen == [(0.0, 1), (0.0, 2)]  # nack(delay=0): again at once, never at 10 or 30
    assert expiries(bgwork) == []
    assert bgwork.clock.monotonic() == 0.0


@pytest.mark.asyncio
async def test_stalled_counts_each_lease_as_a_pending_timer(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    bgwork.queues.route("jobs", hang)
    for _ in range(3):
        await bgwork.queues.publish("jobs", {})
    with pytest.raises(bg.Stalled, match=r"3 timer\(s\) pending, the next at t=\+30\.000s"):
        await bgwork.run_until_idle(max_time=10)
    for task in bgwork.loop.live_tasks():
        if task is not asyncio.current_task():
            task.cancel()


async def hang(payload: Any, delivery: Delivery) -> None:
    await asyncio.get_running_loop().create_future()  # never acks
