"""Checkout answers at once; its three waitUntil chores run together, fail alone, drain.

The mocked services (respx) take virtual seconds to answer, so "the response did not
wait" and "the chores ran concurrently" are exact statements about the clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import respx

import pytest_bgwork as bg
from order_processor.app import ANALYTICS_URL, MAIL_URL, WAREHOUSE_URL, create_app

pytestmark = pytest.mark.asyncio
ORDER = {"order_id": "ord_42", "email": "ada@example.com", "items": [{"sku": "tea", "qty": 2}]}
LATENCY = {MAIL_URL: 2.0, ANALYTICS_URL: 1.0, WAREHOUSE_URL: 3.0}


class Services:
    """The three outbound services: each answers after its latency; ``status`` overrides."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.status: dict[str, int] = {}
        self.latency = dict(LATENCY)
        self.finished: dict[str, float] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        await asyncio.sleep(self.latency[url])
        self.finished[url] = self.sim.clock.monotonic()
        return httpx.Response(self.status.get(url, 202))


@pytest.fixture
def services(respx_mock: respx.MockRouter, bgwork: bg.Simulation) -> Services:
    fake = Services(bgwork)
    for url in LATENCY:
        respx_mock.post(url).mock(side_effect=fake)
    return fake


@pytest_asyncio.fixture
async def client(bgwork: bg.Simulation, services: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        transport = httpx.ASGITransport(app=create_app(bgwork, http))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            yield c


async def test_the_response_does_not_wait_for_the_chores(
    bgwork: bg.Simulation, client: httpx.AsyncClient, services: Services
) -> None:
    response = await client.post("/api/checkout", json=ORDER)
    assert response.status_code == 201
    assert bgwork.clock.monotonic() == 0.0  # answered at once...
    assert len(bgwork.runtime.pending) == 3  # ...with all three chores still running
    assert services.finished == {}
    [measured] = bgwork.history.filter("runtime", "response")
    assert measured.detail["seconds"] == 0.0
    await bgwork.runtime.drain()
    assert set(services.finished) == set(LATENCY)


async def test_the_chores_run_concurrently(
    bgwork: bg.Simulation, client: httpx.AsyncClient, services: Services
) -> None:
    await client.post("/api/checkout", json=ORDER)
    await bgwork.runtime.drain()
    assert services.finished == LATENCY  # each finished after its own latency...
    assert bgwork.clock.monotonic() == max(LATENCY.values())  # ...not after their sum


async def test_one_failing_chore_does_not_affect_the_others(
    bgwork: bg.Simulation, client: httpx.AsyncClient, services: Services
) -> None:
    services.status[WAREHOUSE_URL] = 500
    response = await client.post("/api/checkout", json=ORDER)
    assert response.status_code == 201  # the customer never sees it
    await bgwork.runtime.drain()
    assert set(services.finished) == set(LATENCY)  # the email and analytics still went out
    [error] = bgwork.runtime.errors
    assert "500" in str(error) and "warehouse.example" in str(error)


async def test_shutdown_drains_the_chores(
    bgwork: bg.Simulation, client: httpx.AsyncClient, services: Services
) -> None:
    await client.post("/api/checkout", json=ORDER)
    await bgwork.runtime.shutdown(grace=30)
    assert set(services.finished) == set(LATENCY)
    assert bgwork.history.count("runtime", "cut_off") == 0
    bg.assert_drained(bgwork)
    with pytest.raises(bg.RuntimeShuttingDown):  # a request after shutdown began is refused
        await client.post("/api/checkout", json=ORDER)


async def test_shutdown_cuts_off_a_chore_slower_than_the_grace_period(
    bgwork: bg.Simulation, client: httpx.AsyncClient, services: Services
) -> None:
    services.latency[WAREHOUSE_URL] = 45.0
    await client.post("/api/checkout", json=ORDER)
    await bgwork.runtime.shutdown(grace=30)
    assert bgwork.clock.monotonic() == 30.0
    assert set(services.finished) == {MAIL_URL, ANALYTICS_URL}
    [cut] = bgwork.history.filter("runtime", "cut_off")
    assert "notify_warehouse" in str(cut.detail)


@pytest.mark.parametrize(
    "body",
    [
        {**ORDER, "order_id": 42},
        {**ORDER, "email": "nope"},
        {**ORDER, "items": []},
        {**ORDER, "items": [{"sku": "tea", "qty": 0}]},
    ],
    ids=["order-id", "email", "no-items", "zero-qty"],
)
async def test_bad_orders_are_400_and_start_no_chores(
    bgwork: bg.Simulation, client: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/api/checkout", json=body)
    assert response.status_code == 400
    assert bgwork.history.count("runtime", "wait_until") == 0
