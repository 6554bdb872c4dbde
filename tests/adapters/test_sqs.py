"""adapters.sqs: real boto3 and aiobotocore clients answered by ``sim.queues``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import botocore.exceptions
import httpx
import pytest
import pytest_asyncio
from aiobotocore.session import get_session
from fastapi import BackgroundTasks, FastAPI  # imported here: freezegun's FakeDate breaks pydantic.v1 imports

import pytest_bgwork as bg
from pytest_bgwork import adapters

ATTRS = {"kind": {"DataType": "String", "StringValue": "receipt"},
         "n": {"DataType": "Number", "StringValue": "42"},
         "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"}}


@pytest.fixture
def sqs(bg_sqs: bg.Simulation) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def url(sqs: Any) -> str:
    return str(sqs.create_queue(QueueName="jobs")["QueueUrl"])


@pytest.fixture
def short(sqs: Any) -> str:
    """A queue whose messages are invisible for 5 s after a receive."""
    return str(sqs.create_queue(QueueName="short", Attributes={"VisibilityTimeout": "5"})["QueueUrl"])


@pytest_asyncio.fixture
async def asqs(bg_sqs: bg.Simulation) -> AsyncIterator[Any]:
    async with get_session().create_client("sqs", region_name="eu-west-1") as client:
        yield client


def code(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


# -- the basics, sync ------------------------------------------------------------------------
def test_send_receive_delete_with_boto3(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    assert url == "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"
    sent = sqs.send_message(QueueUrl=url, MessageBody='{"order": 1}', MessageAttributes=ATTRS)
    got = sqs.receive_message(QueueUrl=url, AttributeNames=["All"], MessageAttributeNames=["All"])
    [msg] = got["Messages"]
    assert msg["MessageId"] == sent["MessageId"] and msg["Body"] == '{"order": 1}'
    assert msg["MD5OfBody"] == sent["MD5OfMessageBody"]
    assert msg["MD5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    assert msg["MessageAttributes"]["blob"]["BinaryValue"] == b"\x00\x01"
    assert msg["Attributes"]["ApproximateReceiveCount"] == "1"
    assert msg["Attributes"]["SentTimestamp"] == "1767225600000"  # the virtual wall clock
    sqs.delete_message(QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    assert bgwork.queues.stats("jobs")["acked"] == 1
    bg.assert_nothing_lost(bgwork)
    assert [e.op for e in bgwork.history.filter("queue")][-3:] == ["publish", "deliver", "ack"]


def test_a_message_not_deleted_comes_back_after_the_visibility_timeout(
    bgwork: bg.Simulation, sqs: Any, short: str
) -> None:
    url = short
    sqs.send_message(QueueUrl=url, MessageBody="job")
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # invisible for 5 s
    bgwork.run(bgwork.advance(5))
    again = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert again["MessageId"] == first["MessageId"]
    assert again["ReceiptHandle"] != first["ReceiptHandle"]  # one handle per receive
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_an_older_receipt_handle_acts_on_the_message_as_aws_does(
    bgwork: bg.Simulation, sqs: Any, short: str
) -> None:
    """AWS (verified by moto's authors, against its docs' wording): a visibility change or a
    delete with an older receipt handle of a message acts on the message's latest receive."""
    url = short
    sqs.send_message(QueueUrl=url, MessageBody="job")
    old = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    bgwork.run(bgwork.advance(5))
    new = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    assert new != old
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=old, VisibilityTimeout=60)
    bgwork.run(bgwork.advance(30))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # the latest receive was extended
    sqs.delete_message(QueueUrl=url, ReceiptHandle=old)
    bgwork.run(bgwork.advance(60))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # deleted
    sqs.delete_message(QueueUrl=url, ReceiptHandle=new)  # again: succeeds, idempotent
    with pytest.raises(sqs.exceptions.ReceiptHandleIsInvalid):
        sqs.delete_message(QueueUrl=url, ReceiptHandle="not-a-handle")
    bg.assert_nothing_lost(bgwork)


