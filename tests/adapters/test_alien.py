"""The real alienplatform 3.3.43 SDK (Kv, Queue, worker handlers) on a simulated bindings handle."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import adapters

# the real SDK, never skipped: install it with requirements/adapters-seed.txt
import alienplatform  # isort: skip
from alienplatform import AlienError, QueueOutcome, kv, on_queue_batch, on_queue_message, queue  # isort: skip

status = kv("status")  # built once, at import, as app code does
jobs = queue("jobs")


def run(main: Any, seed: int = 1) -> bg.Simulation:
    sim = bg.Simulation(seed=seed)

    async def body() -> None:
        with adapters.alien.install(sim):
            await main(sim)

    sim.run(body())
    return sim


def test_kv_put_get_versions_and_json_records_in_sim_kv() -> None:
    seen: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        assert await status.put("j1", json.dumps({"kind": "queued"}).encode())
        entry = await status.get("j1")
        seen.append((entry.key, entry.value, entry.version))
        assert await status.put("j1", json.dumps({"kind": "done"}).encode())
        seen.append((await status.get("j1")).version)
        seen.append(await status.get("missing"))

    sim = run(main)
    assert seen[0][:2] == ("j1", b'{"kind": "queued"}') and seen[1] != seen[0][2] and seen[2] is None
    assert sim.kv.items("status") == {"j1": {"kind": "done"}}
    bg.assert_status_terminal(sim, "status", field="kind", terminal={"done"})


def test_binary_values_round_trip_exactly() -> None:
    async def main(sim: bg.Simulation) -> None:
        for raw in (b"\x00\xff", b'{"a":1}', b"plain"):
            await status.put("k", raw)
            assert (await status.get("k")).value == raw

    run(main)


def test_conditional_writes_absent_and_version() -> None:
    out: list[bool] = []

    async def main(sim: bg.Simulation) -> None:
        out.append(await status.put("lease", b"a", condition="absent"))
        out.append(await status.put("lease", b"b", condition="absent"))
        version = (await status.get("lease")).version
        out.append(await status.put("lease", b"c", condition="version", version=version))
        out.append(await status.put("lease", b"d", condition="version", version=version))  # stale
        out.append(await status.delete("lease", if_version=version))  # stale
        out.append(await status.delete("lease", if_version=(await status.get("lease")).version))
        out.append(await status.delete("lease"))  # already gone: True all the same (local-kv)

    run(main)
    assert out == [True, False, True, False, False, True, True]


def test_ttl_follows_the_virtual_clock() -> None:
    async def main(sim: bg.Simulation) -> None:
        await status.put("t", b"x", ttl_seconds=60)
        await sim.advance(59)
        assert await status.exists("t")
        await sim.advance(1)
        assert not await status.exists("t")
        await status.put("t", b"y")  # a write after expiry gets a new version, never an old one
        assert (await sim.kv.get("status", "t")).version == 2

    run(main)


def test_scan_pages_with_a_cursor() -> None:
    pages: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        for key in ("job:1", "job:2", "job:3", "other"):
            await status.put(key, b"x")
        page = await status.scan("job:", limit=2)
        pages.append(([i.key for i in page.items], page.next_cursor))
        page = await status.scan("job:", limit=2, cursor=page.next_cursor)
        pages.append(([i.key for i in page.items], page.next_cursor))

    run(main)
    assert pages[0][0] == ["job:1", "job:2"] and pages[1] == (["job:3"], None)
    assert json.loads(base64.urlsafe_b64decode(pages[0][1] + "==")) == {"version": 1, "prefix": "job:",
                                                                        "last_key": "job:2"}


def test_kv_namespaces_follow_the_alien_profile_and_bytes_up_to_its_limit_round_trip() -> None:
    """Raw bytes are stored as bytes, so the profile's 24,576-byte limit applies to them exactly
    (a base64 envelope would have refused values from about 18 KB on)."""
    seen: list[Any] = []
    biggest = bytes(range(256)) * 96  # 24,576 bytes, not JSON

    async def main(sim: bg.Simulation) -> None:
        assert await status.put("blob", biggest, ttl_seconds=30)  # below agentuity's 60 s minimum
        seen.append(bytes((await status.get("blob")).value) == biggest)
        seen.append(sim.kv.profile("status").name)
        await sim.advance(31)
        seen.append(await status.exists("blob"))

    run(main)
    assert seen == [True, "alien", False]


@pytest.mark.parametrize(("call", "message"), [
    (lambda: status.put("a/b", b"x"), "KV key validation: Invalid input - Key contains invalid characters*"),
    (lambda: status.get(""), "KV key validation: Invalid input - Key cannot be empty"),
    (lambda: status.put("k", b"x" * 24_577), "KV value validation: Invalid input - Value exceeds 24576 bytes"),
    (lambda: status.scan(""), "KV key validation: Invalid input - Key cannot be empty"),
    (lambda: jobs.receive(11), "max_messages must be between 1 and 10; got 11"),
    (lambda: jobs.purge(), "Queue.purge() is not simulated*"),
    (lambda: alienplatform.storage("files").get("a"), "the 'storage' binding 'files' is not simulated*"),
])
def test_bad_input_is_the_alien_error_the_binding_raises(call: Any, message: str) -> None:
    import fnmatch

    caught: list[AlienError] = []

    async def main(sim: bg.Simulation) -> None:
        try:
            await call()
        except AlienError as exc:
            caught.append(exc)

    run(main)
    assert len(caught) == 1 and fnmatch.fnmatch(str(caught[0]), message), caught


def test_queue_send_receive_lease_ack_nack() -> None:
    got: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        await jobs.send({"n": 1})
        await jobs.send_text("hello")
        got.append(await jobs.send_batch(["a", {"b": 2}]))
        messages = await jobs.receive(2)
        got.append([(m.payload_type, m.payload, m.attempt) for m in messages])
        await jobs.renew_lease(messages[0].receipt_handle, 120)
        with pytest.raises(AlienError, match="durationSeconds must be between 1 and 600; got 601"):
            await jobs.renew_lease(messages[0].receipt_handle, 601)
        await sim.advance(60)  # past the 30 s visibility, inside the renewed lease
        await jobs.ack(messages[0].receipt_handle)
        await jobs.nack(messages[1].receipt_handle)
        again = await jobs.receive(10)
        got.append(sorted((m.payload, m.attempt) for m in again))
        got.append(await jobs.ack_batch([m.receipt_handle for m in again]))

    sim = run(main)
    assert got[0] == [{"status": "sent"}, {"status": "sent"}]
    assert got[1] == [("json", '{"n":1}', 1), ("text", "hello", 1)]
    assert got[2] == [('"a"', 1), ("hello", 2), ('{"b":2}', 1)]
    assert got[3] == [{"status": "acked"}] * 3
    bg.assert_nothing_lost(sim)


def test_a_lapsed_lease_redelivers_and_the_stale_ack_deletes_nothing() -> None:
    async def main(sim: bg.Simulation) -> None:
        await jobs.send({"n": 1})
        first = (await jobs.receive(1))[0]
        await sim.advance(31)  # the 30 s lease lapsed
        second = (await jobs.receive(1))[0]
        assert second.attempt == 2
        await jobs.ack(first.receipt_handle)  # stale: the message stays
        await jobs.ack(second.receipt_handle)

    sim = run(main)
    acks = [e.detail["stale"] for e in sim.history.events if (e.service, e.op) == ("queue", "ack")]
    assert acks == [True, False]
    bg.assert_nothing_lost(sim)


def test_worker_handler_runs_on_delivery_with_faults_and_retries() -> None:
    events: list[Any] = []

    async def handler(event: Any) -> None:
        events.append((event.payload, event.attempt_count, event.source))
        if event.attempt_count == 1:
            raise RuntimeError("first attempt fails")

    async def main(sim: bg.Simulation) -> None:
        on_queue_message("emails", handler)
        await queue("emails").send({"to": "a@example.com"})
        await sim.run_until_idle()

    sim = run(main)
    assert events == [(b'{"to":"a@example.com"}', 1, "emails"), (b'{"to":"a@example.com"}', 2, "emails")]
    assert "emails" not in alienplatform.worker_runtime._single_handlers  # reset at exit
    bg.assert_nothing_lost(sim)


def test_batch_handler_retry_outcome_is_a_failed_attempt() -> None:
    calls: list[int] = []

    async def handler(batch: Any) -> list[QueueOutcome]:
        d = batch.deliveries[0]
        calls.append(d.message.attempt_count)
        return [QueueOutcome(d.delivery_id, "retry" if d.message.attempt_count == 1 else "success")]

    async def main(sim: bg.Simulation) -> None:
        on_queue_batch("batches", handler)
        await queue("batches").send({"n": 1})
        await sim.run_until_idle()

    run(main)
    assert calls == [1, 2]


def test_handlers_registered_at_import_are_routed_and_kept() -> None:
    async def handler(event: Any) -> None:
        pass

    alienplatform.worker_runtime._single_handlers["imported"] = handler
    try:
        async def main(sim: bg.Simulation) -> None:
            assert "imported" in sim.queues.names()
            await alienplatform.run_worker()  # returns: the simulation delivers

        run(main)
        assert alienplatform.worker_runtime._single_handlers == {"imported": handler}
    finally:
        del alienplatform.worker_runtime._single_handlers["imported"]


def test_a_cached_handle_follows_the_current_simulation() -> None:
    async def first(sim: bg.Simulation) -> None:
        await status.put("k", b"1")

    async def second(sim: bg.Simulation) -> None:
        assert await status.get("k") is None  # a fresh simulation: nothing leaks

    run(first)
    run(second)


def test_same_seed_same_digest() -> None:
    async def main(sim: bg.Simulation) -> None:
        await status.put("k", b"1", condition="absent")
        await jobs.send({"n": 1})
        await jobs.ack((await jobs.receive(1))[0].receipt_handle)

    assert run(main, seed=4).history.digest() == run(main, seed=4).history.digest()


def test_fixture_bg_alien_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg
        from alienplatform import kv

        status = kv("status")

        @pytest.mark.asyncio
        @pytest.mark.parametrize("turn", [1, 2])
        async def test_status(bg_alien, turn):
            assert await status.put("j", b'{"kind": "done"}', condition="absent")
            bg.assert_status_terminal(bg_alien, "status", field="kind", terminal={"done"})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


# -- the oracle: alienplatform's own local-kv store ---------------------------------------------
#: The real store: ``{"service": "local-kv", "dataDir": ...}`` in ``ALIEN_<NAME>_BINDING``, with
#: ``ALIEN_DEPLOYMENT_TYPE=local``: the SDK's Rust core runs its SQLite store in-process.
_oracles = itertools.count(1)
KEYS = ["k:1", "k:2", "k:10", "j"]
ttls = st.sampled_from([None, None, 0, 3600, 2**40])
kv_ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(KEYS), st.binary(max_size=3), ttls,
              st.sampled_from([None, "absent", "version"]), st.integers(0, 5)),
    st.tuples(st.just("get"), st.sampled_from(KEYS)),
    st.tuples(st.just("exists"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS), st.sampled_from([None, 0, 1, 2, 5])),
    st.tuples(st.just("scan"), st.sampled_from(["", "k", "k:", "k:1", "j", "x"]), st.sampled_from([None, 0, 1, 2]),
              st.sampled_from([None, 0, 1])),
)


async def play(store: Any, program: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``program`` on one ``Kv``; version tokens and cursors are named by order of first sight."""
    tokens: list[str] = []
    cursors: list[str] = []

    def name(token: str | None, seen: list[str]) -> int | None:
        if token is None:
            return None
        if token not in seen:
            seen.append(token)
        return seen.index(token)

    def pick(seen: list[str], i: int | None) -> str | None:
        return None if i is None or not seen else seen[i % len(seen)]

    out: list[Any] = []
    for op in program:
        try:
            if op[0] == "put":
                _, key, value, ttl, condition, i = op
                version = pick(tokens, i) if condition == "version" else None
                if condition == "version" and version is None:
                    version = "eyJ9"  # no token seen yet: one that does not decode
                out.append(await store.put(key, value, ttl_seconds=ttl, condition=condition, version=version))
            elif op[0] == "get":
                entry = await store.get(op[1])
                out.append(None if entry is None else (entry.key, entry.value, name(entry.version, tokens)))
            elif op[0] == "exists":
                out.append(await store.exists(op[1]))
            elif op[0] == "delete":
                out.append(await store.delete(op[1], if_version=pick(tokens, op[2])))
            else:
                _, prefix, limit, c = op
                page = await store.scan(prefix, limit=limit, cursor=pick(cursors, c))
                out.append(([(e.key, e.value, name(e.version, tokens)) for e in page.items],
                            name(page.next_cursor, cursors)))
        except Exception as exc:  # the SDK's errors are part of the behaviour
            out.append(("raises", type(exc).__name__, str(exc), getattr(exc, "code", None),
                        getattr(exc, "context", None)))
    return out


