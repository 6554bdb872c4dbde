"""Real work the virtual clock must see: outbound sockets and anyio's worker threads.

Inside a simulation an outbound HTTP request that no mock answered reaches httpcore's
``_connect`` (respx answers above it, an ASGI transport never gets there): unless the
simulation has ``allow_network=True`` it raises ``UnmockedRequest`` before any socket
opens. When it is allowed, the request holds the clock until its response is closed, so
virtual time never skips to httpx's timeout while the socket is pending. anyio's worker
threads (Starlette's ``run_in_threadpool``: sync endpoints, dependencies, background
tasks) hold the clock like ``run_in_executor`` does. Both libraries are patched when they
are first imported (a ``sys.meta_path`` hook), never imported here.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.abc
import importlib.machinery
import ipaddress
import socket
import sys
import types
import weakref
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from . import context
from .errors import UnmockedRequest

__all__ = ["guard_sockets", "install", "unguard_sockets"]

_installed = False


class _PatchingLoader(importlib.abc.Loader):
    """Runs the real loader, then patches the fresh module."""

    def __init__(self, real: importlib.abc.Loader, patch: Callable[[types.ModuleType], None]) -> None:
        self._real = real
        self._patch = patch

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._real.exec_module(module)
        self._patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Patches the modules in ``patches`` as they are imported."""

    def __init__(self, patches: dict[str, Callable[[types.ModuleType], None]]) -> None:
        self.patches = patches

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        patch = self.patches.pop(fullname, None)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


def install() -> None:
    """Patch httpcore's connections and anyio's worker threads, now or when first imported."""
    global _installed
    if _installed:
        return
    _installed = True
    patches: dict[str, Callable[[types.ModuleType], None]] = {
        "httpcore._async.connection": _patch_async_connection,
        "httpcore._sync.connection": _patch_sync_connection,
        "anyio._backends._asyncio": _patch_anyio,
        "httpx._client": _patch_httpx_client,
    }
    for name in list(patches):
        module = sys.modules.get(name)
        if module is not None:
            patches.pop(name)(module)
    if patches:
        sys.meta_path.insert(0, _Finder(patches))


# -- outbound requests ---------------------------------------------------------------------------
def _refuse(request: Any) -> Any:
    """The error refusing ``request``, or ``None`` (no simulation, or network allowed)."""
    sim = context.active()
    if sim is None or getattr(sim, "allow_network", True):
        return None
    method = request.method.decode() if isinstance(request.method, bytes) else str(request.method)
    url = request.url
    text = f"{url.scheme.decode()}://{url.host.decode()}"
    if url.port is not None:
        text += f":{url.port}"
    text += url.target.decode()
    return _refusal(sim, method, text)


def _refusal(sim: Any, method: str, text: str) -> UnmockedRequest:
    """Record and return the ``UnmockedRequest`` for ``method text`` in ``sim``."""
    sim.history.record("http", "unmocked", "fail", method=method, url=text)
    unmocked = getattr(sim, "unmocked_requests", None)
    if isinstance(unmocked, list):
        unmocked.append(f"{method} {text}")
    error = UnmockedRequest(method, text)
    raised = getattr(sim, "_unmocked_errors", None)
    if isinstance(raised, list):
        raised.append(error)  # teardown tells a refusal the test caught from one the app swallowed
    return error


def _patch_async_connection(module: types.ModuleType) -> None:
    cls = module.AsyncHTTPConnection
    original = cls._connect

    @functools.wraps(original)
    async def _connect(self: Any, request: Any) -> Any:
        error = _refuse(request)
        if error is not None:
            raise error
        return await original(self, request)

    cls._connect = _connect
    _patch_async_transport()


def _patch_sync_connection(module: types.ModuleType) -> None:
    cls = module.HTTPConnection
    original = cls._connect

    @functools.wraps(original)
    def _connect(self: Any, request: Any) -> Any:
        error = _refuse(request)
        if error is not None:
            raise error
        return original(self, request)

    cls._connect = _connect


def _hold(loop: asyncio.AbstractEventLoop) -> Callable[[], None] | None:
    """Hold a virtual loop's clock (as a thread does); the returned callable releases it once."""
    hold = getattr(loop, "hold_clock", None)
    return hold() if hold is not None else None


def _patch_async_transport() -> None:
    """With network allowed, a request holds the clock until its response is closed."""
    import httpx

    cls = httpx.AsyncHTTPTransport
    if getattr(cls.handle_async_request, "_bgwork", False):
        return
    original = cls.handle_async_request

    @functools.wraps(original)
    async def handle_async_request(self: Any, request: httpx.Request) -> httpx.Response:
        sim = context.active()
        if sim is None or not getattr(sim, "allow_network", False):
            return await original(self, request)
        release = _hold(asyncio.get_running_loop())
        if release is None:
            return await original(self, request)
        try:
            response = await original(self, request)
        except BaseException:
            release()
            raise
        response.stream = _releasing_stream(response.stream, release)
        return response

    handle_async_request._bgwork = True  # type: ignore[attr-defined]
    cls.handle_async_request = handle_async_request  # type: ignore[method-assign]


