"""The real ``alienplatform`` SDK's ``Kv``, ``Queue`` and worker handlers on the simulation.

``alienplatform.Kv``/``Queue`` are thin wrappers over a Rust extension: every call asks
``_native.BindingsHandle()`` for the resource's handle. ``with install(sim):`` puts a
simulated bindings handle there, so the unmodified SDK talks to ``sim.kv`` and
``sim.queues`` (faults, history, checks, virtual time). TTLs run on the virtual clock only:
no Rust clock is consulted. Handles look up the running simulation on every call, so a
``Kv`` built once at import works in every test.

Worker handlers registered the Alien way (``on_queue_message(source, handler)``,
``on_queue_batch``) are routed to ``sim.queues``: each delivery calls the handler (a
raise, or a ``"retry"`` outcome, is a failed attempt that the queue retries).
Registrations made during ``install`` are undone at exit. ``run_worker()`` inside
``install`` routes the handlers and returns (the simulation delivers).

KV answers as the SDK's own ``local-kv`` store does (the oracle of its differential test):
opaque per-write version tokens that never repeat for a key, ``scan("")`` refused,
``delete`` of a missing key ``True``, ``ttl_seconds=0`` accepted (the value is gone),
1,000-item scan pages with opaque cursors.

Errors reach user code as the SDK's ``AlienError`` (the handle raises the native JSON
envelope, which the SDK's ``translate_errors`` turns into one), with the binding's own
messages where the Rust core has them (``durationSeconds must be between 1 and 600``,
``KV key validation: Invalid input - Key contains invalid characters...``). Not
simulated: storage, vault, key, postgres, container, worker invoke, AI, sandbox bindings,
remote bindings, ``purge``, the ``"*"`` handler source.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import json
import re
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest_bgwork as bg
from pytest_bgwork.profiles import KV_PROFILES, QUEUE_PROFILES

__all__ = ["LEASE_SECONDS", "MAX_KEY_BYTES", "MAX_RECEIVE", "MAX_VALUE_BYTES", "SCAN_PAGE", "install"]

_KV = KV_PROFILES["alien"]
_LEASE = QUEUE_PROFILES["alien"].visibility_range
#: Alien KV values hold at most this many bytes (the alien KV profile's limit).
MAX_VALUE_BYTES: int = _KV.max_value or 0
#: Longest key the adapter accepts (the binding refuses longer keys: "Key exceeds N bytes").
MAX_KEY_BYTES = 512
#: ``receive(max_messages)`` takes 1-10 (the binding's queue protocol).
MAX_RECEIVE = 10
#: ``renew_lease`` durations the binding accepts (the alien queue profile's lease range).
LEASE_SECONDS = (int(_LEASE[0]), int(_LEASE[1]))
_KEY: re.Pattern[str] = _KV.key_re or re.compile(".+")
#: ``scan`` without ``limit`` returns at most this many items (and a cursor), as local-kv does.
SCAN_PAGE = 1000
#: Seconds since the epoch of the simulated wall clock's end (the year 9999).
_FAR = 253402300800.0


def _native_error(message: str, code: str = "INVALID_INPUT", **context: Any) -> RuntimeError:
    """The Rust core's error envelope; the SDK's ``translate_errors`` makes it an ``AlienError``."""
    return RuntimeError(json.dumps({"message": message, "code": code, "context": context or None,
                                    "retryable": False, "internal": False, "httpStatusCode": 400}))


def _invalid(where: str, field: str, details: str) -> RuntimeError:
    """The store's ``INVALID_INPUT`` error, worded as the real local-kv store words it."""
    return _native_error(f"{where}: Invalid input - {details}", details=details, field_name=field,
                         operation_context=where)


def _sim() -> bg.Simulation:
    try:
        return bg.current()
    except bg.NotRunning:
        raise _native_error("alienplatform binding used outside a simulation: call it inside a test "
                            "that uses bg_alien (or adapters.alien.install(sim))", "BINDING_NOT_SIMULATED") from None


