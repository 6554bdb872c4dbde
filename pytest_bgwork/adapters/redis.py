"""redis-py (sync and asyncio) on the simulation, on fakeredis's server and command set.

``with adapters.redis.install(sim):`` makes every ``redis.Redis``, ``redis.asyncio.Redis``,
``from_url(...)`` and connection pool created inside the block talk to a simulated server
(one per ``host:port`` or socket path, fresh for each install) instead of the network.
The commands themselves are fakeredis's (strings, hashes, lists, sets, sorted sets,
streams, ``MULTI``/``EXEC``/``WATCH``, Lua via lupa); the simulation supplies the rest:

- time: expiry (``EX``/``PX``/``EXPIRE``), ``TIME`` and stream ids read the virtual clock, and
  blocking commands of asyncio clients (``BLPOP``, ``BRPOP``, ``BLMOVE``, ``XREAD BLOCK``)
  wait on virtual time;
- faults: each command is fault point ``redis.<command>`` (``redis.set``, ``redis.hset``,
  ``redis.eval``...). An error rule raises redis-py's ``ConnectionError`` before the command
  is sent; ``after_apply=True`` applies it and raises ``TimeoutError`` (the reply was lost);
  ``delay``/``hang`` hold the call; a crash kills the queue attempt there;
- suspension: each round trip (a command, or a whole pipeline) yields to the other ready
  tasks first, as a network round trip does, so check-then-act sequences interleave;
- history: each command is a ``redis.<command>`` event with its first ``key`` and outcome
  (``ok``; ``fail`` with ``error`` for an error reply or an injected error; ``unknown`` when
  an ``after_apply`` fault lost the reply).

``snapshot(sim, "export:*")`` reads the simulated keys for checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import types
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import fakeredis
import redis.asyncio.connection as aio_connection
import redis.connection as sync_connection
import redis.exceptions as rexc
from fakeredis import FakeServer
from fakeredis import _msgs as msgs
from fakeredis._clients._async import FakeReader, FakeWriter
from fakeredis._clients._base import FakeBaseConnectionMixin
from fakeredis._command_args_parsing import Int, Timeout
from fakeredis._commands import SUPPORTED_COMMANDS, Key, Signature
from fakeredis._core import CommandItem
from fakeredis._helpers import NoResponse, SimpleError
from fakeredis._socket import AsyncFakeSocket, FakeSocket

import pytest_bgwork as bg

from ..checking.checks import status_terminal_args
from ..core import threads
from ..core.errors import NotRunning, ProcessCrashed
from ._threads import call as _fiber_call
from ._threads import in_fiber

__all__ = ["RedisBackend", "assert_status_terminal", "database", "install", "snapshot"]

#: The Redis version the simulated servers report and follow (fakeredis's command table).
VERSION = (7, 4)
#: Commands of the connection handshake and health checks: not the app's operations, so
#: no fault point and no history event.
_QUIET = frozenset({"hello", "client", "auth", "select", "readonly"})
#: redis-py connection arguments that name a transport the simulation replaces.
_TRANSPORT_ARGS = ("path", "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs",
                   "ssl_ca_data", "ssl_check_hostname", "ssl_ca_path", "ssl_password",
                   "ssl_validate_ocsp", "ssl_validate_ocsp_stapled", "ssl_ocsp_context",
                   "ssl_ocsp_expected_cert", "ssl_min_version", "ssl_ciphers", "ssl_context")

#: Where a pool keeps the servers its connections talk to (in its ``connection_kwargs``).
_BACKEND_ARG = "_bgwork_redis"
#: The simulations of the ``install`` blocks now open, innermost last.
_active: list[bg.Simulation] = []
#: Each simulation's servers (made by ``install``, or on first use while one is open).
_backends: weakref.WeakKeyDictionary[bg.Simulation, RedisBackend] = weakref.WeakKeyDictionary()
_time_patched = False
#: BLMOVE's signature here: keys looked up on each pass (see ``_Recording._bg_blmove``).
_BLMOVE = Signature("blmove", "_bg_blmove", (bytes, bytes, bytes, bytes, Timeout))  # type: ignore[arg-type]
#: WAIT (fakeredis has none): the simulated server has no replicas.
_INFO = Signature("info", "_bg_info", (), (bytes,))  # type: ignore[arg-type]
_WAIT = Signature("wait", "_bg_wait", (Int, Int), flags=msgs.FLAG_NO_SCRIPT)  # type: ignore[arg-type]


class RedisBackend:
    """The simulated Redis servers of one ``install``: ``servers[url_key]`` is a FakeServer."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.servers: dict[str, FakeServer] = {}

    def server(self, key: str) -> FakeServer:
        """The server for ``key`` (``host:port`` or ``unix:path``), made on first use."""
        srv = self.servers.get(key)
        if srv is None:
            srv = self.servers[key] = FakeServer(version=VERSION, server_type="redis")
        return srv

    # -- the fault points and history of one round trip ---------------------------------
    def _points(self, commands: list[list[bytes]]) -> list[tuple[str, str | None]]:
        return [(f"redis.{name}", _key_of(name, args)) for name, args in _named(commands)
                if name not in _QUIET]

    async def enter(self, commands: list[list[bytes]]) -> None:
        """Fault points of the round trip (the first one also the suspension point)."""
        faults = self.sim.faults
        for i, (point, key) in enumerate(self._points(commands)):
            try:
                step = faults._enter(point, call=i == 0)
                if step is not None:
                    await step
            except ProcessCrashed:
                raise
            except Exception as exc:
                self.sim.history.record("redis", point[6:], "fail", key=key, error=_text(exc))
                raise rexc.ConnectionError(
                    f"Error while writing to socket: {exc} (injected at {point})") from exc

    def leave(self, records: list[tuple[str, str | None, str | None]]) -> None:
        """History events of the commands the server processed; an ``after_apply`` error."""
        lost: BaseException | None = None
        point_of_lost = ""
        for name, key, error in records:
            point = f"redis.{name}"
            try:
                self.sim.faults._leave(point)
            except Exception as exc:
                lost, point_of_lost = exc, point
                self.sim.history.record("redis", name, "unknown", key=key)
                continue
            if error is None:
                self.sim.history.record("redis", name, "ok", key=key)
            else:
                self.sim.history.record("redis", name, "fail", key=key, error=error)
        if lost is not None:
            raise rexc.TimeoutError(
                f"Timeout reading from socket: {lost} (injected at {point_of_lost}, after "
                "the command was applied)") from lost


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _named(commands: list[list[bytes]]) -> Iterator[tuple[str, list[bytes]]]:
    for fields in commands:
        if fields:
            yield fields[0].decode("ascii", "replace").lower(), fields[1:]


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "backslashreplace")


