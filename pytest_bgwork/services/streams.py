"""Durable streams: create, write, close and read byte streams on virtual time.

A stream remembers the queue attempt that created it, so checks can tell which
finished or crashed attempt left one open. Writing after close raises ``StreamClosed``
unless the stream was created with ``after_close="drop"`` (Agentuity's behaviour), in
which case the lost bytes are recorded as ``stream.dropped_write``. TTL expiry is lazy
(no loop timer keeps ``run_until_idle`` busy): each stream operation first expires the
streams whose time passed, recording ``stream.expire``.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, cast

from ..core import validate
from ..core.context import Attempt, current_attempt
from ..core.errors import BgworkError, StreamClosed
from .kv import check_name, check_ttl, pop_due, to_json_text

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["BASE_URL", "Stream", "StreamExpired", "StreamNotFound", "StreamRead", "Streams"]

#: Streams live at ``BASE_URL + id``.
BASE_URL = "https://streams.bgwork.test/"
DEFAULT_TTL = 30 * 86400.0
AFTER_CLOSE = ("raise", "drop")
#: detail names of the ``stream`` events an operation records (``History.add`` rows)
_CREATE = ("id", "name", "content_type", "ttl")
_READ = ("id", "name", "bytes", "partial")
_WRITE = ("id", "name", "bytes")
_CLOSE = ("id", "name", "bytes")


class StreamNotFound(BgworkError, KeyError):
    """No stream has this id or url."""

    __str__ = BgworkError.__str__  # KeyError would wrap the message in quotes


class StreamExpired(StreamNotFound):
    """The stream's TTL ran out: it is gone, as on the real service."""


@dataclass(frozen=True, slots=True)
class StreamRead:
    """What ``read_result`` returns: the bytes so far and whether the stream is still open."""

    data: bytes
    partial: bool
    content_type: str


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Stream:
    """One durable stream: ``id``, ``url``, ``name``, ``content_type``, ``metadata``.

    ``await write(str | bytes)``, ``await close()`` (a second close is a no-op),
    ``closed``; ``async with`` closes it on exit, also when the body raises.
    ``attempt`` is the queue attempt that created it (``None`` outside a handler).
    """

    def __init__(
        self,
        service: Streams,
        id: str,
        name: str,
        content_type: str,
        metadata: dict[str, Any],
        ttl: float | None,
        after_close: str,
        created_at: float,
        attempt: Attempt | None,
    ) -> None:
        self._service = service
        self.id = id
        """The stream id, e.g. ``"stream_1"``."""
        self.url = BASE_URL + id
        """Where readers fetch it: ``https://streams.bgwork.test/<id>``."""
        self.name = name
        """The name given to ``create`` (several streams may share one)."""
        self.content_type = content_type
        """The content type given to ``create``."""
        self.metadata = metadata
        """The metadata given to ``create``."""
        self.ttl = ttl
        """Seconds the data is kept after creation (``None``: forever)."""
        self.after_close = after_close
        """What a write after close does: ``"raise"`` (``StreamClosed``) or ``"drop"``."""
        self.created_at = created_at
        """When it was created, in virtual seconds."""
        self.closed_at: float | None = None
        """When it was closed, in virtual seconds (``None``: still open)."""
        self.expires_at = None if ttl is None else created_at + ttl
        """When its TTL runs out, in virtual seconds (``None``: never)."""
        self.attempt = attempt
        """The queue attempt that created it (``None``: created outside a handler)."""
        self.dropped_bytes = 0
        """Bytes written after close and dropped (``after_close="drop"``)."""
        self._chunks: list[bytes] = []
        self._size = 0
        self._closed = False
        self._expired = False

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return self._closed

    @property
    def expired(self) -> bool:
        """Whether the TTL ran out (the data is gone)."""
        return self._expired

    @property
    def size(self) -> int:
        """Bytes written so far (dropped writes not counted)."""
        return self._size

    @property
    def attempt_label(self) -> str | None:
        """The creating attempt as history shows it, e.g. ``report-jobs/msg_1#2``."""
        return self.attempt.label if self.attempt is not None else None

    async def write(self, data: str | bytes) -> None:
        """Append ``data`` (``str`` is encoded as UTF-8). After close: see ``after_close``."""
        await self._service._write(self, data)

    async def close(self) -> None:
        """Close the stream; closing an already closed stream does nothing."""
        await self._service._close(self)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _describe(self) -> str:
        return f"stream {self.id} ({self.name!r})"

    def __repr__(self) -> str:
        state = "expired" if self._expired else "closed" if self._closed else "open"
        return f"<Stream {self.id} {self.name!r} {state} {self._size} bytes>"


