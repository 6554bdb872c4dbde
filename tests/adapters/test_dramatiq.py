"""dramatiq on the simulation: SimBroker runs unmodified actors with their middleware."""

from __future__ import annotations

import logging
import queue
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import dramatiq.broker as dq_broker
import pytest
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

import pytest_bgwork as bg
from pytest_bgwork.adapters import dramatiq as bd

#: Made before the actors below are decorated (they bind get_broker() then).
broker = bd.SimBroker()
results_backend = StubBackend()
broker.add_middleware(Results(backend=results_backend))
_previous = dq_broker.global_broker
dramatiq.set_broker(broker)
runs: list[tuple[str, Any, float]] = []


def _log(name: str, value: Any) -> None:
    runs.append((name, value, bg.current().clock.monotonic()))


@dramatiq.actor(max_retries=3, min_backoff=1_000_000)  # 1000 s: past the queue's 900 s cap
def send_email(to: str) -> None:
    _log("send_email", to)
    if len([r for r in runs if r[0] == "send_email"]) < 3:
        raise ConnectionError("smtp down")
    bd.call(bg.current().kv.set("outbox", to, "sent"))


@dramatiq.actor(max_retries=1, min_backoff=10)
def always_fails() -> None:
    _log("always_fails", None)
    raise ValueError("bad address")


@dramatiq.actor(throws=(KeyError,))
def no_retry() -> None:
    _log("no_retry", None)
    raise KeyError("unknown template")


@dramatiq.actor
def write(key: str) -> None:
    _log("write", key)
    bd.call(bg.current().kv.set("outbox", key, "sent"))


@dramatiq.actor
async def async_write(key: str) -> None:
    _log("async_write", key)
    await bg.current().kv.set("outbox", key, "sent")


@dramatiq.actor(time_limit=5000, max_retries=0)
def limited() -> None:
    _log("limited", "start")
    time.sleep(30)  # virtual: the time limit interrupts it after 5 s
    _log("limited", "end")


dramatiq.set_broker(_previous)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _global_broker() -> Iterator[None]:
    runs.clear()
    broker.dead_letters_by_queue.clear()
    saved = dq_broker.global_broker
    dq_broker.global_broker = broker
    yield
    dq_broker.global_broker = saved


@pytest.mark.asyncio
async def test_retries_back_off_on_virtual_time_past_the_delay_cap(bgwork: bg.Simulation) -> None:
    message = send_email.send("ana@example.com")
    assert uuid.UUID(message.message_id).version == 4  # dramatiq's own id form, seeded
    await bgwork.run_until_idle()
    times = [r[2] for r in runs]
    assert len(times) == 3 and bgwork.kv.items("outbox") == {"ana@example.com": "sent"}
    assert 1000 <= times[1] < 2000 and 2000 <= times[2] - times[1] < 4000  # x2 per retry, +jitter
    assert broker.dead_letters == []


def test_backoff_jitter_is_drawn_from_sim_choices() -> None:
    def times(seed: int) -> list[float]:
        runs.clear()
        with bg.Simulation(seed=seed) as sim:
            async def main() -> None:
                send_email.send("bo@example.com")
                await sim.run_until_idle()

            sim.run(main())
            return [r[2] for r in runs]

    assert times(1) == times(1) != times(2)


@pytest.mark.asyncio
async def test_messages_dead_letter_after_max_retries(bgwork: bg.Simulation) -> None:
    always_fails.send()
    await bgwork.run_until_idle()
    assert len(runs) == 2  # the first attempt and one retry
    assert [m.actor_name for m in broker.dead_letters] == ["always_fails"]
    assert bgwork.history.filter("dramatiq", "dead_letter")[0].detail["error"] == "ValueError: bad address"
    bg.assert_nothing_lost(bgwork)  # acked on the simulated queue: dramatiq holds the dead letter


@pytest.mark.asyncio
async def test_throws_dead_letters_without_retrying(bgwork: bg.Simulation) -> None:
    no_retry.send()
    await bgwork.run_until_idle()
    assert len(runs) == 1 and len(broker.dead_letters) == 1