def _key_of(name: str, args: list[bytes]) -> str | None:
    """The command's first key (``None`` for commands without one)."""
    if name in ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"):
        try:
            return _decode(args[2]) if int(args[1]) > 0 else None
        except (IndexError, ValueError):
            return None
    if name in ("blpop", "brpop", "bzpopmin", "bzpopmax"):
        return _decode(args[0]) if args else None
    if name in ("xread", "xreadgroup"):
        upper = [a.upper() for a in args]
        i = upper.index(b"STREAMS") if b"STREAMS" in upper else -1
        return _decode(args[i + 1]) if 0 <= i < len(args) - 1 else None
    sig = SUPPORTED_COMMANDS.get(name)
    if sig is None:
        return None
    for i, kind in enumerate(sig.fixed):
        if isinstance(kind, Key):
            return _decode(args[i]) if i < len(args) else None
    return None


def _parse(command: bytes | str | Iterable[bytes]) -> list[list[bytes]]:
    """The commands in a packed RESP payload (what redis-py sends: arrays of bulk strings)."""
    if isinstance(command, str):
        data = command.encode()
    elif isinstance(command, (bytes, bytearray, memoryview)):
        data = bytes(command)
    else:
        data = b"".join(bytes(c) for c in command)
    out: list[list[bytes]] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\r\n", pos)
        n = int(data[pos + 1:end])
        pos = end + 2
        fields: list[bytes] = []
        for _ in range(n):
            end = data.index(b"\r\n", pos)
            length = int(data[pos + 1:end])
            pos = end + 2
            fields.append(data[pos:pos + length])
            pos += length + 2
        out.append(fields)
    return out


