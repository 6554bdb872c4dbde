"""The buggy twin of ``app.py``: the handler awaits the receipt email before it answers.

Checkout now takes as long as the mail API does (and fails when it fails). With
``httpx.ASGITransport`` a test cannot tell the difference: the response arrives after the
background tasks either way. ``tests/adapters/test_web_examples.py`` runs the example's
suite against this file and checks that it fails.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field

MAIL_URL = "https://mail.example/v1/send"


class Order(BaseModel):
    """One order to confirm."""

    order_id: str = Field(pattern=r"^ord_[a-z0-9]{1,32}$")
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    total_cents: int = Field(gt=0)


def create_app(http: httpx.AsyncClient) -> FastAPI:
    """The orders API; ``http`` is the app's shared client for the mail API."""
    app = FastAPI(title="orders")
    orders: dict[str, dict[str, Any]] = {}

    async def send_receipt(order: Order) -> None:
        response = await http.post(
            MAIL_URL,
            json={"to": order.email, "template": "receipt",
                  "data": {"order_id": order.order_id, "total_cents": order.total_cents}},
            headers={"Idempotency-Key": f"receipt-{order.order_id}"},
        )
        response.raise_for_status()

    @app.post("/orders", status_code=201)
    async def create_order(order: Order) -> dict[str, Any]:
        orders[order.order_id] = order.model_dump()
        await send_receipt(order)  # the bug: the response waits for the mail API
        return {"order_id": order.order_id, "status": "confirmed"}

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        return orders[order_id]

    return app
