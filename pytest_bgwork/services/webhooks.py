"""Webhooks: sign and verify Stripe-style signatures, deliver events to an app.

The signature header (``Webhooks.HEADER``, ``bgwork-signature`` unless changed) reads
``t=<unix>,v1=<hex>``: HMAC-SHA256 with the secret over ``f"{t}.{body}"``, the
timestamp taken from the virtual wall clock. ``deliver`` posts one JSON event, with a
stable ``id``, ``times`` times: a sender that retries is how duplicate events reach
handlers in production.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

import httpx

from ..core import validate
from ..core.errors import BgworkError

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["ASGIApp", "WebhookSignatureError", "Webhooks"]

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
_BASE_URL = "http://bgwork.local"


class WebhookSignatureError(BgworkError, ValueError):
    """A webhook signature did not verify; the message says why (tampered, stale, missing)."""


def _client_for(app: ASGIApp | None) -> httpx.AsyncClient:
    """An httpx client for ``app`` in-process, or (``None``) for URLs, which respx mocks."""
    if app is None:
        return httpx.AsyncClient()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=_BASE_URL)


def _check_app_target(app: object, path: object) -> str:
    """Check an ``app=`` + ``path=`` pair; return the path."""
    if not callable(app):
        raise TypeError(f"app= must be an ASGI application (Starlette, FastAPI...); got {app!r}")
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(
            f"app= needs path= starting with '/', such as '/webhooks/stripe'; got {path!r}"
        )
    return path


def _encode(body: str | bytes | Mapping[str, Any], arg: str = "body") -> bytes:
    """The exact bytes signed and sent: text as UTF-8, a mapping as compact JSON."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, Mapping):
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{arg}= must be JSON-serialisable: {exc}") from None
    raise TypeError(f"{arg}= takes bytes, str or a JSON mapping; got {type(body).__name__}")


def _secret_bytes(secret: object) -> bytes:
    if isinstance(secret, str) and secret:
        return secret.encode()
    if isinstance(secret, bytes) and secret:
        return secret
    raise TypeError(f"secret= must be a non-empty str or bytes; got {secret!r}")


