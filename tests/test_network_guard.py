"""Every network client is refused inside a simulation unless ``allow_network=True`` (issue 24)."""

from __future__ import annotations

import pytest

CLIENTS = """
import asyncio
import socket
import urllib.request

import aiohttp
import pytest
import requests

import pytest_bgwork as bg


@pytest.fixture
def listener():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    yield sock
    sock.close()


def refused(bgwork, listener, raised):
    port = listener.getsockname()[1]
    assert f"127.0.0.1:{port}" in str(raised.value)
    assert "nothing was sent" in str(raised.value)
    try:
        listener.accept()[0].close()
    except BlockingIOError:
        pass
    else:
        raise AssertionError("a connection reached the server")
    bgwork.unmocked_requests.clear()  # seen and asserted
    bgwork._unmocked_errors.clear()


async def test_aiohttp(bgwork, listener):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(bg.UnmockedRequest, match="CONNECT 127.0.0.1") as raised:
            await session.get(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
    refused(bgwork, listener, raised)


async def test_asyncio_open_connection(bgwork, listener):
    with pytest.raises(bg.UnmockedRequest) as raised:
        await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
    refused(bgwork, listener, raised)


def test_urllib(bgwork, listener):
    with pytest.raises(bg.UnmockedRequest) as raised:
        urllib.request.urlopen(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
    refused(bgwork, listener, raised)


def test_requests(bgwork, listener):
    with pytest.raises(bg.UnmockedRequest) as raised:
        requests.get(f"http://127.0.0.1:{listener.getsockname()[1]}/x")
    refused(bgwork, listener, raised)


def test_raw_socket(bgwork, listener):
    with pytest.raises(bg.UnmockedRequest) as raised:
        socket.create_connection(("127.0.0.1", listener.getsockname()[1]))
    refused(bgwork, listener, raised)


async def test_dns_lookups_count(bgwork):
    with pytest.raises(bg.UnmockedRequest, match="DNS lookup api.example.com:443"):
        await asyncio.get_running_loop().getaddrinfo("api.example.com", 443)
    with pytest.raises(bg.UnmockedRequest, match="DNS lookup api.example.com:80"):
        socket.getaddrinfo("api.example.com", 80)
    bgwork.unmocked_requests.clear()
    bgwork._unmocked_errors.clear()


def test_swallowed_refusal_fails_at_teardown(bgwork, listener):
    try:
        requests.get(f"http://127.0.0.1:{listener.getsockname()[1]}/hook")
    except Exception:
        pass  # app code that logs and goes on


@pytest.mark.bgwork(allow_network=True)
def test_allowed(bgwork, listener):
    socket.create_connection(("127.0.0.1", listener.getsockname()[1])).close()


def test_outside_a_simulation_nothing_is_guarded(listener):
    socket.create_connection(("127.0.0.1", listener.getsockname()[1])).close()
"""


def test_every_client_is_refused_before_it_connects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CLIENTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:looptime")
    result.assert_outcomes(passed=9, errors=1)
    result.stdout.fnmatch_lines([
        "*bgwork refused 1 outbound request(s) that no mock answered*",
        "*CONNECT 127.0.0.1:*",
    ])


ALLOWED = """import asyncio, socket, threading, time
import aiohttp, pytest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Slow(BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(0.5)
        self.send_response(200)
        self.send_header("content-length", "5")
        self.end_headers()
        self.wfile.write(b"hello")
    def log_message(self, *a): pass

@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown(); httpd.server_close()

@pytest.mark.bgwork(allow_network=True)
async def test_aiohttp_slow(bgwork, server):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async with s.get(server) as r:
            assert await r.text() == "hello"
        assert bgwork.clock.monotonic() == 0.0
        await asyncio.sleep(60)
    assert bgwork.clock.monotonic() == 60.0

@pytest.mark.bgwork(allow_network=True)
async def test_open_connection_slow(bgwork, server):
    port = int(server.rsplit(":", 1)[1].strip("/"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
    data = await asyncio.wait_for(reader.read(), 0.3)
    assert b"hello" in data
    writer.close()
    assert bgwork.clock.monotonic() == 0.0
"""


def test_with_network_allowed_a_pending_socket_holds_the_clock(pytester: pytest.Pytester) -> None:
    """An aiohttp request (or a raw asyncio stream) to a server that answers in 0.5 s real
    time never sees a virtual timeout: the clock waits for the socket, then moves again."""
    pytester.makepyfile(ALLOWED)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:looptime")
    result.assert_outcomes(passed=2)
