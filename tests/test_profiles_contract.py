"""Platform profiles for queues and KV, as a user reads docs/profiles.md."""

from __future__ import annotations

from typing import Any

import pytest

import pytest_bgwork as bg

DAY = 86400


# -- picking a profile -----------------------------------------------------------------------------


def test_simulation_platform_and_bad_platform() -> None:
    sim = bg.Simulation(seed=0, platform="agentuity")
    assert sim.platform == "agentuity"
    with pytest.raises(ValueError) as info:
        bg.Simulation(seed=0, platform="heroku")
    assert "agentuity" in str(info.value) and "heroku" in str(info.value)


def test_marker_and_ini_platform(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bgwork(platform="alien")
        def test_marker(bgwork):
            assert bgwork.platform == "alien"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nbgwork_platform = alien\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        def test_ini(bgwork):
            assert bgwork.platform == "alien"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_bad_queue_profile_lists_valid_ones() -> None:
    sim = bg.Simulation(seed=0)
    with pytest.raises(ValueError) as info:
        sim.queues.create("jobs", profile="rabbitmq")
    for name in ["agentuity", "sqs-standard", "sqs-fifo", "alien"]:
        assert name in str(info.value)
    with pytest.raises(ValueError) as info:
        sim.kv.configure("ns", profile="memcached")
    for name in ["agentuity", "redis", "dynamodb", "alien"]:
        assert name in str(info.value)


# -- queues ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agentuity_is_the_default_queue_profile(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    a = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    b = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    assert b.duplicate and b.id == a.id


@pytest.mark.asyncio
async def test_sqs_standard_has_no_dedup(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("Jobs", profile="sqs-standard")
    a = await bgwork.queues.publish("Jobs", {"n": 1}, idempotency_key="k")
    b = await bgwork.queues.publish("Jobs", {"n": 1}, idempotency_key="k")
    assert not b.duplicate and b.id != a.id


@pytest.mark.asyncio
async def test_sqs_standard_failed_attempt_returns_after_visibility_timeout(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard", visibility_timeout=45)
    at: list[float] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        at.append(bgwork.clock.monotonic())
        if len(at) == 1:
            raise RuntimeError("first fails")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert len(at) == 2
    assert at[1] - at[0] == pytest.approx(45, abs=1)


@pytest.mark.asyncio
async def test_sqs_standard_retention_expires_and_is_named(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.advance(4 * DAY + 1)
    assert await bgwork.queues.receive("jobs") is None
    assert bgwork.queues.stats("jobs")["expired"] == 1
    with pytest.raises(AssertionError) as info:
        bg.assert_nothing_lost(bgwork)
    assert "expired" in str(info.value).lower()


def test_sqs_standard_limits() -> None:
    sim = bg.Simulation(seed=0)
    with pytest.raises(ValueError):  # plain-id names under the agentuity default
        sim.queues.create("Mixed_Case")
    sim.queues.create("Mixed_Case-80", profile="sqs-standard")
    sim.queues.create("A" * 80, profile="sqs-standard")
    with pytest.raises(ValueError):
        sim.queues.create("B" * 81, profile="sqs-standard")
    with pytest.raises(ValueError) as info:
        sim.queues.create("long", profile="sqs-standard", retention=15 * DAY)
    assert "retention" in str(info.value)
    sim.queues.create("ok14", profile="sqs-standard", retention=14 * DAY)
    with pytest.raises(ValueError):
        sim.queues.create("frac", profile="sqs-standard", visibility_timeout=1.5)


@pytest.mark.asyncio
async def test_sqs_standard_payload_limit_counts_attributes(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    body = "x" * (1024 * 1024 - 100)
    with pytest.raises(ValueError):
        await bgwork.queues.publish("jobs", body, metadata={"attr": "y" * 200})


@pytest.mark.asyncio
async def test_sqs_fifo_rules(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError):
        bgwork.queues.create("orders", profile="sqs-fifo")  # needs .fifo
    bgwork.queues.create("orders.fifo", profile="sqs-fifo", content_based_dedup=True)
    a = await bgwork.queues.publish("orders.fifo", {"order": 1}, partition_key="g1")
    b = await bgwork.queues.publish("orders.fifo", {"order": 1}, partition_key="g1")  # same content
    assert b.duplicate and b.id == a.id
    with pytest.raises(ValueError):
        await bgwork.queues.publish("orders.fifo", {"order": 2}, partition_key="g1", delay=5)


@pytest.mark.asyncio
async def test_sqs_fifo_group_order(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("orders.fifo", profile="sqs-fifo")
    seen: list[int] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        seen.append(payload["n"])

    bgwork.queues.route("orders.fifo", handler)
    for n in range(5):
        await bgwork.queues.publish("orders.fifo", {"n": n}, partition_key="g1", idempotency_key=f"m{n}")
    await bgwork.run_until_idle()
    assert seen == [0, 1, 2, 3, 4]


def test_alien_lease_range() -> None:
    sim = bg.Simulation(seed=0)
    sim.queues.create("jobs", profile="alien", visibility_timeout=600)
    with pytest.raises(ValueError):
        sim.queues.create("jobs2", profile="alien", visibility_timeout=601)
    with pytest.raises(ValueError):
        sim.queues.create("jobs3", profile="alien", visibility_timeout=0.5)


# -- KV ------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_agentuity_kv_ttl_at_least_60_and_bytes(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError) as info:
        await bgwork.kv.set("ns", "k", 1, ttl=30)
    assert "60" in str(info.value)
    await bgwork.kv.set("ns", "k", b"\x00\x01raw", ttl=60)
    assert (await bgwork.kv.get("ns", "k")).data == b"\x00\x01raw"


@pytest.mark.asyncio
async def test_redis_profile_short_ttls_allowed(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("cache", profile="redis")
    await bgwork.kv.set("cache", "k", 1, ttl=0.5)
    await bgwork.advance(1)
    assert not (await bgwork.kv.get("cache", "k")).exists


@pytest.mark.asyncio
async def test_dynamodb_item_limit(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("items", profile="dynamodb")
    with pytest.raises(ValueError):
        await bgwork.kv.set("items", "k", "x" * (400 * 1024 + 1))


@pytest.mark.asyncio
async def test_alien_value_limit(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("state", profile="alien")
    await bgwork.kv.set("state", "k", "x" * 1000)
    with pytest.raises(ValueError) as info:
        await bgwork.kv.set("state", "k", "x" * 24_577)
    assert "24" in str(info.value)


def test_platform_aws_defaults() -> None:
    sim = bg.Simulation(seed=0, platform="aws")
    sim.queues.create("Mixed_Case")  # sqs-standard names under aws
    assert "sqs-standard" in repr(sim.queues.config("Mixed_Case"))
