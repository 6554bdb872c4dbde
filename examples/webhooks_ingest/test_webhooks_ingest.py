"""Webhook intake: only signed events get in, and each event's job runs once.

Two layers keep it once: the queue dedups publishes by event id within its window, and
the worker skips events the order already applied (a provider may resend days later).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import respx
from fastapi import FastAPI

import pytest_bgwork as bg
from webhooks_ingest.app import (
    ORDERS_NS,
    QUEUE,
    RECEIPTS_URL,
    SIGNATURE_HEADER,
    WORKER_PATH,
    create_app,
)

# Deployed on Agentuity (queue with idempotency keys, key-value store): its profiles apply.
pytestmark = [pytest.mark.asyncio, pytest.mark.bgwork(platform="agentuity")]
SECRET = "whsec_test_123"
PATH = "/webhooks/payments"


def payment(n: int = 1, type: str = "payment.succeeded") -> dict[str, object]:
    return {"id": f"evt_{n}", "type": type, "data": {"order_id": f"ord_{n}", "amount": 4200}}


class Receipts:
    """The receipts API: each receipt sent is an effect, keyed by order.

    Like Stripe's API it honours ``Idempotency-Key``: a repeated key replays the first
    answer and sends nothing. (Keys are looked up in the recorded effects, so they are
    part of the simulation's state and ``assert_idempotent`` restores them too.)
    Set ``outage`` to answer that many requests with 503 first.
    """

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.outage = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.outage:
            self.outage -= 1
            return httpx.Response(503)
        key = request.headers.get("idempotency-key")
        sent = [e for e in self.sim.effects.all("receipt") if e.detail["idempotency_key"] == key]
        if key is None or not sent:
            order_id = json.loads(request.content)["order_id"]
            self.sim.effects.record("receipt", key=order_id, idempotency_key=key)
        return httpx.Response(201, json={"id": f"rcpt_{key}"})


@pytest.fixture
def receipts(respx_mock: respx.MockRouter, bgwork: bg.Simulation) -> Receipts:
    api = Receipts(bgwork)
    respx_mock.post(RECEIPTS_URL).mock(side_effect=api)
    return api


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def app(bgwork: bg.Simulation, http: httpx.AsyncClient, receipts: Receipts) -> FastAPI:
    """The app wired as deployed: the queue pushes jobs to its worker endpoint."""
    bgwork.webhooks.header = SIGNATURE_HEADER  # sign the way the payment provider does
    bgwork.queues.create(QUEUE, max_retries=5, visibility_timeout=30)
    app = create_app(bgwork, http, webhook_secret=SECRET)
    bgwork.queues.route(QUEUE, app=app, path=WORKER_PATH)
    return app


def publishes(sim: bg.Simulation) -> list[bool]:
    """For each publish to the queue, whether it was a duplicate."""
    return [e.detail["duplicate"] for e in sim.history.filter("queue", "publish", queue=QUEUE)]


async def test_a_signed_payment_marks_the_order_paid_and_sends_one_receipt(
    bgwork: bg.Simulation, app: FastAPI
) -> None:
    [response] = await bgwork.webhooks.deliver(app, PATH, payment(), secret=SECRET)
    assert response.status_code == 200
    await bgwork.run_until_idle()
    order = await bgwork.kv.get(ORDERS_NS, "ord_1")
    assert order.data == {"status": "paid", "amount": 4200, "events": ["evt_1"]}
    bg.assert_effects_once(bgwork, "receipt", keys=["ord_1"])
    bg.assert_nothing_lost(bgwork)


async def test_duplicate_deliveries_enqueue_once(bgwork: bg.Simulation, app: FastAPI) -> None:
    responses = await bgwork.webhooks.deliver(app, PATH, payment(), secret=SECRET, times=3)
    assert [r.status_code for r in responses] == [200, 200, 200]  # each copy is acknowledged
    assert publishes(bgwork) == [False, True, True]  # ...and enqueued once
    await bgwork.run_until_idle()
    bg.assert_effects_once(bgwork, "receipt", keys=["ord_1"])


@pytest.mark.bgwork(platform="aws")
async def test_on_sqs_standard_every_copy_is_enqueued_and_still_applied_once(
    bgwork: bg.Simulation, app: FastAPI
) -> None:
    # The same app on AWS: SQS standard queues never deduplicate, so only the worker's
    # own checks (the order's applied events, the receipt's idempotency key) keep it once.
    await bgwork.webhooks.deliver(app, PATH, payment(), secret=SECRET, times=3)
    assert publishes(bgwork) == [False, False, False]
    await bgwork.run_until_idle()
    bg.assert_effects_once(bgwork, "receipt", keys=["ord_1"])
    order = await bgwork.kv.get(ORDERS_NS, "ord_1")
    assert order.data["events"] == ["evt_1"]


async def test_a_resend_after_the_dedup_window_is_still_applied_once(
    bgwork: bg.Simulation, app: FastAPI
) -> None:
    await bgwork.webhooks.deliver(app, PATH, payment(), secret=SECRET)
    await bgwork.run_until_idle()
    await bgwork.advance(3 * 86400)  # the provider resends three days later
    await bgwork.webhooks.deliver(app, PATH, payment(), secret=SECRET)
    await bgwork.run_until_idle()
    assert publishes(bgwork)[-1] is False  # the queue no longer remembers the key
    bg.assert_effects_once(bgwork, "receipt", keys=["ord_1"])  # the order does


@pytest.mark.parametrize(
    "headers, body",
    [
        pytest.param({}, None, id="missing"),
        pytest.param({SIGNATURE_HEADER: "t=1,v1=deadbeef"}, None, id="forged"),
        pytest.param("other-secret", None, id="wrong-secret"),
        pytest.param("stale", None, id="replayed-10-minutes-later"),
        pytest.param("signed", b'{"id":"evt_1","type":"payment.succeeded","data":'
                               b'{"order_id":"ord_1","amount":1}}', id="tampered-body"),
    ],
)
async def test_unsigned_or_tampered_events_get_400_and_enqueue_nothing(
    bgwork: bg.Simulation, app: FastAPI, headers: object, body: bytes | None
) -> None:
    signed = json.dumps(payment(), separators=(",", ":")).encode()
    if headers == "other-secret":
        headers = {SIGNATURE_HEADER: bgwork.webhooks.sign(signed, "whsec_other")}
    elif headers == "stale":
        headers = {SIGNATURE_HEADER: bgwork.webhooks.sign(signed, SECRET)}
        await bgwork.advance(600)
    elif headers == "signed":
        headers = {SIGNATURE_HEADER: bgwork.webhooks.sign(signed, SECRET)}
    assert isinstance(headers, dict)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post(PATH, content=body or signed, headers=headers)
    assert response.status_code == 400
    assert publishes(bgwork) == []


async def test_events_it_does_not_handle_are_acknowledged_and_ignored(
    bgwork: bg.Simulation, app: FastAPI
) -> None:
    [response] = await bgwork.webhooks.deliver(app, PATH, payment(type="payment.created"),
                                                secret=SECRET)
    assert response.json() == {"received": "evt_1", "ignored": "payment.created"}
    assert publishes(bgwork) == []


async def test_a_receipts_outage_is_retried_and_still_sends_one_receipt(
    bgwork: bg.Simulation, app: FastAPI, receipts: Receipts
) -> None:
    receipts.outage = 2
    await bgwork.webhooks.deliver(app, PATH, payment(), secret=SECRET)
    await bgwork.run_until_idle()
    attempts = [e.detail["attempt"] for e in bgwork.history.filter("queue", "deliver")]
    assert attempts[-1] >= 3
    bg.assert_effects_once(bgwork, "receipt", keys=["ord_1"])
    bg.assert_nothing_lost(bgwork)


async def test_the_worker_is_idempotent_under_duplicates_and_crashes(
    bgwork: bg.Simulation, app: FastAPI
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:

        async def handler(job: dict[str, object]) -> None:
            response = await client.post(WORKER_PATH, json=job)
            response.raise_for_status()

        # Runs the handler once, then again from the same state under a duplicate
        # delivery and a crash-restart at each fault point, and compares the results.
        await bg.assert_idempotent(
            bgwork, handler, {"event_id": "evt_9", "order_id": "ord_9", "amount": 100}
        )
