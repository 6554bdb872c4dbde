"""Checkout that answers at once and finishes its chores with ``waitUntil``.

``POST /api/checkout`` validates the cart, answers 201, and hands three jobs to the
platform's ``waitUntil``: the confirmation email, the analytics event and the warehouse
notification. Each is an outbound httpx call; none may slow the response down or take
the others with it when it fails.

``create_app(platform, http)``: ``platform.runtime`` is the host's waitUntil runtime
(in tests, the simulation's); ``http`` is the app's shared ``httpx.AsyncClient``.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAIL_URL = "https://mail.example/v1/send"
ANALYTICS_URL = "https://analytics.example/v1/track"
WAREHOUSE_URL = "https://warehouse.example/api/orders"

log = logging.getLogger(__name__)


class Platform(Protocol):
    """What the app needs from its host: a waitUntil runtime."""

    runtime: Any


def validate(body: object) -> dict[str, Any] | str:
    """The order, or the reason it is not one (answered as a 400)."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    order_id, email, items = body.get("order_id"), body.get("email"), body.get("items")
    if not isinstance(order_id, str) or not order_id.startswith("ord_"):
        return "order_id must be a string like 'ord_123'"
    if not isinstance(email, str) or "@" not in email:
        return "email must be an email address"
    if not isinstance(items, list) or not items or not all(
        isinstance(i, dict) and isinstance(i.get("sku"), str) and isinstance(i.get("qty"), int)
        and i["qty"] > 0 for i in items
    ):
        return "items must be a non-empty list of {sku: str, qty: int > 0}"
    return {"order_id": order_id, "email": email, "items": items}


def create_app(platform: Platform, http: httpx.AsyncClient) -> Starlette:
    """Build the checkout app around the host's waitUntil runtime and an httpx client."""
    runtime = platform.runtime

    async def send_confirmation(order: dict[str, Any]) -> None:
        # The mail API dedups on Idempotency-Key: a retried send mails once.
        response = await http.post(
            MAIL_URL,
            json={"to": order["email"], "template": "order-confirmation", "order_id": order["order_id"]},
            headers={"Idempotency-Key": f"confirmation-{order['order_id']}"},
        )
        response.raise_for_status()

    async def track_purchase(order: dict[str, Any]) -> None:
        response = await http.post(
            ANALYTICS_URL, json={"event": "purchase", "order_id": order["order_id"],
                                 "items": len(order["items"])}
        )
        response.raise_for_status()

    async def notify_warehouse(order: dict[str, Any]) -> None:
        response = await http.post(
            WAREHOUSE_URL, json={"order_id": order["order_id"], "items": order["items"]},
            headers={"Idempotency-Key": f"pick-{order['order_id']}"},
        )
        response.raise_for_status()

    async def checkout(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        order = validate(body)
        if isinstance(order, str):
            return JSONResponse({"error": order}, status_code=400)
        async with runtime.request("checkout") as ctx:
            # Each chore runs after the response, concurrently; a failure is logged by the
            # runtime and never reaches the customer or the other chores.
            ctx.wait_until(send_confirmation(order))
            ctx.wait_until(track_purchase(order))
            ctx.wait_until(notify_warehouse(order))
            log.info("order %s accepted", order["order_id"])
            return JSONResponse({"order_id": order["order_id"], "status": "accepted"}, status_code=201)

    return Starlette(routes=[Route("/api/checkout", checkout, methods=["POST"])])