class Webhooks:
    """``sim.webhooks``: sign, verify and deliver webhook events on virtual time.

    ``header`` is the signature header's name (``HEADER`` by default); set it, e.g. to
    ``"stripe-signature"``, to match what your app reads.
    """

    HEADER = "bgwork-signature"
    """The signature header's default name."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self.header = self.HEADER
        """The name of the signature header ``deliver`` sends (set it to the one your app reads)."""

    # -- signatures --------------------------------------------------------------------
    def sign(
        self,
        body: str | bytes | Mapping[str, Any],
        secret: str | bytes,
        timestamp: int | _dt.datetime | None = None,
    ) -> str:
        """The signature header value ``t=<unix>,v1=<hex>`` for ``body`` (now, by default)."""
        if timestamp is None:
            t = int(self._sim.clock.time())
        elif isinstance(timestamp, _dt.datetime):
            if timestamp.tzinfo is None:
                raise ValueError(
                    f"timestamp= must be an aware datetime (UTC); got naive {timestamp!r}"
                )
            t = int(timestamp.timestamp())
        elif isinstance(timestamp, int) and not isinstance(timestamp, bool):
            t = timestamp
        else:
            raise TypeError(
                f"timestamp= takes unix seconds (int) or an aware datetime; got {timestamp!r}"
            )
        return f"t={t},v1={self._digest(_encode(body), _secret_bytes(secret), t)}"

    @staticmethod
    def _digest(body: bytes, secret: bytes, t: int) -> str:
        return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()

    def verify(
        self,
        body: str | bytes | Mapping[str, Any],
        header: str | None,
        secret: str | bytes,
        tolerance: float | None = 300,
    ) -> int:
        """Check ``header`` for ``body``; return its timestamp or raise ``WebhookSignatureError``.

        The timestamp must be within ``tolerance`` seconds of the virtual clock, either
        way (``None`` turns that off). Any one of several ``v1=`` entries may match
        (secret rotation). Comparison is constant-time.
        """
        tolerance = validate.seconds(tolerance, "webhooks.verify", "tolerance", none=True,
                                     fix="None accepts any age (NaN would silently turn the "
                                         "replay check off)")
        if header is not None and not isinstance(header, str):
            raise TypeError(f"webhooks.verify(header=...) must be the {self.header} header's "
                            f"text (a str such as 't=...,v1=...') or None; got "
                            f"{type(header).__name__} {header!r:.60}")
        key = _secret_bytes(secret)
        raw = _encode(body)
        if not header:
            raise WebhookSignatureError(f"no {self.header} header: the request was not signed")
        t: int | None = None
        signatures: list[str] = []
        for item in header.split(","):
            k, _, v = item.strip().partition("=")
            if k == "t" and v.isascii() and v.isdigit():
                t = int(v)
            elif k == "v1" and v:
                signatures.append(v)
        if t is None:
            raise WebhookSignatureError(
                f"{self.header} header has no t=<unix seconds>: {header!r}"
            )
        if not signatures:
            raise WebhookSignatureError(
                f"{self.header} header has no v1=<hex> signature: {header!r}"
            )
        expected = self._digest(raw, key, t)
        if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures):
            raise WebhookSignatureError(
                "signature does not match the body: the body was changed, or signed with another "
                "secret"
            )
        age = self._sim.clock.time() - t
        if tolerance is not None and abs(age) > tolerance:
            when = f"{age:.0f}s old" if age > 0 else f"{-age:.0f}s in the future"
            raise WebhookSignatureError(
                f"timestamp t={t} is {when}, beyond tolerance={tolerance:g}s (a replayed or "
                "delayed delivery)"
            )
        return t

    def is_valid(
        self,
        body: str | bytes | Mapping[str, Any],
        header: str | None,
        secret: str | bytes,
        tolerance: float | None = 300,
    ) -> bool:
        """``verify`` as a bool: True when the header is a fresh signature of ``body``."""
        try:
            self.verify(body, header, secret, tolerance)
        except WebhookSignatureError:
            return False
        return True

    # -- delivery ----------------------------------------------------------------------
    async def deliver(
        self,
        app: ASGIApp | None = None,
        path: str | None = None,
        event: Mapping[str, Any] | None = None,
        *,
        secret: str | bytes | None = None,
        times: int = 1,
        url: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[httpx.Response]:
        """POST ``event`` as JSON ``times`` times to ``app`` at ``path`` (or to ``url``).

        Every copy carries the same ``id`` (``event["id"]``, else a new ``evt_N``) and,
        with ``secret``, a fresh signature. Returns the responses in order. Fault point
        ``webhook.deliver``: an injected error is raised here, as is an app's exception.
        """
        if url is not None:
            if app is not None or path is not None:
                raise TypeError("deliver() takes app= with path=, or url=; not both")
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"url= must be an http(s) URL; got {url!r}")
            target = url
        elif app is None:
            raise TypeError("deliver() needs a target: app=asgi_app with path='/...', or url='https://...'")
        else:
            target = _check_app_target(app, path)
        if not isinstance(event, Mapping):
            raise TypeError(f"event= must be a JSON object (a dict) to deliver; got {event!r}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times= is how many copies to deliver, an int >= 1; got {times!r}")
        if headers is not None and not (isinstance(headers, Mapping) and all(
                isinstance(k, str) and isinstance(v, str | bytes) for k, v in headers.items())):
            raise validate.BadArgument(
                f"webhooks.deliver(headers=...) must be a mapping of header names (str) to values "
                f"(str), e.g. {{'x-request-id': 'r1'}}; got {headers!r}")
        key = None if secret is None else _secret_bytes(secret)
        _encode(event, "event")  # reject a non-JSON event before an id is spent on it
        payload = dict(event)
        if "id" not in payload:
            payload["id"] = self._sim._next_id("evt")
        event_id, body = payload["id"], _encode(payload, "event")
        responses: list[httpx.Response] = []
        async with _client_for(app if url is None else None) as client:
            for _ in range(times):
                responses.append(await self._post(client, target, body, event_id, key, headers))
        return responses

    async def _post(
        self,
        client: httpx.AsyncClient,
        target: str,
        body: bytes,
        event_id: Any,
        key: bytes | None,
        extra: Mapping[str, str] | None,
    ) -> httpx.Response:
        sim = self._sim
        detail: dict[str, Any] = {"path": target, "event_id": event_id}
        sent = {"content-type": "application/json", **(extra or {})}
        if key is not None:
            sent[self.header] = self.sign(body, key)
        try:
            step = sim.faults._enter("webhook.deliver", call=True)
            if step is not None:
                await step
            response = await client.post(target, content=body, headers=sent)
        except Exception as exc:
            sim.history.record("webhook", "deliver", "fail", **detail, status=None, error=repr(exc))
            raise
        detail["status"] = response.status_code
        try:
            sim.faults._leave("webhook.deliver")
        except Exception as exc:
            sim.history.record("webhook", "deliver", "unknown", **detail, error=repr(exc))
            raise
        ok = 200 <= response.status_code < 300
        sim.history.record("webhook", "deliver", "ok" if ok else "fail", **detail)
        return response