def _releasing_stream(stream: Any, release: Callable[[], None]) -> Any:
    """A response body that releases the clock when it is closed."""
    import httpx

    class ReleasingStream(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            async for chunk in stream:
                yield chunk

        async def aclose(self) -> None:
            try:
                await stream.aclose()
            finally:
                release()

    return ReleasingStream()


# -- anyio's worker threads ----------------------------------------------------------------------
def _patch_anyio(module: types.ModuleType) -> None:
    cls = module.AsyncIOBackend
    original = cls.run_sync_in_worker_thread.__func__

    async def run_sync_in_worker_thread(backend: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        release = _hold(loop)
        if release is not None:  # the thread's waits (time.sleep, Event.wait) are virtual
            from . import threads

            func = threads.bind(loop, func)  # type: ignore[arg-type]
        try:
            return await original(backend, func, *args, **kwargs)
        finally:
            if release is not None:
                release()

    functools.update_wrapper(run_sync_in_worker_thread, original)
    cls.run_sync_in_worker_thread = classmethod(run_sync_in_worker_thread)


# -- the timeline: every outbound httpx request ----------------------------------------------------
#: Transports that answer in process (the test's own client to an ASGI/WSGI app): not outbound.
_IN_PROCESS = ("ASGITransport", "SimASGITransport", "WSGITransport")


def _outbound(client: Any, request: Any) -> Any:
    """The simulation to record ``request`` in, or ``None`` (no simulation, or not outbound)."""
    sim = context.active()
    if sim is None or getattr(sim, "_disposing", False):
        return None
    if type(getattr(client, "_transport", None)).__name__ in _IN_PROCESS:
        return None
    if request.url.host == "bgwork.invalid":  # a queue delivering to an in-process app
        return None
    return sim


def _record(sim: Any, request: Any, response: Any, error: BaseException | None) -> None:
    url = str(request.url)
    if error is None:
        sim.history.record("http", "request", method=request.method, url=url,
                           status=response.status_code)
    else:
        sim.history.record("http", "request", "fail", method=request.method, url=url,
                           error=f"{type(error).__name__}: {error}")


def _patch_httpx_client(module: types.ModuleType) -> None:
    """Record each request an ``httpx`` client sends inside a simulation (``http.request``),
    whoever answers it (respx, a fault rule, the network), so the timeline shows it."""
    async_send = module.AsyncClient.send
    sync_send = module.Client.send

    @functools.wraps(async_send)
    async def send(self: Any, request: Any, **kwargs: Any) -> Any:
        sim = _outbound(self, request)
        if sim is None:
            return await async_send(self, request, **kwargs)
        try:
            response = await async_send(self, request, **kwargs)
        except Exception as exc:
            _record(sim, request, None, exc)
            raise
        _record(sim, request, response, None)
        return response

    @functools.wraps(sync_send)
    def send_sync(self: Any, request: Any, **kwargs: Any) -> Any:
        sim = _outbound(self, request)
        if sim is None:
            return sync_send(self, request, **kwargs)
        try:
            response = sync_send(self, request, **kwargs)
        except Exception as exc:
            _record(sim, request, None, exc)
            raise
        _record(sim, request, response, None)
        return response

    module.AsyncClient.send = send
    module.Client.send = send_sync
# -- every other client: the socket layer ---------------------------------------------------------
#: The real socket calls (in a dict, out of reach of the wall-clock patch's module scan).
_REAL_SOCKET: dict[str, Any] = {}
_guards = 0
#: Simulations with ``allow_network=True`` current: their real sockets hold the clock.
_io_guards = 0


def _socket_refusal(method: str, host: object, port: object) -> UnmockedRequest | None:
    sim = context.active()
    if sim is None or getattr(sim, "allow_network", True):
        return None
    return _refusal(sim, method, f"{host}:{port}")


def _inet(address: object) -> tuple[object, object] | None:
    """(host, port) of an internet address; ``None`` for a Unix socket path and the like."""
    if isinstance(address, tuple) and len(address) >= 2:
        return address[0], address[1]
    return None


def _allowed_connect(self: socket.socket, address: Any) -> bool:
    """True for an internet address the guard allows; its refusal is raised here."""
    hostport = _inet(address) if self.family in (socket.AF_INET, socket.AF_INET6) else None
    if hostport is None:
        return False
    error = _socket_refusal("CONNECT", *hostport)
    if error is not None:
        raise error
    return True


def _connect(self: socket.socket, address: Any) -> None:
    if _allowed_connect(self, address) and _io_guards:
        _clients.add(self)  # only client sockets hold the clock (a server's idle one would not end)
        _in_flight(self)  # an allowed request holds the clock from its connect
    _REAL_SOCKET["connect"](self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _allowed_connect(self, address)
    return _REAL_SOCKET["connect_ex"](self, address)  # type: ignore[no-any-return]


def _getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and not _is_address(name):  # a DNS lookup leaves the machine too
        error = _socket_refusal("DNS lookup", name, port)
        if error is not None:
            raise error
    return _REAL_SOCKET["getaddrinfo"](host, port, *args, **kwargs)


def _is_address(host: str) -> bool:
    """An IP literal (no lookup: the connect itself is guarded)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


#: Client sockets connected while the network is allowed.
_clients: weakref.WeakSet[socket.socket] = weakref.WeakSet()
#: Real seconds a client socket still holds the clock after it last received.
_LINGER = 0.2
_IO_NAMES = ("send", "sendall", "recv", "recv_into", "close")


class HeldSocket:
    """A real socket of an allowed network request with a request in flight: it holds the
    loop's clock from its connect or send until it receives (or closes), as a thread does."""

    __slots__ = ("quiet_since", "release", "sock")

    def __init__(self, sock: socket.socket, release: Callable[[], None]) -> None:
        self.sock = sock
        self.release = release
        #: real time of the last receive (``None``: waiting for the first byte of an answer)
        self.quiet_since: float | None = None

    def gone(self) -> bool:
        """Closed, or silent for ``_LINGER`` real seconds since its last receive (an answer
        may come in several pieces; an idle keep-alive connection must not hold the clock)."""
        quiet = self.quiet_since
        return self.sock.fileno() == -1 or (quiet is not None and perf_counter() - quiet > _LINGER)


def _allowed_loop() -> Any:
    """The running virtual loop of a simulation with ``allow_network=True``, if this is its thread."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    sim = getattr(loop, "sim", None)
    if sim is None or not getattr(sim, "allow_network", False) or not hasattr(loop, "_vwaits"):
        return None
    return loop


def _in_flight(sock: socket.socket) -> None:
    """A request went out on ``sock`` (connect, send): hold the clock until it hears back."""
    if sock not in _clients:
        return
    loop = _allowed_loop()
    if loop is None:
        return
    waits = loop._vwaits
    for entry in waits:
        if type(entry) is HeldSocket and entry.sock is sock:
            entry.quiet_since = None
            return
    waits[HeldSocket(sock, loop.hold_clock())] = None


def _answered(sock: socket.socket, more: bool = False) -> None:
    """``sock`` received (``more``: some bytes, the rest may follow) or closed: its hold ends,
    at once or after ``_LINGER`` real seconds of silence."""
    if sock not in _clients:
        return
    loop = _allowed_loop()
    if loop is None:
        return
    waits = loop._vwaits
    for entry in list(waits):
        if type(entry) is HeldSocket and entry.sock is sock:
            if more:
                entry.quiet_since = perf_counter()
            else:
                del waits[entry]
                entry.release()


def _io_patches() -> dict[str, Callable[..., Any]]:
    real = _REAL_SOCKET

    def send(self: socket.socket, *args: Any) -> Any:
        result = real["send"](self, *args)
        _in_flight(self)
        return result

    def sendall(self: socket.socket, *args: Any) -> Any:
        result = real["sendall"](self, *args)
        _in_flight(self)
        return result

    def recv(self: socket.socket, *args: Any) -> Any:
        data = real["recv"](self, *args)
        _answered(self, more=bool(data))
        return data

    def recv_into(self: socket.socket, *args: Any) -> Any:
        n = real["recv_into"](self, *args)
        _answered(self, more=bool(n))
        return n

    def close(self: socket.socket) -> None:
        _answered(self)
        real["close"](self)

    return {"send": send, "sendall": sendall, "recv": recv, "recv_into": recv_into, "close": close}


def guard_sockets(allowed: bool = False) -> None:
    """Refuse outbound connections and DNS lookups of every client (aiohttp, requests,
    ``urllib``, ``socket.create_connection``, ``asyncio.open_connection``...) while a
    simulation without ``allow_network=True`` is current (counted; ``unguard_sockets`` undoes).

    A refusal raises ``UnmockedRequest`` naming host and port before anything is sent. For
    a simulation that allows the network (``allowed``), a socket of the loop's thread holds
    the clock from its connect or send until it receives, so a slow server is waited for.
    """
    global _guards, _io_guards
    if not _REAL_SOCKET:
        _REAL_SOCKET.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex,
                            getaddrinfo=socket.getaddrinfo)
        _REAL_SOCKET.update({name: getattr(socket.socket, name) for name in _IO_NAMES})
    if allowed:
        _io_guards += 1
        if _io_guards == 1:
            for name, patch in _io_patches().items():
                setattr(socket.socket, name, patch)
    _guards += 1
    if _guards > 1:
        return
    socket.socket.connect = _connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = _getaddrinfo


def unguard_sockets(allowed: bool = False) -> None:
    """Undo one ``guard_sockets``; the last restores the real calls."""
    global _guards, _io_guards
    if allowed and _io_guards:
        _io_guards -= 1
        if not _io_guards:
            for name in _IO_NAMES:
                setattr(socket.socket, name, _REAL_SOCKET[name])
    if _guards == 0:
        return
    _guards -= 1
    if _guards:
        return
    socket.socket.connect = _REAL_SOCKET["connect"]  # type: ignore[method-assign]
    socket.socket.connect_ex = _REAL_SOCKET["connect_ex"]  # type: ignore[method-assign]
    socket.getaddrinfo = _REAL_SOCKET["getaddrinfo"]