def _loop_sim() -> bg.Simulation | None:
    """The simulation whose virtual loop runs this code, or whose thread this is, if any."""
    sim = getattr(asyncio._get_running_loop() or threads.owner_loop(), "sim", None)
    return sim if isinstance(sim, bg.Simulation) else None


def _backend() -> RedisBackend:
    """The servers a pool made now talks to: the running simulation's (each example of
    ``bg.explore`` gets its own), else the innermost ``install``'s."""
    sim = _loop_sim() or (_active[-1] if _active else None)
    if sim is None:
        raise bg.BgworkError(
            "a redis pool of adapters.redis was made outside `with adapters.redis.install(sim):` "
            "(or the bg_redis fixture); create clients inside it")
    backend = _backends.get(sim)
    if backend is None:
        backend = _backends[sim] = RedisBackend(sim)
    return backend


def _clock_sim() -> bg.Simulation | None:
    """The simulation whose clock fakeredis reads: the running one if it has servers."""
    sim = _loop_sim()
    if sim is not None and sim in _backends:
        return sim
    return _active[-1] if _active else None


def _server_key(kwargs: dict[str, Any]) -> str:
    path = kwargs.get("path")
    if path:
        return f"unix:{path}"
    return f"{kwargs.get('host') or 'localhost'}:{kwargs.get('port') or 6379}"


def _fake_kwargs(kwargs: dict[str, Any]) -> tuple[RedisBackend, dict[str, Any]]:
    backend = kwargs.get(_BACKEND_ARG) or _backend()
    key = _server_key(kwargs)
    clean = {k: v for k, v in kwargs.items() if k not in _TRANSPORT_ARGS and k != _BACKEND_ARG}
    clean.setdefault("host", key)
    return backend, {**clean, "server": backend.server(key), "version": VERSION}