def test_the_latest_handle_deletes_even_after_its_visibility_lapsed(
    bgwork: bg.Simulation, sqs: Any, short: str
) -> None:
    url = short
    sqs.send_message(QueueUrl=url, MessageBody="job")
    handle = sqs.receive_message(QueueUrl=url)["Messages"][0]["ReceiptHandle"]
    bgwork.run(bgwork.advance(6))  # visible again, but nobody received it since
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=handle)  # deleting twice is fine
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    bg.assert_nothing_lost(bgwork)


def test_change_message_visibility(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    """Per-receive VisibilityTimeout and ChangeMessageVisibility renew the lease (delivery.extend)."""
    sqs.send_message(QueueUrl=url, MessageBody="job")
    handle = sqs.receive_message(QueueUrl=url, VisibilityTimeout=10)["Messages"][0]["ReceiptHandle"]
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=120)
    bgwork.run(bgwork.advance(100))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    again = sqs.receive_message(QueueUrl=url)["Messages"][0]  # visible at once
    sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
    with pytest.raises(sqs.exceptions.MessageNotInflight):
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=5)
    with pytest.raises(sqs.exceptions.MessageNotInflight):  # an older handle: its latest receive
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=5)


def test_max_number_of_messages_and_batches(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    entries = [{"Id": f"m{i}", "MessageBody": f"job {i}"} for i in range(10)]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert len(sent["Successful"]) == 10 and not sent.get("Failed")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=4)["Messages"]
    assert len({m["Body"] for m in got}) == 4  # a standard queue: best-effort order
    done = sqs.delete_message_batch(QueueUrl=url, Entries=[
        *({"Id": f"d{i}", "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)),
        {"Id": "bad", "ReceiptHandle": "nope"}])
    assert len(done["Successful"]) == 4
    assert done["Failed"] == [{"Id": "bad", "SenderFault": True, "Code": "ReceiptHandleIsInvalid",
                               "Message": 'The input receipt handle "nope" is not a valid receipt handle.'}]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "6" and attrs["ApproximateNumberOfMessagesNotVisible"] == "0"
    mixed = sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "ok", "MessageBody": "x"},
                                                          {"Id": "late", "MessageBody": "y", "DelaySeconds": 901}])
    assert [e["Id"] for e in mixed["Successful"]] == ["ok"]
    assert mixed["Failed"][0]["Code"] == "InvalidParameterValue"


@pytest.mark.parametrize(
    ("call", "kwargs", "expected"),
    [
        ("receive_message", {"MaxNumberOfMessages": 11}, "InvalidParameterValue"),
        ("receive_message", {"WaitTimeSeconds": 21}, "InvalidParameterValue"),
        ("receive_message", {"VisibilityTimeout": 43201}, "InvalidParameterValue"),
        ("send_message", {"MessageBody": "x", "DelaySeconds": 901}, "InvalidParameterValue"),
        ("send_message", {"MessageBody": "x" * (1024 * 1024 + 1)}, "InvalidParameterValue"),
        ("send_message", {"MessageBody": "bad \x00 char"}, "InvalidMessageContents"),
        ("send_message_batch", {"Entries": [{"Id": str(i), "MessageBody": "x"} for i in range(11)]},
         "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"),
        ("send_message_batch", {"Entries": [{"Id": "a", "MessageBody": "x"}, {"Id": "a", "MessageBody": "y"}]},
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"),
        ("set_queue_attributes", {"Attributes": {"VisibilityTimeout": "43201"}}, "InvalidAttributeValue"),
        ("set_queue_attributes", {"Attributes": {"Colour": "blue"}}, "InvalidAttributeName"),
        ("get_queue_attributes", {"AttributeNames": ["Colour"]}, "InvalidAttributeName"),
    ],
)
def test_out_of_range_parameters_get_sqs_error_codes(
    sqs: Any, url: str, call: str, kwargs: dict[str, Any], expected: str
) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        getattr(sqs, call)(QueueUrl=url, **kwargs)
    assert code(err) == expected


def test_queues_that_do_not_exist_and_operations_not_implemented(bgwork: bg.Simulation, sqs: Any) -> None:
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as err:
        sqs.get_queue_url(QueueName="missing")
    assert code(err) == "AWS.SimpleQueueService.NonExistentQueue"
    with pytest.raises(botocore.exceptions.ClientError) as bad:
        sqs.create_queue(QueueName="no spaces allowed")
    assert code(bad) == "InvalidParameterValue"
    with pytest.raises(adapters.sqs.UnsupportedOperation, match="does not implement the SQS operation "
                       "AddPermission; it answers CreateQueue"):
        sqs.add_permission(QueueUrl="https://sqs.us-east-1.amazonaws.com/123456789012/x", Label="l",
                           AWSAccountIds=["111122223333"], Actions=["SendMessage"])


def test_create_queue_is_idempotent_but_refuses_other_attributes(sqs: Any) -> None:
    first = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "60"})["QueueUrl"]
    assert sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "60"})["QueueUrl"] == first
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "30"})
    assert code(err) == "QueueAlreadyExists"
    assert sqs.get_queue_url(QueueName="jobs")["QueueUrl"] == first
    assert sqs.create_queue(QueueName="jobs")["QueueUrl"] == first  # no attributes given: nothing differs


