"""Supervised workers (``sim.workers``) running an unmodified aiobotocore long-poll loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiobotocore.session import get_session

import pytest_bgwork as bg
from pytest_bgwork import adapters
from pytest_bgwork.checking import chaos


@pytest_asyncio.fixture
async def asqs(bg_sqs: adapters.sqs.SqsBackend) -> AsyncIterator[Any]:
    async with get_session().create_client("sqs", region_name="eu-west-1") as client:
        yield client


def sqs_loop(sim: bg.Simulation, sqs: Any, url: str, done: list[str]) -> Any:
    """receive_message(WaitTimeSeconds=20) -> write status -> delete, forever."""
    async def loop() -> None:
        while True:
            got = await sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=20)
            for message in got.get("Messages", []):
                await sim.kv.set("status", message["Body"], "running")
                await sim.kv.set("status", message["Body"], "done")
                done.append(message["Body"])
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return loop()


@pytest.mark.bgwork(chaos="")
@pytest.mark.asyncio
async def test_a_long_polling_worker_is_idle_between_messages_and_restarted_after_a_crash(
        bgwork: bg.Simulation, asqs: Any) -> None:
    url = (await asqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "30"}))["QueueUrl"]
    done: list[str] = []
    bgwork.faults.crash("jobs", at="kv.set", on_call=2)  # between the first job's two writes
    bgwork.workers.start("w", lambda: sqs_loop(bgwork, asqs, url, done))
    for body in ("a", "b"):
        await asqs.send_message(QueueUrl=url, MessageBody=body)
    await bgwork.run_until_idle()  # the long polls do not keep it busy
    # the first job received (standard queues are best-effort ordered: either) crashed between
    # its writes and came back after 30 s, after the other one was done
    assert sorted(done) == ["a", "b"]
    crashed = bgwork.history.filter("queue", "crashed")[0].detail["id"]
    assert bgwork.history.filter("queue", "deliver")[0].detail["id"] == crashed
    assert 30.0 <= bgwork.clock.monotonic() < 60.0
    assert bgwork.workers.get("w").crashes == 1
    bg.assert_nothing_lost(bgwork)


@pytest.mark.bgwork(chaos="")
@pytest.mark.asyncio
async def test_chaos_crash_acts_inside_an_aiobotocore_worker(bgwork: bg.Simulation, asqs: Any) -> None:
    chaos.apply(bgwork, "crash")
    url = (await asqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "30"}))["QueueUrl"]
    done: list[str] = []
    bgwork.workers.start("w", lambda: sqs_loop(bgwork, asqs, url, done))
    await asqs.send_message(QueueUrl=url, MessageBody="a")
    await bgwork.run_until_idle()
    [crash] = bgwork.history.filter("fault", "crash")
    assert crash.attempt == "jobs/msg_1#1"
    assert done[-1] == "a" and bgwork.kv.items("status") == {"a": "done"}
    bg.assert_nothing_lost(bgwork)
