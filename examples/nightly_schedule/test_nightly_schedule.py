"""The nightly rollup never double-runs, even when one run outlasts a whole day.

Days of cron go by in milliseconds: the schedule fires on virtual time, and a billing
API that takes 30 hours to answer is one ``asyncio.sleep`` in a respx side effect.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import respx

import pytest_bgwork as bg
from nightly_schedule.app import (
    CRON,
    CRON_PATH,
    INVOICES_URL,
    LEASE_TTL,
    LOCK_KEY,
    LOCKS_NS,
    ROLLUPS_NS,
    USAGE_URL,
    create_app,
)

# Deployed on Agentuity (cron, key-value lease with a TTL of at least 60 s): its profiles apply.
pytestmark = [pytest.mark.asyncio,
              pytest.mark.bgwork(start="2026-03-01T00:00:00Z", platform="agentuity")]
DAY = 86400


def mock_billing(
    respx_mock: respx.MockRouter,
    sim: bg.Simulation,
    slow: dict[str, float] | None = None,
    down: set[str] | None = None,
) -> None:
    """The billing API: usage for a day answers after ``slow[day]`` seconds (503 on the
    first call for a day in ``down``); each invoice sent is recorded as an effect."""
    slow, down = slow or {}, set(down or ())

    async def usage(request: httpx.Request) -> httpx.Response:
        day = request.url.params["day"]
        await asyncio.sleep(slow.get(day, 0.5))
        if day in down:
            down.discard(day)
            return httpx.Response(503, json={"error": "maintenance"})
        return httpx.Response(200, json={"items": [{"cents": 1200}, {"cents": 800}]})

    def invoice(request: httpx.Request) -> httpx.Response:
        sim.effects.record("invoice", key=json.loads(request.content)["day"])
        return httpx.Response(201, json={"id": "inv"})

    respx_mock.get(USAGE_URL).mock(side_effect=usage)
    respx_mock.post(INVOICES_URL).mock(side_effect=invoice)


def start(sim: bg.Simulation, http: httpx.AsyncClient) -> None:
    sim.schedules.create("nightly-rollup", cron=CRON, app=create_app(sim, http), path=CRON_PATH)


async def test_each_night_rolls_up_yesterday_once(bgwork: bg.Simulation, respx_mock: respx.MockRouter) -> None:
    mock_billing(respx_mock, bgwork, slow={})
    async with httpx.AsyncClient() as http:
        start(bgwork, http)
        await bgwork.advance(3 * DAY)
    runs = bgwork.schedules.runs("nightly-rollup")
    assert [r.outcome for r in runs] == ["ok", "ok", "ok"]
    assert [e.key for e in bgwork.effects.all("invoice")] == ["2026-02-28", "2026-03-01", "2026-03-02"]
    rollup = await bgwork.kv.get(ROLLUPS_NS, "2026-03-01")
    assert rollup.data == {"day": "2026-03-01", "total_cents": 2000}
    assert not (await bgwork.kv.get(LOCKS_NS, LOCK_KEY)).exists  # the lease was released


async def test_a_run_that_outlasts_its_interval_does_not_double_run(
    bgwork: bg.Simulation, respx_mock: respx.MockRouter
) -> None:
    # The first night's usage query takes 30 hours: far past the next 02:00, and far
    # past LEASE_TTL, so only the heartbeat keeps the lease alive.
    mock_billing(respx_mock, bgwork, slow={"2026-02-28": 30 * 3600})
    async with httpx.AsyncClient() as http:
        start(bgwork, http)
        await bgwork.advance(4 * DAY)
    runs = bgwork.schedules.runs("nightly-rollup")
    assert runs[1].overlapped, "the test must really make two runs overlap"
    assert LEASE_TTL < 30 * 3600
    # The overlapping run saw the lease and stepped aside; the next one caught up.
    bg.assert_effects_once(bgwork, "invoice")
    days = sorted(e.key for e in bgwork.effects.all("invoice"))
    assert days == ["2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03"]


async def test_a_dead_runs_lease_expires_and_the_next_night_catches_up(
    bgwork: bg.Simulation, respx_mock: respx.MockRouter
) -> None:
    mock_billing(respx_mock, bgwork)
    async with httpx.AsyncClient() as http:
        start(bgwork, http)
        await bgwork.advance(DAY + 115 * 60)  # 2026-03-02 01:55; the night of 03-01 ran
        # A process died holding the lease: nobody deletes it, only its TTL frees it.
        await bgwork.kv.set(LOCKS_NS, LOCK_KEY, {"owner": "run_dead"}, ttl=LEASE_TTL)
        await bgwork.advance(10 * 60)  # 02:05: this night's run found the lease and skipped
        assert [e.key for e in bgwork.effects.all("invoice")] == ["2026-02-28"]
        assert not (await bgwork.kv.get(LOCKS_NS, LOCK_KEY)).exists  # the TTL freed it
        await bgwork.advance(DAY)
    outcomes = [r.outcome for r in bgwork.schedules.runs("nightly-rollup")]
    assert outcomes == ["ok", "ok", "ok"]
    assert [e.key for e in bgwork.effects.all("invoice")] == ["2026-02-28", "2026-03-01", "2026-03-02"]


async def test_a_failed_night_is_caught_up_by_the_next(
    bgwork: bg.Simulation, respx_mock: respx.MockRouter
) -> None:
    mock_billing(respx_mock, bgwork, down={"2026-02-28"})
    async with httpx.AsyncClient() as http:
        start(bgwork, http)
        await bgwork.advance(2 * DAY)
    runs = bgwork.schedules.runs("nightly-rollup")
    assert [(r.outcome, r.status) for r in runs] == [("failed", 502), ("ok", 200)]
    assert [e.key for e in bgwork.effects.all("invoice")] == ["2026-02-28", "2026-03-01"]
    assert not (await bgwork.kv.get(LOCKS_NS, LOCK_KEY)).exists  # released in finally


async def test_two_replicas_firing_at_once_run_the_night_once(
    bgwork: bg.Simulation, respx_mock: respx.MockRouter
) -> None:
    """Every KV call is a suspension point: two replicas' requests interleave between
    reading the lease and writing it. The lease is taken with ``if_absent``, so one runs."""
    mock_billing(respx_mock, bgwork)
    async with httpx.AsyncClient() as http:
        app = create_app(bgwork, http)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            body = {"scheduled_at": "2026-03-01T02:00:00+00:00"}
            first, second = await asyncio.gather(
                client.post(CRON_PATH, json={**body, "run": "run_a"}),
                client.post(CRON_PATH, json={**body, "run": "run_b"}),
            )
    answers = sorted([first.json(), second.json()], key=lambda a: a["run"])
    assert answers == [{"run": "run_a", "rolled_up": ["2026-02-28"]},
                       {"run": "run_b", "skipped": "run run_a holds the lease"}]
    bg.assert_effects_once(bgwork, "invoice")
    applied = [e.detail["applied"] for e in bgwork.history.filter("kv", "set", ns=LOCKS_NS)]
    assert applied[:2] == [True, False]  # run_b's conditional write found run_a's lease
