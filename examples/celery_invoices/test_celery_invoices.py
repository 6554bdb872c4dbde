"""Invoice charges under Celery's real worker rules, on virtual time.

The task body is the production one; the simulation delivers its messages (at least
once), holds countdowns on virtual time and applies the visibility timeout. The fake
gateway records each charge it makes as an effect, so a double charge fails
``bg.assert_effects_once``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

import pytest_bgwork as bg
from celery_invoices.app import LONGEST_RETRY, PAYMENTS_URL, app, charge_invoice, configure
from pytest_bgwork.adapters import celery as bc

pytestmark = pytest.mark.asyncio
NS = "invoices"


class SimStore:
    """The invoice store on ``sim.kv``, called from the task's thread with ``bc.call``."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim

    def get(self, invoice_id: str) -> dict[str, Any] | None:
        r = bc.call(self.sim.kv.get(NS, invoice_id))
        return r.data if r.exists else None

    def set(self, invoice_id: str, invoice: dict[str, Any]) -> None:
        bc.call(self.sim.kv.set(NS, invoice_id, invoice))


class Gateway:
    """A payment gateway that declines each card once ("retry in 2 h"), then charges it.

    A repeated ``Idempotency-Key`` gets the first charge back instead of a new one.
    """

    def __init__(self, sim: bg.Simulation, retry_after: int = 2 * 3600) -> None:
        self.sim = sim
        self.retry_after = retry_after
        self.declined: set[str] = set()
        self.by_key: dict[str, httpx.Response] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if key in self.by_key:
            return self.by_key[key]
        invoice = httpx.Response(200, content=request.content).json()["invoice"]
        if invoice not in self.declined:
            self.declined.add(invoice)
            return httpx.Response(402, json={"error": "card_declined", "retry_after": self.retry_after})
        effect = self.sim.effects.record("charge", key=invoice)
        response = httpx.Response(200, json={"id": f"ch_{len(self.sim.effects.all('charge'))}",
                                             "t": effect.t})
        if key is not None:
            self.by_key[key] = response
        return response


@pytest.fixture
def gateway(bgwork: bg.Simulation, respx_mock: respx.MockRouter) -> Iterator[Gateway]:
    gw = Gateway(bgwork)
    respx_mock.post(PAYMENTS_URL).mock(side_effect=gw)
    saved = dict(app.conf.broker_transport_options), app.conf.invoices_idempotency_keys
    with httpx.Client() as http:
        configure(store=SimStore(bgwork), http=http)
        yield gw
    app.conf.broker_transport_options, app.conf.invoices_idempotency_keys = saved


async def open_invoice(sim: bg.Simulation, invoice_id: str, amount: int = 4200) -> None:
    await sim.kv.set(NS, invoice_id, {"amount": amount, "status": "open"})


async def test_a_declined_card_is_charged_after_the_retry_the_gateway_asked_for(
    bgwork: bg.Simulation, gateway: Gateway
) -> None:
    await open_invoice(bgwork, "inv_1")
    with bc.install(bgwork, app):
        result = charge_invoice.delay("inv_1")
        await bgwork.run_until_idle()
    assert result.get() == "paid"
    assert bgwork.kv.items(NS)["inv_1"]["status"] == "paid"
    bg.assert_effects_once(bgwork, "charge", keys=["inv_1"])
    assert bgwork.clock.monotonic() >= gateway.retry_after  # virtual seconds, not real ones
    bg.assert_nothing_lost(bgwork)


async def test_the_worker_dying_mid_charge_requeues_it_and_charges_once(
    bgwork: bg.Simulation, gateway: Gateway
) -> None:
    gateway.declined.add("inv_2")  # approve at once
    await open_invoice(bgwork, "inv_2")
    bgwork.faults.crash("celery", at="kv.set", on_call=1)  # after the charge, before "paid"
    with bc.install(bgwork, app):
        charge_invoice.delay("inv_2")
        await bgwork.run_until_idle()
    assert bgwork.history.count("queue", "crashed") == 1
    assert bgwork.kv.items(NS)["inv_2"]["status"] == "paid"
    bg.assert_effects_once(bgwork, "charge", keys=["inv_2"])


@pytest.mark.bgwork(chaos="off")  # a deterministic reproduction of the bug
async def test_the_bug_a_countdown_past_the_visibility_timeout_charges_twice(
    bgwork: bg.Simulation, gateway: Gateway
) -> None:
    # Redis's default visibility timeout (3600 s) and no idempotency key: the retry held
    # for 90 min is redelivered after 60, and both copies charge the card when it is due.
    gateway.retry_after = 5400
    app.conf.broker_transport_options = {}
    app.conf.invoices_idempotency_keys = False
    await open_invoice(bgwork, "inv_3")
    with bc.install(bgwork, app):
        charge_invoice.delay("inv_3")
        await bgwork.run_until_idle()
    assert bgwork.history.count("queue", "visibility_expired") == 1
    with pytest.raises(bg.CheckFailed, match="charge"):
        bg.assert_effects_once(bgwork, "charge")
    assert [e.t for e in bgwork.effects.all("charge")] == [5400.0, 5400.0]


@pytest.mark.bgwork(chaos="off")
async def test_a_visibility_timeout_longer_than_the_longest_countdown_runs_it_once(
    bgwork: bg.Simulation, gateway: Gateway
) -> None:
    app.conf.invoices_idempotency_keys = False  # the timeout alone fixes this case
    gateway.retry_after = LONGEST_RETRY
    await open_invoice(bgwork, "inv_4")
    with bc.install(bgwork, app):
        charge_invoice.delay("inv_4")
        await bgwork.run_until_idle()
    assert bgwork.history.count("queue", "visibility_expired") == 0
    bg.assert_effects_once(bgwork, "charge", keys=["inv_4"])
