"""The real alienplatform 3.3.43 SDK (Kv, Queue, worker handlers) on a simulated bindings handle."""

from __future__ import annotations

import json
from typing import Any

import pytest

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
    assert seen == [("j1", b'{"kind": "queued"}', "1"), "2", None]
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
        out.append(await status.delete("lease"))  # already gone

    run(main)
    assert out == [True, False, True, False, False, True, False]


def test_ttl_follows_the_virtual_clock() -> None:
    async def main(sim: bg.Simulation) -> None:
        await status.put("t", b"x", ttl_seconds=60)
        await sim.advance(59)
        assert await status.exists("t")
        await sim.advance(1)
        assert not await status.exists("t")
        await status.put("t", b"y")  # a write after expiry starts again at version 1
        assert (await status.get("t")).version == "1"

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
    assert pages == [(["job:1", "job:2"], "job:2"), (["job:3"], None)]


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
    (lambda: status.put("a/b", b"x"), "Key contains invalid characters*got 'a/b'"),
    (lambda: status.get(""), "Key cannot be empty"),
    (lambda: status.put("k", b"x" * 24_577), "Value exceeds 24576 bytes (got 24577)*"),
    (lambda: status.put("k", b"x", ttl_seconds=0), "ttl_seconds must be a whole number of seconds >= 1*"),
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