def on_the_real_store(program: list[tuple[Any, ...]], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    binding = f"oracle{next(_oracles)}"
    folder = tmp / binding
    folder.mkdir()
    monkeypatch.setenv("ALIEN_DEPLOYMENT_TYPE", "local")
    monkeypatch.setenv(f"ALIEN_{binding.upper()}_BINDING", json.dumps({"service": "local-kv", "dataDir": str(folder)}))
    return asyncio.run(play(alienplatform.Kv(binding), program))


def on_the_simulation(program: list[tuple[Any, ...]]) -> list[Any]:
    out: list[Any] = []

    async def main(sim: bg.Simulation) -> None:
        out.extend(await play(alienplatform.Kv("oracle"), program))

    run(main)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(program=st.lists(kv_ops, max_size=14))
def test_kv_matches_the_real_local_store(program: list[tuple[Any, ...]], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real = on_the_real_store(program, tmp_path, monkeypatch)
    assert on_the_simulation(program) == real, program


#: Each row failed before: the adapter differed from the real store there.
@pytest.mark.parametrize("program", [
    # a token from before a delete must not apply after the key is re-created
    [("put", "k:1", b"a", None, None, 0), ("get", "k:1"), ("delete", "k:1", None), ("put", "k:1", b"b", None, None, 0),
     ("put", "k:1", b"c", None, "version", 0), ("get", "k:1")],
    [("scan", "", None, None)],  # refused: an empty prefix is an empty key
    [("delete", "j", None)],  # True, although nothing was there
    [("put", "j", b"x", 0, None, 0), ("get", "j"), ("exists", "j")],  # ttl 0: accepted, gone
    [("put", "j", b"x", 2**40, None, 0), ("get", "j")],  # a TTL past the year 9999
    [("put", "k:1", b"x", None, None, 0), ("put", "k:2", b"x", None, None, 0), ("scan", "k", 1, None),
     ("scan", "k", 1, 0), ("scan", "j", 1, 0), ("scan", "k", 0, None)],  # cursors, limit 0
    [("put", "k:1", b"x", None, None, 0), ("get", "k:1"), ("put", "j", b"y", None, "version", 0),
     ("delete", "j", 0)],  # a token of another key
])
def test_rows_where_the_adapter_differed(program: list[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert on_the_simulation(program) == on_the_real_store(program, tmp_path, monkeypatch)


def test_versions_are_opaque_tokens_that_never_repeat_for_a_key() -> None:
    seen: list[str] = []

    async def main(sim: bg.Simulation) -> None:
        for value in (b"1", b"2"):
            await status.put("k", value)
            seen.append((await status.get("k")).version)
        await status.delete("k")
        await status.put("k", b"3")
        seen.append((await status.get("k")).version)
        assert (await sim.kv.get("status", "k")).version == 3  # sim.kv: the alien profile continues

    run(main)
    assert len(set(seen)) == 3 and not any(v.isdigit() for v in seen)
    assert json.loads(base64.urlsafe_b64decode(seen[0] + "==")).keys() == {
        "format", "key", "backendVersion", "expiresAtMillis"}
