"""The real ``agentuity`` SDK's KeyValueStore and ObjectStore on the simulation.

``with adapters.agentuity.install(sim): ...`` starts respx routes that answer the SDK's
HTTP API whatever base URL it uses (``{base}/kv/2025-03-17/{name}/{key}[/{ttl}]``,
``{base}/object/2025-03-17/{bucket}/{key}``), backed by ``sim.kv``: the user's unmodified
code runs on virtual time, with the simulation's faults (``kv.get``/``kv.set``/``kv.delete``),
history and checks. The SDK (0.0.106) calls *sync* ``httpx`` inside ``async def``, so the
routes answer through ``sim.kv``'s sync entry points (a delay fault there moves the clock
as a blocked event loop would).

Answered as the service does: GET 200 with the stored bytes and content type (a value
seeded with ``sim.kv.set`` as the SDK would have stored it), or 404;
PUT 201; DELETE 200; a TTL in the path (``/{ttl}``) honoured on virtual time and one below
60 s refused with 400. Two SDK facts are shown faithfully, not papered over:
``KeyValueStore.set(..., params={"ttl": ...})`` never sends the TTL (0.0.106 reads it only
inside ``if params is None:``), so such a value never expires; and keys go into the URL
unescaped, so a key with ``/``, ``?`` or ``#`` would address another key on the real
service: this adapter raises ``UnescapedKey`` naming the key instead. The vector store and
presigned object URLs are not simulated: calling them raises ``NotSimulated``.

An injected ``ConnectionError``/``TimeoutError`` reaches the SDK as ``httpx.ConnectError``/
``httpx.ReadTimeout`` marked as injected (``bg.is_injected`` is true for it and for the
SDK's re-raise of it); any other injected error answers 500, which the SDK turns into a
bare ``Exception("Failed to ... key value: 500")`` that carries no trace of the fault.

Imports only ``httpx``/``respx`` (dependencies of pytest-bgwork), the public API and the
fault injector's mark; the SDK itself is never imported here.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

import httpx
import respx

import pytest_bgwork as bg

from ..core.faults import FaultInjector

__all__ = [
    "API_VERSION",
    "MIN_TTL",
    "NotSimulated",
    "UnescapedKey",
    "install",
    "object_namespace",
    "stored_bytes",
]

#: The dated API version the SDK puts in every path.
API_VERSION = "2025-03-17"
#: The service refuses a KV TTL below this many seconds (400).
MIN_TTL = 60
#: SDK releases whose ``KeyValueStore.set`` cannot send a TTL (the ``params`` bug): from
#: them an extra path segment can only be part of a key that held a ``/``.
_TTL_BUG_UP_TO = (0, 0, 106)

_KV_PATH = re.compile(rf"/kv/{API_VERSION}/(?P<rest>.*)$")
_OBJECT_PATH = re.compile(rf"/object/{API_VERSION}/(?P<rest>.*)$")
_ANY_API = re.compile(rf"/[a-z]+/{API_VERSION}/")
_SDK_AGENT = re.compile(r"Agentuity Python SDK/(\d+)\.(\d+)\.(\d+)")
#: How a value that is not JSON is kept in ``sim.kv`` (which stores JSON values).
_BYTES = "$agentuity.bytes"


class UnescapedKey(ValueError):
    """A key the SDK put into the URL unescaped, so the real service would read another key."""


#: The SDK called a part of the Agentuity API this adapter does not simulate: the one "not
#: simulated" error every adapter raises, under the name this adapter used first.
NotSimulated = bg.UnsupportedFeature


def object_namespace(bucket: str) -> str:
    """The ``sim.kv`` namespace that holds an object-store bucket's objects."""
    return f"objectstore:{bucket}"


def stored_bytes(sim: bg.Simulation, ns: str, key: str) -> tuple[bytes, str] | None:
    """The bytes and content type the service would answer for ``key`` (``None``: missing).

    For tests that look at a binary value; a JSON record is also in ``sim.kv.items(ns)``
    as itself, and a ``text/plain`` one as a ``str``. Reads without a history event.
    """
    value = sim.kv.items(ns).get(key, _MISSING)
    if value is _MISSING:
        return None
    return _to_wire(value, sim.kv.content_type(ns, key))


_MISSING: Any = object()