@pytest.mark.asyncio
async def test_a_crash_is_redelivered_after_the_visibility_timeout(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("default", at="kv.set")
    write.send("cy")
    await bgwork.run_until_idle()
    assert [r[2] for r in runs] == [0.0, bd.DEFAULT_VISIBILITY]
    assert bgwork.kv.items("outbox") == {"cy": "sent"}


@pytest.mark.asyncio
async def test_async_actors_run_on_the_simulation_loop(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("kv.set", error=ConnectionError("kv down"))
    async_write.send("dee")
    await bgwork.run_until_idle()
    assert len(runs) == 2  # the KV fault failed attempt 1; Retries ran it again
    assert bgwork.kv.items("outbox") == {"dee": "sent"}


@pytest.mark.asyncio
async def test_delayed_sends_and_unknown_actors(bgwork: bg.Simulation) -> None:
    write.send_with_options(args=("eve",), delay=5000)
    broker.enqueue(dramatiq.Message(queue_name="default", actor_name="gone", args=(), kwargs={},
                                    options={}))
    await bgwork.run_until_idle()
    assert [(r[1], r[2]) for r in runs] == [("eve", 5.0)]
    assert [m.actor_name for m in broker.dead_letters] == ["gone"]


@pytest.mark.asyncio
async def test_unsupported_features_raise_naming_them(bgwork: bg.Simulation) -> None:
    with pytest.raises(bd.UnsupportedFeature, match=r"consume\('default'\).*broker.pause\(\)"):
        broker.consume("default")  # the simulation delivers: a consumer would race it
    with pytest.raises(bd.UnsupportedFeature, match="inside the simulation would block"):
        broker.join("default")
    with pytest.raises(dramatiq.errors.QueueNotFound):
        broker.enqueue(dramatiq.Message(queue_name="nowhere", actor_name="x", args=(), kwargs={},
                                        options={}))


def test_the_fixture_adopts_actors_declared_earlier(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import dramatiq
        import dramatiq.broker as dq_broker
        import pytest
        from dramatiq.brokers.stub import StubBroker

        stub = StubBroker()
        dramatiq.set_broker(stub)  # the app's own broker, set before its actors

        @dramatiq.actor
        def hello(name):
            pass

        @pytest.mark.asyncio
        async def test_it(bgwork, bg_dramatiq):
            assert hello.broker is bg_dramatiq and bg_dramatiq.sim is bgwork
            hello.send("x")
            await bgwork.run_until_idle()
            assert bgwork.queues.stats("default")["acked"] == 1

        def test_after():
            assert hello.broker is stub and dq_broker.global_broker is stub
        """
    )
    result = pytester.runpytest("-p", "pytest_bgwork.adapters._task_fixtures")
    result.assert_outcomes(passed=2)


@pytest.mark.asyncio
async def test_pipelines_and_success_callbacks_run_as_in_a_worker(bgwork: bg.Simulation) -> None:
    saved = dq_broker.global_broker
    dramatiq.set_broker(broker)
    try:
        @dramatiq.actor
        def double(x: int) -> int:
            _log("double", x)
            return x * 2

        @dramatiq.actor
        def done(message: dict[str, Any], result: int) -> None:
            _log("done", result)
    finally:
        dq_broker.global_broker = saved
    (double.message(1) | double.message()).run()
    double.send_with_options(args=(5,), on_success=done)
    await bgwork.run_until_idle()
    assert sorted((r[0], r[1]) for r in runs) == [("done", 10), ("double", 1), ("double", 2), ("double", 5)]


@pytest.mark.asyncio
@pytest.mark.bgwork(platform="aws")
async def test_the_brokers_queue_keeps_its_own_retries_on_any_platform(
    bgwork: bg.Simulation,
) -> None:
    send_email.send("ana@example.com")  # sqs-standard would refuse the broker's retry_delay=0
    await bgwork.run_until_idle()
    assert [bgwork.queues.config(q).profile for q in bgwork.queues.names()] == ["agentuity"]
    assert len(runs) == 3 and bgwork.kv.items("outbox") == {"ana@example.com": "sent"}


@dramatiq.actor(store_results=True, broker=broker)
def double_it(n: int) -> int:
    return 2 * n


def _ids_and_result(seed: int) -> tuple[list[str], int]:
    with bg.Simulation(seed=seed) as sim:
        async def main() -> tuple[list[str], int]:
            msg = double_it.message(21)
            broker.enqueue(msg)  # the id made before enqueue is the one delivered
            await sim.run_until_idle()
            return [msg.message_id], msg.get_result(backend=results_backend)

        return sim.run(main())


def test_message_ids_are_dramatiqs_seeded_uuids_and_results_are_found_by_them() -> None:
    ids, result = _ids_and_result(5)
    assert result == 42
    assert uuid.UUID(ids[0]).version == 4
    assert _ids_and_result(5)[0] == ids  # same seed, same ids
    assert _ids_and_result(6)[0] != ids  # a result kept by id never leaks into another test


@pytest.mark.asyncio
async def test_a_binary_encoder_travels_through_the_queue(bgwork: bg.Simulation) -> None:
    from dramatiq.encoder import PickleEncoder

    previous = dramatiq.get_encoder()
    dramatiq.set_encoder(PickleEncoder())
    try:
        write.send("pickled")
        await bgwork.run_until_idle()
    finally:
        dramatiq.set_encoder(previous)
    assert bgwork.kv.items("outbox") == {"pickled": "sent"}


@pytest.mark.asyncio
async def test_worker_log_records_are_dramatiqs(bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dramatiq")
    no_retry.send()
    broker.enqueue(dramatiq.Message(queue_name="default", actor_name="gone", args=(), kwargs={},
                                    options={}))
    await bgwork.run_until_idle()
    records = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert ("dramatiq.worker.WorkerThread", "INFO",
            "Failed to process message no_retry() with expected exception KeyError.") in records
    assert ("dramatiq.worker.ConsumerThread(default)", "ERROR",
            "Received message for undefined actor 'gone'. Moving it to the DLQ.") in records


@dramatiq.actor(max_retries=0, broker=broker)
def boom() -> None:
    raise LookupError("no such invoice")


def test_join_in_a_sync_test_runs_the_simulation(bgwork: bg.Simulation) -> None:
    write.send("sync")
    broker.join("default")
    assert bgwork.kv.items("outbox") == {"sync": "sent"}
    write.send_with_options(args=("late",), delay=3_600_000)
    with pytest.raises(dramatiq.errors.QueueJoinTimeout):
        broker.join("default", timeout=1000)  # virtual milliseconds
    broker.join("default")
    assert bgwork.clock.monotonic() == 3600
    boom.send()
    with pytest.raises(LookupError, match="no such invoice"):
        broker.join("default")  # fail_fast, as StubBroker.join


def test_time_limits_interrupt_an_actor_on_virtual_time(
        bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    limited.send()
    with pytest.raises(dramatiq.middleware.TimeLimitExceeded):
        broker.join("default")
    assert runs == [("limited", "start", 0.0)] and bgwork.clock.monotonic() == 5.0
    assert "Time limit exceeded. Raising exception in worker thread" in caplog.text


def test_a_paused_broker_holds_messages_then_runs_them_by_priority(bgwork: bg.Simulation) -> None:
    own = bd.SimBroker(bgwork)
    calls: list[str] = []

    @dramatiq.actor(broker=own, priority=10, actor_name="paused_lo")
    def lo() -> None:
        calls.append("lo")

    @dramatiq.actor(broker=own, priority=0, actor_name="paused_hi")
    def hi() -> None:
        calls.append("hi")

    own.pause()
    for _ in range(3):
        lo.send()
        hi.send()
    time.sleep(150)  # virtual; past the 60 s visibility: the waiting leases are renewed
    assert calls == [] and own.queues["default"].qsize() == 6
    with pytest.raises(bg.NotRunning, match=r"paused: 6 message\(s\) wait for broker.resume"):
        own.join("default")
    own.resume()
    own.join("default")
    assert calls == ["hi"] * 3 + ["lo"] * 3  # once each: no lease lapsed
    assert own.queues["default"].qsize() == own.queues["default"].unfinished_tasks == 0
    assert bgwork.history.filter("queue", "extend")


def test_flush_get_and_consume_on_a_paused_broker(bgwork: bg.Simulation) -> None:
    own = bd.SimBroker(bgwork)
    calls: list[int] = []

    @dramatiq.actor(broker=own, actor_name="flushed_work")
    def work(n: int) -> None:
        calls.append(n)

    own.pause()
    first = work.send(1)
    work.send(2)
    work.send(3)
    assert own.queues["default"].qsize() == 3
    assert dramatiq.Message.decode(own.queues["default"].get(timeout=1)) == first
    consumer = own.consume("default", timeout=100)
    taken = next(consumer)
    assert taken is not None and taken.args == (2,)
    own.dead_letters_by_queue["default"].append(taken)
    own.flush_all()
    assert own.queues["default"].qsize() == 0 and own.dead_letters == []
    assert next(consumer) is None  # 100 virtual ms later
    with pytest.raises(queue.Empty):
        own.queues["default"].get(timeout=1)
    own.resume()
    own.join("default")
    assert calls == []  # the flushed message 3 never ran
    work.send(4)
    own.join("default")
    assert calls == [4]
