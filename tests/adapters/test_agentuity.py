"""The real agentuity 0.0.106 SDK's KeyValueStore and ObjectStore on the simulation."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

# the real SDK, never skipped: install it with requirements/adapters-seed.txt
from agentuity import KeyValueStore, ObjectStore
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace

import pytest_bgwork as bg
from pytest_bgwork import adapters

BASE = "https://agentuity.ai"
TRACER = trace.get_tracer("tests")


def store(base: str = BASE) -> Any:
    return KeyValueStore(base, "sk_test", TRACER)


def run(main: Any, seed: int = 1) -> bg.Simulation:
    sim = bg.Simulation(seed=seed)
    with adapters.agentuity.install(sim):
        sim.run(main(sim))
    return sim


def test_json_roundtrip_on_any_base_url_lands_in_sim_kv() -> None:
    seen: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        await store().set("status", "job1", {"kind": "queued"})
        await store("http://localhost:3500/sdk").set("status", "job2", {"kind": "done"})
        for key in ("job1", "job2"):
            result = await store("https://other.example").get("status", key)
            seen.append((result.exists, await result.data.json(), result.data.content_type))

    sim = run(main)
    assert seen == [(True, {"kind": "queued"}, "application/json"), (True, {"kind": "done"}, "application/json")]
    assert sim.kv.items("status") == {"job1": {"kind": "queued"}, "job2": {"kind": "done"}}


def test_text_and_bytes_keep_their_content_type() -> None:
    got: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        kv = store()
        await kv.set("blobs", "t", "hello")
        await kv.set("blobs", "csv", "a,b\n", {"contentType": "text/csv"})
        await kv.set("blobs", "png", b"\x89PNG\x00", {"contentType": "image/png"})
        for key in ("t", "csv", "png"):
            r = await kv.get("blobs", key)
            got.append((await r.data.binary(), r.data.content_type))

    sim = run(main)
    assert got == [(b"hello", "text/plain"), (b"a,b\n", "text/csv"), (b"\x89PNG\x00", "image/png")]
    assert sim.kv.items("blobs")["t"] == "hello"
    assert adapters.agentuity.stored_bytes(sim, "blobs", "png") == (b"\x89PNG\x00", "image/png")


#: Values the SDK's ``KeyValueStore.set`` takes (``None`` it refuses).
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                       max_size=3), max_leaves=6)
sdk_values = (st.binary(max_size=8) | st.text(max_size=8) | st.integers(-10**9, 10**9) | st.booleans()
              | st.floats(allow_nan=False, allow_infinity=False, width=32)
              | st.lists(json_values, max_size=3) | st.dictionaries(st.text(max_size=4), json_values, max_size=3))


def read_back(value: Any, *, seeded: bool, content_type: str | None = None) -> Any:
    """Store ``value`` through the SDK or by seeding ``sim.kv``; read it through the SDK and sim.kv."""
    out: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        if seeded:
            await sim.kv.set("seeded", "k", value, **({"content_type": content_type} if content_type else {}))
        else:
            await store().set("seeded", "k", value, {"contentType": content_type} if content_type else None)
        r = await store().get("seeded", "k")
        out.append((await r.data.binary(), r.data.content_type))
        out.append((await sim.kv.get("seeded", "k")).content_type)

    run(main)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=sdk_values, typed=st.sampled_from([None, "text/csv"]))
def test_a_value_seeded_in_sim_kv_reads_back_as_if_the_sdk_had_stored_it(value: Any, typed: str | None) -> None:
    """The oracle is the SDK itself: ``set`` of a value sends ``dataLikeToData(value)``."""
    through_the_sdk = read_back(value, seeded=False, content_type=typed)
    assert through_the_sdk[1] == through_the_sdk[0][1]  # sim.kv and the SDK agree on the content type
    assert read_back(value, seeded=True, content_type=typed) == through_the_sdk


@pytest.mark.parametrize(("value", "expected"), [
    (b"\x00\xffraw", (b"\x00\xffraw", "application/octet-stream")),  # was HTTP 500
    (5, (b"5", "text/plain")),  # was application/json
    (True, (b"True", "text/plain")),  # str(True), as the SDK sends it
    ({"kind": "queued"}, (b'{"kind": "queued"}', "application/json")),
])
def test_seeded_values_that_read_back_wrong_before(value: Any, expected: tuple[bytes, str]) -> None:
    assert read_back(value, seeded=True) == [expected, expected[1]]


def test_a_json_number_sent_as_json_keeps_its_content_type_in_sim_kv() -> None:
    out: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        await store().set("s", "n", 5, {"contentType": "application/json"})
        out.append(((await sim.kv.get("s", "n")).content_type, sim.kv.items("s")))

    run(main)
    assert out == [("application/json", {"n": 5})]


def test_miss_and_delete() -> None:
    out: list[bool] = []

    async def main(sim: bg.Simulation) -> None:
        kv = store()
        out.append((await kv.get("status", "nope")).exists)
        await kv.set("status", "k", {"a": 1})
        await kv.delete("status", "k")
        out.append((await kv.get("status", "k")).exists)
        await kv.delete("status", "k")  # deleting a missing key is fine (200)

    sim = run(main)
    assert out == [False, False]
    assert [v.op for v in sim.kv.history("status", "k")] == ["set", "delete"]


def test_sdk_ttl_bug_is_shown_faithfully_the_value_never_expires() -> None:
    """0.0.106 reads ``ttl`` only inside ``if params is None:``: ``params={"ttl": 120}`` is lost."""

    async def main(sim: bg.Simulation) -> None:
        await store().set("cache", "k", {"v": 1}, {"ttl": 120})
        await sim.advance(86400)
        assert (await store().get("cache", "k")).exists

    sim = run(main)
    assert [v.ttl for v in sim.kv.history("cache", "k")] == [None]


def test_sdk_refuses_nothing_below_60_either_the_check_is_dead_code() -> None:
    async def main(sim: bg.Simulation) -> None:
        await store().set("cache", "k", 1, {"ttl": 5})  # the SDK's own check never runs

    sim = run(main)
    assert sim.kv.items("cache") == {"k": "1"}


def test_ttl_in_the_path_is_honoured_on_virtual_time() -> None:
    """A client that does send the TTL (a fixed SDK, or plain HTTP) gets it applied."""
    statuses: list[int] = []

    async def main(sim: bg.Simulation) -> None:
        r = httpx.put(f"{BASE}/kv/2025-03-17/cache/k/120", content=b'{"v":1}',
                      headers={"Content-Type": "application/json"})
        statuses.append(r.status_code)
        await sim.advance(119)
        statuses.append(httpx.get(f"{BASE}/kv/2025-03-17/cache/k").status_code)
        await sim.advance(1)
        statuses.append(httpx.get(f"{BASE}/kv/2025-03-17/cache/k").status_code)

    sim = run(main)
    assert statuses == [201, 200, 404]
    assert [v.op for v in sim.kv.history("cache", "k")] == ["set", "expire"]


def test_ttl_below_60_in_the_path_is_refused_with_400_naming_the_rule() -> None:
    answers: list[tuple[int, str]] = []

    async def main(sim: bg.Simulation) -> None:
        r = httpx.put(f"{BASE}/kv/2025-03-17/cache/k/59", content=b"x", headers={"Content-Type": "text/plain"})
        answers.append((r.status_code, r.text))

    sim = run(main)
    assert answers == [(400, "ttl must be at least 60 seconds; got 59")]
    assert sim.kv.items("cache") == {}


@pytest.mark.parametrize(("op", "key"), [("set", "job/60"), ("get", "a/b"), ("delete", "x/y/z"), ("get", "a?b")])
def test_a_key_the_sdk_puts_into_the_url_unescaped_is_an_error_naming_it(op: str, key: str) -> None:
    async def main(sim: bg.Simulation) -> None:
        kv = store()
        if op == "set":
            await kv.set("status", key, {"kind": "queued"})
        else:
            await getattr(kv, op)("status", key)

    with pytest.raises(adapters.agentuity.UnescapedKey, match=re.escape(f"the key {key!r}")):
        run(main)


def test_injected_errors_reach_the_sdk_as_the_service_would_send_them() -> None:
    errors: list[str] = []

    async def main(sim: bg.Simulation) -> None:
        kv = store()
        sim.faults.fail("kv.set", on_call=1, error=ConnectionError("kv down"))
        sim.faults.fail("kv.get", on_call=1, error=RuntimeError("boom"))
        for call in (kv.set("s", "k", 1), kv.get("s", "k")):
            try:
                await call
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    sim = run(main)
    assert errors == ["ConnectError: kv down", "Exception: Failed to get key value: 500"]
    assert sim.kv.items("s") == {}


def test_an_injected_network_error_stays_injected_through_respx_and_the_sdk() -> None:
    """respx re-raises a route's error ``from`` its own ``SideEffectError``, which dropped
    the injected cause: ``bg.is_injected`` was False, and explore failed correct code."""
    seen: list[tuple[str, bool]] = []

    async def main(sim: bg.Simulation) -> None:
        sim.faults.fail("kv.set", on_call=1, error=ConnectionError("kv down"))
        sim.faults.fail("kv.get", on_call=1, error=TimeoutError("slow"))
        for call in (store().set("s", "k", 1), store().get("s", "k")):
            try:
                await call
            except httpx.TransportError as exc:
                seen.append((type(exc).__name__, bg.is_injected(exc)))

    run(main)
    assert seen == [("ConnectError", True), ("ReadTimeout", True)]


def test_a_network_error_that_was_not_injected_is_not_marked() -> None:
    async def refuse(sim: bg.Simulation) -> None:
        try:
            await store().set("s", "k", 1)
        except httpx.ConnectError as exc:
            assert not bg.is_injected(exc)
        else:
            raise AssertionError("the set went through")

    sim = bg.Simulation(seed=1)
    with adapters.agentuity.install(sim), pytest.MonkeyPatch.context() as mp:
        def down(*_: Any, **__: Any) -> None:
            raise ConnectionError("the app's own outage")  # not the fault injector's

        mp.setattr(sim.kv, "set_sync", down)
        sim.run(refuse(sim))


def test_timeout_after_apply_raises_although_the_write_happened() -> None:
    async def main(sim: bg.Simulation) -> None:
        sim.faults.fail("kv.set", after_apply=True, error=TimeoutError("read timeout"))
        with pytest.raises(httpx.ReadTimeout):
            await store().set("s", "k", {"v": 1})

    sim = run(main)
    assert sim.kv.items("s") == {"k": {"v": 1}}
    assert [v.outcome for v in sim.kv.history("s", "k")] == ["unknown"]


def test_a_delay_fault_blocks_the_loop_as_the_sync_call_does() -> None:
    """The SDK's sync httpx call holds the event loop: time passes, no other task runs."""
    order: list[str] = []

    async def other() -> None:
        order.append("other task")

    async def main(sim: bg.Simulation) -> None:
        sim.faults.delay("kv.get", seconds=30)
        sim.loop.create_task(other())
        await store().get("s", "k")
        order.append(f"get returned at {sim.clock.monotonic():g}")
        await sim.run_until_idle()

    run(main)
    assert order == ["get returned at 30", "other task"]


