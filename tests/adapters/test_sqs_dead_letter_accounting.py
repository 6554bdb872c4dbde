"""A message SQS redrive moved to a dead-letter queue is accounted for, not lost."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

import pytest_bgwork as bg
from pytest_bgwork import adapters


@pytest.fixture
def sqs(bg_sqs: adapters.sqs.SqsBackend) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


def test_assert_nothing_lost_counts_a_redriven_message_as_dead_lettered(
        bgwork: bg.Simulation, sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 1})})
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "poison"
    bgwork.run(bgwork.advance(10))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # this receive moves it
    bg.assert_nothing_lost(bgwork)  # the copy waiting on the DLQ is the dead letter itself
    assert bgwork.stats()["dead_letters"] == 1
    [moved] = bgwork.history.filter("queue", "dead_letter")
    assert moved.detail["queue"] == "jobs" and moved.detail["dlq"] == "jobs-dlq"
    copy = bgwork.queues.messages("jobs-dlq")[0]
    assert moved.detail["dlq_id"] == copy.id and copy.payload == "poison"


def test_a_message_published_on_a_dlq_by_hand_is_still_checked(bgwork: bg.Simulation) -> None:
    async def main() -> None:
        bgwork.queues.create("jobs-dlq")
        await bgwork.queues.publish("jobs-dlq", "not a dead letter")

    bgwork.run(main())
    with pytest.raises(AssertionError, match="never delivered"):
        bg.assert_nothing_lost(bgwork)
