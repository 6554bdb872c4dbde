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


def test_sqs_visibility_ends_at_most_12_hours_after_the_receive() -> None:
    """AWS ChangeMessageVisibility: a message's visibility timeout is at most 12 hours in all;
    a longer extension is refused (the adapter and moto agree)."""
    sim = bg.Simulation(seed=0)

    async def main() -> str:
        sim.queues.create("jobs", profile="sqs-standard")
        await sim.queues.publish("jobs", 1)
        d = await sim.queues.receive("jobs")
        assert d is not None
        await d.extend(360)
        await sim.advance(300)
        await d.extend(43_200 - 300)  # exactly 12 h after the receive: allowed
        try:
            await d.extend(43_200 - 299)
        except ValueError as exc:
            return str(exc)
        return "accepted"

    text = sim.run(main())
    assert text.startswith("extend(seconds=...): profile 'sqs-standard' allows a visibility of at "
                           "most 43200 s after the receive in all (received 300 s ago")
    assert "Delete the message and publish it again" in text


def test_sqs_size_counts_the_body_bytes_not_the_stored_json() -> None:
    """AWS: 1 MiB (1,048,576 bytes) for the body and its attributes; a body full of quotes is
    not twice as large because the simulation stores it as JSON."""
    sim = bg.Simulation(seed=0)

    async def main() -> list[str]:
        sim.queues.create("jobs", profile="sqs-standard")
        await sim.queues.publish("jobs", "x" * 1_048_576)
        await sim.queues.publish("jobs", '"' * 950_000)
        attrs = {"k": {"DataType": "String", "StringValue": "v"}}  # 1 + 6 + 1 bytes
        await sim.queues.publish("jobs", "x" * (1_048_576 - 8), metadata=attrs)
        refused = []
        for payload, meta in (("x" * 1_048_577, None), ("x" * (1_048_576 - 7), attrs)):
            try:
                await sim.queues.publish("jobs", payload, metadata=meta)
            except ValueError as exc:
                refused.append(str(exc))
        return refused

    refused = sim.run(main())
    assert len(refused) == 2
    assert refused[0].startswith("publish(payload=...) is 1048577 bytes as SQS counts them")
    assert "1048577 bytes" in refused[1] and "with its metadata" in refused[1]


def _failing(sim: bg.Simulation, **create: Any) -> dict[str, int]:
    """A routed handler that always fails, for a day of virtual time; the queue's stats."""
    async def handler(payload: Any, delivery: Any) -> None:
        raise RuntimeError("always")

    async def main() -> dict[str, int]:
        sim.queues.create("jobs", profile="sqs-standard", visibility_timeout=600, **create)
        sim.queues.route("jobs", handler)
        await sim.queues.publish("jobs", 1)
        await sim.advance(86_400)
        return {"dead": len(sim.queues.dead_letters("jobs")), **sim.queues.stats("jobs")}

    return sim.run(main())


def test_sqs_without_a_redrive_policy_redelivers_until_retention_ends() -> None:
    """AWS: a queue without a RedrivePolicy has no dead-letter queue; a failing message comes
    back every visibility timeout until its retention period ends."""
    day = _failing(bg.Simulation(seed=0))
    assert day["dead"] == 0 and day["delivered"] == 145  # at 0, 600, ..., 86,400 s
    assert bg.Simulation(seed=0).queues.create("q", profile="sqs-standard").dead_letter is False
    short = _failing(bg.Simulation(seed=0), retention=3600)
    assert short["dead"] == 0 and short["expired"] == 1 and short["delivered"] == 6
    assert _failing(bg.Simulation(seed=0), max_retries=2)["dead"] == 1  # a redrive policy
    assert _failing(bg.Simulation(seed=0), max_retries=2, dead_letter=False)["dead"] == 0


def test_sqs_dead_letters_expire_with_the_retention() -> None:
    stats = _failing(bg.Simulation(seed=0), max_retries=0, retention=3600)
    assert stats["dead"] == 0 and stats["expired"] == 1


def test_extend_zero_makes_the_message_visible_to_the_next_receive() -> None:
    """SQS ChangeMessageVisibility(VisibilityTimeout=0): visible at once, with no loop turn."""
    sim = bg.Simulation(seed=0)

    async def main() -> tuple[int, int]:
        sim.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
        await sim.queues.publish("jobs.fifo", "m", partition_key="g")
        first = await sim.queues.receive("jobs.fifo")
        assert first is not None
        await first.extend(0)
        again = await sim.queues.receive("jobs.fifo")  # same instant, same task step
        assert again is not None and again.message is first.message
        return first.attempt, again.attempt

    assert sim.run(main()) == (1, 2)


def test_fifo_receive_many_takes_several_messages_of_one_group_in_order() -> None:
    sim = bg.Simulation(seed=0)

    async def main() -> tuple[list[str], list[str], list[str]]:
        sim.queues.create("jobs.fifo", profile="sqs-fifo", content_based_dedup=True)
        for body in ("a1", "a2", "a3"):
            await sim.queues.publish("jobs.fifo", body, partition_key="a")
        await sim.queues.publish("jobs.fifo", "b1", partition_key="b")
        first = await sim.queues.receive_many("jobs.fifo", 2)
        other = await sim.queues.receive_many("jobs.fifo", 10)  # a's rest waits for a1, a2
        for d in first:
            await d.ack()
        rest = await sim.queues.receive_many("jobs.fifo", 10)
        return ([d.payload for d in first], [d.payload for d in other], [d.payload for d in rest])

    assert sim.run(main()) == (["a1", "a2"], ["b1"], ["a3"])