def test_redrive_policy_moves_a_message_to_the_dead_letter_queue(bgwork: bg.Simulation, sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})})
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for _ in range(2):  # received twice, never deleted
        assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "poison"
        bgwork.run(bgwork.advance(10))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # the third receive moves it
    assert sqs.receive_message(QueueUrl=dlq)["Messages"][0]["Body"] == "poison"
    [moved] = bgwork.history.filter("sqs", "dead_letter")
    assert moved.detail["dlq"] == "jobs-dlq" and moved.detail["receives"] == 2
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
                        ["Attributes"]["RedrivePolicy"])
    assert policy == {"deadLetterTargetArn": arn, "maxReceiveCount": 2}
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sqs.set_queue_attributes(QueueUrl=url, Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": arn + "-gone", "maxReceiveCount": 2})})
    assert code(err) == "InvalidParameterValue"


def test_purge_queue(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"job {i}")
    sqs.receive_message(QueueUrl=url)  # one in flight
    sqs.purge_queue(QueueUrl=url)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")
    bg.assert_nothing_lost(bgwork)
    with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
        sqs.purge_queue(QueueUrl=url)  # one purge per 60 s


def test_sync_long_poll_on_an_empty_queue_waits_its_virtual_seconds(bgwork: bg.Simulation, sqs: Any,
                                                                     url: str) -> None:
    started = time.perf_counter()
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
    assert bgwork.clock.monotonic() == 20.0  # as on AWS, on the virtual clock
    assert time.perf_counter() - started < 5  # not in real time


def test_a_sync_receive_loop_with_sleeps_runs_on_virtual_time(bgwork: bg.Simulation, sqs: Any,
                                                             url: str) -> None:
    async def send_later() -> None:
        await asyncio.sleep(30)
        await bgwork.queues.publish("jobs", "late job")

    bgwork.loop.create_task(send_later())
    got: list[tuple[float, str]] = []
    while not got:  # the production shape: long poll, then back off
        for m in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", []):
            got.append((bgwork.clock.monotonic(), m["Body"]))
        time.sleep(1)
    assert got == [(30.0, "late job")]  # 20 s poll, 1 s sleep, then woken at 30 by the send
    assert bgwork.clock.monotonic() == 31.0


# -- faults, retries, chaos ----------------------------------------------------------------
def test_an_injected_network_error_is_retried_by_botocore_without_sleeping(
    bgwork: bg.Simulation, sqs: Any, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail(f"real sleep of {s}s"))
    bgwork.faults.fail("queue.publish", error=ConnectionError("sqs unreachable"))
    sent = sqs.send_message(QueueUrl=url, MessageBody="job")
    assert sent["ResponseMetadata"]["RetryAttempts"] == 1
    [slept] = bgwork.history.filter("sqs", "retry_sleep")
    assert 0 < slept.detail["seconds"] <= 1
    assert bgwork.queues.stats("jobs")["published"] == 1


def test_a_timeout_after_the_write_makes_the_retry_send_twice(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    bgwork.faults.fail("queue.publish", error=TimeoutError("read timeout"), after_apply=True)
    sqs.send_message(QueueUrl=url, MessageBody="job")
    bodies = [m["Body"] for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]]
    assert bodies == ["job", "job"]  # a standard queue does not deduplicate


def test_a_duplicate_fault_redelivers_after_the_delete(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    bgwork.faults.duplicate("jobs", times=2)
    sqs.send_message(QueueUrl=url, MessageBody="job")
    seen = []
    while got := sqs.receive_message(QueueUrl=url).get("Messages"):
        seen.append(got[0]["Body"])
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert seen == ["job", "job"]


def test_a_client_made_before_install_is_refused_not_sent(bgwork: bg.Simulation,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    early = boto3.session.Session().client("sqs", region_name="us-east-1")
    early.meta.events.unregister("before-send.sqs", adapters.sqs._dispatcher)  # as if made long ago
    with adapters.sqs.install(bgwork), pytest.raises(bg.UnmockedRequest) as err:
        early.get_queue_url(QueueName="jobs")
    assert "POST https://sqs.us-east-1.amazonaws.com/" in str(err.value)
    assert "patch_client" in "".join(err.value.__notes__)
    with adapters.sqs.install(bgwork):
        adapters.sqs.patch_client(early)
        assert early.create_queue(QueueName="jobs")["QueueUrl"].endswith("/jobs")


def test_the_same_seed_gives_the_same_history() -> None:
    def run() -> str:
        with bg.Simulation(seed=5) as sim, adapters.sqs.install(sim):
            client = boto3.client("sqs", region_name="us-east-1")
            url = client.create_queue(QueueName="jobs")["QueueUrl"]
            for i in range(3):
                client.send_message(QueueUrl=url, MessageBody=f"job {i}")
            for m in client.receive_message(QueueUrl=url, MaxNumberOfMessages=2)["Messages"]:
                client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
            return sim.history.digest()

    assert run() == run()


# -- aiobotocore -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_aiobotocore_long_polls_on_virtual_time(bgwork: bg.Simulation, asqs: Any) -> None:
    url = (await asqs.create_queue(QueueName="jobs"))["QueueUrl"]

    async def send_later() -> None:
        await asyncio.sleep(7)
        await asqs.send_message(QueueUrl=url, MessageBody="late")

    sender = asyncio.create_task(send_later())
    got = await asqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
    assert got["Messages"][0]["Body"] == "late" and bgwork.clock.monotonic() == 7.0  # at once
    assert "Messages" not in await asqs.receive_message(QueueUrl=url, WaitTimeSeconds=20)
    assert bgwork.clock.monotonic() == 27.0  # an empty long poll lasts its full wait
    await sender


@pytest.mark.asyncio
async def test_aiobotocore_wakes_when_a_visibility_timeout_ends(bgwork: bg.Simulation, asqs: Any) -> None:
    url = (await asqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "5",
                                                                "ReceiveMessageWaitTimeSeconds": "20"}))["QueueUrl"]
    await asqs.send_message(QueueUrl=url, MessageBody="job")
    first = (await asqs.receive_message(QueueUrl=url))["Messages"][0]
    again = (await asqs.receive_message(QueueUrl=url, AttributeNames=["All"]))["Messages"][0]  # queue default wait
    assert bgwork.clock.monotonic() == 5.0 and again["MessageId"] == first["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"


@pytest.mark.asyncio
async def test_aiobotocore_retry_sleeps_are_virtual(bgwork: bg.Simulation, asqs: Any) -> None:
    url = (await asqs.create_queue(QueueName="jobs"))["QueueUrl"]
    bgwork.faults.fail("queue.publish", error=ConnectionError("sqs unreachable"), on_call=None, times=2)
    sent = await asqs.send_message(QueueUrl=url, MessageBody="job")
    assert sent["ResponseMetadata"]["RetryAttempts"] == 2
    assert bgwork.clock.monotonic() > 0  # botocore's backoff passed on the virtual clock
    assert bgwork.queues.stats("jobs")["published"] == 1


@pytest.mark.asyncio
async def test_sync_boto3_in_a_worker_thread(bgwork: bg.Simulation, bg_sqs: bg.Simulation) -> None:
    def work() -> list[str]:
        client = boto3.client("sqs", region_name="us-east-1")
        url = client.create_queue(QueueName="jobs")["QueueUrl"]
        client.send_message(QueueUrl=url, MessageBody="from a thread")
        return [m["Body"] for m in client.receive_message(QueueUrl=url)["Messages"]]

    assert await asyncio.to_thread(work) == ["from a thread"]
    assert bgwork.queues.stats("jobs")["delivered"] == 1


@pytest.mark.asyncio
async def test_sync_boto3_long_poll_in_a_worker_thread_waits_on_virtual_time(
        bgwork: bg.Simulation, bg_sqs: adapters.sqs.SqsBackend) -> None:
    client = boto3.client("sqs", region_name="us-east-1")
    url = client.create_queue(QueueName="jobs")["QueueUrl"]

    def poll() -> tuple[list[str], float]:
        empty = client.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", [])
        assert not empty and bgwork.clock.monotonic() == 20.0
        got = client.receive_message(QueueUrl=url, WaitTimeSeconds=20)["Messages"]
        return [m["Body"] for m in got], bgwork.clock.monotonic()

    async def send_later() -> None:
        await asyncio.sleep(25)
        await bgwork.queues.publish("jobs", "late job")

    sender = asyncio.create_task(send_later())
    assert await asyncio.to_thread(poll) == (["late job"], 25.0)
    await sender


# -- agreement with moto where moto follows AWS ------------------------------------------------
@pytest.fixture
def moto_client(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import moto  # the test extra installs it
    for key, value in adapters.sqs.DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with moto.mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def _exchange(client: Any) -> dict[str, Any]:
    url = client.create_queue(QueueName="diff")["QueueUrl"]
    sent = client.send_message(QueueUrl=url, MessageBody="héllo ✓", MessageAttributes=ATTRS)
    got = client.receive_message(QueueUrl=url, MessageAttributeNames=["All"],
                                 AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    errors = []
    for kwargs in ({"MaxNumberOfMessages": 11}, {"WaitTimeSeconds": 21}):
        try:
            client.receive_message(QueueUrl=url, **kwargs)
        except botocore.exceptions.ClientError as exc:
            errors.append(exc.response["Error"]["Code"])
    return {"md5_body": sent["MD5OfMessageBody"], "md5_attrs": sent["MD5OfMessageAttributes"],
            "received_md5_attrs": got["MD5OfMessageAttributes"], "count": got["Attributes"],
            "attrs": got["MessageAttributes"], "errors": errors}


def test_agrees_with_moto_on_checksums_attributes_and_error_codes(
    moto_client: Any, bgwork: bg.Simulation
) -> None:
    expected = _exchange(moto_client)
    with adapters.sqs.install(bgwork):
        ours = _exchange(boto3.client("sqs", region_name="us-east-1"))
    assert ours == expected


@pytest.mark.asyncio
async def test_sync_boto3_on_the_loop_thread_blocks_the_loop_through_a_delay(
        bgwork: bg.Simulation, bg_sqs: bg.Simulation) -> None:
    """A blocking client holds the loop: a delay moves the clock, nothing else runs meanwhile."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]  # runs at once, on the loop thread
    ran: list[float] = []
    other = asyncio.get_running_loop().call_later(1, lambda: ran.append(bgwork.clock.monotonic()))
    bgwork.faults.delay("queue.publish", seconds=5)
    sqs.send_message(QueueUrl=url, MessageBody="job")
    assert bgwork.clock.monotonic() == 5.0 and ran == []  # the timer due at 1 s waited
    assert bgwork.queues.stats("jobs")["published"] == 1
    await asyncio.sleep(0)
    other.cancel()


@pytest.mark.asyncio
async def test_sync_boto3_on_the_loop_thread_takes_its_latency(bgwork: bg.Simulation,
                                                               bg_sqs: bg.Simulation) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    bgwork.faults.apply([bg.Fault("latency", "*", seconds=2.0)])
    for n in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"job {n}")
    assert 0 < bgwork.clock.monotonic() <= 5 * 2.0  # five calls, each up to 2 s
    assert bgwork.queues.stats("jobs")["published"] == 5


def test_both_handles_of_overlapping_copies_are_current(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    """A copy delivered at the same time (a standard queue's duplicate) does not make the
    first receive's handle stale: deleting with it deletes the message."""
    bgwork.faults.duplicate("jobs", overlap=True)
    sqs.send_message(QueueUrl=url, MessageBody="job")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in got] == ["job", "job"]
    for message in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    bgwork.run(bgwork.advance(120))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    bg.assert_nothing_lost(bgwork)


def test_a_sync_test_lets_fault_delays_pass_on_virtual_time(bgwork: bg.Simulation, sqs: Any, url: str) -> None:
    bgwork.faults.delay("queue.publish", seconds=5)
    sqs.send_message(QueueUrl=url, MessageBody="job")
    assert bgwork.clock.monotonic() == 5.0


@pytest.mark.asyncio
async def test_a_fastapi_sync_background_task_sends_with_boto3(bgwork: bg.Simulation,
                                                               bg_sqs: bg.Simulation) -> None:
    """The common production shape: a handler answers, a sync background task enqueues with boto3."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="receipts")["QueueUrl"]
    app = FastAPI()

    def enqueue(order_id: str) -> None:  # runs in anyio's thread pool
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"order_id": order_id}))

    @app.post("/orders/{order_id}")
    async def create(order_id: str, tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(enqueue, order_id)
        return {"ok": order_id}

    transport = adapters.asgi.transport(bgwork, app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
        for order_id in ("a", "b"):
            assert (await client.post(f"/orders/{order_id}")).status_code == 200
    await bgwork.runtime.drain()
    # two worker threads ran at once in real time: which one sent first is the OS's choice
    bodies = sorted(json.loads(m.payload)["order_id"] for m in bgwork.queues.messages("receipts"))
    assert bodies == ["a", "b"] and bgwork.clock.monotonic() == 0.0


def test_the_boto3_resource_api(bgwork: bg.Simulation, bg_sqs: bg.Simulation) -> None:
    queue = boto3.resource("sqs", region_name="us-east-1").create_queue(QueueName="jobs")
    queue.send_message(MessageBody="job")
    [message] = queue.receive_messages(MaxNumberOfMessages=10)
    assert message.body == "job"
    message.delete()
    assert queue.attributes["ApproximateNumberOfMessages"] == "0"
    bg.assert_nothing_lost(bgwork)


def test_botocore_retry_jitter_comes_from_the_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore jitters its retry delays with the global `random`; inside the adapter it is
    drawn from sim.choices, so the same seed retries at the same virtual instants."""
    for key, value in adapters.sqs.DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(key, value)

    def run(seed: int) -> tuple[str, float]:
        with bg.Simulation(seed=seed) as sim, adapters.sqs.install(sim):
            async def main() -> None:
                async with get_session().create_client("sqs", region_name="us-east-1") as client:
                    url = (await client.create_queue(QueueName="jobs"))["QueueUrl"]
                    sim.faults.fail("queue.publish", error=ConnectionError("down"), on_call=None, times=3)
                    await client.send_message(QueueUrl=url, MessageBody="job")

            sim.run(main())
            return sim.history.digest(), sim.clock.monotonic()

    first = run(11)
    assert run(11) == first and first[1] > 0


def test_policy_trace_header_and_number_attributes_as_aws(bgwork: bg.Simulation, sqs: Any) -> None:
    url = sqs.create_queue(QueueName="jobs", Attributes={"Policy": '{"Version": "2012-10-17"}'})["QueueUrl"]
    sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": ""})  # removes the policy
    assert "Policy" not in sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes={
            "n": {"DataType": "Number", "StringValue": "abc"}})
    assert code(err) == "InvalidParameterValue" and "to a number" in str(err.value)
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes={
        "n": {"DataType": "Number", "StringValue": "-1.5e3"}},
        MessageSystemAttributes={"AWSTraceHeader": {"DataType": "String", "StringValue": "Root=1-a"}})
    got = sqs.receive_message(QueueUrl=url, MessageSystemAttributeNames=["All"])["Messages"][0]
    assert got["Attributes"]["AWSTraceHeader"] == "Root=1-a"


def test_an_injected_value_error_is_a_service_failure_not_bad_input(bgwork: bg.Simulation,
                                                                     sqs: Any) -> None:
    """An injected fault is the service failing (HTTP 500 InternalError, retried by botocore),
    never InvalidParameterValue, which would blame the caller's input."""
    url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
    bgwork.faults.fail("queue.publish", error=ValueError("boom"), on_call=None)
    with pytest.raises(botocore.exceptions.ClientError) as err:
        sqs.send_message(QueueUrl=url, MessageBody="x")
    assert code(err) == "InternalError"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    failures = bgwork.history.filter("sqs", "SendMessage")
    assert failures and all(e.detail["injected"] for e in failures)


def test_queues_can_be_listed_tagged_and_deleted(bgwork: bg.Simulation, sqs: Any) -> None:
    urls = [sqs.create_queue(QueueName=f"jobs-{i}", tags={"team": "a"})["QueueUrl"] for i in range(3)]
    page = sqs.list_queues(QueueNamePrefix="jobs", MaxResults=2)
    assert page["QueueUrls"] == urls[:2]
    assert sqs.list_queues(QueueNamePrefix="jobs", NextToken=page["NextToken"])["QueueUrls"] == urls[2:]
    sqs.tag_queue(QueueUrl=urls[0], Tags={"env": "test"})
    sqs.untag_queue(QueueUrl=urls[0], TagKeys=["team"])
    assert sqs.list_queue_tags(QueueUrl=urls[0])["Tags"] == {"env": "test"}
    sqs.send_message(QueueUrl=urls[1], MessageBody="x")
    sqs.delete_queue(QueueUrl=urls[1])
    assert sqs.list_queues()["QueueUrls"] == [urls[0], urls[2]]
    with pytest.raises(sqs.exceptions.QueueDoesNotExist):
        sqs.send_message(QueueUrl=urls[1], MessageBody="x")
    bg.assert_nothing_lost(bgwork)


def test_a_dead_lettered_message_keeps_its_message_id(bgwork: bg.Simulation, sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="jobs", Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 1})})["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="x")["MessageId"]
    sqs.receive_message(QueueUrl=url)
    bgwork.run(bgwork.advance(2))
    assert "Messages" not in sqs.receive_message(QueueUrl=url)  # moved on this receive
    assert sqs.receive_message(QueueUrl=dlq)["Messages"][0]["MessageId"] == sent


# -- freezegun's freeze_time, as moto's users move time ------------------------------------------
def test_freeze_time_moving_forward_moves_the_virtual_clock(pytester: pytest.Pytester) -> None:
    """A test written for moto: it moves time with ``freeze_time`` and expects visibility
    timeouts and the purge interval to run out; going back in time moves nothing."""
    pytester.makepyfile(test_frozen="""
        import boto3, pytest
        from freezegun import freeze_time

        def test_visibility_runs_out(bg_sqs):
            sqs = boto3.client("sqs", region_name="us-east-1")
            with freeze_time("2015-01-01 12:00:00"):
                url = sqs.create_queue(QueueName="q", Attributes={"VisibilityTimeout": "10"})["QueueUrl"]
                sqs.send_message(QueueUrl=url, MessageBody="one")
                assert len(sqs.receive_message(QueueUrl=url)["Messages"]) == 1
            start = bg_sqs.clock.monotonic()
            with freeze_time("2015-01-01 12:00:05"):
                assert "Messages" not in sqs.receive_message(QueueUrl=url)
            with freeze_time("2015-01-01 12:00:11"):
                assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "one"
            assert bg_sqs.clock.monotonic() - start == 11
            with freeze_time("2015-01-01 11:00:00"):  # back in time: the virtual clock stays
                sqs.list_queues()
            with freeze_time("2015-01-01 12:00:12"):  # one second past the latest seen
                sqs.list_queues()
            assert bg_sqs.clock.monotonic() - start == 12
            moved = [e.detail["seconds"] for e in bg_sqs.history.events if e.op == "freeze_time"]
            assert moved == [5, 6, 1]
            print("MOVED", moved)

        def test_purge_again_after_60_seconds(bg_sqs):
            sqs = boto3.client("sqs", region_name="us-east-1")
            with freeze_time("2015-01-01 12:00:00"):
                url = sqs.create_queue(QueueName="p")["QueueUrl"]
                sqs.purge_queue(QueueUrl=url)
            with freeze_time("2015-01-01 12:00:30"):
                with pytest.raises(sqs.exceptions.PurgeQueueInProgress):
                    sqs.purge_queue(QueueUrl=url)
            with freeze_time("2015-01-01 12:01:01"):
                sqs.purge_queue(QueueUrl=url)

        def test_reading_the_frozen_time_changes_nothing(bg_sqs):
            import time
            from pytest_bgwork.core.wallclock import user_frozen_now
            sqs = boto3.client("sqs", region_name="us-east-1")
            with freeze_time("2015-01-01", auto_tick_seconds=5):
                first = user_frozen_now()
                assert user_frozen_now() == first  # the look does not tick freezegun's clock
                before = time.time()
                assert time.time() - before == 5
            with freeze_time("2015-01-01", tick=True):  # real seconds never move virtual time
                start = bg_sqs.clock.monotonic()
                sqs.list_queues()
                sqs.list_queues()
                assert bg_sqs.clock.monotonic() == start

        def test_a_year_later_is_an_explicit_move_past_max_time(bg_sqs):
            sqs = boto3.client("sqs", region_name="us-east-1")
            with freeze_time("2015-01-01"):
                sqs.list_queues()
            with freeze_time("2016-01-01"):  # as sim.advance: more than max_time (a week)
                sqs.list_queues()
            assert bg_sqs.clock.monotonic() == 365 * 86400
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=4)
    assert "MOVED [5.0, 6.0, 1.0]" in result.stdout.str()


@pytest.mark.asyncio
async def test_freeze_time_moves_aiobotocore_on_virtual_time(bgwork: bg.Simulation, asqs: Any) -> None:
    from freezegun import freeze_time

    url = (await asqs.create_queue(QueueName="a", Attributes={"VisibilityTimeout": "30"}))["QueueUrl"]
    with freeze_time("2030-01-01 00:00:00"):
        await asqs.send_message(QueueUrl=url, MessageBody="x")
        assert len((await asqs.receive_message(QueueUrl=url))["Messages"]) == 1
    start = bgwork.clock.monotonic()
    with freeze_time("2030-01-01 00:00:31"):
        got = await asqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])
    assert got["Messages"][0]["Attributes"]["ApproximateReceiveCount"] == "2"
    assert bgwork.clock.monotonic() - start == 31


@pytest.mark.asyncio
async def test_freeze_time_moves_sync_boto3_on_the_loop_thread_and_in_a_worker_thread(
        bgwork: bg.Simulation, bg_sqs: bg.Simulation) -> None:
    from freezegun import freeze_time

    sqs = boto3.client("sqs", region_name="us-east-1")
    with freeze_time("2030-01-01 00:00:00"):
        sqs.list_queues()  # sync boto3 on the loop's thread: the anchor
    with freeze_time("2030-01-01 00:00:10"):
        sqs.list_queues()  # holds the loop: the clock moves as a blocked loop's
    assert bgwork.clock.monotonic() == 10
    with freeze_time("2030-01-01 00:00:30"):
        await asyncio.to_thread(sqs.list_queues)  # a worker thread: an explicit move
    assert bgwork.clock.monotonic() == 30


def test_list_dead_letter_source_queues(bgwork: bg.Simulation, sqs: Any) -> None:
    dlq = sqs.create_queue(QueueName="dead")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    policy = json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 2})
    sources = [sqs.create_queue(QueueName=f"src{i}", Attributes={"RedrivePolicy": policy})["QueueUrl"]
               for i in range(3)]
    sqs.create_queue(QueueName="other")
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == sources
    first = sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=2)
    assert first["queueUrls"] == sources[:2]
    rest = sqs.list_dead_letter_source_queues(QueueUrl=dlq, MaxResults=2, NextToken=first["NextToken"])
    assert rest["queueUrls"] == sources[2:] and "NextToken" not in rest
    sqs.set_queue_attributes(QueueUrl=sources[0], Attributes={"RedrivePolicy": ""})
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == sources[1:]
    assert sqs.list_dead_letter_source_queues(QueueUrl=sources[1])["queueUrls"] == []