# -- the sockets: fakeredis's, noting what each command did ----------------------------------
class _Recording:
    """Mixin for fakeredis sockets: note (command, key, error) of each processed command."""

    _bg_records: list[tuple[str, str | None, str | None]]
    _bg_reply: Any
    _bg_command = ""

    def _bg_init(self) -> None:
        self._bg_records = []
        self._bg_reply = NoResponse()

    def put_response(self, msg: Any) -> None:
        self._bg_reply = msg
        super().put_response(msg)  # type: ignore[misc]

    def _process_command(self, fields: list[bytes]) -> None:
        self._bg_reply = NoResponse()
        self._bg_command = fields[0].decode("ascii", "replace").upper() if fields else ""
        super()._process_command(fields)  # type: ignore[misc]
        if not fields:
            return
        name = fields[0].decode("ascii", "replace").lower()
        if name in _QUIET:
            return
        reply = self._bg_reply
        error = str(reply) if isinstance(reply, rexc.RedisError) else None
        self._bg_records.append((name, _key_of(name, fields[1:]), error))

    def _bg_take(self) -> list[tuple[str, str | None, str | None]]:
        records, self._bg_records = self._bg_records, []
        return records

    def _name_to_func(self, cmd_name: str) -> tuple[Any, Signature]:
        if cmd_name == "blmove":
            return self._bg_blmove, _BLMOVE
        if cmd_name == "wait":
            return self._bg_wait, _WAIT
        if cmd_name == "info" and SUPPORTED_COMMANDS.get("info") is None:
            return self._bg_info, _INFO
        return super()._name_to_func(cmd_name)  # type: ignore[misc,no-any-return]

    def _bg_info(self, *sections: bytes) -> bytes:
        """INFO (fakeredis has none): the fields clients read (arq logs server, memory, clients)."""
        server = self._server  # type: ignore[attr-defined]
        lines = ["# Server", f"redis_version:{'.'.join(map(str, server.version))}.0",
                 "redis_mode:standalone", "os:pytest-bgwork simulation", "",
                 "# Clients", f"connected_clients:{len(server.sockets)}", "",
                 "# Memory", "used_memory:0", "used_memory_human:0B", "", "# Keyspace"]
        for n, database in sorted(server.dbs.items()):
            keys = len(database)
            if keys:
                expires = sum(1 for k in database if database[k].expireat is not None)
                lines.append(f"db{n}:keys={keys},expires={expires},avg_ttl=0")
        return ("\r\n".join(lines) + "\r\n").encode()

    def _bg_wait(self, replicas: int, timeout_ms: int) -> Any:
        """WAIT on a server with no replicas: 0 at once for 0 replicas, else 0 after the timeout."""
        if replicas <= 0:
            return 0
        return self._blocking(timeout_ms / 1000, lambda first_pass: None,  # type: ignore[attr-defined]
                              lambda ret: 0)

    def _bg_blmove(self, source: bytes, destination: bytes, wherefrom: bytes, whereto: bytes,
                   timeout: float) -> Any:
        """BLMOVE as Redis runs it: blocks while the source is missing or empty.

        (fakeredis 2.41 answers nil at once for a missing source and re-reads a stale
        snapshot of it on wake-up; this looks the lists up on every pass, as its
        BRPOPLPUSH does.)
        """
        ends = (wherefrom.lower(), whereto.lower())
        if any(end not in (b"left", b"right") for end in ends):
            raise SimpleError(msgs.SYNTAX_ERROR_MSG)

        def attempt(first_pass: bool) -> Any:
            db = self._db  # type: ignore[attr-defined]
            src = CommandItem(source, db, item=db.get(source), default=[])
            if not isinstance(src.value, list):
                raise SimpleError(msgs.WRONGTYPE_MSG)
            if not src.value:
                return None
            dst = CommandItem(destination, db, item=db.get(destination), default=[])
            if not isinstance(dst.value, list):
                raise SimpleError(msgs.WRONGTYPE_MSG)
            el = src.value.pop(0 if ends[0] == b"left" else -1)
            if ends[1] == b"left":
                dst.value.insert(0, el)
            else:
                dst.value.append(el)
            src.updated()
            src.writeback()
            if destination != source:
                dst.updated()
                dst.writeback()
            return el

        return self._blocking(timeout, attempt)  # type: ignore[attr-defined]