# -- values: bytes in, the app's record in sim.kv when it is JSON ------------------------------
def _to_store(raw: bytes) -> Any:
    """JSON objects/arrays written as ``json.dumps(x).encode()`` are kept as themselves (so
    ``sim.kv`` and the checks see the record); any other bytes as bytes, exactly.

    Either way the alien profile's size check in ``sim.kv`` measures at most the raw length
    (bytes as they are, JSON compacted), so it agrees with the binding's check on the raw
    bytes, which the handle makes first with the binding's message.
    """
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if isinstance(value, dict | list) and json.dumps(value).encode() == raw:
        return value
    return raw


def _from_store(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode()


def _configure(sim: bg.Simulation, name: str) -> None:
    """Namespace ``name`` follows the alien KV profile (keys, value size, key order)."""
    if sim.kv.profile(name) is not _KV:
        sim.kv.configure(name, profile="alien")


@dataclass(frozen=True)
class _KvValue:
    key: str
    value: list[int]
    version: str


@dataclass(frozen=True)
class _KvPage:
    items: list[_KvValue]
    next_cursor: str | None


@dataclass(frozen=True)
class _QueueValue:
    payload_type: str
    payload: str
    receipt_handle: str
    attempt: int


def _check_key(key: object, field: str = "key") -> str:
    if not isinstance(key, str) or not key:
        raise _invalid("KV key validation", field, "Key cannot be empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise _invalid("KV key validation", field, f"Key exceeds {MAX_KEY_BYTES} bytes")
    if not _KEY.match(key):
        raise _invalid("KV key validation", field, "Key contains invalid characters. Allowed: a-z A-Z 0-9 - _ : . "
                       "(no spaces, slashes, or special characters)")
    return key


def _unsigned(value: object) -> int | None:
    """What the binding's Rust ``u64`` argument takes: ``None`` or an int >= 0 (pyo3's errors)."""
    if value is None:
        return None
    if not isinstance(value, int):
        raise TypeError(f"'{type(value).__name__}' object cannot be interpreted as an integer")
    if value < 0:
        raise OverflowError("can't convert negative int to unsigned")
    return int(value)


def _b64(data: dict[str, Any]) -> str:
    text = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).rstrip(b"=").decode()


_B64URL = re.compile(r"^[A-Za-z0-9_-]*$")


def _unb64(token: object) -> Any:
    """Base64url without padding, strictly (as the Rust core decodes), then JSON."""
    if not isinstance(token, str) or not _B64URL.match(token) or len(token) % 4 == 1:
        raise binascii.Error(token)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    try:
        return json.loads(raw)
    except ValueError:
        raise TypeError(raw) from None


def _token(ns: str, key: str, version: int, expires_at: Any) -> str:
    """An opaque per-write version token shaped as the real store's (base64 JSON).

    Its ``backendVersion`` holds a digest of the namespace and key and the write's number,
    which never repeats for a key on the alien profile (not even after a delete).
    """
    digest = hashlib.blake2b(f"{ns}\0{key}".encode(), digest_size=8).hexdigest()
    expires = None if expires_at is None else int(expires_at.timestamp() * 1000)
    return _b64({"format": 1, "key": key, "backendVersion": f"{digest}{version:016x}",
                 "expiresAtMillis": expires})


def _version_of(ns: str, key: str, token: object) -> int | None:
    """The write number a token names, checked as local-kv checks it.

    A token that does not decode, or names another key, is an error; one that decodes
    but that this store did not issue for this key (another namespace's, or edited)
    names no write (``None``): it matches nothing.
    """
    try:
        data = _unb64(token)
    except binascii.Error:
        raise _invalid("KV version decoding", "ifVersion", "Invalid version token encoding") from None
    except TypeError:
        data = None
    if (not isinstance(data, dict) or not isinstance(data.get("format"), int)
            or not isinstance(data.get("key"), str) or not isinstance(data.get("backendVersion"), str)
            or not isinstance(data.get("expiresAtMillis", 0), int | None)):
        raise _invalid("KV version decoding", "ifVersion", "Invalid version token data")
    if data["format"] != 1 or data["key"] != key:
        raise _invalid("KV version validation", "ifVersion", "Version token does not belong to this key")
    backend: str = data["backendVersion"]
    digest = hashlib.blake2b(f"{ns}\0{key}".encode(), digest_size=8).hexdigest()
    if backend[:16] != digest or len(backend) != 32:
        return None
    try:
        return int(backend[16:], 16) or None
    except ValueError:
        return None


class _Kv:
    """A simulated native KV handle: ``sim.kv`` namespace ``name``, answering as local-kv does."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _kv(self) -> Any:
        sim = _sim()
        _configure(sim, self.name)
        return sim.kv

    def _entry(self, key: str, found: Any) -> _KvValue:
        return _KvValue(key, list(_from_store(found.data)), _token(self.name, key, found.version, found.expires_at))

    async def _matching(self, key: str, token: object) -> int | None:
        """The version ``token`` names if it is the key's current token, exactly (else ``None``).

        local-kv compares the whole token, so an edited one (another expiry) matches
        nothing; the conditional write that follows is still atomic (``if_version``).
        """
        number = _version_of(self.name, key, token)
        if number is None:
            return None
        found = await self._kv().get(self.name, key)
        if not found.exists or _token(self.name, key, found.version, found.expires_at) != token:
            return None
        return number

    async def get(self, key: str) -> _KvValue | None:
        found = await self._kv().get(self.name, _check_key(key))
        return self._entry(key, found) if found.exists else None

    async def put(self, key: str, value: list[int], ttl_seconds: int | None, condition: str | None,
                  version: str | None) -> bool:
        if condition not in (None, "absent", "version"):
            raise ValueError(f"unsupported KV put condition {condition!r}")
        if condition == "version" and version is None:
            raise ValueError("a version condition requires a version")
        ttl = _unsigned(ttl_seconds)
        _check_key(key)
        raw = bytes(value)
        if len(raw) > MAX_VALUE_BYTES:
            raise _invalid("KV value validation", "value", f"Value exceeds {MAX_VALUE_BYTES} bytes")
        kv = self._kv()
        options: dict[str, Any] = {}
        if condition == "absent":
            options["if_absent"] = True
        elif condition == "version":
            number = await self._matching(key, version)
            if number is None:
                return False  # no live write of this key has that token
            options["if_version"] = number
        if ttl == 0:  # accepted; the value is gone at once (it expired on arrival)
            if options.get("if_absent"):
                return not (await kv.get(self.name, key)).exists
            return bool(await kv.delete(self.name, key, **options)) or not options
        clock = _sim().clock
        if ttl is not None and clock.start + clock.monotonic() + ttl > _FAR:
            ttl = None  # expires past the simulated clock's range (the year 9999): never, here
        applied = await kv.set(self.name, key, _to_store(raw), ttl, **options)
        return applied is not False

    async def delete(self, key: str, if_version: str | None) -> bool:
        _check_key(key)
        kv = self._kv()
        if if_version is not None:
            number = await self._matching(key, if_version)
            if number is None:
                return False
            return bool(await kv.delete(self.name, key, if_version=number))
        await kv.delete(self.name, key)
        return True  # the real store answers True whether or not the key existed

    async def exists(self, key: str) -> bool:
        return bool((await self._kv().get(self.name, _check_key(key))).exists)

    async def scan(self, prefix: str, limit: int | None, cursor: str | None) -> _KvPage:
        size = _unsigned(limit)
        _check_key(prefix)
        after = ""
        if cursor is not None:
            try:
                data = _unb64(cursor)
                owner, after = data["prefix"], data["last_key"]
                if data.get("version") != 1 or not isinstance(owner, str) or not isinstance(after, str):
                    raise ValueError(data)
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise _invalid("Local KV cursor decoding", "cursor", "Invalid cursor encoding") from None
            if owner != prefix:
                raise _invalid("Local KV cursor validation", "cursor", "Cursor does not belong to this prefix scan")
        kv = self._kv()
        keys = sorted(k for k in await kv.keys(self.name, prefix) if k > after)
        size = SCAN_PAGE if size is None else size
        items: list[_KvValue] = []
        for key in keys:
            if len(items) >= size:
                break
            found = await kv.get(self.name, key)
            if found.exists:
                items.append(self._entry(key, found))
        more = len(items) == size and size > 0 and any(k > items[-1].key for k in keys)
        nxt = _b64({"version": 1, "prefix": prefix, "last_key": items[-1].key}) if more else None
        return _KvPage(items, nxt)


#: receipt handle -> delivery, per simulation (handles outlive tests; receipts do not)
_receipts: weakref.WeakKeyDictionary[bg.Simulation, dict[str, bg.Delivery]] = weakref.WeakKeyDictionary()


def _ensure_queue(sim: bg.Simulation, name: str) -> None:
    if name in sim.queues.names():
        return
    sim.queues.create(name, profile="alien")


class _Queue:
    """A simulated native queue handle: ``sim.queues`` queue ``name``."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def _send(self, payload: Any, payload_type: str) -> str:
        sim = _sim()
        _ensure_queue(sim, self.name)
        result = await sim.queues.publish(self.name, payload, metadata={"payload_type": payload_type})
        return result.id

    async def send_json(self, text: str) -> None:
        await self._send(json.loads(text), "json")

    async def send_text(self, text: str) -> None:
        await self._send(text, "text")

    async def _batch(self, messages: list[str], payload_type: str) -> str:
        outcomes = []
        for text in messages:
            try:
                await self._send(json.loads(text) if payload_type == "json" else text, payload_type)
            except (ValueError, TypeError, bg.BgworkError) as exc:
                outcomes.append({"status": "rejected", "code": "QUEUE_MESSAGE_INVALID", "message": str(exc)})
            else:
                outcomes.append({"status": "sent"})
        return json.dumps(outcomes)

    async def send_batch_json(self, messages: list[str]) -> str:
        return await self._batch(messages, "json")

    async def send_batch_text(self, messages: list[str]) -> str:
        return await self._batch(messages, "text")

    async def receive(self, max_messages: int) -> list[_QueueValue]:
        if isinstance(max_messages, bool) or not isinstance(max_messages, int) or not (
                1 <= max_messages <= MAX_RECEIVE):
            raise _native_error(f"max_messages must be between 1 and {MAX_RECEIVE}; got {max_messages!r}")
        sim = _sim()
        _ensure_queue(sim, self.name)
        out = []
        receipts = _receipts.setdefault(sim, {})
        for _ in range(max_messages):
            d = await sim.queues.receive(self.name)
            if d is None:
                break
            receipt = f"{self.name}/{d.message.id}#{d.attempt}"
            receipts[receipt] = d
            kind = (d.message.metadata or {}).get("payload_type", "json")
            body = d.payload if kind == "text" else json.dumps(d.payload, separators=(",", ":"))
            out.append(_QueueValue(kind, body, receipt, d.attempt))
        return out

    def _delivery(self, receipt: str) -> bg.Delivery:
        d = _receipts.get(_sim(), {}).get(receipt)
        if d is None:
            raise _native_error(f"unknown receipt handle {receipt!r} (from another test, or never received)",
                                "QUEUE_RECEIPT_INVALID")
        return d

    async def ack(self, receipt: str) -> None:
        await self._delivery(receipt).ack()

    async def ack_batch(self, receipts: list[str]) -> str:
        outcomes = []
        for receipt in receipts:
            try:
                await self.ack(receipt)
            except (RuntimeError, bg.BgworkError) as exc:
                outcomes.append({"status": "failed", "code": "QUEUE_ACK_FAILED", "message": str(exc)})
            else:
                outcomes.append({"status": "acked"})
        return json.dumps(outcomes)

    async def renew_lease(self, receipt: str, duration_seconds: int) -> None:
        low, high = LEASE_SECONDS
        if isinstance(duration_seconds, bool) or not isinstance(duration_seconds, int) or not (
                low <= duration_seconds <= high):
            raise _native_error(f"durationSeconds must be between {low} and {high}; got {duration_seconds!r}")
        await self._delivery(receipt).extend(duration_seconds)

    async def nack(self, receipt: str) -> None:
        await self._delivery(receipt).nack()

    async def purge(self) -> None:
        raise _native_error("Queue.purge() is not simulated by pytest-bgwork's alien adapter",
                            "OPERATION_NOT_SUPPORTED")


class _Bindings:
    """Stands in for ``_native.BindingsHandle()``: resolves ``kv`` and ``queue`` bindings."""

    async def kv(self, name: str) -> _Kv:
        return _Kv(name)

    async def queue(self, name: str) -> _Queue:
        return _Queue(name)

    def __getattr__(self, kind: str) -> Callable[[str], Awaitable[Any]]:
        async def unsupported(name: str) -> Any:
            raise _native_error(f"the {kind!r} binding {name!r} is not simulated by pytest-bgwork's alien "
                                "adapter (only kv and queue are)", "BINDING_NOT_SIMULATED")
        return unsupported


# -- worker handlers ---------------------------------------------------------------------------
def _event(worker: Any, payload: Any, d: bg.Delivery, source: str) -> Any:
    kind = (d.message.metadata or {}).get("payload_type", "json")
    body = payload.encode() if kind == "text" else json.dumps(payload, separators=(",", ":")).encode()
    return worker.QueueEvent(d.message.id, body, source, d.attempt)


def _route(sim: bg.Simulation, worker: Any, source: str, handler: Callable[..., Any], batch: bool) -> None:
    if source == "*":
        return  # not simulated: name the queue
    _ensure_queue(sim, source)

    async def single(payload: Any, d: bg.Delivery) -> None:
        await handler(_event(worker, payload, d, source))

    async def one_batch(payload: Any, d: bg.Delivery) -> None:
        delivery_id = f"{d.message.id}#{d.attempt}"
        outcomes: Sequence[Any] = await handler(worker.QueueBatch(
            source, (worker.QueueDelivery(delivery_id, _event(worker, payload, d, source)),)))
        if len(outcomes) != 1 or outcomes[0].delivery_id != delivery_id or outcomes[0].disposition not in (
                "success", "retry"):
            raise worker.AlienError("Invalid batch outcomes", code="BATCH_OUTCOMES_INVALID")
        if outcomes[0].disposition == "retry":
            raise worker.AlienError(f"batch handler asked to retry {delivery_id}", code="RETRY")

    sim.queues.route(source, one_batch if batch else single)


class _Routing(dict[str, Any]):
    """A handler registry that also routes each new registration to ``sim.queues``."""

    def __init__(self, items: dict[str, Any], on_set: Callable[[str, Any], None]) -> None:
        super().__init__(items)
        self._on_set = on_set

    def __setitem__(self, source: str, handler: Any) -> None:
        super().__setitem__(source, handler)
        self._on_set(source, handler)


@contextmanager
def install(sim: bg.Simulation) -> Iterator[bg.Simulation]:
    """Run ``alienplatform``'s ``Kv``, ``Queue`` and worker handlers on ``sim`` while inside."""
    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.alien.install(sim): expected a bg.Simulation; got {type(sim).__name__}")
    import alienplatform
    _native: Any = importlib.import_module("alienplatform._native")
    from alienplatform import worker_runtime as runtime

    worker_runtime: Any = runtime

    saved_handle = _native.BindingsHandle
    single, batch = worker_runtime._single_handlers, worker_runtime._batch_handlers
    saved = (dict(single), dict(batch))
    saved_run = worker_runtime.run_worker
    bindings = _Bindings()
    async def run_worker(*, address: str | None = None) -> None:
        """Inside ``install`` the simulation delivers: routing happened at registration."""

    worker_runtime._single_handlers = _Routing(single, lambda s, h: _route(sim, worker_runtime, s, h, False))
    worker_runtime._batch_handlers = _Routing(batch, lambda s, h: _route(sim, worker_runtime, s, h, True))
    _native.BindingsHandle = lambda: bindings
    worker_runtime.run_worker = alienplatform.run_worker = run_worker
    try:
        for source, handler in single.items():
            _route(sim, worker_runtime, source, handler, False)
        for source, handler in batch.items():
            _route(sim, worker_runtime, source, handler, True)
        yield sim
    finally:
        _native.BindingsHandle = saved_handle
        worker_runtime.run_worker = alienplatform.run_worker = saved_run
        single.clear()
        single.update(saved[0])
        batch.clear()
        batch.update(saved[1])
        worker_runtime._single_handlers, worker_runtime._batch_handlers = single, batch
