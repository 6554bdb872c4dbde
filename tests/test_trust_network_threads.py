"""Threads and network hold the clock; an unanswered outbound request is refused (docs/trust.md)."""

from __future__ import annotations

import pytest

STARLETTE_APP = """
import asyncio
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse
from starlette.routing import Route

seen = {}

def slow_sync_job(order):
    # sync background work: Starlette runs it in anyio's worker threads; 0.2 s of real work
    # (a thread blocked in a wait, such as Event.wait, waits on virtual time instead)
    started = time.perf_counter()
    while time.perf_counter() - started < 0.2:
        pass
    seen["job_done_at"] = time.time()

def create_order(request):  # a sync endpoint: also anyio's worker threads
    seen["endpoint_at"] = time.time()
    return JSONResponse({"ok": True}, background=BackgroundTask(slow_sync_job, "o1"))

app = Starlette(routes=[Route("/orders", create_order, methods=["POST"])])

@pytest.mark.asyncio
@pytest.mark.parametrize("other_timer", [False, True])
async def test_sync_work_in_anyio_threads_holds_the_clock(bgwork, other_timer):
    seen.clear()
    start = time.time()
    if other_timer:  # with a timer pending, an uncounted thread lets the clock jump to it
        asyncio.get_running_loop().call_later(3600, lambda: None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        response = await client.post("/orders")
    assert response.status_code == 200
    assert seen == {"endpoint_at": start, "job_done_at": start}  # no virtual time passed
    assert bgwork.clock.monotonic() == 0.0
"""


def test_starlette_sync_endpoints_and_background_tasks_hold_the_clock(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(STARLETTE_APP)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


NETWORK = """
import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import respx

import pytest_bgwork as bg


@pytest.fixture
def listener():
    # a real local socket: proves whether anything connected
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    yield sock
    sock.close()


def nothing_connected(sock):
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return True
    return False


@pytest.mark.asyncio
async def test_unmocked_async_request_is_refused(bgwork, listener):
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/reports?id=7"
    async with httpx.AsyncClient() as client:
        with pytest.raises(bg.UnmockedRequest, match=r"POST http://127.0.0.1:\\d+/reports\\?id=7: an outbound"):
            await client.post(url, json={"a": 1})
    assert nothing_connected(listener)
    assert bgwork.unmocked_requests == [f"POST {url}"]
    bgwork.unmocked_requests.clear()  # seen and asserted: not a teardown failure


def test_unmocked_sync_request_is_refused(bgwork, listener):
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/health"
    with pytest.raises(bg.UnmockedRequest, match="GET http://127.0.0.1:.*/health"):
        httpx.get(url)
    assert nothing_connected(listener)
    bgwork.unmocked_requests.clear()


@pytest.mark.asyncio
async def test_app_code_that_swallows_the_error_still_fails(bgwork, listener):
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    try:
        async with httpx.AsyncClient() as client:
            await client.get(url)
    except Exception:
        pass  # app code that logs and goes on


@pytest.mark.asyncio
async def test_url_route_without_a_mock_is_refused(bgwork, listener):
    bgwork.queues.create("jobs", max_retries=0)
    bgwork.queues.route("jobs", url=f"http://127.0.0.1:{listener.getsockname()[1]}/work")
    await bgwork.queues.publish("jobs", {"n": 1})
    await bgwork.run_until_idle()


@pytest.mark.asyncio
async def test_respx_and_asgi_answer_so_nothing_is_refused(bgwork):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with respx.mock:
        respx.get("https://api.example/x").respond(200, json={"ok": True})
        async with httpx.AsyncClient() as client:
            assert (await client.get("https://api.example/x")).json() == {"ok": True}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/")).status_code == 204


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.asyncio
@pytest.mark.bgwork(allow_network=True)
async def test_allowed_network_holds_the_clock_while_the_socket_works(bgwork, server):
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(3):
            response = await client.get(server)
            assert response.text == "hello"
    assert bgwork.clock.monotonic() == 0.0
    await asyncio.sleep(60)  # an idle keep-alive connection does not hold the clock
    assert bgwork.clock.monotonic() == 60.0


def test_simulation_allow_network(server):
    async def main():
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(server)).text

    with bg.Simulation(allow_network=True) as sim:
        assert sim.run(main()) == "hello"
    with bg.Simulation() as sim, pytest.raises(bg.UnmockedRequest):
        sim.run(main())
    assert sim.unmocked_requests == [f"GET {server}"]
"""


def test_unanswered_requests_are_refused_and_allow_network_lets_them_through(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(NETWORK)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "timeout", "--timeout=60")
    result.assert_outcomes(passed=7, errors=2)  # two calls pass, then fail at teardown: the code caught it
    result.stdout.fnmatch_lines([
        "*test_app_code_that_swallows_the_error_still_fails*",
        "*bgwork refused 1 outbound request(s) that no mock answered*",
        "*  - GET http://127.0.0.1:*/hook",
    ])
    result.stdout.fnmatch_lines([
        "*test_url_route_without_a_mock_is_refused*",
        "*  - POST http://127.0.0.1:*/work",
    ])
    result.stdout.fnmatch_lines(["*http.unmocked*method=GET url=http://127.0.0.1:*/hook*"])