class _AsyncSocket(_Recording, AsyncFakeSocket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._bg_init()
        super().__init__(*args, **kwargs)


class _SyncSocket(_Recording, FakeSocket):
    _bg_backend: RedisBackend

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._bg_init()
        super().__init__(*args, **kwargs)

    def _blocking(self, timeout: float | None, func: Any, shape: Any = None) -> Any:
        """A sync client's blocking command: its thread waits on the virtual clock.

        From a thread of the simulation (a sync test body, a sync task body, a worker
        thread) it waits through ``core.threads.wait_until``, as ``time.sleep`` and
        ``Event.wait`` do: the loop runs the other work meanwhile and looks at the keys
        each time before it moves time, waking the longest-waiting client first.
        """
        ret = func(True)
        if ret is not None or self._in_transaction:
            return ret if shape is None else shape(ret)
        lock = self._server.lock  # held by this command: let the other clients in meanwhile,
        got: list[Any] = []      # as Redis serves others while a client blocks

        def served() -> bool:
            if not got and lock.acquire(False):  # busy: another client's command is running
                try:
                    ret = func(False)
                finally:
                    lock.release()
                if ret is not None:
                    got.append(ret)
            return bool(got)

        lock.release()
        try:
            threads.wait_until(served, timeout or None, what=f"redis {self._bg_command} (blocking)")
        except NotRunning:
            if _loop_sim() is None:
                raise
            # a sync client called from a coroutine blocks the loop itself: nothing else can
            # run to feed it, so time passes and no data comes
            if not timeout:
                raise bg.BgworkError(
                    "a sync redis client ran a blocking command with no timeout (BLPOP key 0) on "
                    "an empty key from a coroutine of the simulation: it blocks the loop, nothing "
                    "else can run to feed it, so it would wait forever. Give it a timeout, call it "
                    "in a thread (asyncio.to_thread), or use redis.asyncio") from None
            clock = self._bg_backend.sim.clock
            clock.advance_to(clock.monotonic() + timeout)
        finally:
            lock.acquire()
        ret = got[0] if got else None
        return ret if shape is None else shape(ret)


# -- the connections redis-py's pools make while installed --------------------------------
class _AsyncConnection(fakeredis.FakeAsyncRedisConnection):
    """redis.asyncio connection to a simulated server: faults, suspension and history."""

    def __init__(self, **kwargs: Any) -> None:
        backend, kwargs = _fake_kwargs(kwargs)
        self._bg = backend
        self._bg_quiet = False
        super().__init__(**kwargs)

    async def _connect(self) -> None:
        if self._server is None or not self._server.connected:
            raise rexc.ConnectionError("Connection refused")
        sock = _AsyncSocket(self._server, self.db, client_class=self._client_class,
                            lua_modules=self._lua_modules, client_info=self._client_info)
        self._sock = sock
        self._reader = FakeReader(sock)
        self._writer = FakeWriter(sock)

    async def on_connect(self) -> None:
        self._bg_quiet = True
        try:
            await super().on_connect()
        finally:
            self._bg_quiet = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._bg_quiet:
            await super().send_packed_command(command, check_health)
            return
        commands = _parse(command)
        try:
            await self._bg.enter(commands)
        except rexc.ConnectionError:
            await self.disconnect(nowait=True)
            raise
        await super().send_packed_command(command, check_health)
        sock = self._sock
        if isinstance(sock, _AsyncSocket):
            try:
                self._bg.leave(sock._bg_take())
            except rexc.TimeoutError:
                await self.disconnect(nowait=True)
                raise


class _SyncConnection(fakeredis.FakeRedisConnection):
    """redis-py sync connection to a simulated server: faults and history (it holds the loop)."""

    def __init__(self, **kwargs: Any) -> None:
        backend, kwargs = _fake_kwargs(kwargs)
        self._bg = backend
        self._bg_quiet = False
        super().__init__(**kwargs)

    def _connect(self) -> FakeSocket:
        if self._server is None or not self._server.connected:
            raise rexc.ConnectionError("Connection refused")
        sock = _SyncSocket(self._server, client_class=self._client_class, db=self.db,
                           lua_modules=self._lua_modules, client_info=self._client_info)
        sock._bg_backend = self._bg
        return sock

    def on_connect(self) -> None:
        self._bg_quiet = True
        try:
            super().on_connect()  # type: ignore[no-untyped-call]
        finally:
            self._bg_quiet = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._bg_quiet:
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]
            return
        commands = _parse(command)
        entering = self._bg.enter(commands)
        try:
            if in_fiber():
                _fiber_call(entering)
            else:
                self._bg.sim.faults._run_sync(entering)
        except rexc.ConnectionError:
            self.disconnect()  # type: ignore[no-untyped-call]
            raise
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]
        sock: Any = self._sock
        if isinstance(sock, _SyncSocket):
            try:
                self._bg.leave(sock._bg_take())
            except rexc.TimeoutError:
                self.disconnect()  # type: ignore[no-untyped-call]
                raise


