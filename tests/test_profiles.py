"""Platform profiles (docs/profiles.md): each row of docs/profiles.md is a test here (or in the
differential tests against a real redis-server and moto)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork.profiles import KV_PROFILES, PLATFORMS, QUEUE_PROFILES

MIB = 1024 * 1024


def qevents(sim: bg.Simulation, op: str) -> list[bg.Event]:
    return sim.history.filter("queue", op)


async def failing(payload: Any, delivery: Any) -> None:
    raise RuntimeError("boom")


# -- choosing profiles ---------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_agentuity_is_the_default_queue_profile_with_todays_settings(
    bgwork: bg.Simulation,
) -> None:
    config = bgwork.queues.create("jobs")
    assert (config.profile, config.max_retries, config.visibility_timeout, config.retry_delay,
            config.dedup_window, config.retention) == ("agentuity", 5, 30.0, None, 300.0, None)
    first = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    again = await bgwork.queues.publish("jobs", {"n": 2}, idempotency_key="k")
    assert again.duplicate and again.id == first.id


def test_platform_picks_every_services_default_profile() -> None:
    for platform, (queue, kv) in PLATFORMS.items():
        with bg.Simulation(platform=platform) as sim:
            name = "jobs.fifo" if queue == "sqs-fifo" else "jobs"
            assert sim.queues.create(name).profile == queue
            assert sim.kv.profile("ns").name == kv
    with bg.Simulation(platform="aws") as sim:
        assert sim.queues.create("orders.fifo", profile="sqs-fifo").profile == "sqs-fifo"
        assert sim.kv.configure("cache", profile="redis").name == "redis"
        assert sim.kv.profile("cache").name == "redis"
        assert sim.kv.profile("other").name == "dynamodb"


def test_unknown_profile_or_platform_is_refused_listing_the_valid_ones(
    bgwork: bg.Simulation,
) -> None:
    with pytest.raises(ValueError) as info:
        bg.Simulation(platform="vercel")
    assert str(info.value) == ("Simulation(platform=...): unknown platform 'vercel'; valid: "
                               "'agentuity', 'aws', 'alien'")
    with pytest.raises(ValueError, match=r"unknown queue profile 'sqs'; valid: 'agentuity', "
                                         r"'sqs-standard', 'sqs-fifo', 'alien'"):
        bgwork.queues.create("jobs", profile="sqs")
    with pytest.raises(ValueError, match=r"kv.configure\('s', profile=...\): unknown KV profile "
                                         r"'memcached'; valid: 'agentuity', 'redis', 'dynamodb', "
                                         r"'alien'"):
        bgwork.kv.configure("s", profile="memcached")
    assert bgwork.queues.names() == []
    assert set(QUEUE_PROFILES) == {"agentuity", "sqs-standard", "sqs-fifo", "alien"}
    assert set(KV_PROFILES) == {"agentuity", "redis", "dynamodb", "alien"}


def test_marker_option_and_ini_pick_the_platform(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbgwork_platform = aws\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import pytest

        def test_ini(bgwork, bgwork_factory):
            assert bgwork.platform == "aws"
            assert bgwork.queues.create("jobs").profile == "sqs-standard"
            assert bgwork_factory().platform == "aws"

        @pytest.mark.bgwork(platform="alien")
        def test_marker(bgwork):
            assert bgwork.kv.profile("ns").name == "alien"

        @pytest.mark.bgwork(platform="heroku")
        def test_bad_marker(bgwork):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*bgwork: *platform: aws*",
                                 "*bgwork(platform=...) must be one of agentuity, aws, alien; "
                                 "got 'heroku'*"])
    bad = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-platform=gcp")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--bgwork-platform / bgwork_platform must be one of agentuity, "
                              "aws, alien; got 'gcp'*"])


# -- sqs-standard ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_sqs_standard_never_deduplicates(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    first = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    again = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    assert not again.duplicate and again.id != first.id
    assert [m.idempotency_key for m in bgwork.queues.messages("jobs")] == ["k", "k"]
    with pytest.raises(ValueError, match=r"profile 'sqs-standard' allows no deduplication"):
        bgwork.queues.create("other", profile="sqs-standard", dedup_window=300)


@pytest.mark.asyncio
async def test_sqs_failed_attempt_returns_after_the_visibility_timeout(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard", visibility_timeout=45, max_retries=1)
    bgwork.queues.route("jobs", failing)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert [e.t for e in qevents(bgwork, "deliver")] == [0.0, 45.0]
    assert [e.detail["delay"] for e in qevents(bgwork, "retry")] == [45.0, 45.0]
    with pytest.raises(ValueError, match=r"create\(retry_delay=...\): profile 'sqs-standard' "
                                         r"allows no retry delay .*; got 5\."):
        bgwork.queues.create("other", profile="sqs-standard", retry_delay=5)


@pytest.mark.asyncio
async def test_sqs_receive_count_counts_receives(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard", visibility_timeout=10)
    await bgwork.queues.publish("jobs", {"n": 1})
    counts = []
    for _ in range(3):
        d = await bgwork.queues.receive("jobs")
        assert d is not None
        counts.append((d.receive_count, d.message.receive_count))
        await bgwork.advance(10)  # not deleted: visible again after the visibility timeout
    assert counts == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.parametrize("retries", [-1, 1000])
def test_sqs_max_receive_count_is_1_to_1000(bgwork: bg.Simulation, retries: int) -> None:
    assert bgwork.queues.create("ok", profile="sqs-standard", max_retries=999).max_receive_count == 1000
    with pytest.raises(ValueError) as info:
        bgwork.queues.create("jobs", profile="sqs-standard", max_retries=retries)
    if retries > 0:
        assert str(info.value).startswith(
            "create(max_retries=...): profile 'sqs-standard' allows 0 to 999 (maxReceiveCount 1 "
            "to 1000); got 1000.")
    assert bgwork.queues.names() == ["ok"]


@pytest.mark.asyncio
async def test_sqs_dead_letter_on_the_receive_past_max_receive_count(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard", visibility_timeout=30, max_retries=1)
    await bgwork.queues.publish("jobs", {})
    for _ in range(2):  # maxReceiveCount = 2 receives, never deleted
        assert await bgwork.queues.receive("jobs") is not None
        await bgwork.advance(30)
    assert bgwork.queues.dead_letters("jobs") == []  # still in the queue until the next receive
    assert await bgwork.queues.receive("jobs") is None  # that receive moves it instead
    [dead] = bgwork.queues.dead_letters("jobs")
    assert dead.receive_count == 2
    assert qevents(bgwork, "dead_letter")[0].t == 60.0


@pytest.mark.asyncio
async def test_sqs_retention_limits_and_default(bgwork: bg.Simulation) -> None:
    assert bgwork.queues.create("a", profile="sqs-standard").retention == 4 * 86400
    assert bgwork.queues.create("b", profile="sqs-standard", retention=60).retention == 60
    assert bgwork.queues.create("c", profile="sqs-standard", retention=14 * 86400).retention == (
        14 * 86400)
    for bad in (59, 14 * 86400 + 1, 120.5):
        with pytest.raises(ValueError) as info:
            bgwork.queues.create("d", profile="sqs-standard", retention=bad)
        assert str(info.value).startswith(
            f"create(retention=...): profile 'sqs-standard' allows whole seconds >= 60 and <= "
            f"1209600; got {bad!r}.")
    with pytest.raises(ValueError, match=r"profile 'agentuity' allows no retention setting"):
        bgwork.queues.create("d", retention=60)


@pytest.mark.asyncio
async def test_sqs_retention_expires_unconsumed_messages(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard", retention=60)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.advance(59)
    assert bgwork.queues.stats("jobs")["pending"] == 1
    await bgwork.advance(1)
    stats = bgwork.queues.stats("jobs")
    assert (stats["expired"], stats["pending"], stats["visibility_expired"]) == (1, 0, 0)
    assert await bgwork.queues.receive("jobs") is None
    [event] = qevents(bgwork, "expired")
    assert event.detail == {"queue": "jobs", "id": "msg_1", "attempts": 0, "expired_at": 60.0,
                            "retention": 60.0}
    with pytest.raises(bg.CheckFailed) as info:
        bg.assert_nothing_lost(bgwork)
    text = str(info.value)
    assert "jobs/msg_1 published at +0.000s: never delivered; now expired: the queue's " \
           "retention ran out and deleted it unconsumed" in text
    assert "1 message expired: the queue's retention (create(..., retention=))" in text
    bg.assert_drained(bgwork)  # an expired message is gone, not work left to do


@pytest.mark.asyncio
async def test_sqs_retention_deletes_a_message_in_flight_too(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard", retention=60, visibility_timeout=300)
    await bgwork.queues.publish("jobs", {})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    await bgwork.advance(61)
    await d.ack()  # the message is already gone: the ack deletes nothing
    assert [e.detail["deleted"] for e in qevents(bgwork, "ack")] == [False]
    assert bgwork.queues.messages("jobs")[0].state == "expired"


@pytest.mark.asyncio
async def test_sqs_delay_whole_seconds_up_to_900(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    await bgwork.queues.publish("jobs", {}, delay=900)
    for bad in (1.5, 901):
        with pytest.raises(ValueError) as info:
            await bgwork.queues.publish("jobs", {}, delay=bad)
        assert str(info.value).startswith(
            f"publish(delay=...): profile 'sqs-standard' allows whole seconds >= 0 and <= 900; "
            f"got {bad!r}.")
    assert len(bgwork.queues.messages("jobs")) == 1


@pytest.mark.parametrize(("visibility", "ok"), [(0, True), (43200, True), (43201, False),
                                                 (1.5, False), (-1, False)])
def test_sqs_visibility_timeout_is_0_to_43200_whole_seconds(
    bgwork: bg.Simulation, visibility: float, ok: bool
) -> None:
    if ok:
        assert bgwork.queues.create("jobs", profile="sqs-standard",
                                    visibility_timeout=visibility).visibility_timeout == visibility
        return
    with pytest.raises(ValueError) as info:
        bgwork.queues.create("jobs", profile="sqs-standard", visibility_timeout=visibility)
    assert str(info.value).startswith(
        "create(visibility_timeout=...): profile 'sqs-standard' allows whole seconds >= 0 and "
        f"<= 43200; got {visibility!r}.")


@pytest.mark.asyncio
async def test_sqs_size_limit_counts_message_attributes(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    bgwork.queues.create("plain")
    body = "x" * (MIB - 2 - 20)  # the body's bytes count (not its JSON form)
    await bgwork.queues.publish("jobs", body, metadata={"a": "b"})  # name 1 + JSON value 3 bytes
    await bgwork.queues.publish("plain", body, metadata={"trace": "t" * 100})  # not counted
    with pytest.raises(ValueError) as info:
        await bgwork.queues.publish("jobs", body, metadata={"trace": "t" * 100})  # 5 + 102
    assert str(info.value).startswith(
        "publish(payload=...) is 1048661 bytes as SQS counts them (body bytes, attribute names, "
        "types and values) with its metadata; the limit is 1 MiB (1048576 bytes, profile "
        "'sqs-standard', counting message attributes).")
    with pytest.raises(ValueError, match=r"profile 'sqs-standard' allows at most 10 message "
                                         r"attributes; got '11 keys'"):
        await bgwork.queues.publish("jobs", {}, metadata={str(i): i for i in range(11)})


@pytest.mark.parametrize(
    ("profile", "name", "ok"),
    [("sqs-standard", "Report_Jobs-1", True), ("sqs-standard", "a" * 80, True),
     ("sqs-standard", "a" * 81, False), ("sqs-standard", "jobs.v2", False),
     ("sqs-standard", "jobs.fifo", False), ("sqs-fifo", "Jobs.fifo", True),
     ("sqs-fifo", "a" * 75 + ".fifo", True), ("sqs-fifo", "a" * 76 + ".fifo", False),
     ("sqs-fifo", "jobs", False), ("agentuity", "Jobs", False)],
)
def test_queue_names_follow_the_profile(bgwork: bg.Simulation, profile: str, name: str,
                                        ok: bool) -> None:
    if ok:
        assert bgwork.queues.create(name, profile=profile).name == name
        return
    with pytest.raises(ValueError) as info:
        bgwork.queues.create(name, profile=profile)
    assert f"(profile {profile!r})" in str(info.value)


@pytest.mark.asyncio
@pytest.mark.asyncio
@pytest.mark.parametrize("arg", ["idempotency_key", "partition_key"])
async def test_sqs_keys_are_at_most_128_printable_characters(bgwork: bg.Simulation,
                                                             arg: str) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    await bgwork.queues.publish("jobs", {}, **{arg: "k" * 128})
    with pytest.raises(ValueError, match=r"1 to 128 characters \(the queue's key limit, profile "
                                         r"'sqs-standard'\) or None; got 129 characters"):
        await bgwork.queues.publish("jobs", {}, **{arg: "k" * 129})
    with pytest.raises(ValueError, match=r"profile 'sqs-standard' allows letters, digits and "
                                         r"ASCII punctuation only"):
        await bgwork.queues.publish("jobs", {}, **{arg: "a key"})


@pytest.mark.asyncio
async def test_sqs_standard_partition_key_does_not_order(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="sqs-standard")
    await bgwork.queues.publish("jobs", {"n": 1}, partition_key="g")
    await bgwork.queues.publish("jobs", {"n": 2}, partition_key="g")
    first, second = await bgwork.queues.receive("jobs"), await bgwork.queues.receive("jobs")
    assert first is not None and second is not None  # both in flight at once


# -- sqs-fifo -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fifo_dedup_by_id_for_five_minutes_also_after_delete(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs.fifo", profile="sqs-fifo")
    first = await bgwork.queues.publish("jobs.fifo", {"n": 1}, idempotency_key="d",
                                        partition_key="g")
    d = await bgwork.queues.receive("jobs.fifo")
    assert d is not None
    await d.ack()  # deleted: the id is still remembered
    await bgwork.advance(299)
    again = await bgwork.queues.publish("jobs.fifo", {"n": 2}, idempotency_key="d",
                                        partition_key="g")
    assert again.duplicate and again.id == first.id
    await bgwork.advance(1)
    later = await bgwork.queues.publish("jobs.fifo", {"n": 3}, idempotency_key="d",
                                        partition_key="g")
    assert not later.duplicate
    with pytest.raises(ValueError, match=r"profile 'sqs-fifo' allows a fixed 300 s deduplication "
                                         r"interval; got 60"):
        bgwork.queues.create("b.fifo", profile="sqs-fifo", dedup_window=60)


@pytest.mark.asyncio
async def test_fifo_content_based_dedup(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
    a = await bgwork.queues.publish("jobs.fifo", {"n": 1}, partition_key="g")
    b = await bgwork.queues.publish("jobs.fifo", {"n": 1}, partition_key="h")
    c = await bgwork.queues.publish("jobs.fifo", {"n": 2}, partition_key="g")
    d = await bgwork.queues.publish("jobs.fifo", {"n": 1}, partition_key="g", idempotency_key="x")
    assert (b.duplicate, b.id, c.duplicate, d.duplicate) == (True, a.id, False, False)
    with pytest.raises(ValueError, match=r"profile 'sqs-standard' allows no content-based"):
        bgwork.queues.create("std", profile="sqs-standard", content_based_dedup=True)


@pytest.mark.asyncio
async def test_fifo_needs_a_group_and_a_dedup_id(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs.fifo", profile="sqs-fifo")
    with pytest.raises(ValueError, match=r"publish\(partition_key=...\): profile 'sqs-fifo' "
                                         r"allows only messages with a partition key"):
        await bgwork.queues.publish("jobs.fifo", {}, idempotency_key="d")
    with pytest.raises(ValueError, match=r"publish\(idempotency_key=...\): profile 'sqs-fifo' "
                                         r"allows only messages with a deduplication id unless"):
        await bgwork.queues.publish("jobs.fifo", {}, partition_key="g")
    assert bgwork.queues.messages("jobs.fifo") == []


@pytest.mark.asyncio
async def test_fifo_group_order(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
    for n, group in ((1, "a"), (2, "a"), (3, "b")):
        await bgwork.queues.publish("jobs.fifo", {"n": n}, partition_key=group)
    first = await bgwork.queues.receive("jobs.fifo")
    other = await bgwork.queues.receive("jobs.fifo")  # group "a" is blocked while n=1 is out
    assert first is not None and other is not None
    assert (first.payload, other.payload) == ({"n": 1}, {"n": 3})
    assert await bgwork.queues.receive("jobs.fifo") is None
    await first.ack()
    nxt = await bgwork.queues.receive("jobs.fifo")
    assert nxt is not None and nxt.payload == {"n": 2}


@pytest.mark.asyncio
async def test_fifo_refuses_per_message_delay(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
    await bgwork.queues.publish("jobs.fifo", {}, partition_key="g", delay=0)
    with pytest.raises(ValueError) as info:
        await bgwork.queues.publish("jobs.fifo", {"n": 2}, partition_key="g", delay=5)
    assert str(info.value).startswith(
        "publish(delay=...): profile 'sqs-fifo' allows no per-message delay (FIFO queues only "
        "have a queue-level delay); got 5.")


# -- alien ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("lease", "ok"), [(1, True), (600, True), (0.5, False), (601, False)])
def test_alien_lease_is_1_to_600_seconds(bgwork: bg.Simulation, lease: float, ok: bool) -> None:
    if ok:
        assert bgwork.queues.create("jobs", profile="alien",
                                    visibility_timeout=lease).visibility_timeout == lease
        return
    with pytest.raises(ValueError, match=r"create\(visibility_timeout=...\): profile 'alien' "
                                         r"allows seconds >= 1 and <= 600; got "):
        bgwork.queues.create("jobs", profile="alien", visibility_timeout=lease)


@pytest.mark.asyncio
async def test_alien_nack_with_delay_counts_attempts(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", profile="alien", max_retries=1)
    await bgwork.queues.publish("jobs", {})
    d = await bgwork.queues.receive("jobs")
    assert d is not None and d.attempt == 1
    await d.nack(delay=20)
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.advance(20)
    d2 = await bgwork.queues.receive("jobs")
    assert d2 is not None and d2.attempt == 2
    await d2.nack()
    assert [m.attempts for m in bgwork.queues.dead_letters("jobs")] == [2]


# -- KV: agentuity ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_agentuity_kv_refuses_a_ttl_below_60_seconds(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", 1, ttl=60)
    with pytest.raises(ValueError) as info:
        await bgwork.kv.set("s", "k", 1, ttl=59.9)
    assert str(info.value).startswith(
        "kv.set(ns='s', key='k'): profile 'agentuity' allows a ttl of at least 60 s (the service "
        "refuses shorter ones); got ttl=59.9.")
    bgwork.kv.configure("cache", profile="redis")
    await bgwork.kv.set("cache", "k", 1, ttl=1)


@pytest.mark.asyncio
async def test_agentuity_kv_keeps_a_content_type(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "csv", "a,b\n", content_type="text/csv")
    await bgwork.kv.set("s", "json", {"a": 1})
    await bgwork.kv.set("s", "text", "hello")
    await bgwork.kv.set("s", "raw", b"\x00\xff")
    got = {k: (await bgwork.kv.get("s", k)).content_type for k in ("csv", "json", "text", "raw")}
    assert got == {"csv": "text/csv", "json": "application/json", "text": "text/plain",
                   "raw": "application/octet-stream"}
    await bgwork.kv.set("s", "csv", "plain now")  # a new set without one infers it again
    assert (await bgwork.kv.get("s", "csv")).content_type == "text/plain"
    bgwork.kv.configure("r", profile="redis")
    await bgwork.kv.set("r", "k", "v")
    assert (await bgwork.kv.get("r", "k")).content_type is None
    with pytest.raises(ValueError, match=r"profile 'redis' keeps no content type"):
        await bgwork.kv.set("r", "k", "v", content_type="text/plain")


@pytest.mark.asyncio
async def test_kv_stores_bytes(bgwork: bg.Simulation) -> None:
    data = bytes(range(256))
    await bgwork.kv.set("s", "k", data)
    r = await bgwork.kv.get("s", "k")
    assert r.data == data and isinstance(r.data, bytes)
    assert bgwork.kv.items("s") == {"k": data}
    assert bgwork.kv.history("s", "k")[0].data == data


@pytest.mark.asyncio
async def test_ttl_past_the_clocks_range_is_refused(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError, match=r"ttl=1e\+12 puts the expiry past the year 9999"):
        await bgwork.kv.set("s", "k", 1, ttl=1e12)


@pytest.mark.asyncio
async def test_configure_a_namespace_before_its_first_write(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", 1)
    with pytest.raises(ValueError, match=r"namespace 's' already holds keys written under "
                                         r"profile 'agentuity'"):
        bgwork.kv.configure("s", profile="redis")
    assert bgwork.kv.profile("s").name == "agentuity"


# -- KV: redis ---------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_redis_ttl_is_whole_seconds_or_milliseconds(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("r", profile="redis")
    for ok in (1, 1.5, 0.001, 2.25):
        await bgwork.kv.set("r", "k", 1, ttl=ok)
    with pytest.raises(ValueError) as info:
        await bgwork.kv.set("r", "k", 1, ttl=0.0005)
    assert str(info.value).startswith(
        "kv.set(ns='r', key='k'): profile 'redis' allows a ttl of whole seconds (EX) or whole "
        "milliseconds (PX) only; got ttl=0.0005 (Redis answers 'ERR value is not an integer or "
        "out of range').")


@pytest.mark.asyncio
async def test_redis_key_still_exists_at_its_expiry_instant(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("r", profile="redis")
    await bgwork.kv.set("r", "k", "v", ttl=2)
    await bgwork.kv.set("a", "k", "v", ttl=60)
    await bgwork.advance(2)
    r = await bgwork.kv.get("r", "k")  # Redis: expired only when now > when
    assert r.exists and r.expires_at == dt.datetime(2026, 1, 1, 0, 0, 2, tzinfo=dt.UTC)
    await bgwork.advance(0.001)
    assert not (await bgwork.kv.get("r", "k")).exists
    [expire] = bgwork.history.filter("kv", "expire")
    assert expire.detail["expired_at"] == 2.0
    await bgwork.advance(58 - 0.001)
    assert not (await bgwork.kv.get("a", "k")).exists  # Agentuity: gone at the instant


def test_redis_and_dynamodb_list_keys_unordered() -> None:
    orders = set()
    for seed in range(6):
        sim = bg.Simulation(seed=seed)

        async def main(sim: bg.Simulation = sim) -> list[str]:
            sim.kv.configure("r", profile="redis")
            sim.kv.configure("d", profile="dynamodb")
            for key in "abcde":
                await sim.kv.set("r", key, 1)
                await sim.kv.set("d", key, 1)
            assert sorted(await sim.kv.keys("d")) == list("abcde")
            return await sim.kv.keys("r")

        found = sim.run(main())
        sim.close()
        assert sorted(found) == list("abcde")
        orders.add("".join(found))
    assert len(orders) > 1  # the order is drawn, so code relying on it fails


# -- KV: dynamodb ------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_dynamodb_item_limit_is_400_kb_counting_the_key(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("d", profile="dynamodb")
    await bgwork.kv.set("d", "k", "x" * (400 * 1024 - 3))  # 2 quotes + 1-byte key
    with pytest.raises(ValueError) as info:
        await bgwork.kv.set("d", "kk", "x" * (400 * 1024 - 3))
    assert str(info.value).startswith(
        "kv.set(ns='d', key='kk'): the item (key and value) is 409601 bytes; profile 'dynamodb' "
        "allows 400 KB per item (key and value bytes) (409600 bytes).")


def test_dynamodb_expired_items_linger_less_than_48_hours() -> None:
    lags = []
    for seed in range(5):
        sim = bg.Simulation(seed=seed)

        async def main(sim: bg.Simulation = sim) -> float:
            sim.kv.configure("d", profile="dynamodb")
            await sim.kv.set("d", "k", 1, ttl=60)
            r = await sim.kv.get("d", "k")
            assert r.expires_at == dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
            while (await sim.kv.get("d", "k")).exists:
                await sim.advance(600)
            [expire] = sim.history.filter("kv", "expire")
            assert expire.detail["ttl_due"] == 60.0
            return float(expire.detail["expired_at"]) - 60.0

        lags.append(sim.run(main()))
        sim.close()
    assert all(0 <= lag < 48 * 3600 for lag in lags)
    assert max(lags) > 600  # readable well after its TTL, unlike Agentuity's


# -- KV: alien -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_alien_values_are_at_most_24576_bytes(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("a", profile="alien")
    await bgwork.kv.set("a", "k", b"x" * 24576)
    with pytest.raises(ValueError) as info:
        await bgwork.kv.set("a", "k", "x" * 24575)  # 24,577 bytes of JSON
    assert str(info.value).startswith(
        "kv.set(ns='a', key='k'): the value is 24577 bytes; profile 'alien' allows 24,576 bytes "
        "per value (24576 bytes).")


@pytest.mark.asyncio
async def test_alien_keys_use_its_charset(bgwork: bg.Simulation) -> None:
    bgwork.kv.configure("a", profile="alien")
    await bgwork.kv.set("a", "job-1_x:y.z", 1)
    for op in ("set", "get", "delete"):
        args: tuple[Any, ...] = ("a", "job 1", 1) if op == "set" else ("a", "job 1")
        with pytest.raises(ValueError, match=rf"kv.{op}\(ns='a', key='job 1'\): profile 'alien' "
                                             r"allows keys of A-Z a-z 0-9 '-' '_' ':' '.' only"):
            await getattr(bgwork.kv, op)(*args)


# -- the semantics table -----------------------------------------------------------------------
def test_every_row_of_the_semantics_table_names_a_test_that_exists() -> None:
    import pathlib
    import re

    root = pathlib.Path(__file__).parent.parent
    table = [line for line in (root / "docs" / "profiles.md").read_text().splitlines()
             if line.startswith("| ") and not line.startswith(("| rule", "| platform"))]
    default = "tests/test_profiles.py"
    files = {default, "tests/test_profiles_redis.py", "tests/test_profiles_sqs.py"}
    defined = {f: set(re.findall(r"^(?:async )?def (test_\w+)", (root / f).read_text(), re.M))
               for f in files | {"tests/test_queues.py"}}
    missing = []
    rows = 0
    for line in table:
        cells = line.split(" | ")
        if len(cells) < 4:
            continue
        rows += 1
        for ref in re.findall(r"`((?:tests/\w+\.py::)?test_\w+)`", cells[-1]):
            where, _, name = ref.rpartition("::")
            if not where:
                where = "tests/test_profiles_redis.py" if name in defined[
                    "tests/test_profiles_redis.py"] else "tests/test_profiles_sqs.py" if name in (
                    defined["tests/test_profiles_sqs.py"]) else default
            if where not in defined and (root / where).is_file():  # a row may name any test file
                defined[where] = set(re.findall(r"^(?:async )?def (test_\w+)", (root / where).read_text(), re.M))
            if name not in defined.get(where, set()):
                missing.append(ref)
    assert rows >= 40 and missing == []


# -- exploration ------------------------------------------------------------------------------
def test_explore_runs_its_examples_on_the_platform_given() -> None:
    seen: set[str] = set()

    async def scenario(sim: bg.Simulation) -> None:
        seen.add(sim.platform)

    report = bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=3, seed=1, platform="aws")
    assert (seen, report.platform) == ({"aws"}, "aws")
    with pytest.raises(ValueError, match=r"explore\(platform=...\): unknown platform 'gcp'"):
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=1, seed=1, platform="gcp")


@pytest.mark.bgwork(platform="alien")
def test_explore_defaults_to_the_tests_platform(bgwork: bg.Simulation) -> None:
    seen: set[str] = set()

    async def scenario(sim: bg.Simulation) -> None:
        seen.add(sim.kv.profile("ns").name)

    assert bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=2, seed=1).platform == "alien"
    assert seen == {"alien"}


def test_explore_test_runs_its_examples_on_the_platform_given() -> None:
    seen: set[str] = set()

    async def scenario(sim: bg.Simulation) -> None:
        seen.add(sim.platform)

    bg.explore_test(scenario, faults=st.just(bg.FaultPlan()), max_examples=2, seed=1, platform="alien")()
    assert seen == {"alien"}
    with pytest.raises(ValueError, match=r"explore_test\(platform=...\): unknown platform"):
        bg.explore_test(scenario, faults=st.just(bg.FaultPlan()), platform="gcp")
