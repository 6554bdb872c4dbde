"""KV: JSON copies, TTL on virtual time, history, validation, fault points, snapshots."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import math
from typing import Any

import pytest
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork.core.context import Attempt, current_attempt
from pytest_bgwork.core.errors import ProcessCrashed


def events(sim: bg.Simulation, op: str) -> list[bg.Event]:
    return sim.history.filter("kv", op)


# -- basics ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_set_then_get_returns_the_value(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("report-status", "job-1", {"kind": "queued", "n": [1, 2.5, None, True]})
    r = await bgwork.kv.get("report-status", "job-1")
    assert r.exists is True
    assert r.data == {"kind": "queued", "n": [1, 2.5, None, True]}
    assert r.expires_at is None


@pytest.mark.asyncio
async def test_missing_key_and_namespace_do_not_exist(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("a", "k", 1)
    for ns, key in (("a", "other"), ("never-used", "k")):
        r = await bgwork.kv.get(ns, key)
        assert (r.exists, r.data, r.expires_at) == (False, None, None)
    assert [e.detail["exists"] for e in events(bgwork, "get")] == [False, False]


@pytest.mark.asyncio
async def test_namespaces_are_separate(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("a", "k", "in a")
    await bgwork.kv.set("b", "k", "in b")
    assert (await bgwork.kv.get("a", "k")).data == "in a"
    assert (await bgwork.kv.get("b", "k")).data == "in b"
    assert bgwork.kv.namespaces() == ["a", "b"]


@pytest.mark.asyncio
async def test_set_replaces_the_value(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", {"kind": "queued"})
    await bgwork.kv.set("s", "k", {"kind": "done"})
    assert (await bgwork.kv.get("s", "k")).data == {"kind": "done"}


# -- JSON copies -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_mutating_the_callers_value_after_set_changes_nothing(bgwork: bg.Simulation) -> None:
    value: dict[str, Any] = {"kind": "queued", "steps": ["a"]}
    await bgwork.kv.set("s", "k", value)
    value["kind"] = "mutated"
    value["steps"].append("b")
    assert (await bgwork.kv.get("s", "k")).data == {"kind": "queued", "steps": ["a"]}


@pytest.mark.asyncio
async def test_mutating_returned_data_changes_nothing_stored(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", {"kind": "queued", "steps": ["a"]})
    first = (await bgwork.kv.get("s", "k")).data
    first["kind"] = "mutated"
    first["steps"].append("b")
    assert (await bgwork.kv.get("s", "k")).data == {"kind": "queued", "steps": ["a"]}
    bgwork.kv.items("s")["k"]["kind"] = "mutated too"
    bgwork.kv.history("s", "k")[0].data["kind"] = "and this"
    assert bgwork.kv.items("s") == {"k": {"kind": "queued", "steps": ["a"]}}
    assert bgwork.kv.history("s", "k")[0].data == {"kind": "queued", "steps": ["a"]}


@pytest.mark.asyncio
async def test_a_list_mutated_after_set_is_not_seen_by_get(bgwork: bg.Simulation) -> None:
    steps = ["fetch"]
    await bgwork.kv.set("s", "k", steps)
    steps.append("render")
    got = (await bgwork.kv.get("s", "k")).data
    assert got == ["fetch"]
    got.append("mine")
    assert (await bgwork.kv.get("s", "k")).data == ["fetch"]


class _Level(enum.IntEnum):
    HIGH = 3


class _Tag(str):
    pass


class _Blob(bytes):
    pass


@pytest.mark.asyncio
@pytest.mark.parametrize("value, expected", [
    ("text ☕", "text ☕"), (7, 7), (2**70, 2**70), (-0.0, -0.0), (0.1, 0.1), (True, True),
    (False, False), (None, None), (b"\x00\xff", b"\x00\xff"), (bytearray(b"ab"), b"ab"),
    (_Level.HIGH, 3), (_Tag("t"), "t"), ((1, "a"), [1, "a"]), (_Blob(b"z"), b"z"),
], ids=repr)
async def test_immutable_values_come_back_equal_and_of_the_json_type(
        bgwork: bg.Simulation, value: Any, expected: Any) -> None:
    # exact str/int/float/bool/None/bytes are handed out as stored; subclasses and tuples
    # become what JSON gives (int, str, list), as before
    await bgwork.kv.set("s", "k", value)
    got = (await bgwork.kv.get("s", "k")).data
    assert (got, type(got)) == (expected, type(expected))
    if isinstance(got, float):  # -0.0 stays negative
        assert math.copysign(1, got) == math.copysign(1, expected)
    assert bgwork.kv.items("s") == {"k": expected}
    assert bgwork.kv.history("s", "k")[0].data == expected


@pytest.mark.asyncio
async def test_immutable_values_record_the_json_text_the_encoder_writes(
        bgwork: bg.Simulation) -> None:
    values = ["é\n\"x\"", 12, 1e16, 0.5, True, None]
    for i, value in enumerate(values):
        await bgwork.kv.set("s", f"k{i}", value)
    recorded = [e.detail["value"] for e in bgwork.history.filter("kv", "set")]
    assert recorded == [json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in values]
    with pytest.raises(ValueError, match="NaN"):
        await bgwork.kv.set("s", "nan", math.nan)
    with pytest.raises(ValueError, match="infinity"):
        await bgwork.kv.set("s", "inf", -math.inf)


@pytest.mark.asyncio
async def test_values_come_back_as_json_would_give_them(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", {"pair": (1, 2), 3: "int key", "name": "café ☕", "big": 2**70})
    assert (await bgwork.kv.get("s", "k")).data == {
        "pair": [1, 2], "3": "int key", "name": "café ☕", "big": 2**70
    }


@pytest.mark.asyncio
async def test_non_json_value_raises_type_error_naming_key_and_type(bgwork: bg.Simulation) -> None:
    when = dt.datetime(2026, 1, 1)
    with pytest.raises(TypeError) as info:
        await bgwork.kv.set("report-status", "job-1", {"kind": "queued", "at": when})
    text = str(info.value)
    assert "kv.set(ns='report-status', key='job-1')" in text
    assert "value['at'] is a datetime" in text
    assert "isoformat()" in text
    assert not (await bgwork.kv.get("report-status", "job-1")).exists
    assert events(bgwork, "set") == []


@pytest.mark.parametrize(
    ("value", "error", "fragment"),
    [
        ({1, 2}, TypeError, "value is a set"),
        ([b"raw"], TypeError, "value[0] is a bytes"),
        ({(1, 2): "x"}, TypeError, "value (a key) is a tuple key (1, 2)"),
        ({"x": math.nan}, ValueError, "value['x'] is the float nan (JSON has no NaN"),
        ([math.inf], ValueError, "value[0] is the float inf"),
    ],
)
@pytest.mark.asyncio
async def test_non_json_parts_are_pointed_at(
    bgwork: bg.Simulation, value: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as info:
        await bgwork.kv.set("s", "k", value)
    assert fragment in str(info.value)
    assert "key='k'" in str(info.value)


@pytest.mark.asyncio
async def test_circular_value_is_a_value_error(bgwork: bg.Simulation) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"value\[0\] is a circular reference"):
        await bgwork.kv.set("s", "k", loop)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ns", "key", "error", "pattern"),
    [
        ("", "k", ValueError, r"kv.set\(\): ns= must be a non-empty string; got ''"),
        (None, "k", TypeError, r"kv.set\(\): ns= must be a non-empty string; got None"),
        ("s", "", ValueError, r"kv.set\(\): key= must be a non-empty string; got ''"),
        ("s", 7, TypeError, r"kv.set\(\): key= must be a non-empty string; got 7"),
    ],
)
@pytest.mark.asyncio
async def test_set_validates_ns_and_key(
    bgwork: bg.Simulation, ns: Any, key: Any, error: type[Exception], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        await bgwork.kv.set(ns, key, 1)


@pytest.mark.asyncio
async def test_every_operation_validates_ns_and_key(bgwork: bg.Simulation) -> None:
    kv = bgwork.kv
    with pytest.raises(ValueError, match=r"kv.get\(\): key="):
        await kv.get("s", "")
    with pytest.raises(TypeError, match=r"kv.delete\(\): ns="):
        await kv.delete(1, "k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kv.keys\(\): ns="):
        await kv.keys("")
    with pytest.raises(TypeError, match=r"kv.keys\(ns='s'\): prefix= must be a string; got None"):
        await kv.keys("s", prefix=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"kv.history\(\): key="):
        kv.history("s", "")
    with pytest.raises(ValueError, match=r"kv.items\(\): ns="):
        kv.items("")
    assert len(bgwork.history) == 0


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, True, "60"])
@pytest.mark.asyncio
async def test_ttl_must_be_positive_seconds_or_none(bgwork: bg.Simulation, ttl: Any) -> None:
    with pytest.raises(ValueError, match=r"kv.set\(ns='s', key='k'\): ttl= must be a number of "
                                         r"seconds > 0, or None for no expiry; got "):
        await bgwork.kv.set("s", "k", 1, ttl=ttl)


# -- TTL -------------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_ttl_60_exists_at_59_9_and_is_gone_at_61(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v", ttl=60)
    await bgwork.advance(59.9)
    r = await bgwork.kv.get("s", "k")
    assert r.exists and r.data == "v"
    assert r.expires_at == dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    await bgwork.advance(1.1)
    assert not (await bgwork.kv.get("s", "k")).exists
    (expire,) = events(bgwork, "expire")
    assert expire.t == 61 and expire.detail == {"ns": "s", "key": "k", "expired_at": 60.0}
    assert [(v.t, v.op) for v in bgwork.kv.history("s", "k")] == [(0.0, "set"), (60.0, "expire")]


@pytest.mark.asyncio
async def test_key_is_gone_exactly_at_its_expiry(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v", ttl=60)
    await bgwork.advance(60)
    assert not (await bgwork.kv.get("s", "k")).exists


@pytest.mark.asyncio
async def test_ttl_does_not_keep_the_simulation_busy(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v", ttl=3600)
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() == 0
    assert bgwork.loop.pending_timers() == []


@pytest.mark.asyncio
async def test_expiry_is_recorded_once_by_whichever_operation_sees_it(
    bgwork: bg.Simulation,
) -> None:
    await bgwork.kv.set("s", "a", 1, ttl=60)
    await bgwork.kv.set("s", "b", 2, ttl=120)
    await bgwork.kv.set("t", "c", 3)
    await bgwork.advance(180)
    assert await bgwork.kv.keys("t") == ["c"]  # any KV operation sweeps every expired key
    assert [(e.detail["key"], e.detail["expired_at"]) for e in events(bgwork, "expire")] == [
        ("a", 60.0), ("b", 120.0)
    ]
    assert bgwork.kv.namespaces() == ["t"]
    assert len(events(bgwork, "expire")) == 2


@pytest.mark.asyncio
async def test_set_without_ttl_removes_the_expiry(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v1", ttl=60)
    await bgwork.kv.set("s", "k", "v2")
    await bgwork.advance(100)
    r = await bgwork.kv.get("s", "k")
    assert (r.exists, r.data, r.expires_at) == (True, "v2", None)
    assert events(bgwork, "expire") == []


@pytest.mark.asyncio
async def test_a_new_ttl_replaces_the_old_one(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v1", ttl=60)
    await bgwork.advance(30)
    await bgwork.kv.set("s", "k", "v2", ttl=60)
    await bgwork.advance(59)  # t=89: the first ttl would have run out at 60
    assert (await bgwork.kv.get("s", "k")).data == "v2"
    await bgwork.advance(1)  # t=90
    assert not (await bgwork.kv.get("s", "k")).exists
    assert [e.detail["expired_at"] for e in events(bgwork, "expire")] == [90.0]


@pytest.mark.asyncio
async def test_expiry_events_are_not_tagged_with_the_observing_attempt(
    bgwork: bg.Simulation,
) -> None:
    await bgwork.kv.set("s", "k", "v", ttl=60)
    await bgwork.advance(61)
    token = current_attempt.set(Attempt("jobs", "msg_1", 1))
    try:
        await bgwork.kv.get("s", "k")
    finally:
        current_attempt.reset(token)
    (expire,) = events(bgwork, "expire")
    assert expire.attempt is None
    assert events(bgwork, "get")[0].attempt == "jobs/msg_1#1"


# -- delete, keys, history, items ------------------------------------------------------------
@pytest.mark.asyncio
async def test_delete_removes_and_is_recorded(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v")
    await bgwork.kv.delete("s", "k")
    await bgwork.kv.delete("s", "never")
    assert not (await bgwork.kv.get("s", "k")).exists
    assert [e.detail["existed"] for e in events(bgwork, "delete")] == [True, False]
    assert [v.op for v in bgwork.kv.history("s", "k")] == ["set", "delete"]
    assert bgwork.kv.history("s", "never") == []


@pytest.mark.asyncio
async def test_keys_lists_live_keys_with_prefix_sorted(bgwork: bg.Simulation) -> None:
    for key in ("job-2", "job-10", "other", "job-1"):
        await bgwork.kv.set("s", key, key)
    await bgwork.kv.set("s", "job-3", "short-lived", ttl=60)
    assert await bgwork.kv.keys("s", prefix="job-") == ["job-1", "job-10", "job-2", "job-3"]
    await bgwork.advance(60)
    assert await bgwork.kv.keys("s", prefix="job-") == ["job-1", "job-10", "job-2"]
    assert await bgwork.kv.keys("s") == ["job-1", "job-10", "job-2", "other"]
    assert await bgwork.kv.keys("empty") == []
    assert events(bgwork, "keys")[-1].detail == {"ns": "empty", "prefix": "", "count": 0}


@pytest.mark.asyncio
async def test_history_has_every_write_with_virtual_time_and_attempt(
    bgwork: bg.Simulation,
) -> None:
    await bgwork.kv.set("s", "k", {"kind": "queued"})
    await asyncio.sleep(5)
    token = current_attempt.set(Attempt("report-jobs", "msg_1", 2))
    try:
        await bgwork.kv.set("s", "k", {"kind": "running"}, ttl=60)
    finally:
        current_attempt.reset(token)
    await asyncio.sleep(5)
    await bgwork.kv.delete("s", "k")
    await bgwork.kv.set("s", "k", {"kind": "done"})
    assert [(v.t, v.op, v.data, v.ttl, v.attempt, v.outcome)
            for v in bgwork.kv.history("s", "k")] == [
        (0.0, "set", {"kind": "queued"}, None, None, "ok"),
        (5.0, "set", {"kind": "running"}, 60.0, "report-jobs/msg_1#2", "ok"),
        (10.0, "delete", None, None, None, "ok"),
        (10.0, "set", {"kind": "done"}, None, None, "ok"),
    ]


@pytest.mark.asyncio
async def test_items_and_namespaces_show_live_copies(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("b", "z", 1)
    await bgwork.kv.set("b", "a", {"x": 2})
    await bgwork.kv.set("a", "gone", 3, ttl=60)
    assert bgwork.kv.namespaces() == ["a", "b"]
    await bgwork.advance(60)
    assert bgwork.kv.namespaces() == ["b"]
    items = bgwork.kv.items("b")
    assert list(items) == ["a", "z"] and items == {"a": {"x": 2}, "z": 1}
    assert bgwork.kv.items("unknown") == {}


@pytest.mark.asyncio
async def test_events_carry_the_documented_details(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", {"kind": "queued"}, ttl=60)
    await bgwork.kv.get("s", "k")
    await bgwork.kv.delete("s", "k")
    assert [(e.name, e.outcome, e.detail) for e in bgwork.history] == [
        ("kv.set", "ok", {"ns": "s", "key": "k", "ttl": 60.0, "value": '{"kind":"queued"}'}),
        ("kv.get", "ok", {"ns": "s", "key": "k", "exists": True}),
        ("kv.delete", "ok", {"ns": "s", "key": "k", "existed": True}),
    ]


# -- faults ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_fault_at_kv_set_raises_to_the_caller_and_stores_nothing(
    bgwork: bg.Simulation,
) -> None:
    bgwork.faults.fail("kv.set", on_call=2, error=ConnectionError("kv down"))
    await bgwork.kv.set("s", "k", "first")
    with pytest.raises(ConnectionError, match="kv down"):
        await bgwork.kv.set("s", "k", "second")
    assert (await bgwork.kv.get("s", "k")).data == "first"
    failed = [e for e in events(bgwork, "set") if e.outcome == "fail"]
    assert len(failed) == 1 and failed[0].detail["error"] == "ConnectionError: kv down"
    assert [v.data for v in bgwork.kv.history("s", "k")] == ["first"]
    assert bgwork.history.count("fault", "fail", point="kv.set") == 1


@pytest.mark.asyncio
async def test_after_apply_fault_stores_the_value_but_the_caller_sees_an_error(
    bgwork: bg.Simulation,
) -> None:
    bgwork.faults.fail("kv.set", after_apply=True, error=TimeoutError("gateway timeout"))
    with pytest.raises(TimeoutError, match="gateway timeout"):
        await bgwork.kv.set("s", "k", {"kind": "done"})
    assert (await bgwork.kv.get("s", "k")).data == {"kind": "done"}
    (set_event,) = events(bgwork, "set")
    assert set_event.outcome == "unknown"
    assert [v.outcome for v in bgwork.kv.history("s", "k")] == ["unknown"]


@pytest.mark.asyncio
async def test_faults_at_get_and_delete(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v")
    bgwork.faults.fail("kv.get", error=ConnectionError("read failed"))
    bgwork.faults.fail("kv.delete", error=ConnectionError("delete failed"))
    with pytest.raises(ConnectionError, match="read failed"):
        await bgwork.kv.get("s", "k")
    with pytest.raises(ConnectionError, match="delete failed"):
        await bgwork.kv.delete("s", "k")
    assert (await bgwork.kv.get("s", "k")).data == "v"  # on_call=1 only: the second works
    assert [e.outcome for e in bgwork.history.filter("kv")] == ["ok", "fail", "fail", "ok"]


@pytest.mark.asyncio
async def test_after_apply_delete_deletes(bgwork: bg.Simulation) -> None:
    await bgwork.kv.set("s", "k", "v")
    bgwork.faults.fail("kv.delete", after_apply=True)
    with pytest.raises(ConnectionError):
        await bgwork.kv.delete("s", "k")
    assert not (await bgwork.kv.get("s", "k")).exists
    assert [(v.op, v.outcome) for v in bgwork.kv.history("s", "k")] == [
        ("set", "ok"), ("delete", "unknown")
    ]


@pytest.mark.asyncio
async def test_delay_fault_makes_the_set_take_virtual_time(bgwork: bg.Simulation) -> None:
    bgwork.faults.delay("kv.set", seconds=30)
    await bgwork.kv.set("s", "k", "v")
    assert bgwork.clock.monotonic() == 30
    assert bgwork.kv.history("s", "k")[0].t == 30.0


@pytest.mark.asyncio
async def test_a_crashed_attempt_cannot_write(bgwork: bg.Simulation) -> None:
    dead = Attempt("jobs", "msg_1", 1, crashed=True)
    token = current_attempt.set(dead)
    try:
        with pytest.raises(ProcessCrashed):
            await bgwork.kv.set("s", "k", "v")
    finally:
        current_attempt.reset(token)
    assert bgwork.kv.items("s") == {}


# -- snapshot ----------------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_snapshot_and_restore_rewind_values_ttls_and_history(bgwork: bg.Simulation) -> None:
    kv = bgwork.kv
    await kv.set("s", "k", {"kind": "queued"}, ttl=100)
    state = kv._snapshot()
    for _ in range(2):  # a snapshot can be restored more than once
        await kv.set("s", "k", {"kind": "done"})
        await kv.set("s", "new", 1)
        kv._restore(state)
        assert kv.items("s") == {"k": {"kind": "queued"}}
        assert [v.data for v in kv.history("s", "k")] == [{"kind": "queued"}]
        assert kv.history("s", "new") == []
    await bgwork.advance(100)
    assert kv.items("s") == {}  # the restored TTL still runs out


# -- determinism -------------------------------------------------------------------------------
def test_same_operations_give_the_same_digest() -> None:
    def run() -> str:
        sim = bg.Simulation(seed=3)

        async def main() -> None:
            await sim.kv.set("s", "a", {"x": 1}, ttl=60)
            await asyncio.sleep(61)
            await sim.kv.keys("s")

        sim.run(main())
        sim.close()
        return sim.history.digest()

    assert run() == run()


# -- plugin ------------------------------------------------------------------------------------
def test_bg_kv_fixture_in_a_user_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_status(bg_kv, bgwork):
            assert bg_kv is bgwork.kv
            await bg_kv.set("report-status", "job-1", {"kind": "queued"}, ttl=60)
            await bgwork.advance(61)
            assert not (await bg_kv.get("report-status", "job-1")).exists
            assert [v.op for v in bg_kv.history("report-status", "job-1")] == ["set", "expire"]
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- versions on the alien profile ---------------------------------------------------------------
@pytest.mark.asyncio
async def test_alien_profile_versions_never_repeat_for_a_key(bgwork: bg.Simulation) -> None:
    """Alien's versions are per-write tokens: a version from before a delete never comes back."""
    kv = bgwork.kv
    kv.configure("alien-ns", profile="alien")
    await kv.set("alien-ns", "k", 1)
    stale = (await kv.get("alien-ns", "k")).version
    await kv.delete("alien-ns", "k")
    await kv.set("alien-ns", "k", 2, ttl=60)
    assert (await kv.get("alien-ns", "k")).version == 2
    assert await kv.set("alien-ns", "k", 3, if_version=stale) is False  # on 'agentuity' it would apply
    await bgwork.advance(60)
    await kv.set("alien-ns", "k", 4)
    assert (await kv.get("alien-ns", "k")).version == 3  # after expiry too
    state = kv._snapshot()
    await kv.delete("alien-ns", "k")
    await kv.set("alien-ns", "k", 5)
    kv._restore(state)
    await kv.delete("alien-ns", "k")
    await kv.set("alien-ns", "k", 6)
    assert (await kv.get("alien-ns", "k")).version == 4  # the snapshot kept the last version
    await kv.set("other", "k", 1)
    await kv.delete("other", "k")
    await kv.set("other", "k", 1)
    assert (await kv.get("other", "k")).version == 1  # the default profile starts again at 1