def _payload(value: Any) -> bytes:
    """The body the SDK sends for ``value`` (``dataLikeToData``): bytes as they are, ``str(x)``
    for a str, int, float or bool, JSON for a list or dict (``null`` for ``None``)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str | int | float | bool):
        return str(value).encode("utf-8")
    return json.dumps(value).encode("utf-8")


def _from_wire(body: bytes, content_type: str, keeps_types: bool) -> Any:
    """The ``sim.kv`` value for a body, so ``sim.kv`` and the checks see the record the app wrote.

    On a namespace that keeps content types (the agentuity profile) the value is a JSON
    record as itself, a ``text/plain`` body as a ``str``, anything else as ``bytes``, each
    only when the SDK would send exactly ``body`` for it (the content type is stored
    beside it). Elsewhere a body that is not a JSON object or array, or ``text/plain``
    text, goes in an envelope holding its bytes and content type.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    value: Any = _MISSING
    if ctype == "application/json":
        try:
            value = json.loads(body)
        except ValueError:
            value = _MISSING
    elif ctype == "text/plain":
        try:
            value = body.decode("utf-8")
        except UnicodeDecodeError:
            value = _MISSING
    if keeps_types:
        if value is _MISSING or value is None or (isinstance(value, dict) and _BYTES in value) \
                or _payload(value) != body:
            return body
        return value
    if isinstance(value, dict | list) and not (isinstance(value, dict) and _BYTES in value) \
            and _payload(value) == body and ctype == "application/json":
        return value
    if isinstance(value, str) and content_type == "text/plain":
        return value
    return {_BYTES: base64.b64encode(body).decode("ascii"), "content_type": content_type}


