"""Queues: publish, dedup, routed and pulled delivery, visibility, retries, dead letters,
FIFO partitions, stale acks, faults, snapshots and every bad input's error text."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import gc
import math
import warnings
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.context import current_attempt
from pytest_bgwork.core.errors import ProcessCrashed
from pytest_bgwork.services.delivery import BACKOFF_CAP
from pytest_bgwork.services.queues import (
    MAX_PAYLOAD,
    Delivery,
    DeliverySettled,
    UnknownQueue,
    retry_backoff,
)


def qevents(sim: bg.Simulation, op: str, **detail: Any) -> list[bg.Event]:
    return sim.history.filter("queue", op, **detail)


def attempts_of(sim: bg.Simulation, op: str = "deliver") -> list[tuple[float, str, int]]:
    return [(e.t, e.detail["id"], e.detail["attempt"]) for e in qevents(sim, op)]


class ZeroChoices:
    """Every choice at its unsurprising low end (what Hypothesis shrinks to)."""

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        return lo

    def fraction(self, label: str = "") -> float:
        return 0.0


# -- create: defaults and limits --------------------------------------------------------------
def test_create_uses_the_documented_defaults(bgwork: bg.Simulation) -> None:
    cfg = bgwork.queues.create("report-jobs")
    assert (cfg.visibility_timeout, cfg.max_retries, cfg.retry_delay, cfg.dedup_window,
            cfg.stale_ack) == (30.0, 5, None, 300.0, "ignore")
    assert bgwork.queues.config("report-jobs") == cfg
    assert bgwork.queues.names() == ["report-jobs"]
    [e] = qevents(bgwork, "create")
    assert e.detail == {"queue": "report-jobs", "max_retries": 5, "visibility_timeout": 30.0}


def test_create_and_route_and_stats_are_sync_publish_receive_ack_are_async() -> None:
    import inspect

    from pytest_bgwork.services.queues import Queues

    for name in ("create", "route", "stats", "dead_letters"):
        assert not inspect.iscoroutinefunction(getattr(Queues, name)), name
    for name in ("publish", "receive"):
        assert inspect.iscoroutinefunction(getattr(Queues, name)), name
    for name in ("ack", "nack"):
        assert inspect.iscoroutinefunction(getattr(Delivery, name)), name


@pytest.mark.parametrize("name", ["_jobs", "a", "report-jobs", "x_1-2", "a" * 256])
def test_valid_queue_names(bgwork: bg.Simulation, name: str) -> None:
    assert bgwork.queues.create(name).name == name


@pytest.mark.parametrize("name", ["Report", "report jobs", "1jobs", "-jobs", "", "a" * 257, 7,
                                  "jobs.v2"])
def test_bad_queue_name_names_the_rule(bgwork: bg.Simulation, name: Any) -> None:
    with pytest.raises(ValueError) as info:
        bgwork.queues.create(name)
    text = str(info.value)
    assert text.startswith("create(name=...) must match ^[a-z_][a-z0-9_-]*$ and be at most 256 "
                           "characters (profile 'agentuity')")
    assert "e.g. 'report-jobs'" in text
    assert ("257 characters" if name == "a" * 257 else repr(name)) in text


def test_creating_a_queue_twice_is_an_error(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    with pytest.raises(ValueError, match=r"queue 'jobs' already exists in this simulation"):
        bgwork.queues.create("jobs", max_retries=1)
    assert bgwork.queues.config("jobs").max_retries == 5


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_retries": -1}, "create(max_retries=...) must be an int >= 0"),
        ({"max_retries": 1.5}, "create(max_retries=...) must be an int >= 0"),
        ({"max_retries": True}, "create(max_retries=...) must be an int >= 0"),
        ({"visibility_timeout": -1}, "create(visibility_timeout=...) must be a number of seconds "
                                     "> 0; got -1"),
        ({"visibility_timeout": 0}, "create(visibility_timeout=...) must be a number of seconds "
                                    "> 0; got 0"),
        ({"visibility_timeout": math.inf}, "create(visibility_timeout=...) must be a number"),
        ({"retry_delay": -0.5}, "create(retry_delay=...) must be a number of seconds >= 0; got "
                                "-0.5. Use retry_delay=None for exponential backoff"),
        ({"dedup_window": -1}, "create(dedup_window=...) must be a number of seconds >= 0; got "
                               "-1. Use 0 to turn dedup off."),
        ({"stale_ack": "drop"}, "create(stale_ack=...) must be one of ignore, deletes; got 'drop'"),
    ],
)
def test_bad_create_arguments_name_the_argument(
    bgwork: bg.Simulation, kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ValueError) as info:
        bgwork.queues.create("jobs", **kwargs)
    assert str(info.value).startswith(expected)
    assert bgwork.queues.names() == []


# -- publish ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_publish_returns_id_offset_time_and_records_it(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    first = await bgwork.queues.publish("jobs", {"n": 1})
    await asyncio.sleep(5)
    second = await bgwork.queues.publish("jobs", {"n": 2}, idempotency_key="k2")
    assert (first.id, first.offset, first.duplicate) == ("msg_1", 0, False)
    assert (second.id, second.offset, second.duplicate) == ("msg_2", 1, False)
    assert first.published_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert second.published_at == dt.datetime(2026, 1, 1, 0, 0, 5, tzinfo=dt.UTC)
    assert [e.detail for e in qevents(bgwork, "publish")] == [
        {"queue": "jobs", "id": "msg_1", "key": None, "duplicate": False},
        {"queue": "jobs", "id": "msg_2", "key": "k2", "duplicate": False},
    ]


@pytest.mark.asyncio
async def test_a_queue_without_a_route_holds_messages_for_receive(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert bgwork.queues.stats("jobs")["pending"] == 1
    assert qevents(bgwork, "deliver") == []
    d = await bgwork.queues.receive("jobs")
    assert d is not None and d.payload == {"n": 1}


@pytest.mark.asyncio
async def test_unknown_queue_is_an_error_naming_the_fix(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    with pytest.raises(UnknownQueue) as info:
        await bgwork.queues.publish("job", {})
    assert str(info.value) == (
        "publish(name=...): queue 'job' does not exist (queues: 'jobs'); create it first with "
        "sim.queues.create('job')"
    )
    assert isinstance(info.value, LookupError)
    for call in (lambda: bgwork.queues.stats("nope"), lambda: bgwork.queues.dead_letters("nope"),
                 lambda: bgwork.queues.route("nope", lambda p, d: None)):
        with pytest.raises(UnknownQueue, match="queue 'nope' does not exist"):
            call()
    with pytest.raises(UnknownQueue, match=r"^receive\(name=...\): queue 'nope'"):
        await bgwork.queues.receive("nope")
    assert qevents(bgwork, "publish") == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("payload", "got"),
    [({"at": dt.datetime(2026, 1, 1)}, "got dict: Object of type datetime is not JSON"),
     ({1, 2}, "got set: Object of type set is not JSON serializable"),
     (b"bytes", "got bytes"),
     ({"x": math.nan}, "got dict: Out of range float values are not JSON compliant")],
)
async def test_non_json_payload_is_an_error(bgwork: bg.Simulation, payload: Any, got: str) -> None:
    bgwork.queues.create("jobs")
    with pytest.raises(TypeError) as info:
        await bgwork.queues.publish("jobs", payload)
    text = str(info.value)
    assert text.startswith("publish(payload=...) must be JSON-serialisable (dict, list, str, int, "
                           "float, bool, None); " + got)
    assert "Convert it first" in text
    assert bgwork.queues.stats("jobs")["published"] == 0


@pytest.mark.asyncio
async def test_payload_limit_is_one_mib_of_json(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    ok = await bgwork.queues.publish("jobs", "x" * (MAX_PAYLOAD - 2))  # + 2 quotes = 1 MiB
    assert ok.offset == 0
    with pytest.raises(ValueError) as info:
        await bgwork.queues.publish("jobs", "x" * (MAX_PAYLOAD - 1))
    assert str(info.value) == (
        "publish(payload=...) is 1048577 bytes as JSON; the limit is 1 MiB (1048576 bytes, "
        "profile 'agentuity'). "
        "Store large data elsewhere (a stream or KV) and publish its key."
    )
    with pytest.raises(ValueError, match="is 1048578 bytes as JSON"):  # UTF-8 bytes, not chars
        await bgwork.queues.publish("jobs", "é" * (MAX_PAYLOAD // 2))
    assert bgwork.queues.stats("jobs")["published"] == 1


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("delay", "expected"),
    [(-1, "publish(delay=...) must be a number of seconds >= 0 and at most 900; got -1. The "
          "queue delays delivery by at most 900 s (15 minutes)."),
     (900.5, "publish(delay=...) must be a number of seconds >= 0 and at most 900; got 900.5"),
     ("5", "publish(delay=...) must be a number of seconds >= 0 and at most 900; got '5'"),
     (True, "publish(delay=...) must be a number of seconds >= 0 and at most 900; got True"),
     (math.nan, "publish(delay=...) must be a number of seconds >= 0 and at most 900; got nan")],
)
async def test_bad_delay_is_an_error(bgwork: bg.Simulation, delay: Any, expected: str) -> None:
    bgwork.queues.create("jobs")
    with pytest.raises(ValueError) as info:
        await bgwork.queues.publish("jobs", {}, delay=delay)
    assert str(info.value).startswith(expected)
    assert bgwork.queues.messages("jobs") == []


@pytest.mark.asyncio
@pytest.mark.parametrize("arg", ["idempotency_key", "partition_key"])
async def test_keys_are_at_most_256_characters(bgwork: bg.Simulation, arg: str) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {}, **{arg: "k" * 256})
    for bad, got in (("k" * 257, "got 257 characters"), ("", "got 0 characters"), (7, "got 7")):
        with pytest.raises(ValueError) as info:
            await bgwork.queues.publish("jobs", {}, **{arg: bad})
        assert str(info.value).startswith(
            f"publish({arg}=...) must be a string of 1 to 256 characters (the queue's key limit, "
            f"profile 'agentuity') or None; {got}. Hash longer keys"
        )
    assert len(bgwork.queues.messages("jobs")) == 1


@pytest.mark.asyncio
async def test_metadata_is_a_json_copy(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    meta: dict[str, Any] = {"tenant": "t1", "tags": ["a"]}
    await bgwork.queues.publish("jobs", {}, metadata=meta)
    meta["tags"].append("b")
    [msg] = bgwork.queues.messages("jobs")
    assert msg.metadata == {"tenant": "t1", "tags": ["a"]}
    got = msg.metadata
    assert got is not None
    got["tenant"] = "changed"
    assert msg.metadata == {"tenant": "t1", "tags": ["a"]}
    with pytest.raises(TypeError, match=r"publish\(metadata=...\) must be a dict or None; got list"):
        await bgwork.queues.publish("jobs", {}, metadata=["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"publish\(metadata=...\) must be JSON-serialisable"):
        await bgwork.queues.publish("jobs", {}, metadata={"x": {1, 2}})


@pytest.mark.asyncio
async def test_payload_is_stored_as_a_json_copy_for_every_attempt(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", retry_delay=0)
    seen: list[Any] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        seen.append(payload)
        if delivery.attempt == 1:
            payload["steps"].append("mutated by attempt 1")
            raise RuntimeError("first attempt fails")

    bgwork.queues.route("jobs", handler)
    payload: dict[str, Any] = {"steps": ["a"], "pair": (1, 2)}
    await bgwork.queues.publish("jobs", payload)
    payload["steps"].append("mutated by the caller")
    await bgwork.run_until_idle()
    assert seen[1] == {"steps": ["a"], "pair": [1, 2]}  # what JSON makes of a tuple
    assert seen[0] is not seen[1]


# -- dedup ----------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_duplicate_publish_within_the_window_returns_the_first(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    calls: list[Any] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        calls.append(payload)

    bgwork.queues.route("jobs", handler)
    first = await bgwork.queues.publish("jobs", {"v": 1}, idempotency_key="job-1")
    await bgwork.advance(299)
    again = await bgwork.queues.publish("jobs", {"v": 2}, idempotency_key="job-1")
    await bgwork.run_until_idle()
    assert again.duplicate is True
    assert (again.id, again.offset, again.published_at) == (first.id, first.offset,
                                                             first.published_at)
    assert calls == [{"v": 1}]  # the first was acked long before: dedup holds (as SQS)
    assert [e.detail["duplicate"] for e in qevents(bgwork, "publish")] == [False, True]
    stats = bgwork.queues.stats("jobs")
    assert (stats["published"], stats["duplicates"], stats["acked"]) == (1, 1, 1)


@pytest.mark.asyncio
async def test_the_same_key_after_the_window_is_a_new_message(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", dedup_window=60)
    first = await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    await bgwork.advance(60)
    second = await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    third = await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    assert (second.duplicate, second.id) == (False, "msg_2")
    assert (third.duplicate, third.id) == (True, "msg_2")  # the window restarts at msg_2
    assert first.id == "msg_1"


@pytest.mark.asyncio
async def test_dedup_window_zero_turns_dedup_off(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", dedup_window=0)
    a = await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    b = await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    assert (a.id, b.id, b.duplicate) == ("msg_1", "msg_2", False)


@pytest.mark.asyncio
async def test_keys_are_per_queue(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("a")
    bgwork.queues.create("b")
    await bgwork.queues.publish("a", {}, idempotency_key="k")
    assert (await bgwork.queues.publish("b", {}, idempotency_key="k")).duplicate is False


# -- routed delivery --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_routed_handler_gets_payload_and_delivery_and_returning_acks(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs")
    got: list[tuple[Any, str, int, str]] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        attempt = current_attempt.get()
        assert attempt is not None
        got.append((payload, delivery.message.id, delivery.attempt, attempt.label))

    bgwork.queues.route("jobs", handler)
    res = await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert got == [({"n": 1}, res.id, 1, "jobs/msg_1#1")]
    assert bgwork.clock.monotonic() == 0.0  # the acked delivery left no visibility timer behind
    assert bgwork.loop.pending_timers() == []
    [deliver] = qevents(bgwork, "deliver")
    [ack] = qevents(bgwork, "ack")
    assert deliver.detail == {"queue": "jobs", "id": "msg_1", "attempt": 1}
    assert ack.detail == {"queue": "jobs", "id": "msg_1", "attempt": 1, "stale": False,
                          "deleted": True}
    assert deliver.attempt == ack.attempt == "jobs/msg_1#1"
    assert bgwork.queues.messages("jobs")[0].state == "acked"


@pytest.mark.asyncio
async def test_each_attempt_runs_in_a_fresh_context_like_a_worker_process(
    bgwork: bg.Simulation,
) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    seen: list[tuple[str, str | None]] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        attempt = current_attempt.get()
        seen.append((request_id.get(), attempt.label if attempt else None))

    bgwork.queues.create("jobs")
    bgwork.queues.route("jobs", handler)
    request_id.set("req-1")  # set by the publisher: a worker process would not see it
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert seen == [("-", "jobs/msg_1#1")]
    assert current_attempt.get() is None  # nothing leaked into the publisher


@pytest.mark.asyncio
async def test_a_hanging_attempt_is_kept_alive_not_garbage_collected(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=60)
    started: list[int] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        started.append(delivery.attempt)
        if delivery.attempt == 1:
            await asyncio.get_running_loop().create_future()  # nothing else refers to it

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()  # attempt 2 ran at 60 s; the queue forgot attempt 1's lease
    assert started == [1, 2]
    with warnings.catch_warnings():  # leftovers of other tests (unclosed loops) are not ours
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    live = [t for t in bgwork.loop.live_tasks() if t is not asyncio.current_task()]
    assert len(live) == 1, "attempt 1 was garbage-collected while it still ran"
    [hung] = live
    hung.cancel()  # the first attempt still hangs; end it before the test does
    await asyncio.gather(hung, return_exceptions=True)


@pytest.mark.asyncio
async def test_handler_may_ack_itself_and_is_not_acked_twice(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")

    async def handler(payload: Any, delivery: Delivery) -> None:
        await delivery.ack()
        with pytest.raises(DeliverySettled, match="was already acked; ack"):
            await delivery.ack()

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert len(qevents(bgwork, "ack")) == 1
    assert qevents(bgwork, "attempt_failed") == []


@pytest.mark.asyncio
async def test_route_after_publish_delivers_held_messages_in_order(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    for n in range(3):
        await bgwork.queues.publish("jobs", n)
    seen: list[int] = []

    async def handler(payload: int, delivery: Delivery) -> None:
        seen.append(payload)

    bgwork.queues.route("jobs", handler)
    await bgwork.run_until_idle()
    assert seen == [0, 1, 2]
    [route] = qevents(bgwork, "route")
    assert route.detail["destination"].startswith("handler test_route_after_publish")


@pytest.mark.asyncio
async def test_delay_holds_the_message_back(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    at: list[float] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        at.append(bgwork.clock.monotonic())

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {}, delay=900)
    await bgwork.queues.publish("jobs", {}, delay=0.5)
    await bgwork.advance(899)
    assert at == [0.5]
    assert bgwork.queues.stats("jobs")["pending"] == 1
    await bgwork.run_until_idle()
    assert at == [0.5, 900.0]


@pytest.mark.asyncio
async def test_handler_outliving_the_visibility_timeout_is_delivered_again_meanwhile(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=120)
    running: set[int] = set()
    overlap: list[tuple[float, int, set[int]]] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        overlap.append((bgwork.clock.monotonic(), delivery.attempt, set(running)))
        running.add(delivery.attempt)
        await asyncio.sleep(300 if delivery.attempt == 1 else 10)
        running.discard(delivery.attempt)

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"report": 7})
    await bgwork.run_until_idle()
    assert overlap == [(0.0, 1, set()), (120.0, 2, {1})]  # attempt 1 still running at 120 s
    assert [(e.t, e.detail["attempt"]) for e in qevents(bgwork, "visibility_expired")] == [
        (120.0, 1)]
    acks = [(e.t, e.detail["attempt"], e.detail["stale"], e.detail["deleted"])
            for e in qevents(bgwork, "ack")]
    assert acks == [(130.0, 2, False, True), (300.0, 1, True, False)]
    stats = bgwork.queues.stats("jobs")
    assert (stats["delivered"], stats["redelivered"], stats["stale_acks"]) == (2, 1, 1)


@pytest.mark.asyncio
async def test_stale_ack_deletes_nothing_by_default(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=10)
    await bgwork.queues.publish("jobs", {"n": 1})
    first = await bgwork.queues.receive("jobs")
    assert first is not None
    await bgwork.advance(10)
    assert first.expired
    await first.ack()
    [ack] = qevents(bgwork, "ack")
    assert (ack.detail["stale"], ack.detail["deleted"]) == (True, False)
    again = await bgwork.queues.receive("jobs")
    assert again is not None and (again.message.id, again.attempt) == ("msg_1", 2)


@pytest.mark.asyncio
async def test_stale_ack_deletes_when_the_queue_says_so(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=10, stale_ack="deletes")
    await bgwork.queues.publish("jobs", {"n": 1})
    first = await bgwork.queues.receive("jobs")
    assert first is not None
    await bgwork.advance(10)
    await first.ack()
    [ack] = qevents(bgwork, "ack")
    assert (ack.detail["stale"], ack.detail["deleted"]) == (True, True)
    assert await bgwork.queues.receive("jobs") is None
    assert bgwork.queues.stats("jobs")["acked"] == 1


@pytest.mark.asyncio
async def test_stale_ack_deletes_cancels_the_overlapping_attempts_lease(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=10, stale_ack="deletes")
    await bgwork.queues.publish("jobs", {})
    first = await bgwork.queues.receive("jobs")
    await bgwork.advance(10)
    second = await bgwork.queues.receive("jobs")
    assert first is not None and second is not None
    await first.ack()  # deletes the message although attempt 2 holds it
    await second.ack()
    assert [(e.detail["attempt"], e.detail["stale"], e.detail["deleted"])
            for e in qevents(bgwork, "ack")] == [(1, True, True), (2, True, False)]
    await bgwork.run_until_idle()
    assert qevents(bgwork, "visibility_expired", attempt=2) == []


# -- failures, retries, dead letters ----------------------------------------------------------------
@pytest.mark.asyncio
async def test_fourth_failure_of_a_max_retries_3_job_is_dead_lettered(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", max_retries=3)

    async def handler(payload: Any, delivery: Delivery) -> None:
        raise ValueError(f"bad report {payload['id']} (attempt {delivery.attempt})")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"id": 9})
    await bgwork.run_until_idle()
    assert [a for _, _, a in attempts_of(bgwork)] == [1, 2, 3, 4]
    assert len(qevents(bgwork, "retry")) == 3
    [dead] = bgwork.queues.dead_letters("jobs")
    assert (dead.id, dead.attempts, dead.state) == ("msg_1", 4, "dead")
    assert dead.last_error == "ValueError: bad report 9 (attempt 4)"
    assert dead.payload == {"id": 9}
    [event] = qevents(bgwork, "dead_letter")
    assert event.detail == {"queue": "jobs", "id": "msg_1", "attempts": 4}
    failed = qevents(bgwork, "attempt_failed")
    assert failed[0].detail == {"queue": "jobs", "id": "msg_1", "attempt": 1,
                                "error": "ValueError: bad report 9 (attempt 1)"}
    stats = bgwork.queues.stats("jobs")
    assert (stats["failed"], stats["retries"], stats["dead_letters"], stats["acked"]) == (4, 3, 1, 0)
    assert bgwork.loop.pending_timers() == []


@pytest.mark.asyncio
async def test_a_third_failure_of_max_retries_3_is_retried_and_can_succeed(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", max_retries=3)

    async def handler(payload: Any, delivery: Delivery) -> None:
        if delivery.attempt < 4:
            raise ConnectionError("flaky")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert bgwork.queues.dead_letters("jobs") == []
    assert bgwork.queues.stats("jobs")["acked"] == 1


@pytest.mark.asyncio
async def test_max_retries_zero_dead_letters_on_the_first_failure(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=0)

    async def handler(payload: Any, delivery: Delivery) -> None:
        raise RuntimeError("no")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert len(bgwork.queues.dead_letters("jobs")) == 1
    assert qevents(bgwork, "retry") == []


def test_default_backoff_is_exponential_1_to_60_seconds() -> None:
    assert [retry_backoff(n, 0.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_backoff(1, 0.999) == pytest.approx(1.4995)
    assert retry_backoff(6, 0.99) == pytest.approx(47.84)
    assert retry_backoff(7, 0.99) == BACKOFF_CAP


def test_retry_delays_shrink_to_plain_backoff_at_the_low_end_of_the_choice() -> None:
    sim = bg.Simulation(seed=3, choices=ZeroChoices())

    async def scenario() -> None:
        sim.queues.create("jobs", max_retries=8, visibility_timeout=600)

        async def handler(payload: Any, delivery: Delivery) -> None:
            raise RuntimeError("always")

        sim.queues.route("jobs", handler)
        await sim.queues.publish("jobs", {})
        await sim.run_until_idle()

    with sim:
        sim.run(scenario())
        delays = [e.detail["delay"] for e in sim.history.filter("queue", "retry")]
        starts = [e.t for e in sim.history.filter("queue", "deliver")]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert starts == [0, 1, 3, 7, 15, 31, 63, 123, 183]


def _jittered_run(seed: int) -> tuple[list[float], str]:
    sim = bg.Simulation(seed=seed)

    async def scenario() -> None:
        sim.queues.create("jobs", max_retries=7)

        async def handler(payload: Any, delivery: Delivery) -> None:
            raise RuntimeError("always")

        sim.queues.route("jobs", handler)
        await sim.queues.publish("jobs", {})
        await sim.run_until_idle()

    with sim:
        sim.run(scenario())
        return [e.detail["delay"] for e in sim.history.filter("queue", "retry")], \
            sim.history.digest()


def test_default_retry_delays_have_seeded_jitter() -> None:
    delays, digest = _jittered_run(11)
    for n, delay in enumerate(delays, start=1):
        base = min(60.0, 2.0 ** (n - 1))
        assert base <= delay <= min(60.0, base * 1.5), (n, delay)
    assert any(d != min(60.0, 2.0 ** n) for n, d in enumerate(delays))  # some jitter happened
    assert _jittered_run(11) == (delays, digest)  # same seed, same schedule, same history
    assert _jittered_run(12)[0] != delays


@pytest.mark.asyncio
async def test_fixed_retry_delay(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=2, retry_delay=5)

    async def handler(payload: Any, delivery: Delivery) -> None:
        raise RuntimeError("x")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert [t for t, _, _ in attempts_of(bgwork)] == [0, 5, 10]
    assert [e.detail for e in qevents(bgwork, "retry")] == [
        {"queue": "jobs", "id": "msg_1", "attempt": 2, "delay": 5.0},
        {"queue": "jobs", "id": "msg_1", "attempt": 3, "delay": 5.0},
    ]


@pytest.mark.asyncio
async def test_a_lapsed_last_attempt_is_dead_lettered(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=1, visibility_timeout=10)
    never = asyncio.Event()

    async def handler(payload: Any, delivery: Delivery) -> None:
        await never.wait()

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.advance(25)
    [dead] = bgwork.queues.dead_letters("jobs")
    assert dead.last_error == "visibility timeout (10s)"
    assert [e.t for e in qevents(bgwork, "visibility_expired")] == [10, 20]
    assert qevents(bgwork, "dead_letter")[0].t == 20
    assert bgwork.loop.pending_timers() == []
    never.set()
    await bgwork.run_until_idle()
    assert [e.detail["stale"] for e in qevents(bgwork, "ack")] == [True, True]


@pytest.mark.asyncio
async def test_a_failure_after_the_lease_lapsed_is_stale_and_not_retried(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=10, retry_delay=0)

    async def handler(payload: Any, delivery: Delivery) -> None:
        if delivery.attempt == 1:
            await asyncio.sleep(15)
            raise RuntimeError("late failure")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    [failed] = qevents(bgwork, "attempt_failed")
    assert failed.detail["stale"] is True
    assert qevents(bgwork, "retry") == []
    assert len(qevents(bgwork, "deliver")) == 2


# -- FIFO per partition key -----------------------------------------------------------------------
@pytest.mark.asyncio
async def test_partition_key_holds_later_messages_until_the_earlier_is_done(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", retry_delay=3)
    log: list[tuple[float, str, int]] = []

    async def handler(payload: str, delivery: Delivery) -> None:
        log.append((bgwork.clock.monotonic(), payload, delivery.attempt))
        if payload == "a1" and delivery.attempt == 1:
            raise RuntimeError("a1 fails once")
        await asyncio.sleep(1)

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", "a1", partition_key="account-a")
    await bgwork.queues.publish("jobs", "a2", partition_key="account-a")
    await bgwork.queues.publish("jobs", "b1", partition_key="account-b")
    await bgwork.queues.publish("jobs", "free")
    await bgwork.run_until_idle()
    assert log == [(0, "a1", 1), (0, "b1", 1), (0, "free", 1), (3, "a1", 2), (4, "a2", 1)]


@pytest.mark.asyncio
async def test_a_dead_lettered_head_releases_its_partition(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=0)
    log: list[str] = []

    async def handler(payload: str, delivery: Delivery) -> None:
        log.append(payload)
        if payload == "a1":
            raise RuntimeError("poison")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", "a1", partition_key="a")
    await bgwork.queues.publish("jobs", "a2", partition_key="a")
    await bgwork.run_until_idle()
    assert log == ["a1", "a2"]
    assert [m.payload for m in bgwork.queues.dead_letters("jobs")] == ["a1"]


@pytest.mark.asyncio
async def test_receive_skips_a_partition_whose_earlier_message_is_in_flight(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", "a1", partition_key="a")
    await bgwork.queues.publish("jobs", "a2", partition_key="a")
    await bgwork.queues.publish("jobs", "b1", partition_key="b")
    first = await bgwork.queues.receive("jobs")
    second = await bgwork.queues.receive("jobs")
    assert first is not None and second is not None
    assert (first.payload, second.payload) == ("a1", "b1")
    assert await bgwork.queues.receive("jobs") is None
    await first.ack()
    third = await bgwork.queues.receive("jobs")
    assert third is not None and third.payload == "a2"


# -- pull consumer --------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_receive_ack_and_nack(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=1)
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.queues.publish("jobs", {"n": 1})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    assert (d.queue, d.attempt, d.message.id, d.payload, d.message.offset) == (
        "jobs", 1, "msg_1", {"n": 1}, 0)
    assert await bgwork.queues.receive("jobs") is None  # invisible while in flight
    await d.nack(delay=5)
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.advance(5)
    d2 = await bgwork.queues.receive("jobs")
    assert d2 is not None and d2.attempt == 2
    with pytest.raises(DeliverySettled, match="was already nacked"):
        await d.ack()
    await d2.nack()  # the second nack spends the last attempt
    assert [m.id for m in bgwork.queues.dead_letters("jobs")] == ["msg_1"]
    assert [e.detail for e in qevents(bgwork, "nack")] == [
        {"queue": "jobs", "id": "msg_1", "attempt": 1, "delay": 5.0},
        {"queue": "jobs", "id": "msg_1", "attempt": 2, "delay": 0.0},
    ]
    assert bgwork.queues.stats("jobs")["nacked"] == 2


@pytest.mark.asyncio
async def test_nack_delay_is_checked(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    for bad in (-1, 901):
        with pytest.raises(ValueError, match=r"^nack\(delay=...\) must be a number of seconds "
                                             r">= 0 and at most 900; got -?9?\d+"):
            await d.nack(delay=bad)
    assert d.settled is None


@pytest.mark.asyncio
async def test_unacked_pull_delivery_is_visible_again_after_the_timeout(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {})
    assert await bgwork.queues.receive("jobs") is not None
    await bgwork.advance(29.5)
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.advance(0.5)
    again = await bgwork.queues.receive("jobs")
    assert again is not None and again.attempt == 2


@pytest.mark.asyncio
async def test_receive_on_a_routed_queue_is_an_error(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")

    async def handler(payload: Any, delivery: Delivery) -> None: ...

    bgwork.queues.route("jobs", handler)
    with pytest.raises(ValueError, match=r"receive\('jobs'\): the queue routes to handler .*"
                                         r"receive\(\) is the pull consumer"):
        await bgwork.queues.receive("jobs")


# -- route errors ---------------------------------------------------------------------------------
def test_route_errors_name_the_argument(bgwork: bg.Simulation) -> None:
    queues = bgwork.queues
    queues.create("jobs")

    async def handler(payload: Any, delivery: Delivery) -> None: ...

    def sync_handler(payload: Any, delivery: Delivery) -> None: ...

    with pytest.raises(TypeError, match=r"needs exactly one destination: a handler, app= with "
                                        r"path=, or url=; got none"):
        queues.route("jobs")
    with pytest.raises(TypeError, match=r"exactly one destination.*got handler, url"):
        queues.route("jobs", handler, url="https://x.example/")
    with pytest.raises(TypeError, match=r"needs an async callable `async def handler\(payload, "
                                        r"delivery\)`; got test_route_errors_name_the_argument."
                                        r"<locals>.sync_handler, which is not async"):
        queues.route("jobs", sync_handler)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"route\(path=...\) goes with app=; got path='/x'"):
        queues.route("jobs", handler, path="/x")
    with pytest.raises(ValueError, match=r"needs the path to POST to, starting with '/', e.g. "
                                         r"'/api/workers/jobs'; got 'x'"):
        queues.route("jobs", app=object(), path="x")
    with pytest.raises(ValueError, match=r"route\('jobs', url=...\) needs an http\(s\) URL"):
        queues.route("jobs", url="ftp://x")
    queues.route("jobs", handler)
    with pytest.raises(ValueError) as info:
        queues.route("jobs", url="https://app.example/w")
    assert str(info.value) == (
        "route('jobs', ...): the queue already routes to handler "
        "test_route_errors_name_the_argument.<locals>.handler; a queue has one destination, "
        "set it once."
    )


def test_an_instance_with_an_async_call_is_a_handler(bgwork: bg.Simulation) -> None:
    class Worker:
        async def __call__(self, payload: Any, delivery: Delivery) -> None: ...

    bgwork.queues.create("jobs")
    bgwork.queues.route("jobs", Worker())
    assert qevents(bgwork, "route")[0].detail["destination"].startswith("handler ")


# -- faults -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_crash_at_deliver_is_not_a_failure_and_redelivers_after_the_timeout(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=60)
    ran: list[int] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        ran.append(delivery.attempt)

    bgwork.queues.route("jobs", handler)
    bgwork.faults.crash("jobs", at="queue.deliver", on_call=1)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert ran == [2]
    [crash] = qevents(bgwork, "crashed")
    assert (crash.t, crash.detail) == (0, {"queue": "jobs", "id": "msg_1", "attempt": 1})
    assert crash.attempt == "jobs/msg_1#1"
    assert qevents(bgwork, "attempt_failed") == []
    assert [(e.t, e.detail["attempt"]) for e in qevents(bgwork, "deliver")] == [(0, 1), (60, 2)]
    assert bgwork.queues.stats("jobs")["crashed"] == 1


@pytest.mark.asyncio
async def test_crash_inside_the_handler_runs_no_finally_and_acks_nothing(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    bgwork.queues.create("audit")
    notes: list[str] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        try:
            await bgwork.queues.publish("audit", {"attempt": delivery.attempt})
            notes.append(f"published in {delivery.attempt}")
        finally:
            notes.append(f"finally {delivery.attempt}")

    bgwork.queues.route("jobs", handler)
    bgwork.faults.crash("jobs", at="queue.publish", on_call=1)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert notes == ["published in 2", "finally 2"]
    assert [e.detail["attempt"] for e in qevents(bgwork, "ack")] == [2]
    assert len(qevents(bgwork, "crashed")) == 1


@pytest.mark.asyncio
async def test_process_crashed_escaping_a_handler_is_a_crash_not_a_failure(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=5)

    async def handler(payload: Any, delivery: Delivery) -> None:
        if delivery.attempt == 1:
            raise ProcessCrashed()

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert len(qevents(bgwork, "crashed")) == 1
    assert qevents(bgwork, "attempt_failed") == []
    assert [e.t for e in qevents(bgwork, "deliver")] == [0, 5]


@pytest.mark.asyncio
async def test_fail_at_deliver_is_a_failed_attempt(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", retry_delay=2)
    ran: list[int] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        ran.append(delivery.attempt)

    bgwork.queues.route("jobs", handler)
    bgwork.faults.fail("queue.deliver", on_call=1, error=TimeoutError("worker unreachable"))
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert ran == [2]
    [failed] = qevents(bgwork, "attempt_failed")
    assert failed.detail["error"] == "TimeoutError: worker unreachable"
    assert qevents(bgwork, "retry")[0].detail["delay"] == 2


@pytest.mark.asyncio
async def test_hang_fault_makes_attempts_overlap(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=120)
    ran: list[tuple[float, int]] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        ran.append((bgwork.clock.monotonic(), delivery.attempt))

    bgwork.queues.route("jobs", handler)
    bgwork.faults.hang("jobs", seconds=300)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert ran == [(120, 2), (300, 1)]
    assert [e.detail["stale"] for e in qevents(bgwork, "ack")] == [False, True]


@pytest.mark.asyncio
async def test_delay_fault_at_deliver(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    ran: list[float] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        ran.append(bgwork.clock.monotonic())

    bgwork.queues.route("jobs", handler)
    bgwork.faults.delay("queue.deliver", seconds=7)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert ran == [7]


@pytest.mark.asyncio
async def test_fail_at_publish_raises_and_enqueues_nothing(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    bgwork.faults.fail("queue.publish", on_call=1, error=ConnectionError("queue down"))
    with pytest.raises(ConnectionError, match="queue down"):
        await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    [event] = qevents(bgwork, "publish")
    assert (event.outcome, event.detail["id"], event.detail["key"]) == ("fail", None, "k")
    assert bgwork.queues.messages("jobs") == []
    retry = await bgwork.queues.publish("jobs", {}, idempotency_key="k")
    assert retry.duplicate is False  # the failed publish never reached the dedup table


@pytest.mark.asyncio
async def test_fail_after_apply_at_publish_enqueues_and_records_unknown(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs")
    bgwork.faults.fail("queue.publish", on_call=1, after_apply=True, error=TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    [event] = qevents(bgwork, "publish")
    assert (event.outcome, event.detail["id"]) == ("unknown", "msg_1")
    again = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    assert (again.duplicate, again.id) == (True, "msg_1")  # the caller's retry is deduped


@pytest.mark.asyncio
async def test_fail_at_auto_ack_leaves_the_message_to_lapse_and_redeliver(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    ran: list[int] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        ran.append(delivery.attempt)

    bgwork.queues.route("jobs", handler)
    bgwork.faults.fail("queue.ack", on_call=1, error=ConnectionError("ack lost"))
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert ran == [1, 2]
    assert [(e.outcome, e.detail["attempt"]) for e in qevents(bgwork, "ack")] == [
        ("fail", 1), ("ok", 2)]
    assert qevents(bgwork, "ack")[0].detail["error"] == "ConnectionError('ack lost')"
    assert qevents(bgwork, "deliver")[1].t == 30


@pytest.mark.asyncio
async def test_fail_after_apply_at_ack_deletes_and_records_unknown(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    await bgwork.queues.publish("jobs", {})
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    bgwork.faults.fail("queue.ack", on_call=1, after_apply=True, error=TimeoutError("late"))
    with pytest.raises(TimeoutError):
        await d.ack()
    [ack] = qevents(bgwork, "ack")
    assert (ack.outcome, ack.detail["deleted"]) == ("unknown", True)
    assert bgwork.queues.stats("jobs")["acked"] == 1


@pytest.mark.asyncio
async def test_duplicate_fault_delivers_each_copy_after_the_previous_finished(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", max_retries=0)
    running: list[int] = []
    log: list[tuple[float, int, int]] = []

    async def handler(payload: Any, delivery: Delivery) -> None:
        log.append((bgwork.clock.monotonic(), delivery.attempt, len(running)))
        running.append(1)
        await asyncio.sleep(2)
        running.pop()

    bgwork.queues.route("jobs", handler)
    bgwork.faults.duplicate("jobs", times=3)
    await bgwork.queues.publish("jobs", {"order": 1})
    await bgwork.run_until_idle()
    assert log == [(0, 1, 0), (2, 2, 0), (4, 3, 0)]
    assert [e.detail.get("copy") for e in qevents(bgwork, "deliver")] == [None, 2, 3]
    assert len(bgwork.history.filter("fault", "duplicate")) == 1
    stats = bgwork.queues.stats("jobs")
    assert (stats["delivered"], stats["acked"], stats["dead_letters"]) == (3, 1, 0)


@pytest.mark.asyncio
async def test_duplicate_fault_on_one_publish_only(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    seen: list[int] = []

    async def handler(payload: int, delivery: Delivery) -> None:
        seen.append(payload)

    bgwork.queues.route("jobs", handler)
    bgwork.faults.duplicate("jobs", times=2, on_call=2)
    for n in (1, 2, 3):
        await bgwork.queues.publish("jobs", n)
    await bgwork.run_until_idle()
    assert sorted(seen) == [1, 2, 2, 3]


# -- snapshot, stats, determinism -------------------------------------------------------------------
@pytest.mark.asyncio
async def test_snapshot_and_restore_bring_back_messages_dedup_and_counters(
    bgwork: bg.Simulation,
) -> None:
    queues = bgwork.queues
    queues.create("jobs", visibility_timeout=10)
    await queues.publish("jobs", {"n": 1}, idempotency_key="k1")
    await queues.publish("jobs", {"n": 2}, delay=50)
    held = await queues.receive("jobs")
    assert held is not None
    state = queues._snapshot()
    before = queues.stats("jobs")

    await queues.publish("jobs", {"n": 3}, idempotency_key="k3")
    queues.create("other")
    assert queues.stats("jobs") != before

    queues._restore(state)
    assert queues.names() == ["jobs"]
    assert queues.stats("jobs") == before
    assert [(m.id, m.state) for m in queues.messages("jobs")] == [("msg_1", "in_flight"),
                                                                   ("msg_2", "delayed")]
    assert (await queues.publish("jobs", {}, idempotency_key="k1")).duplicate is True
    assert (await queues.publish("jobs", {}, idempotency_key="k3")).duplicate is False
    await bgwork.advance(10)  # msg_1's lease (taken before the snapshot) still lapses
    again = await queues.receive("jobs")
    assert again is not None and (again.message.id, again.attempt) == ("msg_1", 2)
    await held.ack()  # the pre-restore delivery is stale now
    assert qevents(bgwork, "ack")[-1].detail["stale"] is True


@pytest.mark.asyncio
async def test_restore_keeps_the_route_and_delivers_ready_messages(bgwork: bg.Simulation) -> None:
    queues = bgwork.queues
    queues.create("jobs")
    await queues.publish("jobs", "early")
    state = queues._snapshot()
    seen: list[str] = []

    async def handler(payload: str, delivery: Delivery) -> None:
        seen.append(payload)

    queues.route("jobs", handler)
    await bgwork.run_until_idle()
    queues._restore(state)
    await bgwork.run_until_idle()
    assert seen == ["early", "early"]


@pytest.mark.asyncio
async def test_stats_keys(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    assert bgwork.queues.stats("jobs") == {
        "published": 0, "duplicates": 0, "delivered": 0, "redelivered": 0, "failed": 0,
        "nacked": 0, "retries": 0, "visibility_expired": 0, "expired": 0, "crashed": 0,
        "stale_acks": 0, "extended": 0, "acked": 0,
        "dead_letters": 0, "in_flight": 0, "pending": 0,
    }
    assert bgwork.stats()["deliveries"] == 0


@pytest.mark.asyncio
async def test_simulation_stats_count_deliveries_and_dead_letters(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=1, retry_delay=0)

    async def handler(payload: Any, delivery: Delivery) -> None:
        raise RuntimeError("x")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    stats = bgwork.stats()
    assert (stats["deliveries"], stats["redeliveries"], stats["dead_letters"]) == (2, 1, 1)


# -- the fixture, through pytester ----------------------------------------------------------------
def test_bg_queues_fixture_in_a_user_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_job_runs_once(bgwork, bg_queues):
            bg_queues.create("report-jobs", max_retries=3, visibility_timeout=120)
            done = []

            async def handler(payload, delivery):
                done.append((payload["job"], delivery.attempt))

            bg_queues.route("report-jobs", handler)
            res = await bg_queues.publish("report-jobs", {"job": "j1"}, idempotency_key="j1")
            dup = await bg_queues.publish("report-jobs", {"job": "j1"}, idempotency_key="j1")
            await bgwork.run_until_idle()
            assert dup.duplicate and dup.id == res.id
            assert done == [("j1", 1)]
            assert bg_queues is bgwork.queues

        @pytest.mark.asyncio
        async def test_failing_shows_the_timeline(bgwork, bg_queues):
            bg_queues.create("report-jobs", max_retries=1, retry_delay=0)

            async def handler(payload, delivery):
                raise RuntimeError("boom")

            bg_queues.route("report-jobs", handler)
            await bg_queues.publish("report-jobs", {"job": "j2"})
            await bgwork.run_until_idle()
            assert bg_queues.dead_letters("report-jobs") == []
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*bgwork timeline*",
        "*queue.attempt_failed*queue=report-jobs id=msg_1 attempt=1 error=RuntimeError: boom*",
        "*queue.dead_letter*queue=report-jobs id=msg_1 attempts=2*",
    ])