@pytest.mark.asyncio
async def test_content_type_reads_what_get_would_report_without_an_event(bgwork: bg.Simulation) -> None:
    kv = bgwork.kv
    await kv.set("s", "n", 5)
    await kv.set("s", "b", b"\x00")
    await kv.set("s", "csv", "a,b", content_type="text/csv")
    before = len(bgwork.history.events)
    assert [kv.content_type("s", k) for k in ("n", "b", "csv", "missing")] == [
        "text/plain", "application/octet-stream", "text/csv", None]
    assert len(bgwork.history.events) == before
    assert [(await kv.get("s", k)).content_type for k in ("n", "b", "csv")] == ["text/plain",
                                                                              "application/octet-stream", "text/csv"]
    kv.configure("r", profile="redis")
    await kv.set("r", "k", 5)
    assert kv.content_type("r", "k") is None


# -- DynamoDB: eventually consistent reads --------------------------------------------------------
class _Half:
    """Choices that draw the middle of every range (a read lag of 0.5 s), latency 0."""

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        return lo

    def fraction(self, label: str = "") -> float:
        return 0.5


async def _paid_then_read(sim: bg.Simulation) -> None:
    """An app that writes an order's status and reads it back at once."""
    await sim.kv.set("orders", "o1", {"status": "paid"})
    r = await sim.kv.get("orders", "o1")
    assert r.exists and r.data == {"status": "paid"}, f"read-after-write saw {r.data!r}"


