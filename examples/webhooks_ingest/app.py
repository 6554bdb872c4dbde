"""Payment webhooks in, follow-up jobs out: verify, enqueue once, answer fast.

``POST /webhooks/payments`` checks the Stripe-style ``Payments-Signature`` header
(``t=<unix>,v1=<hmac-sha256 of "t.body">``), then publishes a follow-up job keyed by
the event id, so a provider that delivers the same event three times enqueues it once.
``POST /api/workers/payment-events`` (the queue's push target) marks the order paid and
asks the receipts API to send a receipt, once per event.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Protocol

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

QUEUE = "payment-events"
WORKER_PATH = "/api/workers/payment-events"
SIGNATURE_HEADER = "payments-signature"
#: Reject signatures older than this: a replayed delivery is not a new payment.
TOLERANCE = 300
RECEIPTS_URL = "https://receipts.example/v1/receipts"
ORDERS_NS = "orders"
HANDLED = {"payment.succeeded"}


class Platform(Protocol):
    """What the app needs from its host: a queue and a key-value store."""

    queues: Any
    kv: Any


def signature_ok(body: bytes, header: str | None, secret: str, now: float) -> str | None:
    """``None`` if ``header`` signs ``body`` with ``secret`` recently enough, else why not."""
    if not header:
        return "missing signature"
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        t = int(fields["t"][0])
    except (KeyError, ValueError):
        return "signature has no timestamp"
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, sig) for sig in fields.get("v1", [])):
        return "signature does not match"
    if abs(now - t) > TOLERANCE:
        return "signature is too old"
    return None


def create_app(platform: Platform, http: httpx.AsyncClient, *, webhook_secret: str) -> FastAPI:
    """Build the webhook app around the host's queue and key-value clients."""
    app = FastAPI(title="payments-webhooks")
    queues, kv = platform.queues, platform.kv

    @app.post("/webhooks/payments")
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        problem = signature_ok(body, request.headers.get(SIGNATURE_HEADER), webhook_secret, time.time())
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        event = json.loads(body)
        if event.get("type") not in HANDLED:
            return JSONResponse({"received": event.get("id"), "ignored": event.get("type")})
        job = {"event_id": event["id"], "order_id": event["data"]["order_id"],
               "amount": event["data"]["amount"]}
        try:
            # Keyed by event id: the provider's retries of one event enqueue one job.
            await queues.publish(QUEUE, job, idempotency_key=event["id"])
        except (ConnectionError, TimeoutError):
            # Not acknowledged: the provider delivers again later, and the key dedups it.
            return JSONResponse({"error": "try again"}, status_code=503)
        return JSONResponse({"received": event["id"]})

    @app.post(WORKER_PATH)
    async def work(request: Request) -> JSONResponse:
        job = await request.json()
        order = await kv.get(ORDERS_NS, job["order_id"])
        if order.exists and job["event_id"] in order.data.get("events", []):
            return JSONResponse({"skipped": "event already applied"})
        # The receipts API dedups on Idempotency-Key, so a retry after a lost answer,
        # or a duplicate delivery racing this one, sends one receipt.
        try:
            response = await http.post(
                RECEIPTS_URL,
                json={"order_id": job["order_id"], "amount": job["amount"]},
                headers={"Idempotency-Key": f"receipt-{job['event_id']}"},
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # A non-2xx answer fails this attempt; the queue retries it later.
            return JSONResponse({"error": f"receipts API: {exc}"}, status_code=502)
        events = [*(order.data.get("events", []) if order.exists else []), job["event_id"]]
        await kv.set(ORDERS_NS, job["order_id"], {"status": "paid", "amount": job["amount"],
                                                  "events": events})
        return JSONResponse({"order_id": job["order_id"], "status": "paid"})

    return app