# -- time -------------------------------------------------------------------------------
class _VirtualTime(types.ModuleType):
    """``time`` for fakeredis's modules while installed: the virtual clock of the simulation."""

    def __init__(self, real: types.ModuleType) -> None:
        super().__init__("time")
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def time(self) -> float:
        sim = _clock_sim()
        return sim.clock.time() if sim is not None else float(self._real.time())

    def monotonic(self) -> float:
        sim = _clock_sim()
        return sim.clock.monotonic() if sim is not None else float(self._real.monotonic())


def _current_time_ms() -> int:
    """fakeredis's ``current_time()`` (milliseconds) on the virtual clock."""
    import time as _time

    sim = _clock_sim()
    now = sim.clock.time() if sim is not None else _time.time()
    return int(now * 1000)


def _patch_time() -> None:
    import sys
    import time as _time

    from fakeredis import _helpers

    real_current = _helpers.current_time
    shim = _VirtualTime(_time)
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "fakeredis" or name.startswith("fakeredis.")):
            continue
        if getattr(module, "time", None) is _time:
            module.time = shim  # type: ignore[attr-defined]
        if getattr(module, "current_time", None) is real_current:
            module.current_time = _current_time_ms  # type: ignore[attr-defined]


def _patch_pool(cls: Any, fake: type) -> tuple[Any, str, Any]:
    """Make pools of ``cls`` created while installed use ``fake`` connections."""
    original = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if _active and not issubclass(self.connection_class, FakeBaseConnectionMixin):
            self.connection_class = fake  # every connection of this pool: the same server
            self.connection_kwargs[_BACKEND_ARG] = _backend()

    cls.__init__ = __init__
    return cls, "__init__", original


@contextlib.contextmanager
def install(sim: bg.Simulation) -> Iterator[RedisBackend]:
    """Run redis-py clients created inside the block on simulated servers of ``sim``.

    Yields the ``RedisBackend`` (``backend.servers``: the fakeredis servers by ``host:port``).
    Every ``redis.Redis``/``redis.asyncio.Redis`` (``from_url`` too) whose pool is made in
    the block talks to the server of its host and port; no socket is opened. A pool made
    while another simulation runs (an example of ``bg.explore``) gets that simulation's
    own servers. Clients made in the block keep their server after it ends.
    """
    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.redis.install(sim): sim must be a pytest_bgwork Simulation "
                        f"(the `bgwork` fixture); got {type(sim).__name__}")
    global _time_patched
    if not _time_patched:  # for good: outside a simulation with servers it reads real time
        _patch_time()
        _time_patched = True
    backend = _backends.get(sim)
    if backend is None:
        backend = _backends[sim] = RedisBackend(sim)
    patches: list[tuple[Any, str, Any]] = []
    if not _active:
        for cls, fake in ((sync_connection.ConnectionPool, _SyncConnection),
                          (aio_connection.ConnectionPool, _AsyncConnection)):
            patches.append(_patch_pool(cls, fake))
    _active.append(sim)
    try:
        yield backend
    finally:
        _active.pop()
        for owner, name, value in reversed(patches):
            setattr(owner, name, value)


def database(client: Any) -> Any:
    """The fakeredis database a redis.asyncio or redis-py ``client`` of the simulation talks
    to (``None`` for a client made outside ``install``), with its clock set to the virtual
    time: for adapters that look at keys without sending a command (no fault point, no
    history event). Its ``add_change_callback`` calls back on every write.
    """
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    backend = kwargs.get(_BACKEND_ARG)
    if backend is None:
        return None
    db = backend.server(_server_key(kwargs)).dbs[int(kwargs.get("db") or 0)]
    db.time = backend.sim.clock.time()
    return db


