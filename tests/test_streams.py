"""Durable streams: write/close/read, after_close policies, TTL, lookups, faults, snapshots."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.context import Attempt, current_attempt
from pytest_bgwork.core.errors import ProcessCrashed
from pytest_bgwork.services.streams import Stream, StreamExpired, StreamNotFound


def events(sim: bg.Simulation, op: str) -> list[bg.Event]:
    return sim.history.filter("stream", op)


# -- create ------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_create_gives_deterministic_ids_urls_and_attributes(bgwork: bg.Simulation) -> None:
    meta = {"month": "2026-01", "rows": 3}
    s = await bgwork.streams.create("monthly-reports", content_type="text/csv", metadata=meta,
                                    ttl=90 * 86400)
    other = await bgwork.streams.create("logs")
    meta["month"] = "changed"
    assert (s.id, s.url, s.name, s.content_type) == (
        "stream_1", "https://streams.bgwork.test/stream_1", "monthly-reports", "text/csv"
    )
    assert s.metadata == {"month": "2026-01", "rows": 3}
    assert (s.ttl, s.expires_at, s.closed) == (90 * 86400, 90 * 86400, False)
    assert (other.id, other.content_type, other.metadata, other.ttl) == (
        "stream_2", "application/octet-stream", {}, 30 * 86400
    )
    (first, _) = events(bgwork, "create")
    assert first.detail == {"id": "stream_1", "name": "monthly-reports",
                            "content_type": "text/csv", "ttl": 90 * 86400.0}


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"name": ""}, ValueError, r"streams.create\(\): name= must be a non-empty string; got ''"),
        ({"name": 3}, TypeError, r"name= must be a non-empty string; got 3"),
        ({"content_type": ""}, ValueError, r"streams.create\('r'\): content_type= must be"),
        ({"metadata": ["a"]}, TypeError, r"metadata= must be a dict or None; got \['a'\]"),
        ({"metadata": {"at": {1}}}, TypeError, r"metadata\['at'\] is a set"),
        ({"ttl": 0}, ValueError, r"ttl= must be a number of seconds > 0, or None"),
        ({"ttl": math.nan}, ValueError, r"ttl= must be a number of seconds > 0"),
        ({"after_close": "ignore"}, ValueError,
         r"after_close= must be 'raise' .* or 'drop' .*; got 'ignore'"),
    ],
)
@pytest.mark.asyncio
async def test_create_validates_its_arguments(
    bgwork: bg.Simulation, kwargs: dict[str, Any], error: type[Exception], pattern: str
) -> None:
    args: dict[str, Any] = {"name": "r", **kwargs}
    with pytest.raises(error, match=pattern):
        await bgwork.streams.create(**args)
    assert bgwork.streams.all() == [] and len(bgwork.history) == 0


# -- write, read, close --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_write_accepts_str_and_bytes_and_read_returns_bytes(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r", content_type="text/csv")
    await s.write("a,b\n")
    await s.write(b"1,2\n")
    await s.write(bytearray(b"\xc3\xa9"))
    await s.write("é")
    assert await bgwork.streams.read(s.url) == b"a,b\n1,2\n\xc3\xa9\xc3\xa9"
    assert s.size == 12
    assert [e.detail["bytes"] for e in events(bgwork, "write")] == [4, 4, 2, 2]


@pytest.mark.asyncio
async def test_write_rejects_other_types(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r")
    with pytest.raises(TypeError, match=r"stream stream_1 \('r'\): write\(\) takes str .* or "
                                        r"bytes; got dict. Encode it first"):
        await s.write({"a": 1})  # type: ignore[arg-type]
    assert events(bgwork, "write") == [] and s.size == 0


@pytest.mark.asyncio
async def test_read_while_open_is_partial(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r")
    await s.write("so far")
    assert await bgwork.streams.read(s.url) == b"so far"
    result = await bgwork.streams.read_result(s.id)
    assert (result.data, result.partial, result.content_type) == (
        b"so far", True, "application/octet-stream"
    )
    await s.write(" and more")
    await s.close()
    final = await bgwork.streams.read_result(s)
    assert (final.data, final.partial) == (b"so far and more", False)
    assert [(e.detail["bytes"], e.detail["partial"]) for e in events(bgwork, "read")] == [
        (6, True), (6, True), (15, False)
    ]


@pytest.mark.asyncio
async def test_close_is_recorded_once_and_a_second_close_is_a_no_op(
    bgwork: bg.Simulation,
) -> None:
    s = await bgwork.streams.create("r")
    await s.write("x")
    await asyncio.sleep(3)
    await s.close()
    await s.close()
    assert s.closed and s.closed_at == 3
    assert [e.detail for e in events(bgwork, "close")] == [
        {"id": "stream_1", "name": "r", "bytes": 1}
    ]


@pytest.mark.asyncio
async def test_write_after_close_raises_stream_closed(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("monthly-reports")
    await s.write("a")
    await s.close()
    with pytest.raises(bg.StreamClosed) as info:
        await s.write("late row")
    text = str(info.value)
    assert text.startswith("stream stream_1 ('monthly-reports') was closed at t=+0.000s, so this "
                           "write of 8 bytes would be lost.")
    assert "`finally:`" in text and "after_close='drop'" in text
    assert await bgwork.streams.read(s.url) == b"a"
    failed = events(bgwork, "write")[-1]
    assert (failed.outcome, failed.detail["error"], failed.detail["bytes"]) == ("fail", "closed", 8)


@pytest.mark.asyncio
async def test_after_close_drop_drops_the_write_and_records_it(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r", after_close="drop")
    await s.write("kept")
    await s.close()
    await s.write("lost!")
    assert await bgwork.streams.read(s.url) == b"kept"
    assert s.dropped_bytes == 5
    (drop,) = events(bgwork, "dropped_write")
    assert (drop.outcome, drop.detail) == ("ok", {"id": "stream_1", "name": "r", "bytes": 5})


@pytest.mark.asyncio
async def test_async_with_closes_on_exit(bgwork: bg.Simulation) -> None:
    async with await bgwork.streams.create("r") as s:
        await s.write("body")
        assert not s.closed
    assert s.closed
    assert bgwork.streams.open_streams() == []


@pytest.mark.asyncio
async def test_async_with_closes_on_exception_and_lets_it_through(bgwork: bg.Simulation) -> None:
    with pytest.raises(RuntimeError, match="render failed"):
        async with await bgwork.streams.create("r") as s:
            await s.write("half")
            raise RuntimeError("render failed")
    assert s.closed
    assert [e.name for e in bgwork.history] == ["stream.create", "stream.write", "stream.close"]


# -- lookups -----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_get_all_and_open_streams(bgwork: bg.Simulation) -> None:
    a = await bgwork.streams.create("a")
    b = await bgwork.streams.create("b")
    await a.close()
    assert bgwork.streams.get(a.url) is a
    assert bgwork.streams.get("stream_2") is b
    assert bgwork.streams.get(b) is b
    assert bgwork.streams.all() == [a, b]
    assert bgwork.streams.open_streams() == [b]


@pytest.mark.asyncio
async def test_unknown_url_is_a_clear_key_error(bgwork: bg.Simulation) -> None:
    await bgwork.streams.create("a")
    with pytest.raises(StreamNotFound) as info:
        await bgwork.streams.read("https://streams.bgwork.test/stream_9")
    assert isinstance(info.value, KeyError) and isinstance(info.value, bg.BgworkError)
    assert str(info.value) == (
        "no stream at 'https://streams.bgwork.test/stream_9' (known: stream_1). Use the url or "
        "id of a stream this simulation's streams.create() returned."
    )
    with pytest.raises(TypeError, match="expected a stream url"):
        bgwork.streams.get(42)  # type: ignore[arg-type]


def test_a_stream_from_another_simulation_is_not_found() -> None:
    with bg.Simulation() as other, bg.Simulation() as sim:
        foreign = other.run(other.streams.create("elsewhere"))
        sim.run(sim.streams.create("here"))  # also stream_1, but not the same stream
        with pytest.raises(StreamNotFound):
            sim.streams.get(foreign)


# -- TTL ---------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_reading_an_expired_stream_raises(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r", ttl=3600)
    await s.write("data")
    await s.close()
    await bgwork.advance(3599)
    assert await bgwork.streams.read(s.url) == b"data"
    await bgwork.advance(1)
    with pytest.raises(StreamExpired) as info:
        await bgwork.streams.read(s.url)
    assert str(info.value).startswith(
        "cannot read stream stream_1 ('r'): its ttl of 3600.0s ran out at t=+3600.000s"
    )
    assert isinstance(info.value, StreamNotFound)
    (expire,) = events(bgwork, "expire")
    assert expire.detail == {"id": "stream_1", "name": "r", "expired_at": 3600.0, "closed": True}
    assert s.expired and bgwork.streams.get(s.id) is s


@pytest.mark.asyncio
async def test_expiry_does_not_keep_the_simulation_busy(bgwork: bg.Simulation) -> None:
    await bgwork.streams.create("r")
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() == 0


@pytest.mark.asyncio
async def test_writing_or_closing_an_expired_stream_raises(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r", ttl=10)
    await bgwork.advance(10)
    with pytest.raises(StreamExpired, match="cannot write to stream stream_1"):
        await s.write("late")
    with pytest.raises(StreamExpired, match="cannot close stream stream_1"):
        await s.close()
    assert bgwork.streams.open_streams() == [s]  # never closed: checks still see it
    assert len(events(bgwork, "expire")) == 1


@pytest.mark.asyncio
async def test_ttl_none_never_expires(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r", ttl=None)
    await bgwork.advance(60 * 86400)  # twice the default ttl
    assert await bgwork.streams.read(s.url) == b"" and s.expires_at is None


# -- attempts and faults --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_a_stream_remembers_the_attempt_that_created_it(bgwork: bg.Simulation) -> None:
    attempt = Attempt("report-jobs", "msg_1", 2)

    async def handler() -> Stream:
        current_attempt.set(attempt)  # a task's own context: the attempt ends with it
        return await bgwork.streams.create("r")

    s = await asyncio.create_task(handler())
    outside = await bgwork.streams.create("r")
    assert s.attempt is attempt and s.attempt_label == "report-jobs/msg_1#2"
    assert outside.attempt is None
    assert events(bgwork, "create")[0].attempt == "report-jobs/msg_1#2"


@pytest.mark.asyncio
async def test_fault_at_create_raises_and_creates_nothing(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("stream.create", error=ConnectionError("streams down"))
    with pytest.raises(ConnectionError, match="streams down"):
        await bgwork.streams.create("r")
    assert bgwork.streams.all() == []
    assert [(e.outcome, e.detail["error"]) for e in events(bgwork, "create")] == [
        ("fail", "ConnectionError: streams down")
    ]


@pytest.mark.asyncio
async def test_after_apply_at_create_leaves_an_open_stream_behind(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("stream.create", after_apply=True)
    with pytest.raises(ConnectionError):
        await bgwork.streams.create("r")
    (orphan,) = bgwork.streams.open_streams()
    assert orphan.id == "stream_1"
    assert events(bgwork, "create")[0].outcome == "unknown"


@pytest.mark.asyncio
async def test_fault_at_write_writes_nothing_and_after_apply_writes(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r")
    bgwork.faults.fail("stream.write", on_call=1, error=ConnectionError("lost"))
    bgwork.faults.fail("stream.write", on_call=2, after_apply=True, error=TimeoutError("slow"))
    with pytest.raises(ConnectionError):
        await s.write("one")
    with pytest.raises(TimeoutError):
        await s.write("two")
    await s.write("three")
    assert await bgwork.streams.read(s.url) == b"twothree"
    assert [e.outcome for e in events(bgwork, "write")] == ["fail", "unknown", "ok"]


@pytest.mark.asyncio
async def test_after_apply_at_close_closes(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r")
    bgwork.faults.fail("stream.close", after_apply=True)
    with pytest.raises(ConnectionError):
        await s.close()
    assert s.closed and events(bgwork, "close")[0].outcome == "unknown"


@pytest.mark.asyncio
async def test_a_crashed_attempt_cannot_write_or_close(bgwork: bg.Simulation) -> None:
    s = await bgwork.streams.create("r")
    token = current_attempt.set(Attempt("jobs", "msg_1", 1, crashed=True))
    try:
        with pytest.raises(ProcessCrashed):
            await s.write("x")
        with pytest.raises(ProcessCrashed):
            await s.close()
    finally:
        current_attempt.reset(token)
    assert s.size == 0 and not s.closed


# -- snapshot ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_snapshot_and_restore_rewind_streams(bgwork: bg.Simulation) -> None:
    streams = bgwork.streams
    s = await streams.create("r")
    await s.write("before")
    state = streams._snapshot()
    for _ in range(2):  # a snapshot can be restored more than once
        await s.write(" after")
        await s.close()
        await streams.create("new")
        streams._restore(state)
        assert streams.all() == [s]
        assert not s.closed and s.closed_at is None
        assert await streams.read(s.url) == b"before"


# -- plugin ------------------------------------------------------------------------------------
def test_bg_streams_fixture_in_a_user_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_report(bg_streams, bgwork):
            assert bg_streams is bgwork.streams
            async with await bg_streams.create("monthly-reports", content_type="text/csv") as s:
                await s.write("a,b\\n")
                assert await bg_streams.read(s.url) == b"a,b\\n"
            assert bg_streams.open_streams() == []
            with pytest.raises(bg.StreamClosed):
                await s.write("late")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
