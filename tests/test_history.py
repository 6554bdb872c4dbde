"""Event history: order, filtering, rendering and a digest that pins determinism."""

from __future__ import annotations

import pytest

from pytest_bgwork.core.context import Attempt, current_attempt
from pytest_bgwork.core.history import History


def make() -> tuple[History, list[float]]:
    now = [0.0]
    return History(lambda: now[0]), now


def test_events_keep_order_time_and_detail() -> None:
    h, now = make()
    h.record("queue", "publish", queue="jobs", id="msg_1")
    now[0] = 2.5
    h.record("kv", "set", outcome="unknown", ns="s", key="k")
    events = h.events
    assert [(e.seq, e.t, e.name, e.outcome) for e in events] == [
        (0, 0.0, "queue.publish", "ok"), (1, 2.5, "kv.set", "unknown")
    ]
    assert h.filter("queue", queue="jobs")[0].detail["id"] == "msg_1"
    assert h.count("kv", "set") == 1
    assert h.count("kv", "get") == 0


def test_events_carry_the_running_attempt() -> None:
    h, _ = make()
    token = current_attempt.set(Attempt("jobs", "msg_3", 2))
    try:
        event = h.record("stream", "write", id="stream_1")
    finally:
        current_attempt.reset(token)
    assert event.attempt == "jobs/msg_3#2"
    assert "in=jobs/msg_3#2" in event.render()


def test_bad_outcome_is_rejected() -> None:
    h, _ = make()
    with pytest.raises(ValueError, match="outcome= must be one of"):
        h.record("kv", "set", outcome="maybe")


def test_digest_is_stable_and_sensitive() -> None:
    a, _ = make()
    b, now_b = make()
    for h in (a, b):
        h.record("queue", "publish", id="msg_1", payload={"b": 1, "a": [1, 2]})
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64
    now_b[0] = 0.001
    b.record("kv", "set", key="x")
    a.record("kv", "set", key="x")
    assert a.digest() != b.digest(), "a different time must change the digest"


def test_digest_known_value() -> None:
    """The digest format is part of the contract: same events, same hash on any machine."""
    h, _ = make()
    h.record("kv", "set", ns="s", key="k")
    assert h.digest() == "1b8536b78ac2b16348bcf172bdb198ccedafe77ba5bbad3c9674163bed82006e"


def test_timeline_renders_and_truncates() -> None:
    h, now = make()
    assert h.timeline() == "(no events)"
    for i in range(5):
        now[0] = float(i)
        h.record("kv", "set", ns="s", key=f"k{i}")
    assert h.timeline().splitlines()[0] == "+      0.000s kv.set                 ns=s key=k0"
    short = h.timeline(limit=2).splitlines()
    assert short[0] == "... 3 earlier event(s) not shown"
    assert short[-1].endswith("key=k4")


def test_rows_added_by_services_read_as_events_in_order() -> None:
    h, now = make()
    h.record("queue", "publish", queue="jobs")
    now[0] = 1.5
    h.add("kv", "set", "ok", ("ns", "key", "value"), ("s", "k", '{"a":1}'))
    h.add("kv", "get", "unknown", ("ns", "key"), ("s", "k"))
    events = h.events
    assert [(e.seq, e.t, e.name, e.outcome, e.detail) for e in events] == [
        (0, 0.0, "queue.publish", "ok", {"queue": "jobs"}),
        (1, 1.5, "kv.set", "ok", {"ns": "s", "key": "k", "value": '{"a":1}'}),
        (2, 1.5, "kv.get", "unknown", {"ns": "s", "key": "k"}),
    ]
    assert h.events[1] is events[1]  # built once, then the same object on every read
    assert list(h)[2] is events[2] and h.filter("kv", key="k") == events[1:]
    assert events[1].render() == '+      1.500s kv.set                 ns=s key=k value={"a":1}'


def test_a_row_carries_the_running_attempt_and_its_time() -> None:
    h, now = make()
    token = current_attempt.set(Attempt("jobs", "msg_3", 2))
    try:
        h.add("kv", "get", "ok", ("ns",), ("s",))
    finally:
        current_attempt.reset(token)
    now[0] = 9.0  # read later: the row kept the time it was added at
    assert (h.events[0].t, h.events[0].attempt) == (0.0, "jobs/msg_3#2")


def test_rows_and_records_give_the_same_digest_read_or_not() -> None:
    def fill(h: History, rows: bool) -> None:
        for i in range(3):
            if rows:
                h.add("kv", "set", "ok", ("ns", "key", "ttl"), ("s", f"k{i}", None))
            else:
                h.record("kv", "set", ns="s", key=f"k{i}", ttl=None)

    a, _ = make()
    b, _ = make()
    fill(a, rows=True)
    fill(b, rows=False)
    unread = a.digest()
    assert unread == b.digest()
    assert a.timeline() == b.timeline()
    assert a.digest() == unread  # reading built the events; the digest is the same text


def test_listeners_get_events_for_rows_too() -> None:
    h, _ = make()
    seen: list[str] = []
    h.subscribe(lambda e: seen.append(f"{e.seq} {e.name} {e.detail}"))
    h.add("kv", "get", "ok", ("ns", "exists"), ("s", False))
    assert seen == ["0 kv.get {'ns': 's', 'exists': False}"]
    assert h.events[0].detail == {"ns": "s", "exists": False}


def test_a_listener_sees_kv_events_as_they_happen_with_the_same_digest() -> None:
    """KV's hot path hands its own rows to the history's one write path: a subscriber (chaos
    mode, reports) sees each event at once, and the run is the same with or without one."""
    import pytest_bgwork as bg

    def run(listen: bool) -> tuple[str, list[str]]:
        sim = bg.Simulation(seed=3)
        seen: list[str] = []
        if listen:
            sim.history.subscribe(lambda e: seen.append(f"{e.seq} {e.name} {e.outcome}"))

        async def main() -> None:
            await sim.kv.set("s", "k", {"a": 1})
            assert seen == (["0 kv.set ok"] if listen else [])
            await sim.kv.get("s", "k")
            await sim.kv.get("s", "missing")

        sim.run(main())
        digest = sim.history.digest()
        sim.close()
        return digest, seen

    quiet, _ = run(False)
    loud, seen = run(True)
    assert seen == ["0 kv.set ok", "1 kv.get ok", "2 kv.get ok"]
    assert loud == quiet


def test_no_module_outside_the_history_writes_its_storage() -> None:
    """One history path: services write through ``History`` methods, never its list."""
    import ast
    import pathlib

    import pytest_bgwork

    root = pathlib.Path(pytest_bgwork.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "history.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("_events", "_rows", "_listeners",
                                                                  "rows"):
                offenders.append(f"{path.relative_to(root)}:{node.lineno} .{node.attr}")
    assert offenders == []
