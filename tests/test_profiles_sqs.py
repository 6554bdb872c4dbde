"""The SQS profiles against moto, where moto agrees with AWS's documented rules.

Each scenario runs on moto (boto3 in ``mock_aws``: nothing leaves the machine) and on the
simulation, and both must answer alike. Where moto departs from AWS's documentation (a
stale receipt handle deletes; dedup ids forgotten after delete; a suppressed duplicate
gets a new MessageId; no visibility or retention range checks; the old 256 KiB size
limit) the rule is tested in ``test_profiles.py`` against AWS's documented value. moto's
visibility timeouts run on the real clock, so scenarios here use ``VisibilityTimeout=0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import moto
import pytest

import pytest_bgwork as bg


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with moto.mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def refused(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except Exception:
        return True
    return False


def sim_refused(fn: Any) -> bool:
    sim = bg.Simulation()
    try:
        sim.run(fn(sim))
    except ValueError:
        return True
    finally:
        sim.close()
    return False


@pytest.mark.parametrize("name", ["jobs.v2", "a" * 81, "report jobs", "Report_Jobs-1", "a" * 80])
def test_queue_names_as_moto_and_aws(sqs: Any, name: str) -> None:
    async def create(sim: bg.Simulation) -> None:
        sim.queues.create(name, profile="sqs-standard")

    assert refused(sqs.create_queue, QueueName=name) == sim_refused(create)


@pytest.mark.parametrize("delay", [0, 900, 901])
def test_delay_limit_as_moto_and_aws(sqs: Any, delay: int) -> None:
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]

    async def publish(sim: bg.Simulation) -> None:
        sim.queues.create("jobs", profile="sqs-standard")
        await sim.queues.publish("jobs", "x", delay=delay)

    assert refused(sqs.send_message, QueueUrl=url, MessageBody="x", DelaySeconds=delay) == (
        sim_refused(publish)) == (delay > 900)


def test_standard_queue_keeps_duplicates_as_moto_and_aws(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody='{"n":1}')
    theirs = int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"][
        "ApproximateNumberOfMessages"])
    sim = bg.Simulation(platform="aws")

    async def main() -> int:
        sim.queues.create("jobs")
        for _ in range(2):
            await sim.queues.publish("jobs", {"n": 1}, idempotency_key="same")
        return sim.queues.stats("jobs")["pending"]

    assert sim.run(main()) == theirs == 2
    sim.close()


def test_receive_count_and_redrive_as_moto_and_aws(sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    url = sqs.create_queue(QueueName="jobs", Attributes={
        "VisibilityTimeout": "0",
        "RedrivePolicy": f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": "2"}}',
    })["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x")
    theirs = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"]).get(
            "Messages", [])
        theirs.append(int(got[0]["Attributes"]["ApproximateReceiveCount"]) if got else None)
    moved = len(sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10).get("Messages", []))
    sim = bg.Simulation()

    async def main() -> tuple[list[int | None], int]:
        sim.queues.create("jobs", profile="sqs-standard", visibility_timeout=0, max_retries=1)
        await sim.queues.publish("jobs", "x")
        ours: list[int | None] = []
        for _ in range(3):
            d = await sim.queues.receive("jobs")
            ours.append(None if d is None else d.receive_count)
            await sim.advance(0)
        return ours, len(sim.queues.dead_letters("jobs"))

    assert sim.run(main()) == (theirs, moved) == ([1, 2, None], 1)
    sim.close()


def test_fifo_rules_as_moto_and_aws(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    theirs = [
        refused(sqs.send_message, QueueUrl=url, MessageBody="x", MessageDeduplicationId="d"),
        refused(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g"),
        refused(sqs.send_message, QueueUrl=url, MessageBody="x", MessageGroupId="g",
                MessageDeduplicationId="d", DelaySeconds=5),
    ]
    for body, group, dedup in (("a1", "a", "1"), ("a2", "a", "2"), ("b1", "b", "3"),
                               ("again", "a", "1")):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group,
                         MessageDeduplicationId=dedup)
    order: list[list[str]] = []
    handles = []
    for _ in range(3):
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
        order.append([m["Body"] for m in got])
        handles += got
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handles[0]["ReceiptHandle"])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
    order.append([m["Body"] for m in got])

    sim = bg.Simulation()

    async def main() -> tuple[list[bool], list[list[str]]]:
        q = sim.queues
        q.create("jobs.fifo", profile="sqs-fifo")
        refusals = []
        for kwargs in ({"idempotency_key": "d"}, {"partition_key": "g"},
                       {"partition_key": "g", "idempotency_key": "d", "delay": 5}):
            try:
                await q.publish("jobs.fifo", "x", **kwargs)
            except ValueError:
                refusals.append(True)
            else:
                refusals.append(False)
        for body, group, dedup in (("a1", "a", "1"), ("a2", "a", "2"), ("b1", "b", "3"),
                                   ("again", "a", "1")):
            await q.publish("jobs.fifo", body, partition_key=group, idempotency_key=dedup)
        seen: list[list[str]] = []
        held = []
        for _ in range(3):
            d = await q.receive("jobs.fifo")
            seen.append([] if d is None else [d.payload])
            held.append(d)
        assert held[0] is not None
        await held[0].ack()
        d = await q.receive("jobs.fifo")
        seen.append([] if d is None else [d.payload])
        return refusals, seen

    assert sim.run(main()) == (theirs, order) == (
        [True, True, True], [["a1"], ["b1"], [], ["a2"]])
    sim.close()


class _FirstChoices:
    """Choices that always take the unsurprising option (what shrinking goes to)."""

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        return lo

    def fraction(self, label: str = "") -> float:
        return 0.0


def _pull_order(sim: bg.Simulation, profile: str, chaos: str = "") -> list[int]:
    """Publish 0..5 to a queue of ``profile``, then pull them one at a time (each acked)."""
    async def main() -> list[int]:
        sim.queues.create("jobs", profile=profile)
        for n in range(6):
            await sim.queues.publish("jobs", n)
        got = []
        while (d := await sim.queues.receive("jobs")) is not None:
            got.append(d.message.payload)
            await d.ack()
        return got

    if chaos:
        from pytest_bgwork.checking import chaos as chaos_mode

        chaos_mode.apply(sim, chaos)
    return sim.run(main())


def test_a_standard_queue_is_best_effort_ordered_for_pull_consumers() -> None:
    """AWS: standard queues give best-effort ordering; the order is drawn from sim.choices
    (seeded), and shrinks to publish order."""
    orders = {tuple(_pull_order(bg.Simulation(seed=seed), "sqs-standard")) for seed in range(10)}
    assert len(orders) > 1 and all(sorted(o) == list(range(6)) for o in orders)
    assert _pull_order(bg.Simulation(seed=3), "sqs-standard") == _pull_order(bg.Simulation(seed=3),
                                                                              "sqs-standard")
    assert _pull_order(bg.Simulation(choices=_FirstChoices()), "sqs-standard") == list(range(6))
    # FIFO and Agentuity queues keep publish order on every seed
    assert {tuple(_pull_order(bg.Simulation(seed=s), "agentuity")) for s in range(10)} == {tuple(range(6))}


def test_chaos_reorder_reaches_pull_consumers() -> None:
    orders = {tuple(_pull_order(bg.Simulation(seed=s), "agentuity", "reorder")) for s in range(10)}
    assert len(orders) > 1 and all(sorted(o) == list(range(6)) for o in orders)
    sim = bg.Simulation(seed=1)
    _pull_order(sim, "agentuity", "reorder")
    assert sim.history.filter("fault", "reorder")  # counted as the chaos fault it is
