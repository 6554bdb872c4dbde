"""HTTP destinations: an ASGI worker route (a tiny Starlette app) and a respx-mocked URL."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import pytest_bgwork as bg
from pytest_bgwork.services.http import AsgiDestination, DestinationError, UrlDestination

WORKER_PATH = "/api/workers/report-jobs"
WORKER_URL = "https://app.example/api/workers/report-jobs"


def worker_app(statuses: list[int], seen: list[dict[str, Any]]) -> Starlette:
    """A worker endpoint answering ``statuses`` in turn (the last one from then on)."""

    async def endpoint(request: Request) -> Response:
        seen.append({
            "body": await request.json(),
            "attempt": request.headers["x-bgwork-attempt"],
            "id": request.headers["x-bgwork-message-id"],
            "queue": request.headers["x-bgwork-queue"],
            "key": request.headers.get("x-bgwork-idempotency-key"),
            "type": request.headers["content-type"],
        })
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return JSONResponse({"ok": status < 300}, status_code=status)

    return Starlette(routes=[Route(WORKER_PATH, endpoint, methods=["POST"])])


def events(sim: bg.Simulation, op: str) -> list[bg.Event]:
    return sim.history.filter("queue", op)


@pytest.mark.asyncio
async def test_asgi_route_posts_the_json_payload_and_2xx_acks(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    bgwork.queues.create("report-jobs")
    bgwork.queues.route("report-jobs", app=worker_app([200], seen), path=WORKER_PATH)
    await bgwork.queues.publish("report-jobs", {"report": 7, "rows": [1, 2]},
                                idempotency_key="r7")
    await bgwork.run_until_idle()
    assert seen == [{"body": {"report": 7, "rows": [1, 2]}, "attempt": "1", "id": "msg_1",
                     "queue": "report-jobs", "key": "r7", "type": "application/json"}]
    assert bgwork.queues.stats("report-jobs")["acked"] == 1
    assert events(bgwork, "route")[0].detail["destination"] == f"app POST {WORKER_PATH}"


@pytest.mark.asyncio
async def test_asgi_worker_answering_500_is_retried(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    bgwork.queues.create("report-jobs", retry_delay=10)
    bgwork.queues.route("report-jobs", app=worker_app([500, 200], seen), path=WORKER_PATH)
    await bgwork.queues.publish("report-jobs", {"report": 7})
    await bgwork.run_until_idle()
    assert [s["attempt"] for s in seen] == ["1", "2"]
    [failed] = events(bgwork, "attempt_failed")
    assert failed.detail["error"] == (
        f'DestinationError: POST {WORKER_PATH} answered 500: {{"ok":false}}')
    assert [(e.t, e.detail["attempt"]) for e in events(bgwork, "ack")] == [(10, 2)]


@pytest.mark.asyncio
async def test_asgi_worker_always_failing_is_dead_lettered(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, Any]] = []
    bgwork.queues.create("report-jobs", max_retries=2, retry_delay=0)
    bgwork.queues.route("report-jobs", app=worker_app([503], seen), path=WORKER_PATH)
    await bgwork.queues.publish("report-jobs", {})
    await bgwork.run_until_idle()
    assert len(seen) == 3
    [dead] = bgwork.queues.dead_letters("report-jobs")
    assert dead.last_error is not None and "answered 503" in dead.last_error


@pytest.mark.asyncio
async def test_asgi_app_raising_is_a_failed_attempt(bgwork: bg.Simulation) -> None:
    calls: list[int] = []

    async def endpoint(request: Request) -> Response:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("worker bug")
        return Response(status_code=204)

    app = Starlette(routes=[Route("/w", endpoint, methods=["POST"])])
    bgwork.queues.create("jobs", retry_delay=0)
    bgwork.queues.route("jobs", app=app, path="/w")
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert len(calls) == 2
    assert events(bgwork, "attempt_failed")[0].detail["error"] == "RuntimeError: worker bug"
    assert bgwork.queues.stats("jobs")["acked"] == 1


@pytest.mark.asyncio
async def test_asgi_404_on_a_wrong_path_is_a_failure_not_a_silent_ack(
    bgwork: bg.Simulation,
) -> None:
    bgwork.queues.create("jobs", max_retries=0)
    bgwork.queues.route("jobs", app=worker_app([200], []), path="/api/workers/typo")
    await bgwork.queues.publish("jobs", {})
    await bgwork.run_until_idle()
    assert "POST /api/workers/typo answered 404" in events(bgwork, "attempt_failed")[0].detail[
        "error"]
    assert len(bgwork.queues.dead_letters("jobs")) == 1


@pytest.mark.asyncio
async def test_url_route_is_sent_through_httpx_and_respx_mocks_it(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("report-jobs", retry_delay=5)
    with respx.mock(assert_all_called=True) as router:
        route = router.post(WORKER_URL).mock(
            side_effect=[httpx.Response(502, text="bad gateway"), httpx.Response(200)])
        bgwork.queues.route("report-jobs", url=WORKER_URL)
        await bgwork.queues.publish("report-jobs", {"report": 7})
        await bgwork.run_until_idle()
    assert route.call_count == 2
    request = route.calls[0].request
    assert json.loads(request.content) == {"report": 7}
    assert (request.headers["x-bgwork-attempt"], route.calls[1].request.headers[
        "x-bgwork-attempt"]) == ("1", "2")
    assert events(bgwork, "attempt_failed")[0].detail["error"] == (
        f"DestinationError: POST {WORKER_URL} answered 502: bad gateway")
    assert [(e.t, e.detail["attempt"]) for e in events(bgwork, "ack")] == [(5, 2)]
    assert events(bgwork, "route")[0].detail["destination"] == f"POST {WORKER_URL}"


@pytest.mark.asyncio
async def test_url_transport_error_is_a_failed_attempt(bgwork: bg.Simulation) -> None:
    bgwork.queues.create("jobs", max_retries=0)
    with respx.mock() as router:
        router.post(WORKER_URL).mock(side_effect=httpx.ConnectError("refused"))
        bgwork.queues.route("jobs", url=WORKER_URL)
        await bgwork.queues.publish("jobs", {})
        await bgwork.run_until_idle()
    assert events(bgwork, "attempt_failed")[0].detail["error"] == "ConnectError: refused"
    assert len(bgwork.queues.dead_letters("jobs")) == 1


def test_destination_reprs_and_error_class() -> None:
    assert repr(AsgiDestination(object(), "/w")) == "AsgiDestination(path='/w')"
    assert repr(UrlDestination(WORKER_URL)) == f"UrlDestination(url={WORKER_URL!r})"
    assert issubclass(DestinationError, bg.BgworkError)