def _plain(value: Any) -> Any:
    """A fakeredis value as plain Python: str, dict, list, set, or {member: score}."""
    if isinstance(value, bytes):
        return _decode(value)
    if hasattr(value, "items"):  # hashes and sorted sets
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "__iter__"):  # sets
        return {_plain(v) for v in value}
    return value


def snapshot(sim: bg.Simulation, pattern: str = "*", *, url: str | None = None,
             db: int = 0) -> dict[str, Any]:
    """The live keys matching ``pattern`` (glob) of the simulated Redis, as plain Python.

    Strings are ``str``, hashes ``dict``, lists ``list``, sets ``set``, sorted sets
    ``{member: score}``. ``url`` picks the server (``"redis://host:port"``); by default the
    only one in use. Keys that expired on the virtual clock are left out.
    """
    backend = _backends.get(sim)
    if backend is None:
        raise bg.BgworkError("adapters.redis.snapshot(sim): adapters.redis is not installed on this "
                             "simulation; call it inside `with adapters.redis.install(sim):` or with bg_redis")
    if url is None:
        if len(backend.servers) > 1:
            raise ValueError(f"adapters.redis.snapshot(url=...): the simulation has {len(backend.servers)} "
                             f"Redis servers ({', '.join(backend.servers)}); name one with url=")
        servers = list(backend.servers.values())
    else:
        from urllib.parse import urlparse

        parsed = urlparse(url)
        key = f"unix:{parsed.path}" if parsed.scheme == "unix" else \
            f"{parsed.hostname or 'localhost'}:{parsed.port or 6379}"
        servers = [backend.servers[key]] if key in backend.servers else []
    out: dict[str, Any] = {}
    for server in servers:
        database = server.dbs[db]
        database.time = sim.clock.time()
        for raw in sorted(database):
            key = _decode(raw)
            if fnmatch.fnmatchcase(key, pattern):
                out[key] = _plain(database[raw].value)
    return out


def assert_status_terminal(sim: bg.Simulation, pattern: str, field: str = "state",
                           terminal: Iterable[str] = frozenset({"done", "failed"}), *,
                           url: str | None = None, db: int = 0, allow_empty: bool = False) -> None:
    """Every Redis hash whose key matches ``pattern`` has ``hash[field]`` in ``terminal``.

    The Redis twin of ``bg.assert_status_terminal`` (which reads ``sim.kv``): a stuck key is
    named with the Redis commands that touched it, in virtual time. No matching hash fails
    (a misspelt pattern would pass vacuously) unless ``allow_empty=True``.
    """
    __tracebackhide__ = True
    final = status_terminal_args(("pattern", pattern, "a key glob such as 'export:*'"), field, terminal)
    hashes = {k: v for k, v in snapshot(sim, pattern, url=url, db=db).items() if isinstance(v, dict)}
    if not hashes:
        if allow_empty:
            return
        raise bg.CheckFailed(
            f"adapters.redis.assert_status_terminal({pattern!r}): no Redis hash matches {pattern!r}, "
            "so there is no status to check. Fix the pattern, make sure the code under test ran, "
            "or pass allow_empty=True if no status is expected.")
    stuck = {k: v.get(field) for k, v in hashes.items() if v.get(field) not in final}
    if not stuck:
        return
    lines = [f"adapters.redis.assert_status_terminal({pattern!r}): {len(stuck)} of {len(hashes)} "
             f"hash(es) not terminal ({field} not in {sorted(final)}):"]
    for key, value in stuck.items():
        lines.append(f"  {key}: {field}={value!r}")
        for event in sim.history.filter("redis"):
            if event.detail.get("key") == key:
                lines.append(f"    {event.t:9.3f}s redis.{event.op} [{event.outcome}]"
                             + (f" attempt {event.attempt}" if event.attempt else ""))
    raise bg.CheckFailed("\n".join(lines))
