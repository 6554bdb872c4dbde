"""Orders that answer at once and mail their receipt afterwards, with FastAPI's BackgroundTasks.

``POST /orders`` records the order and answers 201; the receipt email goes out in a
background task after the response (``BackgroundTasks.add_task``), so a slow mail API never
slows checkout down. The app knows nothing about pytest-bgwork: tests reach it through
``adapters.asgi.transport(sim, app)``, which answers at the last body chunk, as a server does.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI
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
        # The mail API dedups on Idempotency-Key: a retried send mails once.
        response = await http.post(
            MAIL_URL,
            json={"to": order.email, "template": "receipt",
                  "data": {"order_id": order.order_id, "total_cents": order.total_cents}},
            headers={"Idempotency-Key": f"receipt-{order.order_id}"},
        )
        response.raise_for_status()

    @app.post("/orders", status_code=201)
    async def create_order(order: Order, tasks: BackgroundTasks) -> dict[str, Any]:
        orders[order.order_id] = order.model_dump()
        tasks.add_task(send_receipt, order)  # after the response: checkout never waits for mail
        return {"order_id": order.order_id, "status": "confirmed"}

    @app.get("/orders/{order_id}")
    async def get_order(order_id: str) -> dict[str, Any]:
        return orders[order_id]

    return app