def test_explore_finds_a_read_after_write_bug_under_dynamodb() -> None:
    with pytest.raises(bg.ExplorationFailed) as failed:
        bg.explore(_paid_then_read, faults=st.just(bg.FaultPlan()), max_examples=50, seed=1, platform="aws")
    text = str(failed.value)
    assert "read-after-write saw None" in text and "kv.get" in text and "stale=true" in text

    async def consistent(sim: bg.Simulation) -> None:
        sim.kv.configure("orders", profile="dynamodb", consistent_reads=True)
        await _paid_then_read(sim)

    bg.explore(consistent, faults=st.just(bg.FaultPlan()),
               max_examples=50, seed=1, platform="aws")  # ConsistentRead: no such read
    bg.explore(_paid_then_read, faults=st.just(bg.FaultPlan()),
               max_examples=50, seed=1, platform="agentuity")  # other stores: consistent


def test_a_stale_read_sees_the_state_before_the_write_for_the_drawn_lag() -> None:
    sim = bg.Simulation(seed=1, choices=_Half(), platform="aws")
    seen: list[Any] = []

    async def main() -> None:
        kv = sim.kv
        sim.faults.apply([bg.Fault("latency", "*", seconds=0.1)])  # as exploration and chaos do
        await kv.set("d", "k", 1)
        await sim.advance(1)
        await kv.set("d", "k", 2)
        seen.append((await kv.get("d", "k")).data)  # 1: the write is 0.5 s from visible
        seen.append((await kv.get("d", "k", consistent=True)).data)  # ConsistentRead: 2
        await kv.delete("d", "k")
        seen.append((await kv.get("d", "k")).data)  # still 1: neither write is visible yet
        await sim.advance(0.5)
        seen.append((await kv.get("d", "k")).exists)  # both visible: gone
        assert await kv.set("d", "k", 3, if_absent=True)  # conditions see the latest state

    sim.run(main())
    sim.close()
    assert seen == [1, 2, 1, False]
    stale = [e.detail for e in sim.history.filter("kv", "get") if e.detail.get("stale")]
    assert stale == [{"ns": "d", "key": "k", "exists": True, "stale": True}] * 2