class Streams:
    """``sim.streams``: create durable streams, read them back, list open ones."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._faults = sim.faults
        self._record = sim.history.record
        self._add = sim.history.add
        self._clock = sim.clock
        self._streams: dict[str, Stream] = {}
        self._created = 0
        #: heap of (expiry, creation number, id)
        self._expiries: list[tuple[float, int, str]] = []

    # -- async operations (fault points stream.create / .write / .close / .read) -------
    async def create(
        self,
        name: str,
        content_type: str = "application/octet-stream",
        metadata: dict[str, Any] | None = None,
        ttl: float | None = DEFAULT_TTL,
        after_close: str = "raise",
    ) -> Stream:
        """Open a new stream; ``ttl`` virtual seconds until it expires (``None``: never).

        ``after_close="raise"`` makes a write after close raise ``StreamClosed``;
        ``"drop"`` drops it like Agentuity does and records ``stream.dropped_write``.
        """
        name = check_name("name", name, "streams.create()")
        where = f"streams.create({name!r})"
        content_type = check_name("content_type", content_type, where)
        if metadata is None:
            meta: dict[str, Any] = {}
        elif isinstance(metadata, dict):
            meta = cast(dict[str, Any], _json_copy(metadata, where, "metadata"))
        else:
            raise TypeError(f"{where}: metadata= must be a dict or None; got {metadata!r}")
        ttl = check_ttl(ttl, where)
        if after_close not in AFTER_CLOSE:
            raise ValueError(
                f"{where}: after_close= must be 'raise' (a write after close raises "
                f"StreamClosed) or 'drop' (dropped and recorded); got {after_close!r}"
            )
        step = self._faults._enter("stream.create", call=True)
        if step is not None:
            try:
                await step
            except Exception as exc:
                self._record("stream", "create", "fail", name=name, error=_error_text(exc))
                raise
        self._sweep()
        sid = self._sim._next_id("stream")
        stream = Stream(self, sid, name, content_type, meta, ttl, after_close,
                        self._clock.monotonic(), current_attempt.get())
        self._streams[sid] = stream
        self._created += 1
        if stream.expires_at is not None:
            heapq.heappush(self._expiries, (stream.expires_at, self._created, sid))
        self._leave("stream.create", "create", id=sid, name=name, content_type=content_type,
                    ttl=ttl)
        self._add("stream", "create", "ok", _CREATE, (sid, name, content_type, ttl))
        return stream

    async def read(self, url: str | Stream) -> bytes:
        """The bytes written so far to the stream at ``url`` (or id); partial while open."""
        return (await self.read_result(url)).data

    async def read_result(self, url: str | Stream) -> StreamRead:
        """Like ``read``, with ``partial`` (still open) and ``content_type``."""
        stream = self.get(url)
        step = self._faults._enter("stream.read", call=True)
        if step is not None:
            await self._step(step, "read", id=stream.id, name=stream.name)
        self._sweep()
        if stream._expired:
            self._expired(stream, "read", "read", id=stream.id, name=stream.name)
        data = b"".join(stream._chunks)
        partial = not stream._closed
        self._leave("stream.read", "read", id=stream.id, name=stream.name, bytes=len(data),
                    partial=partial)
        self._add("stream", "read", "ok", _READ, (stream.id, stream.name, len(data), partial))
        return StreamRead(data, partial, stream.content_type)

    async def _write(self, stream: Stream, data: str | bytes) -> None:
        if isinstance(data, str):
            raw = (data if data.isascii() else validate.utf8(
                data, f"{stream._describe()}: write()", "data")).encode()
        elif isinstance(data, bytes | bytearray):
            raw = bytes(data)
        else:
            raise TypeError(
                f"{stream._describe()}: write() takes str (encoded as UTF-8) or bytes; got "
                f"{type(data).__name__}. Encode it first, e.g. json.dumps(x) or str(x)."
            )
        n = len(raw)
        step = self._faults._enter("stream.write", call=True)
        if step is not None:
            await self._step(step, "write", id=stream.id, name=stream.name, bytes=n)
        self._sweep()
        if stream._expired:
            self._expired(stream, "write", "write to", id=stream.id, name=stream.name, bytes=n)
        if stream._closed:
            detail: dict[str, Any] = {"id": stream.id, "name": stream.name, "bytes": n}
            if stream.after_close == "drop":
                stream.dropped_bytes += n
                self._leave("stream.write", "dropped_write", **detail)
                self._record("stream", "dropped_write", **detail)
                return
            self._leave("stream.write", "write", **detail)
            self._record("stream", "write", "fail", **detail, error="closed")
            raise StreamClosed(
                f"{stream._describe()} was closed at t=+{stream.closed_at:.3f}s, so this "
                f"write of {n} byte{'' if n == 1 else 's'} would be lost. Close the stream "
                "after the last write (in a `finally:` block or with `async with`), or create "
                "it with after_close='drop' to mimic Agentuity, which drops such writes (the "
                "drop is recorded)."
            )
        stream._chunks.append(raw)
        stream._size += n
        self._leave("stream.write", "write", id=stream.id, name=stream.name, bytes=n)
        self._add("stream", "write", "ok", _WRITE, (stream.id, stream.name, n))

    async def _close(self, stream: Stream) -> None:
        step = self._faults._enter("stream.close", call=True)
        if step is not None:
            await self._step(step, "close", id=stream.id, name=stream.name)
        self._sweep()
        if stream._expired:
            self._expired(stream, "close", "close", id=stream.id, name=stream.name)
        if stream._closed:
            self._faults._leave("stream.close")
            return  # closing twice is a no-op: the first close was recorded
        stream._closed = True
        stream.closed_at = self._clock.monotonic()
        self._leave("stream.close", "close", id=stream.id, name=stream.name,
                    bytes=stream._size)
        self._add("stream", "close", "ok", _CLOSE, (stream.id, stream.name, stream._size))

    # -- sync lookups ------------------------------------------------------------------
    def get(self, id_or_url: str | Stream) -> Stream:
        """The stream with this url, id (``stream_1``) or ``Stream``; expired streams too."""
        original = id_or_url
        if isinstance(id_or_url, Stream):
            id_or_url = id_or_url.url
        if not isinstance(id_or_url, str):
            raise TypeError(
                f"streams: expected a stream url such as {BASE_URL}stream_1 or an id; "
                f"got {id_or_url!r}"
            )
        sid = id_or_url[len(BASE_URL):] if id_or_url.startswith(BASE_URL) else id_or_url
        stream = self._streams.get(sid)
        if stream is None or (isinstance(original, Stream) and stream is not original):
            known = ", ".join(list(self._streams)[:5]) or "none yet"
            raise StreamNotFound(
                f"no stream at {id_or_url!r} (known: {known}). Use the url or id of a stream "
                "this simulation's streams.create() returned."
            )
        self._sweep()
        return stream

    def all(self) -> list[Stream]:
        """Every stream ever created, oldest first (closed and expired ones included)."""
        self._sweep()
        return list(self._streams.values())

    def open_streams(self) -> list[Stream]:
        """Streams never closed, oldest first (an expired stream that was never closed too)."""
        self._sweep()
        return [s for s in self._streams.values() if not s._closed]

    # -- snapshot (assert_idempotent) ----------------------------------------------------
    def _snapshot(self) -> object:
        """Each stream's mutable state (its chunks copied), and the pending expiries."""
        return (
            [(s, list(s._chunks), s._size, s._closed, s.closed_at, s._expired, s.dropped_bytes)
             for s in self._streams.values()],
            list(self._expiries),
        )

    def _restore(self, state: object) -> None:
        """Put back a ``_snapshot()``: the same ``Stream`` objects, their state rewound."""
        rows, expiries = cast(
            tuple[list[tuple[Stream, list[bytes], int, bool, float | None, bool, int]],
                  list[tuple[float, int, str]]],
            state,
        )
        self._streams = {}
        for s, chunks, size, closed, closed_at, expired, dropped in rows:
            s._chunks, s._size, s._closed, s.closed_at = list(chunks), size, closed, closed_at
            s._expired, s.dropped_bytes = expired, dropped
            self._streams[s.id] = s
        self._expiries = list(expiries)

    # -- internals -----------------------------------------------------------------------
    # Each operation passes fault point ``stream.<op>`` (``faults._enter``, then ``_step``
    # when it hands back an awaitable) and then makes sure the stream has not expired
    # (``_sweep``, then ``_expired`` when it has).
    async def _step(self, step: Awaitable[None], op: str, **detail: Any) -> None:
        """Await ``faults._enter``'s ``step``; a fault there is recorded as a failed ``op``."""
        try:
            await step
        except Exception as exc:
            self._record("stream", op, "fail", **detail, error=_error_text(exc))
            raise

    def _expired(self, stream: Stream, op: str, verb: str, **detail: Any) -> NoReturn:
        """``stream`` expired: it still passes ``leave`` (the point was reached), is recorded
        as a failed ``op``, and raises ``StreamExpired``."""
        self._leave(f"stream.{op}", op, **detail)
        self._record("stream", op, "fail", **detail, error="expired")
        raise self._expired_error(stream, verb)

    def _leave(self, point: str, op: str, **detail: Any) -> None:
        """``faults._leave``; when it raises, the effect happened: record outcome unknown."""
        try:
            self._faults._leave(point)
        except Exception as exc:
            self._record("stream", op, "unknown", **detail, error=_error_text(exc))
            raise

    def _expired_error(self, stream: Stream, verb: str) -> StreamExpired:
        return StreamExpired(
            f"cannot {verb} {stream._describe()}: its ttl of {stream.ttl}s ran out at "
            f"t=+{stream.expires_at:.3f}s and the stream is gone, as on the real service. "
            "Read it before it expires, or create it with a longer ttl= (None: never)."
        )

    def _sweep(self) -> None:
        """Expire every stream whose TTL ran out, recording ``stream.expire``."""
        due = self._expiries
        if not due or due[0][0] > self._clock.monotonic():
            return
        for when, _, sid in pop_due(self._expiries, self._clock.monotonic()):
            stream = self._streams.get(sid)
            if stream is None or stream._expired:
                continue
            stream._expired = True
            stream._chunks = []
            self._record("stream", "expire", id=sid, name=stream.name, expired_at=when,
                         closed=stream._closed)

    def __repr__(self) -> str:
        open_count = sum(1 for s in self._streams.values() if not s._closed)
        return f"<Streams {len(self._streams)} streams, {open_count} open>"


def _json_copy(value: dict[str, Any], where: str, arg: str) -> Any:
    return json.loads(to_json_text(value, where, arg))
