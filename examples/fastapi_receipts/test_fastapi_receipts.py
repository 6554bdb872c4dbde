"""Checkout answers before the receipt email; the email still goes out, once, or is reported.

The mail API (mocked with respx) takes 2 virtual seconds to answer, so "the response did
not wait for the email" is an exact statement about the clock. The app is unmodified
FastAPI; ``adapters.asgi.transport`` answers the client at the last body chunk and runs
the background tasks on the simulation's runtime, where drain, shutdown and the checks
see them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import respx

import pytest_bgwork as bg
from fastapi_receipts.app import MAIL_URL, create_app
from pytest_bgwork import adapters

ORDER = {"order_id": "ord_42", "email": "ada@example.com", "total_cents": 1999}
MAIL_LATENCY = 2.0


class MailApi:
    """The mail provider: answers after ``MAIL_LATENCY``; one email per Idempotency-Key."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.status = 202

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(MAIL_LATENCY)
        if self.status >= 300:
            return httpx.Response(self.status)
        key = request.headers["idempotency-key"]
        if not any(e.detail["key"] == key for e in self.sim.history.filter("effect", "email")):
            self.sim.effects.record("email", key=key)  # the provider mails once per key
        return httpx.Response(202, json={"queued": key})


@pytest.fixture
def mail(respx_mock: respx.MockRouter, bgwork: bg.Simulation) -> MailApi:
    api = MailApi(bgwork)
    respx_mock.post(MAIL_URL).mock(side_effect=api)
    return api


@pytest_asyncio.fixture
async def client(bgwork: bg.Simulation, mail: MailApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as http:
        transport = adapters.asgi.transport(bgwork, create_app(http))
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            yield c


@pytest.mark.asyncio
async def test_checkout_answers_before_the_receipt_email(bgwork: bg.Simulation, client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json=ORDER)
    assert response.status_code == 201 and response.json()["status"] == "confirmed"
    [measured] = bgwork.history.filter("runtime", "response")
    assert measured.detail["seconds"] == 0.0, (
        f"checkout took {measured.detail['seconds']}s: the response waited for the receipt email")
    assert [t.name for t in bgwork.runtime.pending if t.name == "send_receipt"] == ["send_receipt"]
    await bgwork.runtime.drain()
    assert bgwork.clock.monotonic() == MAIL_LATENCY  # the email went out after the response
    bg.assert_effects_once(bgwork, "email")
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_a_failing_mail_api_never_reaches_the_customer(
    bgwork: bg.Simulation, client: httpx.AsyncClient, mail: MailApi
) -> None:
    mail.status = 503
    response = await client.post("/orders", json=ORDER)
    assert response.status_code == 201  # the order stands
    await bgwork.runtime.drain()
    [error] = bgwork.runtime.errors  # ...and the failure is on record, not lost
    assert error.task == "send_receipt" and "503" in str(error.exception)


@pytest.mark.asyncio
async def test_shutdown_lets_the_receipt_go_out(bgwork: bg.Simulation, client: httpx.AsyncClient) -> None:
    await client.post("/orders", json=ORDER)
    cut = await bgwork.runtime.shutdown(grace=30)
    assert cut == []
    bg.assert_effects_once(bgwork, "email")


@pytest.mark.asyncio
async def test_a_bad_order_is_refused_and_mails_nothing(bgwork: bg.Simulation, client: httpx.AsyncClient) -> None:
    response = await client.post("/orders", json={**ORDER, "total_cents": 0})
    assert response.status_code == 422
    await bgwork.runtime.drain()
    assert bgwork.history.filter("effect", "email") == []