def test_a_crash_at_kv_set_inside_a_queue_attempt_kills_the_attempt_and_it_is_redelivered() -> None:
    async def main(sim: bg.Simulation) -> None:
        sim.queues.create("jobs", visibility_timeout=60)
        after: list[str] = []

        async def handler(payload: dict[str, Any], delivery: bg.Delivery) -> None:
            try:
                await store().set("status", payload["id"], {"kind": "done"})
                after.append("returned")
            except Exception:  # user code's broad except does not see the crash
                after.append("swallowed")

        sim.queues.route("jobs", handler)
        sim.faults.crash("jobs", at="kv.set", on_call=1)
        await sim.queues.publish("jobs", {"id": "j1"})
        await sim.run_until_idle()
        assert after == ["returned"]  # only the redelivered attempt got past the write

    sim = run(main)
    assert sim.queues.stats("jobs")["crashed"] == 1
    assert sim.kv.items("status") == {"j1": {"kind": "done"}}
    bg.assert_nothing_lost(sim)


def test_object_store_put_get_delete_with_escaped_keys() -> None:
    got: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        objects = ObjectStore("https://agentuity.ai", "sk", TRACER)
        await objects.put("reports", "2026/01/summary.csv", b"a,b\n")
        r = await objects.get("reports", "2026/01/summary.csv")
        got.append((await r.data.binary(), r.data.content_type))
        got.append(await objects.delete("reports", "2026/01/summary.csv"))
        got.append(await objects.delete("reports", "2026/01/summary.csv"))
        got.append((await objects.get("reports", "2026/01/summary.csv")).exists)

    sim = run(main)
    assert got == [(b"a,b\n", "application/octet-stream"), True, False, False]
    assert [v.op for v in sim.kv.history("objectstore:reports", "2026/01/summary.csv")] == ["set", "delete"]