@pytest.mark.asyncio
@pytest.mark.bgwork(platform="aws")
async def test_plain_tests_read_consistently_on_dynamodb(bgwork: bg.Simulation) -> None:
    for n in range(20):  # seeded choices, but no latency: no lag is drawn
        await bgwork.kv.set("d", "k", n)
        assert (await bgwork.kv.get("d", "k")).data == n


def test_consistent_reads_is_checked_at_configure() -> None:
    sim = bg.Simulation(seed=1)
    with pytest.raises(ValueError, match=r"every read on profile 'redis' is consistent; only 'dynamodb'"):
        sim.kv.configure("r", profile="redis", consistent_reads=True)
    with pytest.raises(TypeError, match=r"consistent_reads=\.\.\.\) expects True or False; got 'yes'"):
        sim.kv.configure("d", profile="dynamodb", consistent_reads="yes")  # type: ignore[arg-type]
    sim.kv.configure("d", profile="dynamodb", consistent_reads=True)
    [event] = sim.history.filter("kv", "configure")
    assert event.detail == {"ns": "d", "profile": "dynamodb", "consistent_reads": True}
    sim.close()


def test_a_users_explore_test_meets_the_stale_read(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg

        async def pay(sim):
            await sim.kv.set("orders", "o1", {"status": "paid"})
            r = await sim.kv.get("orders", "o1")
            assert r.exists, "the order vanished right after it was paid"

        @pytest.mark.bgwork(platform="aws")
        def test_read_after_write(bgwork):
            bg.explore(pay, max_examples=50, seed=1)

        @pytest.mark.bgwork(platform="aws")
        def test_read_after_write_consistent(bgwork):
            async def consistent(sim):
                sim.kv.configure("orders", profile="dynamodb", consistent_reads=True)
                await pay(sim)
            bg.explore(consistent, max_examples=50, seed=1)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*the order vanished right after it was paid*",
                                 "*kv.get*ns=orders key=o1 exists=false stale=true*"])