def _to_wire(value: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """What the service answers for a stored value: its bytes as the SDK would have sent
    them, and its content type (stored, or inferred as the SDK infers it)."""
    if isinstance(value, dict) and _BYTES in value:
        return base64.b64decode(value[_BYTES]), str(value["content_type"])
    if content_type is None:
        if isinstance(value, bytes | bytearray):
            content_type = "application/octet-stream"
        elif isinstance(value, str | int | float | bool):
            content_type = "text/plain"
        else:
            content_type = "application/json"
    return _payload(value), content_type


def _raw_path(request: httpx.Request) -> str:
    """The path as sent, percent-escapes kept (an escaped ``/`` stays inside its segment)."""
    return request.url.raw_path.split(b"?", 1)[0].decode("ascii")


def _sdk_sends_no_ttl(request: httpx.Request) -> bool:
    match = _SDK_AGENT.search(request.headers.get("user-agent", ""))
    return match is not None and tuple(map(int, match.groups())) <= _TTL_BUG_UP_TO


def _fault_response(request: httpx.Request, exc: Exception) -> httpx.Response:
    """What the SDK sees when ``sim.kv`` raised an injected error: a network error or a 500.

    The network error is itself marked injected when ``exc`` was: respx re-raises a route's
    error ``from`` its own ``SideEffectError``, which replaces the ``__cause__`` set here,
    and without the mark ``bg.is_injected`` (so ``bg.explore``) would take the SDK's error
    for a bug of the user's code.
    """
    err: httpx.TransportError
    if isinstance(exc, TimeoutError):
        err = httpx.ReadTimeout(str(exc) or "injected timeout", request=request)
    elif isinstance(exc, ConnectionError):
        err = httpx.ConnectError(str(exc) or "injected connection error", request=request)
    else:
        return httpx.Response(500, text=f"{type(exc).__name__}: {exc}")
    if bg.is_injected(exc):
        FaultInjector._mark_injected(err)
    raise err from exc


class _Service:
    """The routes' side effects: the Agentuity KV and object API on ``sim.kv``."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim

    # -- key-value --------------------------------------------------------------------
    def kv(self, request: httpx.Request, **_: str) -> httpx.Response:
        match = _KV_PATH.search(_raw_path(request))
        assert match is not None  # the route matched this pattern
        raw = match["rest"]
        parts = [unquote(p) for p in raw.split("/")]
        method = request.method
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise UnescapedKey(
                f"agentuity KV {method} {request.url.path!r}: the collection name and key must be "
                "non-empty (the SDK builds the URL as /kv/2025-03-17/{name}/{key})"
            )
        name, key, extra = parts[0], parts[1], parts[2:]
        ttl: int | None = None
        if request.url.query or request.url.fragment:
            self._unescaped(method, name, "/".join(parts[1:]), request)
        if extra:
            if method != "PUT" or len(extra) > 1 or _sdk_sends_no_ttl(request):
                self._unescaped(method, name, "/".join(parts[1:]), request)
            if not extra[0].isdigit():
                return httpx.Response(400, text=f"invalid ttl {extra[0]!r} in the path: whole seconds expected")
            ttl = int(extra[0])
            if ttl < MIN_TTL:
                return httpx.Response(400, text=f"ttl must be at least {MIN_TTL} seconds; got {ttl}")
        try:
            if method == "GET":
                found = self.sim.kv.get_sync(name, key)
                if not found.exists:
                    return httpx.Response(404)
                body, ctype = _to_wire(found.data, found.content_type)
                return httpx.Response(200, content=body, headers={"Content-Type": ctype})
            if method == "PUT":
                ctype = request.headers.get("content-type", "application/octet-stream")
                keeps = self.sim.kv.profile(name).content_types
                options = {"content_type": ctype} if keeps else {}
                self.sim.kv.set_sync(name, key, _from_wire(request.content, ctype, keeps), ttl, **options)
                return httpx.Response(201)
            if method == "DELETE":
                self.sim.kv.delete_sync(name, key)
                return httpx.Response(200)
        except Exception as exc:
            return _fault_response(request, exc)
        return httpx.Response(405, text=f"method {method} not allowed")

    @staticmethod
    def _unescaped(method: str, name: str, key: str, request: httpx.Request) -> None:
        query = f"?{request.url.query.decode()}" if request.url.query else ""
        full = key + query
        raise UnescapedKey(
            f"agentuity KV {method} in collection {name!r}: the key {full!r} holds a character the SDK "
            "puts into the URL unescaped ('/', '?' or '#'), so the real service would read or write "
            "another key (a PUT of 'job/60' stores key 'job' with a TTL of 60 s). Use keys without "
            "them, e.g. key.replace('/', ':')."
        )

    # -- object store -------------------------------------------------------------------
    def objects(self, request: httpx.Request, **_: str) -> httpx.Response:
        match = _OBJECT_PATH.search(_raw_path(request))
        assert match is not None
        parts = match["rest"].split("/")
        if parts[0] == "presigned" or len(parts) != 2:
            raise NotSimulated(
                f"agentuity object store {request.method} {request.url.path!r}: only get, put and "
                "delete of objects are simulated (not presigned public URLs)"
            )
        ns, key = object_namespace(unquote(parts[0])), unquote(parts[1])
        method = request.method
        try:
            if method == "GET":
                found = self.sim.kv.get_sync(ns, key)
                if not found.exists:
                    return httpx.Response(404, text="")
                body, ctype = _to_wire(found.data, found.content_type)
                return httpx.Response(200, content=body, headers={"Content-Type": ctype})
            if method == "PUT":
                ctype = request.headers.get("content-type", "application/octet-stream")
                value = {_BYTES: base64.b64encode(request.content).decode("ascii"), "content_type": ctype}
                self.sim.kv.set_sync(ns, key, value)
                return httpx.Response(200)
            if method == "DELETE":
                existed = key in self.sim.kv.items(ns)
                self.sim.kv.delete_sync(ns, key)
                return httpx.Response(200 if existed else 404)
        except Exception as exc:
            return _fault_response(request, exc)
        return httpx.Response(405, text=f"method {method} not allowed")

    @staticmethod
    def other(request: httpx.Request, **_: str) -> httpx.Response:
        raise NotSimulated(
            f"agentuity {request.method} {request.url}: pytest-bgwork's agentuity adapter simulates the "
            "KeyValueStore and the ObjectStore's get/put/delete, not this API (e.g. the vector store)"
        )


@contextmanager
def _shared_ssl_context() -> Iterator[None]:
    """Build httpx's default SSL context once while installed.

    The SDK calls ``httpx.get/put/delete``, which builds a new client, and so a new SSL
    context (~30 ms of certificate loading), on every call. Inside ``install`` respx
    answers every request, so one shared context changes nothing but the test's speed.
    """
    default: Any = importlib.import_module("httpx._transports.default")
    original = default.create_ssl_context
    cache: dict[tuple[Any, ...], Any] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
        if not isinstance(verify, bool) or cert is not None:
            return original(verify=verify, cert=cert, trust_env=trust_env)
        key = (verify, trust_env)
        if key not in cache:
            cache[key] = original(verify=verify, cert=cert, trust_env=trust_env)
        return cache[key]

    default.create_ssl_context = create_ssl_context
    try:
        yield
    finally:
        default.create_ssl_context = original


@contextmanager
def install(sim: bg.Simulation) -> Iterator[bg.Simulation]:
    """Answer the agentuity SDK's KV and object-store HTTP calls from ``sim`` while inside.

    Any base URL works (``AGENTUITY_TRANSPORT_URL`` or the one passed to
    ``KeyValueStore``): the routes match the API paths on every host. Requests no route
    answers go on to your own respx mocks; with none, respx refuses them (nothing leaves
    the machine).
    """
    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.agentuity.install(sim): expected a bg.Simulation; got {type(sim).__name__}")
    service = _Service(sim)
    router = respx.MockRouter(assert_all_called=False, assert_all_mocked=True, using="httpx")
    router.route(path__regex=_KV_PATH.pattern).mock(side_effect=service.kv)
    router.route(path__regex=_OBJECT_PATH.pattern).mock(side_effect=service.objects)
    router.route(path__regex=_ANY_API.pattern).mock(side_effect=service.other)
    with router, _shared_ssl_context():
        yield sim
