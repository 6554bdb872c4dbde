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
    bgwork.unmocked_errors.clear()


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
    bgwork.unmocked_errors.clear()


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
