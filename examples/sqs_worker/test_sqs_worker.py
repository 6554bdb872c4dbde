"""The receipt worker against real aiobotocore/boto3 clients, on the simulation's queues.

``bg_sqs`` answers both clients from ``sim.queues`` (SQS-shaped: receipt handles,
visibility timeouts, long polls on virtual time), so a worker that waits 20 s per empty
poll and 60 s for a redelivery runs in milliseconds. The mail provider (respx) records an
``email`` effect per email it actually sends and dedups on Idempotency-Key, as real
providers do; ``bg.assert_effects_once`` then says whether each customer got one receipt.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import boto3
import httpx
import pytest
import pytest_asyncio
import respx
from aiobotocore.session import get_session

import pytest_bgwork as bg
from sqs_worker.worker import (
    MAIL_URL,
    QUEUE,
    QUEUE_ATTRIBUTES,
    VISIBILITY_TIMEOUT,
    WAIT_SECONDS,
    enqueue_receipt,
    run_worker,
)

ORDERS = [{"order_id": f"ord_{i}", "email": f"c{i}@example.com"} for i in range(3)]


class MailApi:
    """The mail provider: one email per Idempotency-Key (none given: every call mails)."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.keys: set[str] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        order_id = json.loads(request.content)["data"]["order_id"]
        key = request.headers.get("idempotency-key")
        if key is None or key not in self.keys:
            self.keys.add(key or "")
            self.sim.effects.record("email", key=order_id)
        return httpx.Response(202)


@pytest.fixture
def mail(respx_mock: respx.MockRouter, bgwork: bg.Simulation) -> MailApi:
    api = MailApi(bgwork)
    respx_mock.post(MAIL_URL).mock(side_effect=api)
    return api


@pytest.fixture
def queue_url(bg_sqs: Any) -> str:
    """The queue, made with plain boto3 as the deploy script would."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    return str(sqs.create_queue(QueueName=QUEUE, Attributes=QUEUE_ATTRIBUTES)["QueueUrl"])


@pytest_asyncio.fixture
async def sqs(bg_sqs: Any) -> AsyncIterator[Any]:
    async with get_session().create_client("sqs", region_name="us-east-1") as client:
        yield client


async def enqueue_all(queue_url: str) -> None:
    producer = boto3.client("sqs", region_name="us-east-1")  # the web app's sync client
    for order in ORDERS:
        enqueue_receipt(producer, queue_url, order)


async def supervise(sqs: Any, queue_url: str, http: httpx.AsyncClient, *, restarts: int = 3) -> int:
    """Run the worker; when it dies, start a new one (as systemd or ECS would).

    Each worker polls until the queue stayed empty longer than a visibility timeout, so a
    job a dead worker left behind is back before the last worker gives up.
    """
    done = 0
    idle_polls = VISIBILITY_TIMEOUT // WAIT_SECONDS + 1
    for _ in range(restarts + 1):
        try:
            return done + await run_worker(sqs, queue_url, http, idle_polls=idle_polls)
        except httpx.HTTPError:
            continue
    return done


@pytest.mark.asyncio
async def test_every_job_gets_one_receipt(bgwork: bg.Simulation, sqs: Any, queue_url: str, mail: MailApi) -> None:
    await enqueue_all(queue_url)
    async with httpx.AsyncClient() as http:
        await supervise(sqs, queue_url, http)
    bg.assert_effects_once(bgwork, "email")
    assert {e.detail["key"] for e in bgwork.history.filter("effect", "email")} == {o["order_id"] for o in ORDERS}
    bg.assert_nothing_lost(bgwork)
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_a_crash_mid_job_loses_nothing(bgwork: bg.Simulation, sqs: Any, queue_url: str, mail: MailApi) -> None:
    bgwork.faults.http(MAIL_URL, status=503, on_call=1)  # the worker dies on its first email
    await enqueue_all(queue_url)
    async with httpx.AsyncClient() as http:
        await supervise(sqs, queue_url, http)
    sent = {e.detail["key"] for e in bgwork.history.filter("effect", "email")}
    lost = sorted({o["order_id"] for o in ORDERS} - sent)
    assert not lost, f"jobs lost when the worker crashed: {lost} (deleted before they were done?)"
    assert not deleted_before_done(bgwork), (
        f"jobs deleted before their receipt went out: {deleted_before_done(bgwork)} (a crash there loses them)")
    bg.assert_nothing_lost(bgwork)


def deleted_before_done(sim: bg.Simulation) -> list[str]:
    """Orders whose message was first deleted before their first receipt email (history order)."""
    events = sim.history.events
    early = []
    for msg in sim.queues.messages(QUEUE):
        order_id = json.loads(msg.payload)["order_id"]
        acks = [e.seq for e in events if e.service == "queue" and e.op == "ack"
                and e.detail.get("id") == msg.id and e.outcome == "ok"]
        emails = [e.seq for e in events if e.service == "effect" and e.detail.get("key") == order_id]
        if acks and (not emails or min(acks) < min(emails)):
            early.append(order_id)
    return early


@pytest.mark.asyncio
async def test_a_redelivered_job_mails_once(bgwork: bg.Simulation, sqs: Any, queue_url: str, mail: MailApi) -> None:
    bgwork.faults.duplicate(QUEUE, times=2)  # SQS delivers each job twice
    await enqueue_all(queue_url)
    async with httpx.AsyncClient() as http:
        done = await supervise(sqs, queue_url, http)
    # every job was processed at least twice (chaos may add copies: overlap delivers one more)...
    assert done >= 2 * len(ORDERS)
    bg.assert_effects_once(bgwork, "email")  # ...and every customer got one email


def test_a_sync_boto3_long_poll_waits_on_virtual_time(bgwork: bg.Simulation, queue_url: str) -> None:
    """Sync boto3 waits on virtual time too: an empty long poll returns after its 20 seconds."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    assert sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=20).get("Messages") is None
    assert bgwork.clock.monotonic() == 20.0
