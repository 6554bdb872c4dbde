"""sim.faults.http: outbound httpx requests failed through respx, around the user's own mocks."""

from __future__ import annotations

import re

import httpx
import pytest
import respx
from respx.mocks import HTTPXMocker

import pytest_bgwork as bg
from pytest_bgwork.core.faults import Fault, FaultPlan


@pytest.mark.asyncio
async def test_a_status_fault_answers_the_first_call_then_your_mock_answers(
    bgwork: bg.Simulation,
) -> None:
    bgwork.faults.http("https://api.mail.example/*", status=503)
    with respx.mock:
        route = respx.post("https://api.mail.example/send").respond(200, json={"ok": True})
        async with httpx.AsyncClient() as client:
            first = await client.post("https://api.mail.example/send")
            second = await client.post("https://api.mail.example/send")
    assert (first.status_code, second.status_code) == (503, 200)
    assert route.call_count == 1
    [event] = bgwork.history.filter("fault", "http")
    assert event.detail == {"point": "http", "method": "POST",
                            "url": "https://api.mail.example/send", "status": 503}


@pytest.mark.asyncio
async def test_timeouts_and_connect_errors_raise_httpx_errors(bgwork: bg.Simulation) -> None:
    bgwork.faults.http("https://a.example/*", timeout=True, on_call=None)
    bgwork.faults.http("https://b.example/x?*", connect_error=True, on_call=2)
    with respx.mock:
        respx.get(url__regex=r"https://[abc]\.example/.*").respond(204)
        async with httpx.AsyncClient() as client:
            for _ in range(2):
                with pytest.raises(httpx.ReadTimeout, match="injected timeout"):
                    await client.get("https://a.example/")
            assert (await client.get("https://b.example/x?q=1")).status_code == 204
            with pytest.raises(httpx.ConnectError, match="injected connect error"):
                await client.get("https://b.example/x?q=2")
            assert (await client.get("https://c.example/")).status_code == 204


def test_sync_clients_see_the_rules_too(bgwork: bg.Simulation) -> None:
    bgwork.faults.http("https://api.example/*", status=429, on_call=None)
    with respx.mock:
        respx.get("https://api.example/v1").respond(200)
        with httpx.Client() as client:
            assert client.get("https://api.example/v1").status_code == 429


@pytest.mark.asyncio
async def test_generic_rules_at_the_http_point_become_httpx_errors(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("http", on_call=1, error=TimeoutError("slow upstream"))
    bgwork.faults.delay("http", seconds=5, on_call=2)
    with respx.mock:
        respx.get("https://api.example/").respond(200)
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ReadTimeout, match="slow upstream"):
                await client.get("https://api.example/")
            assert (await client.get("https://api.example/")).status_code == 200
    assert bgwork.clock.monotonic() == 5


@pytest.mark.filterwarnings("ignore::pytest_bgwork.UnusedFaultRuleWarning")  # healed on purpose
@pytest.mark.asyncio
async def test_healed_faults_let_every_request_through(bgwork: bg.Simulation) -> None:
    bgwork.faults.http("https://api.example/*", status=500, on_call=None)
    bgwork.faults.heal()
    with respx.mock:
        respx.get("https://api.example/").respond(200)
        async with httpx.AsyncClient() as client:
            assert (await client.get("https://api.example/")).status_code == 200


def test_the_interception_ends_with_the_simulation() -> None:
    sim = bg.Simulation()
    sim.faults.http("https://api.example/*", status=500)
    assert HTTPXMocker.routers
    sim.close()
    assert HTTPXMocker.routers == [] and HTTPXMocker._patches == []


def test_http_faults_are_plain_data_that_replay() -> None:
    sim = bg.Simulation()
    fault = sim.faults.http("https://api.example/*", status=503, on_call=2)
    assert fault == Fault("http", "http", None, 2, None, url="https://api.example/*", status=503)
    assert fault.describe() == "http https://api.example/* answer 503 on call 2"
    data = sim.faults.plan.to_data()
    assert data == [{"kind": "http", "point": "http", "on_call": 2,
                     "url": "https://api.example/*", "status": 503}]
    assert FaultPlan(data) == sim.faults.plan
    other = bg.Simulation()
    other.faults.apply(FaultPlan(data))
    assert other.faults.plan == sim.faults.plan
    sim.close()
    other.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of status=<code>, timeout=True, connect_error=True; got none"),
        ({"status": 500, "timeout": True}, "got status, timeout"),
        ({"status": 99}, "expects an HTTP status code 100-599; got 99"),
        ({"status": 500, "on_call": 0}, "on_call= counts calls from 1"),
    ],
)
def test_bad_http_faults_say_what_to_pass(kwargs: dict[str, object], message: str) -> None:
    sim = bg.Simulation()
    with pytest.raises(ValueError, match=re.escape(message)):
        sim.faults.http("https://api.example/*", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expects a URL or glob"):
        sim.faults.http("", status=500)
    sim.close()
