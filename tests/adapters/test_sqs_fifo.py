"""adapters.sqs on FIFO queues and SQS names/retention (the ``sqs-fifo``/``sqs-standard`` profiles)."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
import pytest

import pytest_bgwork as bg


@pytest.fixture
def sqs(bg_sqs: bg.Simulation) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def test_a_fifo_queue_keeps_group_order_and_deduplicates(bgwork: bg.Simulation, sqs: Any) -> None:
    url = sqs.create_queue(QueueName="Orders.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    first = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g1")
    again = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g1")
    assert again["MessageId"] == first["MessageId"]  # content-based dedup within 5 minutes
    sqs.send_message(QueueUrl=url, MessageBody="two", MessageGroupId="g1", MessageDeduplicationId="d2")
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g2")
    first_only = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in first_only] == ["one"]
    # g1's next message waits while "one" is in flight; g2 is free
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    assert [(m["Body"], m["Attributes"]["MessageGroupId"]) for m in got] == [("x", "g2")]
    for m in [*first_only, *got]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["two"]
    assert bgwork.queues.stats("Orders.fifo")["duplicates"] == 1


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"MessageBody": "x"}, "MissingParameter"),  # no MessageGroupId
        ({"MessageBody": "x", "MessageGroupId": "g", "DelaySeconds": 5}, "InvalidParameterValue"),
        ({"MessageBody": "x", "MessageGroupId": "g", "MessageDeduplicationId": "has space"},
         "InvalidParameterValue"),
    ],
)
def test_fifo_sends_are_checked(sqs: Any, kwargs: dict[str, Any], expected: str) -> None:
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sqs.send_message(QueueUrl=url, **kwargs)
    assert err.value.response["Error"]["Code"] == expected


def test_fifo_names_and_types_must_agree(sqs: Any) -> None:
    for name, attributes in (("jobs.fifo", {}), ("jobs", {"FifoQueue": "true"})):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            sqs.create_queue(QueueName=name, Attributes=attributes)
        assert err.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_sqs_names_and_retention(bgwork: bg.Simulation, sqs: Any) -> None:
    url = sqs.create_queue(QueueName="Receipts_EU-1", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    bgwork.run(bgwork.advance(61))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # expired after the retention period
    assert bgwork.queues.stats("Receipts_EU-1")["expired"] == 1


def test_a_batch_receive_returns_several_messages_of_one_group_in_order(bgwork: bg.Simulation,
                                                                         sqs: Any) -> None:
    """AWS (and moto): one ReceiveMessage takes as many messages of a group as it may, in order;
    the group's later messages stay hidden from other receivers while those are in flight."""
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for body in ("a1", "a2", "a3"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="a")
    sqs.send_message(QueueUrl=url, MessageBody="b1", MessageGroupId="b")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]
    assert [m["Body"] for m in got] == ["a1", "a2"]
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]] == ["b1"]
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url)["Messages"]] == ["a3"]


def test_fifo_accepts_delay_seconds_zero_and_reports_its_fifo_attributes(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g", MessageDeduplicationId="d",
                     DelaySeconds=0)
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "y", "MessageGroupId": "g", "MessageDeduplicationId": "e",
         "DelaySeconds": 0}])
    assert [e["Id"] for e in sent["Successful"]] == ["a"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["DeduplicationScope"] == "queue" and attrs["FifoThroughputLimit"] == "perQueue"


@pytest.mark.asyncio
async def test_visibility_zero_shows_a_fifo_group_to_the_next_aiobotocore_receive(
        bgwork: bg.Simulation, bg_sqs: bg.Simulation) -> None:
    """No loop turns needed: the very next short poll sees the message again."""
    from aiobotocore.session import get_session

    async with get_session().create_client("sqs", region_name="us-east-1") as client:
        url = (await client.create_queue(QueueName="jobs.fifo", Attributes={
            "FifoQueue": "true", "ContentBasedDeduplication": "true"}))["QueueUrl"]
        await client.send_message(QueueUrl=url, MessageBody="m", MessageGroupId="g")
        first = (await client.receive_message(QueueUrl=url))["Messages"][0]
        await client.change_message_visibility(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"],
                                               VisibilityTimeout=0)
        again = (await client.receive_message(QueueUrl=url)).get("Messages", [])
        assert [m["MessageId"] for m in again] == [first["MessageId"]]
