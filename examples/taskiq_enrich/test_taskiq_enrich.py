"""Enrichment under at-least-once delivery: every sign-up ends enriched, none is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import respx

import pytest_bgwork as bg
from taskiq_enrich.app import ENRICH_URL, NS, TERMINAL, configure, enrich_profile, request_enrichment

pytestmark = pytest.mark.asyncio
PERSON = {"company": "Acme", "title": "CTO"}


@pytest_asyncio.fixture
async def api(bgwork: bg.Simulation, respx_mock: respx.MockRouter) -> AsyncIterator[respx.Route]:
    route = respx_mock.get(ENRICH_URL).mock(return_value=httpx.Response(200, json=PERSON))
    async with httpx.AsyncClient() as http:
        configure(kv=bgwork.kv, http=http)
        yield route


async def test_a_sign_up_is_enriched_in_the_background(bgwork: bg.Simulation, api: respx.Route) -> None:
    await request_enrichment("u1", "ana@acme.test")
    assert bgwork.kv.items(NS)["u1"]["status"] == "pending"
    await bgwork.run_until_idle()
    assert bgwork.kv.items(NS)["u1"] == {"status": "enriched", "email": "ana@acme.test", **PERSON}
    bg.assert_status_terminal(bgwork, NS, field="status", terminal=TERMINAL)
    bg.assert_nothing_lost(bgwork)


async def test_api_errors_are_retried_with_backoff(bgwork: bg.Simulation, api: respx.Route) -> None:
    api.side_effect = [httpx.Response(503), httpx.Response(503), httpx.Response(200, json=PERSON)]
    await request_enrichment("u2", "bo@acme.test")
    await bgwork.run_until_idle()
    assert bgwork.kv.items(NS)["u2"]["status"] == "enriched"
    assert api.call_count == 3
    assert bgwork.clock.monotonic() >= 30 + 60  # 30 s, then 60 s (x retry), plus jitter


async def test_a_worker_dying_mid_task_leaves_the_job_to_run_again(
    bgwork: bg.Simulation, api: respx.Route
) -> None:
    bgwork.faults.crash("enrich", at="kv.set")
    await request_enrichment("u3", "cy@acme.test")
    await bgwork.run_until_idle()
    assert bgwork.history.count("queue", "crashed") == 1
    bg.assert_status_terminal(bgwork, NS, field="status", terminal=TERMINAL)


@pytest.mark.bgwork(chaos="off")  # a deterministic reproduction of the bug
async def test_the_bug_acking_on_receipt_loses_the_job_when_the_worker_dies(
    bgwork: bg.Simulation, api: respx.Route
) -> None:
    # ack_type="when_received" (ack before running) looks faster; a crash then loses it
    await bgwork.kv.set(NS, "u4", {"status": "pending", "email": "dee@acme.test"})
    bgwork.faults.crash("enrich", at="kv.set")
    await enrich_profile.kicker().with_labels(ack_type="when_received").kiq("u4", "dee@acme.test")
    await bgwork.run_until_idle()
    assert bgwork.queues.stats("enrich")["acked"] == 1  # acked, so never redelivered...
    with pytest.raises(bg.CheckFailed, match="pending"):  # ...and the profile stays pending
        bg.assert_status_terminal(bgwork, NS, field="status", terminal=TERMINAL)