def test_what_is_not_simulated_says_so() -> None:
    async def main(sim: bg.Simulation) -> None:
        await ObjectStore(BASE, "sk", TRACER).create_public_url("reports", "a.csv")

    with pytest.raises(adapters.agentuity.NotSimulated, match="presigned"):
        run(main)

    async def vector(sim: bg.Simulation) -> None:
        httpx.post(f"{BASE}/vector/2025-03-17/search/docs", json={"query": "x"})

    with pytest.raises(adapters.agentuity.NotSimulated, match="vector store"):
        run(vector)


def test_same_seed_same_digest() -> None:
    async def main(sim: bg.Simulation) -> None:
        await store().set("s", "a", {"n": 1})
        await store().get("s", "a")
        await store().delete("s", "a")

    assert run(main, seed=3).history.digest() == run(main, seed=3).history.digest()


def test_install_refuses_something_that_is_not_a_simulation() -> None:
    with pytest.raises(TypeError, match=r"expected a bg\.Simulation; got str"), adapters.agentuity.install("sim"):  # type: ignore[arg-type]
        pass


def test_plugin_start_up_imports_no_sdk_and_adapters_load_lazily() -> None:
    code = (
        "import sys, pytest_bgwork.plugin\n"
        "from pytest_bgwork import adapters\n"
        "assert not [m for m in ('agentuity', 'alienplatform', 'tenxgraph') if m in sys.modules]\n"
        "assert 'pytest_bgwork.adapters.agentuity' not in sys.modules\n"
        "adapters.agentuity\n"
        "assert 'pytest_bgwork.adapters.agentuity' in sys.modules and 'agentuity' not in sys.modules\n"
        "print(sorted(adapters.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(["agentflow", "agentuity", "alien", "arq", "asgi", "celery", "dramatiq", "redis",
                               "rq", "sqs", "taskiq"])


def test_fixture_bg_agentuity_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg
        from agentuity import KeyValueStore
        from opentelemetry import trace

        kv = KeyValueStore("https://agentuity.ai", "sk", trace.get_tracer("app"))

        @pytest.mark.asyncio
        async def test_status(bg_agentuity):
            await kv.set("status", "j1", {"kind": "done"})
            bg.assert_status_terminal(bg_agentuity, "status", field="kind", terminal={"done"})

        @pytest.mark.asyncio
        async def test_isolated(bg_agentuity):
            assert not (await kv.get("status", "j1")).exists
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
