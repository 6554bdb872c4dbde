"""HTTP destinations for queues (and schedules): an ASGI app in-process, or a URL via httpx.

Both POST the message's JSON payload; a 2xx answer acks, any other status raises
``DestinationError`` (a failed attempt), and an exception from the app or the transport
fails the attempt too. URL destinations use a plain ``httpx.AsyncClient``, so an active
respx router (``respx.mock``) answers them; nothing here talks to a network by itself.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

import httpx

from ..core.errors import BgworkError

if TYPE_CHECKING:
    from .queues import Delivery

__all__ = ["AsgiDestination", "DestinationError", "UrlDestination", "delivery_headers"]

#: Base URL the ASGI app sees (``request.url``); ``.invalid`` never resolves anywhere real.
ASGI_BASE_URL = "http://bgwork.invalid"
_ssl_context: ssl.SSLContext | None = None


class DestinationError(BgworkError):
    """A destination answered with a non-2xx status: the attempt failed."""


def _ssl() -> ssl.SSLContext:
    """One TLS context per process: building one costs milliseconds (it loads the CA bundle)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


def delivery_headers(delivery: Delivery) -> dict[str, str]:
    """Headers sent with each delivery: JSON content type, queue, message id and attempt."""
    msg = delivery.message
    headers = {
        "content-type": "application/json",
        "x-bgwork-queue": delivery.queue,
        "x-bgwork-message-id": msg.id,
        "x-bgwork-attempt": str(delivery.attempt),
    }
    if msg.idempotency_key is not None:
        headers["x-bgwork-idempotency-key"] = msg.idempotency_key
    return headers


def _check(response: httpx.Response, target: str) -> None:
    if not 200 <= response.status_code < 300:
        text = response.text
        if len(text) > 200:
            text = text[:197] + "..."
        raise DestinationError(f"POST {target} answered {response.status_code}"
                               + (f": {text}" if text else ""))


class AsgiDestination:
    """POST each payload to ``path`` on an ASGI ``app`` through ``httpx.ASGITransport``."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, payload: Any, delivery: Delivery) -> None:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url=ASGI_BASE_URL,
                                     trust_env=False) as client:
            response = await client.post(self.path, content=delivery.message._body,
                                         headers=delivery_headers(delivery))
        _check(response, self.path)

    def __repr__(self) -> str:
        return f"AsgiDestination(path={self.path!r})"


class UrlDestination:
    """POST each payload to ``url`` with a plain ``httpx.AsyncClient`` (respx can mock it)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __call__(self, payload: Any, delivery: Delivery) -> None:
        async with httpx.AsyncClient(verify=_ssl(), trust_env=False) as client:
            response = await client.post(self.url, content=delivery.message._body,
                                         headers=delivery_headers(delivery))
        _check(response, self.url)

    def __repr__(self) -> str:
        return f"UrlDestination(url={self.url!r})"
