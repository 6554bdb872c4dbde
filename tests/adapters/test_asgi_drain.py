"""``runtime.drain()`` when the ASGI call's own task (``task.asgi.<endpoint>``) fails."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI

import pytest_bgwork as bg
from pytest_bgwork import adapters


@pytest.mark.asyncio
async def test_drain_returns_when_the_asgi_call_task_fails(bgwork: bg.Simulation) -> None:
    app = FastAPI()
    done: list[str] = []

    async def send_receipt(order_id: str) -> None:
        await asyncio.sleep(5)
        done.append(order_id)

    @app.post("/orders/{order_id}")
    async def create_order(order_id: str, tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(send_receipt, order_id)
        return {"order_id": order_id}

    bgwork.faults.fail("task.asgi.create_order", error=ConnectionError("injected"))
    transport = adapters.asgi.transport(app, bgwork)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
        await c.post("/orders/o1")
    await bgwork.runtime.drain()  # returns, as run_until_idle does
    assert bgwork.runtime.pending == []
    await bgwork.run_until_idle()
