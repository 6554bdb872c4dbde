"""The services as a user reads their docs: queues, KV, streams, waitUntil, the task manager, schedules,
webhooks and tasks, each from its documented names and rules alone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import httpx
import pytest
import respx

import pytest_bgwork as bg

# -- queues --------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_publish_returns_id_offset_time_duplicate(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("report-jobs", max_retries=3, visibility_timeout=120, retry_delay=0, dedup_window=300)
    res = await bgwork.queues.publish("report-jobs", {"job": "j1"}, idempotency_key="j1",
                                      partition_key=None, metadata=None, delay=0)
    assert res.id
    assert isinstance(res.offset, int)
    assert res.published_at is not None
    assert res.duplicate is False
    again = await bgwork.queues.publish("report-jobs", {"job": "j1"}, idempotency_key="j1")
    assert again.duplicate is True
    assert again.id == res.id
    assert bgwork.queues.stats("report-jobs")  # a dict of counts


@pytest.mark.asyncio
async def test_dedup_window_holds_after_ack_and_expires(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", dedup_window=300)
    first = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    d = await bgwork.queues.receive("jobs")
    assert d is not None
    await d.ack()
    again = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    assert again.duplicate and again.id == first.id
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.advance(301)
    later = await bgwork.queues.publish("jobs", {"n": 1}, idempotency_key="k")
    assert later.duplicate is False and later.id != first.id


@pytest.mark.asyncio
async def test_route_handler_receives_payload_and_delivery(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("report-jobs")
    got: list[tuple[Any, int]] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        got.append((payload, delivery.attempt))

    bgwork.queues.route("report-jobs", handler)
    await bgwork.queues.publish("report-jobs", {"job": "j1"})
    await bgwork.run_until_idle()
    assert got == [({"job": "j1"}, 1)]
    bg.assert_nothing_lost(bgwork)


@pytest.mark.asyncio
async def test_receive_ack_nack_attempt_message(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", retry_delay=0)
    assert await bgwork.queues.receive("jobs") is None
    await bgwork.queues.publish("jobs", {"n": 1})
    d = await bgwork.queues.receive("jobs")
    assert d is not None and d.attempt == 1
    assert d.message.payload == {"n": 1}
    await d.nack(delay=0)
    d2 = await bgwork.queues.receive("jobs")
    assert d2 is not None and d2.attempt == 2
    await d2.ack()
    assert await bgwork.queues.receive("jobs") is None


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::pytest_bgwork.LeftoverWorkWarning")  # the slow attempts are the point
async def test_visibility_timeout_redelivers_while_first_still_running(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", visibility_timeout=30)
    running: list[int] = []
    overlap: list[bool] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        overlap.append(bool(running))
        running.append(delivery.attempt)
        await asyncio.sleep(100)
        running.remove(delivery.attempt)

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.advance(60)
    assert any(overlap)  # attempt 2 started while attempt 1 was still running


@pytest.mark.asyncio
async def test_max_retries_then_dead_letter(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=3, retry_delay=0)
    attempts: list[int] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        attempts.append(delivery.attempt)
        raise RuntimeError("always fails")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert attempts == [1, 2, 3, 4]
    dead = bgwork.queues.dead_letters("jobs")
    assert len(dead) == 1
    bg.assert_nothing_lost(bgwork)  # dead-lettered counts as accounted for


@pytest.mark.asyncio
async def test_default_queue_settings(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs")
    attempts: list[float] = []

    async def handler(payload: Any, delivery: bg.Delivery) -> None:
        attempts.append(bgwork.clock.monotonic())
        raise RuntimeError("no")

    bgwork.queues.route("jobs", handler)
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()
    assert len(attempts) == 6  # max_retries=5: six attempts
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(0.5 <= g <= 120 for g in gaps), gaps
    assert gaps[-1] > gaps[0]  # exponential


@pytest.mark.asyncio
async def test_app_destination_posts_and_2xx_acks(bgwork: bg.Simulation) -> None:
    seen: list[bytes] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        assert scope["method"] == "POST" and scope["path"] == "/api/workers/report-jobs"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        seen.append(body)
        status = 200 if len(seen) > 1 else 500
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    bgwork.queues.create("report-jobs", retry_delay=0)
    bgwork.queues.route("report-jobs", app=app, path="/api/workers/report-jobs")
    await bgwork.queues.publish("report-jobs", {"job": "j1"})
    await bgwork.run_until_idle()
    assert len(seen) == 2  # the 500 was a failed attempt, the 200 acked
    assert b"j1" in seen[0]
    bg.assert_nothing_lost(bgwork)


@pytest.mark.asyncio
async def test_url_destination_through_respx(bgwork: bg.Simulation) -> None:
    with respx.mock:
        route = respx.post("https://app.example/api/workers/report-jobs").mock(return_value=httpx.Response(204))
        bgwork.queues.create("report-jobs")
        bgwork.queues.route("report-jobs", url="https://app.example/api/workers/report-jobs")
        await bgwork.queues.publish("report-jobs", {"job": "j1"})
        await bgwork.run_until_idle()
        assert route.call_count == 1
    bg.assert_nothing_lost(bgwork)


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda q: q.publish("nope", {"a": 1}), ["nope"]),
        (lambda q: q.publish("jobs", {1, 2}), ["JSON"]),
        (lambda q: q.publish("jobs", {"a": 1}, delay=-1), ["delay"]),
        (lambda q: q.publish("jobs", {"a": 1}, delay=901), ["delay", "900"]),
        (lambda q: q.publish("jobs", "x" * (1024 * 1024 + 1)), ["MiB"]),
        (lambda q: q.publish("jobs", {"a": 1}, idempotency_key="k" * 257), ["256"]),
        (lambda q: q.publish("jobs", {"a": 1}, partition_key="k" * 257), ["256"]),
    ],
)
@pytest.mark.asyncio
async def test_publish_refusals_name_the_limit(bgwork: bg.Simulation, call: Any, words: list[str]) -> None:
    bgwork.queues.create("jobs")
    with pytest.raises(Exception) as info:
        await call(bgwork.queues)
    assert not isinstance(info.value, AssertionError)
    for word in words:
        assert word.lower() in str(info.value).lower(), (word, str(info.value))


@pytest.mark.asyncio
@pytest.mark.parametrize("name", ["Bad-Name", "1jobs", "a" * 257, "has space"])
async def test_queue_names_are_checked(bgwork: bg.Simulation, name: str) -> None:
    with pytest.raises(ValueError):
        bgwork.queues.create(name)
    bgwork.queues.create("_ok-name_1")
    bgwork.queues.create("a" * 256)


@pytest.mark.asyncio
async def test_unknown_queue_error_is_exported(bgwork: bg.Simulation) -> None:
    with pytest.raises(bg.UnknownQueue):
        await bgwork.queues.publish("missing", {"a": 1})


# -- KV ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_kv_set_get_delete_keys_history(bgwork: bg.Simulation) -> None:
    value = {"kind": "queued"}
    await bgwork.kv.set("report-status", "job-1", value, ttl=None)
    value["kind"] = "mutated"  # stored as a copy
    r = await bgwork.kv.get("report-status", "job-1")
    assert r.exists and r.data == {"kind": "queued"}
    r.data["kind"] = "mutated-too"
    assert (await bgwork.kv.get("report-status", "job-1")).data == {"kind": "queued"}
    await bgwork.advance(5)
    await bgwork.kv.set("report-status", "job-1", {"kind": "done"})
    await bgwork.kv.set("report-status", "job-2", {"kind": "queued"})
    await bgwork.kv.set("report-status", "other", {"kind": "queued"})
    assert sorted(await bgwork.kv.keys("report-status", prefix="job-")) == ["job-1", "job-2"]
    assert sorted(await bgwork.kv.keys("report-status")) == ["job-1", "job-2", "other"]
    hist = bgwork.kv.history("report-status", "job-1")
    assert len(hist) == 2
    assert "queued" in repr(hist[0]) and "done" in repr(hist[1])
    await bgwork.kv.delete("report-status", "job-1")
    missing = await bgwork.kv.get("report-status", "job-1")
    assert not missing.exists and missing.data is None


@pytest.mark.asyncio
async def test_kv_ttl_expires_in_virtual_time(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("cache", "k", {"v": 1}, ttl=120)
    await bgwork.advance(119)
    assert (await bgwork.kv.get("cache", "k")).exists
    await bgwork.advance(2)
    assert not (await bgwork.kv.get("cache", "k")).exists


@pytest.mark.asyncio
async def test_kv_result_type_is_exported(bgwork: bg.Simulation) -> None:
    r = await bgwork.kv.get("ns", "nothing")
    assert isinstance(r, bg.KVResult)


# -- streams -------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_write_close_read(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("monthly-reports", content_type="text/csv", metadata={"m": "1"}, ttl=90 * 86400)
    assert s.id and s.url
    await s.write("a,b\n")
    assert s in bgwork.streams.open_streams()
    assert await bgwork.streams.read(s.url) == b"a,b\n"
    await s.close()
    assert s.closed
    assert s not in bgwork.streams.open_streams()
    with pytest.raises(bg.StreamClosed):
        await s.write("late\n")
    bg.assert_streams_closed(bgwork)


@pytest.mark.asyncio
async def test_reading_an_open_stream_is_partial(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("exports")
    await s.write("half")
    assert await bgwork.streams.read(s.url) == b"half"
    assert "partial" in bgwork.history.timeline()
    await s.close()


@pytest.mark.asyncio
async def test_stream_async_with_closes(bgwork: bg.Simulation) -> None:
    async with await bgwork.streams.create("exports", content_type="text/plain") as s:
        await s.write(b"hello")
    assert s.closed
    assert await bgwork.streams.read(s.url) == b"hello"


@pytest.mark.asyncio
async def test_stream_after_close_drop_records_the_bytes(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("exports", after_close="drop")
    await s.close()
    await s.write("lost bytes")  # no error, like Agentuity
    assert await bgwork.streams.read(s.url) == b""
    assert "drop" in bgwork.history.timeline().lower()


@pytest.mark.asyncio
async def test_stream_default_ttl_is_30_days(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("exports")
    await s.write("x")
    await s.close()
    await bgwork.advance(29 * 86400)
    assert await bgwork.streams.read(s.url) == b"x"
    await bgwork.advance(2 * 86400)
    with pytest.raises(Exception):  # noqa: B017 - expired or not found; the docs name neither
        await bgwork.streams.read(s.url)


# -- waitUntil runtime ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_wait_until_starts_at_once_and_drains(bgwork: bg.Simulation) -> None:
    started: list[float] = []

    async def send_email() -> None:
        started.append(bgwork.clock.monotonic())
        await asyncio.sleep(10)

    t0 = bgwork.clock.monotonic()
    bgwork.runtime.wait_until(send_email())
    bgwork.runtime.wait_until(send_email)  # a function works too
    assert len(bgwork.runtime.pending) == 2
    await bgwork.runtime.drain(timeout=None)
    assert started == [t0, t0]
    assert bgwork.clock.monotonic() - t0 == pytest.approx(10)  # concurrent
    assert not bgwork.runtime.pending
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_request_response_time_excludes_wait_until(bgwork: bg.Simulation) -> None:
    async def send_email() -> None:
        await asyncio.sleep(50)

    t0 = bgwork.clock.monotonic()
    async with bgwork.runtime.request("checkout") as ctx:
        ctx.wait_until(send_email())
        await asyncio.sleep(1)
    assert bgwork.clock.monotonic() - t0 == pytest.approx(1)
    await bgwork.runtime.drain()


@pytest.mark.asyncio
async def test_failing_task_recorded_not_raised(bgwork: bg.Simulation) -> None:
    async def bad() -> None:
        raise ValueError("smtp down")

    async def good() -> None:
        await asyncio.sleep(1)

    bgwork.runtime.wait_until(bad())
    bgwork.runtime.wait_until(good())
    await bgwork.runtime.drain()
    assert len(bgwork.runtime.errors) == 1
    assert "smtp down" in repr(bgwork.runtime.errors[0])


@pytest.mark.asyncio
async def test_wait_until_after_shutdown_raises(bgwork: bg.Simulation) -> None:
    async def slow() -> None:
        await asyncio.sleep(100)

    bgwork.runtime.wait_until(slow())
    shutting = asyncio.ensure_future(bgwork.runtime.shutdown(grace=30))
    await asyncio.sleep(0)
    with pytest.raises(bg.RuntimeShuttingDown):
        bgwork.runtime.wait_until(slow())
    t0 = bgwork.clock.monotonic()
    await shutting
    assert bgwork.clock.monotonic() - t0 <= 30 + 1e-6
    assert "slow" in bgwork.history.timeline()  # what was cut off is recorded


@pytest.mark.asyncio
async def test_shutdown_late_drop(bgwork: bg.Simulation) -> None:
    async def slow() -> None:
        await asyncio.sleep(1)

    shutting = asyncio.ensure_future(bgwork.runtime.shutdown(grace=30, late="drop"))
    await asyncio.sleep(0)
    bgwork.runtime.wait_until(slow())  # dropped, not raised
    await shutting


# -- BackgroundTaskManager -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_task_manager_shape(bgwork: bg.Simulation) -> None:
    m = bg.BackgroundTaskManager(default_shutdown_timeout=30.0, max_pending_tasks=1000)

    async def work(n: int) -> int:
        await asyncio.sleep(n)
        return n

    t = m.create_task(work(5), name="five", timeout=None, context={"order": "o1"})
    assert t is not None
    assert m.get_task_count() == 1
    [info] = m.get_task_info()
    for key in ["name", "age_seconds", "timeout", "context", "done", "cancelled"]:
        assert key in info, key
    assert info["name"] == "five" and info["context"] == {"order": "o1"}
    await m.wait_for_all(timeout=None, return_exceptions=False)
    assert m.get_task_count() == 0
    result = await m.shutdown(timeout=None)
    assert result["status"] == "completed"
    for key in ["initial_tasks", "completed_tasks", "remaining_tasks", "duration_seconds"]:
        assert key in result, key
    again = await m.shutdown()
    assert again["status"] == "already_shutdown"


@pytest.mark.asyncio
async def test_task_manager_on_sim(bgwork: bg.Simulation) -> None:
    m = bgwork.task_manager
    m.create_task(asyncio.sleep(1), name="one")
    assert m.get_task_count() == 1
    await m.wait_for_all()


@pytest.mark.asyncio
async def test_task_manager_cap_drops_and_closes(bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    m = bg.BackgroundTaskManager(max_pending_tasks=1)
    m.create_task(asyncio.sleep(10))
    coro = asyncio.sleep(10)
    assert m.create_task(coro) is None
    assert coro.cr_frame is None  # closed
    assert any(r.levelname == "WARNING" for r in caplog.records)  # warned, as agentflow logs it
    await m.cancel_all()


@pytest.mark.asyncio
async def test_task_manager_timeout_cancels_and_warns(bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    m = bg.BackgroundTaskManager()
    t = m.create_task(asyncio.sleep(100), name="slow", timeout=5, context={"order": "o9"})
    assert t is not None
    await asyncio.sleep(10)
    assert t.cancelled()
    assert any("o9" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


@pytest.mark.asyncio
async def test_task_manager_truths(bgwork: bg.Simulation) -> None:
    m = bg.BackgroundTaskManager()

    async def job() -> None:
        await asyncio.sleep(1)

    with pytest.raises(TypeError):
        m.create_task(job)  # type: ignore[arg-type]
    await m.shutdown()
    task = m.create_task(job())  # after shutdown the task still runs, as in 10xgraph's class
    assert task is not None
    await task
    assert bgwork.history.count("task_manager", "create_task", after_shutdown=True) == 1


@pytest.mark.asyncio
async def test_task_manager_async_with_and_timeout_status(bgwork: bg.Simulation) -> None:
    async with bg.BackgroundTaskManager() as m:
        m.create_task(asyncio.sleep(1))
    assert m.get_task_count() == 0
    m2 = bg.BackgroundTaskManager()
    m2.create_task(asyncio.sleep(1000))
    res = await m2.shutdown(timeout=5)
    # 10xgraph's shutdown cancels first, then waits for the cancellations: "completed"
    assert (res["status"], res["initial_tasks"], res["remaining_tasks"]) == ("completed", 1, 0)


@pytest.mark.asyncio
async def test_wait_for_all_timeout_records_cancelled(bgwork: bg.Simulation) -> None:
    m = bg.BackgroundTaskManager()
    m.create_task(asyncio.sleep(1000), name="forever-ish")
    with contextlib.suppress(TimeoutError):
        await m.wait_for_all(timeout=5)
    assert "forever-ish" in bgwork.history.timeline()


# -- schedules, webhooks, tasks ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.bgwork(start="2026-01-01T00:00:00Z")
async def test_schedule_fires_on_virtual_time(bgwork: bg.Simulation) -> None:
    fired: list[int] = []

    async def nightly() -> None:
        fired.append(bgwork.clock.now().hour)

    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=nightly)
    await bgwork.advance(3 * 86400)
    assert fired == [2, 2, 2]
    assert len(bgwork.schedules.runs("nightly")) == 3


@pytest.mark.asyncio
@pytest.mark.bgwork(start="2026-01-01T00:00:00Z")
async def test_schedule_to_an_app_path(bgwork: bg.Simulation) -> None:
    paths: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    bgwork.schedules.create("cleanup", cron="0 * * * *", app=app, path="/cron/cleanup")
    await bgwork.advance(3 * 3600)
    assert paths == ["/cron/cleanup"] * 3
    assert len(bgwork.schedules.runs("cleanup")) == 3


def test_webhook_sign_depends_on_body_and_secret(bgwork: bg.Simulation) -> None:
    sig = bgwork.webhooks.sign(b'{"a":1}', "s3cret")
    assert sig and sig == bgwork.webhooks.sign(b'{"a":1}', "s3cret")
    assert sig != bgwork.webhooks.sign(b'{"a":2}', "s3cret")
    assert sig != bgwork.webhooks.sign(b'{"a":1}', "other")


@pytest.mark.asyncio
async def test_webhook_deliver_to_app_signed(bgwork: bg.Simulation) -> None:
    calls: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive()).get("body", b"")
        calls.append({"path": scope["path"], "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
                      "body": body})
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    await bgwork.webhooks.deliver(app, "/hooks/stripe", {"type": "paid"}, secret="s3cret", times=2)
    assert len(calls) == 2 and calls[0]["path"] == "/hooks/stripe"
    assert b"paid" in calls[0]["body"]
    expected = bgwork.webhooks.sign(calls[0]["body"], "s3cret")
    assert expected in calls[0]["headers"].values()


@pytest.mark.asyncio
async def test_tasks_create_and_list(bgwork: bg.Simulation) -> None:
    await bgwork.tasks.create(title="Fix it", description="the report", tags=["ops"])
    await bgwork.tasks.create(title="Other", description="", tags=[])
    items = bgwork.tasks.list()
    assert len(items) == 2
    assert [t.title for t in bgwork.tasks.list(tag="ops")] == ["Fix it"]
