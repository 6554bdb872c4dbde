"""Outbound HTTP appears in the timeline with no fault rule; the test's own ASGI client does not."""

from __future__ import annotations

import httpx
import pytest
import respx

import pytest_bgwork as bg


@pytest.mark.asyncio
async def test_an_outbound_request_is_in_the_timeline_without_a_fault_rule(
        bgwork: bg.Simulation, respx_mock: respx.MockRouter) -> None:
    respx_mock.post("https://mail.example/send").mock(return_value=httpx.Response(202))
    respx_mock.get("https://down.example/").mock(side_effect=httpx.ConnectError("refused"))
    async with httpx.AsyncClient() as client:
        await client.post("https://mail.example/send", json={"to": "ann@example.com"})
        with pytest.raises(httpx.ConnectError):
            await client.get("https://down.example/")
    rows = [(e.outcome, e.detail) for e in bgwork.history.filter("http", "request")]
    assert rows == [
        ("ok", {"method": "POST", "url": "https://mail.example/send", "status": 202}),
        ("fail", {"method": "GET", "url": "https://down.example/", "error": "ConnectError: refused"}),
    ]
    assert "http.request" in bgwork.history.timeline()


@pytest.mark.asyncio
async def test_the_tests_own_client_to_an_asgi_app_is_not_outbound(bgwork: bg.Simulation) -> None:
    async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        assert (await client.get("/")).status_code == 200
    assert bgwork.history.filter("http", "request") == []


def test_a_sync_client_request_is_recorded(bgwork: bg.Simulation, respx_mock: respx.MockRouter) -> None:
    respx_mock.get("https://api.example/x").mock(return_value=httpx.Response(200))
    with httpx.Client() as client:
        client.get("https://api.example/x")
    [row] = bgwork.history.filter("http", "request")
    assert row.detail == {"method": "GET", "url": "https://api.example/x", "status": 200}
