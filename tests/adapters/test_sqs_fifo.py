"""adapters.sqs on FIFO queues and SQS names/retention (the ``sqs-fifo``/``sqs-standard`` profiles)."""

from __future__ import annotations

from typing import Any

import boto3
import botocore.exceptions
import pytest

import pytest_bgwork as bg
from pytest_bgwork import adapters


@pytest.fixture
def sqs(bg_sqs: adapters.sqs.SqsBackend) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def test_a_fifo_queue_keeps_group_order_and_deduplicates(bgwork: bg.Simulation, sqs: Any) -> None:
    url = sqs.create_queue(QueueName="Orders.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    first = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g1")
    again = sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g1")
    assert again["MessageId"] == first["MessageId"]  # content-based dedup within 5 minutes
    sqs.send_message(QueueUrl=url, MessageBody="two", MessageGroupId="g1", MessageDeduplicationId="d2")
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="g2")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])["Messages"]
    # g1's next message waits while "one" is in flight
    assert [(m["Body"], m["Attributes"]["MessageGroupId"]) for m in got] == [("one", "g1"), ("x", "g2")]
    assert int(got[0]["Attributes"]["SequenceNumber"]) < int(got[1]["Attributes"]["SequenceNumber"])
    for m in got:
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
