"""Starlette/FastAPI ``BackgroundTasks`` on the simulation: the response returns before them.

Starlette runs a response's background tasks inside the same ASGI call, after the last
body chunk (``Response.__call__`` awaits ``self.background()``), so ``httpx.ASGITransport``
returns only once they finished: a response that waited for its email looks fine in
tests. ``transport(sim, app)`` is an httpx transport that answers the client at the final
``http.response.body`` and hands the rest of the ASGI call to ``sim.runtime`` as a tracked
task (``asgi.<endpoint>``). Inside it each background function is its own runtime task with
fault point ``task.<func>``, recorded in the history, still in Starlette's order: one after
the other, and the first failure stops the rest (recorded as ``asgi.background_stopped``).
A sync function runs in anyio's thread pool as Starlette does, with the virtual clock held
while it runs. ``sim.runtime.drain()``, ``shutdown(grace=)`` and ``bg.assert_drained`` see
all of it.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import httpx

import pytest_bgwork as bg

if TYPE_CHECKING:
    from ..services.runtime import Request

__all__ = ["SimASGITransport", "transport"]

_Message = MutableMapping[str, Any]
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:-]")
#: The ASGI call (request) whose background tasks this context runs, if any.
_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("bgwork_asgi_call", default=None)


def _clean(qualname: str) -> str:
    """A fault-point-safe name from a qualname: ``make.<locals>.send`` -> ``send``."""
    tail = qualname.rsplit("<locals>.", 1)[-1]
    return _NAME_CHARS.sub("", tail).strip(".") or "task"


def _func_name(func: object) -> str:
    inner = getattr(func, "func", None)  # functools.partial
    if inner is not None and not hasattr(func, "__qualname__"):
        return _func_name(inner)
    qualname = getattr(func, "__qualname__", None) or type(func).__qualname__
    return _clean(str(qualname))


class _Call:
    """One ASGI call: its runtime request and the background tasks it ran so far."""

    def __init__(self, sim: bg.Simulation, request: Request) -> None:
        self.sim = sim
        self.request = request
        self.started: list[str] = []
        #: Exceptions already reported as a failed background task (not reported again).
        self.reported: set[int] = set()
        self.app_task: asyncio.Task[None] | None = None
        self.scope: dict[str, Any] = {}
        self.responded = False
        self.handed_over = False
        #: The client is still waiting in ``handle_async_request``: it sees the app's end itself.
        self.client_waiting = True

    async def respond(self) -> None:
        """The final body chunk went out: the response is complete (``runtime.response``)."""
        if not self.responded:
            self.responded = True
            await self.request.__aexit__(None, None, None)

    def hand_over(self) -> None:
        """Track the rest of the ASGI call as a runtime task ``asgi.<endpoint>`` (once)."""
        task = self.app_task
        if self.handed_over or task is None or task.done():
            return
        self.handed_over = True
        endpoint = self.scope.get("endpoint")
        name = f"asgi.{_func_name(endpoint)}" if endpoint is not None else "asgi"
        try:
            self.request.wait_until(task, name=name)
        except bg.RuntimeShuttingDown:  # the server still finishes the call it is in
            self.sim.history.record("asgi", "background_inline", task=name, request=self.request.name)

    async def run_task(self, task: Any, original: Callable[[Any], Any]) -> None:
        """Run one ``BackgroundTask`` as a runtime task; re-raise its failure (Starlette's order)."""
        name = _func_name(task.func)
        self.started.append(name)
        self.hand_over()

        async def body() -> None:
            # a sync function goes to anyio's thread pool (run_in_threadpool), whose worker
            # threads hold the virtual clock while they run (the kernel counts them)
            await original(task)

        try:
            rec = self.request.wait_until(body, name=name)
        except bg.RuntimeShuttingDown:
            # shutdown began while this call was between tasks: the server would still finish
            # the call (uvicorn waits for it), so run it inside the call's own tracked task
            self.sim.history.record("asgi", "background_inline", task=name, request=self.request.name)
            point = f"task.{name}"
            step = self.sim.faults._enter(point)
            if step is not None:
                await step
            await body()
            self.sim.faults._leave(point)
            return
        if rec.task is None:  # dropped (shutdown(late="drop")): Starlette goes on with the next
            return
        await rec.task
        if rec.status == "failed" and rec.error is not None:
            self.reported.add(id(rec.error))
            raise rec.error  # Starlette stops at the first failure: so do we
        if rec.status in ("cut_off", "cancelled"):
            raise asyncio.CancelledError()
        if rec.status == "crashed":
            raise bg.BgworkError(f"background task {name} crashed")  # pragma: no cover


def _wrap_all(cls: type) -> None:
    """Wrap a ``BackgroundTasks`` class's own ``__call__`` to record which tasks a failure skipped."""
    original_all = cls.__dict__["__call__"]

    async def run_all(self: Any) -> None:
        call = _current.get()
        if call is None:
            await original_all(self)
            return
        before = len(call.started)
        try:
            await original_all(self)
        except BaseException as exc:
            ran = len(call.started) - before
            skipped = [_func_name(t.func) for t in self.tasks[ran:]]
            if skipped:
                how = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
                call.sim.history.record("asgi", "background_stopped", "fail", request=call.request.name,
                                        **{how: call.started[-1] if ran else None}, skipped=skipped)
            raise

    run_all.__wrapped__ = original_all  # type: ignore[attr-defined]
    run_all._bgwork = True  # type: ignore[attr-defined]
    setattr(cls, "__call__", run_all)  # noqa: B010 - a class attribute mypy would call a method


def _install_hooks() -> None:
    """Route ``BackgroundTask.__call__`` through the current ``_Call`` (inert outside one).

    Patched once per process (``BackgroundTasks`` subclasses with their own ``__call__``,
    such as FastAPI's, as they appear); outside a transport's call the originals run unchanged.
    """
    from starlette.background import BackgroundTask, BackgroundTasks

    if not getattr(BackgroundTask.__call__, "_bgwork", False):  # the class itself says (a re-import
        original = BackgroundTask.__call__                     # of starlette brings a fresh one)

        async def __call__(self: BackgroundTask) -> None:
            call = _current.get()
            if call is None:
                await original(self)
            else:
                await call.run_task(self, original)

        __call__.__wrapped__ = original  # type: ignore[attr-defined]
        __call__._bgwork = True  # type: ignore[attr-defined]
        BackgroundTask.__call__ = __call__  # type: ignore[method-assign]
    todo: list[type] = [BackgroundTasks]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        own = cls.__dict__.get("__call__")
        if own is not None and not getattr(own, "_bgwork", False):
            _wrap_all(cls)


class SimASGITransport(httpx.AsyncBaseTransport):
    """An httpx transport to an ASGI app that answers at the final body chunk.

    The arguments after ``sim`` are ``httpx.ASGITransport``'s. An app exception raised
    before the response completed is raised into the client when ``raise_app_exceptions``
    (else a 500); one raised after it is a failed runtime task, as a server would log it.
    """

    def __init__(self, app: Any, sim: bg.Simulation, *, raise_app_exceptions: bool = True,
                 root_path: str = "", client: tuple[str, int] = ("127.0.0.1", 123)) -> None:
        if not callable(app):
            raise TypeError(f"transport(sim, app): app must be an ASGI app (a callable such as a "
                            f"FastAPI() or Starlette() instance); got {type(app).__name__}")
        if not isinstance(sim, bg.Simulation):
            raise TypeError(f"transport(sim, app): sim must be a pytest_bgwork Simulation (the "
                            f"`bgwork` fixture); got {type(sim).__name__}")
        _install_hooks()
        self.app = app
        self.sim = sim
        self.raise_app_exceptions = raise_app_exceptions
        self.root_path = root_path
        self.client = client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sim = self.sim
        loop = asyncio.get_running_loop()
        if loop is not sim.loop:
            raise bg.NotRunning("adapters.asgi.transport(sim, app): requests must run on the "
                                "simulation's virtual loop: an async test that uses the `bgwork` "
                                "fixture, or sim.run(...)")
        assert isinstance(request.stream, httpx.AsyncByteStream)
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": self.client,
            "root_path": self.root_path,
        }
        chunks = request.stream.__aiter__()
        request_complete = False
        status: int | None = None
        headers: list[tuple[bytes, bytes]] | None = None
        body: list[bytes] = []
        complete = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal request_complete
            if request_complete:
                await complete.wait()
                return {"type": "http.disconnect"}
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                request_complete = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.request", "body": chunk, "more_body": True}

        async def send(message: _Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                if status is not None:
                    raise RuntimeError("ASGI app sent http.response.start twice")
                status = int(message["status"])
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                if complete.is_set():
                    raise RuntimeError("ASGI app sent a body after the final http.response.body")
                chunk = message.get("body", b"")
                if chunk and request.method != "HEAD":
                    body.append(bytes(chunk))
                if not message.get("more_body", False):
                    complete.set()
                    await call.respond()

        req = sim.runtime.request(f"{request.method} {request.url.path}")
        await req.__aenter__()
        call = _Call(sim, req)
        call.scope = scope
        ctx = contextvars.copy_context()
        ctx.run(_current.set, call)
        app_task = call.app_task = loop.create_task(
            self._call_app(call, scope, receive, send),
            name=f"asgi {request.method} {request.url.path}", context=ctx)
        waiter = loop.create_task(complete.wait(), name="asgi response")
        try:
            await asyncio.wait({app_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException as gave_up:  # the client gave up (cancelled): so does the call
            waiter.cancel()
            app_task.cancel()
            await req.__aexit__(type(gave_up), gave_up, gave_up.__traceback__)
            raise
        waiter.cancel()
        if not complete.is_set():  # the app returned or raised before its response was complete
            call.client_waiting = False
            exc = app_task.exception()
            if exc is None:
                exc = RuntimeError(f"the ASGI app returned without completing its response to "
                                   f"{request.method} {request.url.path}")
                await req.__aexit__(type(exc), exc, exc.__traceback__)
                raise exc
            await req.__aexit__(type(exc), exc, exc.__traceback__)
            if self.raise_app_exceptions:
                raise exc
            status = 500 if status is None else status
            headers = [] if headers is None else headers
        else:
            await call.respond()
            call.client_waiting = False
            if not app_task.done():  # the rest of the call (background tasks) runs on, tracked
                call.hand_over()
            elif not app_task.cancelled() and app_task.exception() is not None and self.raise_app_exceptions:
                # the app raised as it answered (Starlette's error middleware sends the 500, then
                # re-raises): as httpx.ASGITransport does, the client sees the exception
                raise app_task.exception()  # type: ignore[misc]
        assert status is not None and headers is not None
        return httpx.Response(status, headers=headers, content=b"".join(body), request=request)

    async def _call_app(self, call: _Call, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            seen: Any = exc
            for _ in range(10):  # middleware may wrap it: follow the chain
                if seen is None:
                    break
                if id(seen) in call.reported:
                    return  # a background task failed: already recorded as runtime.task_failed
                seen = seen.__cause__ or seen.__context__
            if call.responded and not call.client_waiting:
                call.hand_over()  # failed after the response: a failed runtime task, as a server logs it
            raise

    def __repr__(self) -> str:
        return f"<SimASGITransport app={type(self.app).__name__} sim={self.sim!r}>"


def transport(sim: bg.Simulation, app: Any, **options: Any) -> SimASGITransport:
    """An httpx transport to ``app`` whose responses do not wait for ``BackgroundTasks``.

    ``httpx.AsyncClient(transport=adapters.asgi.transport(sim, app), base_url=...)``;
    ``options`` are ``httpx.ASGITransport``'s (``raise_app_exceptions``, ``root_path``,
    ``client``). The simulation comes first, as in every adapter's entry point; the old
    order ``transport(app, sim)`` still works for one release and warns.
    """
    if not isinstance(sim, bg.Simulation) and isinstance(app, bg.Simulation):
        import warnings

        warnings.warn("adapters.asgi.transport(app, sim) is now transport(sim, app): the simulation "
                      "comes first, as in every adapter; the old order goes in the next release",
                      DeprecationWarning, stacklevel=2)
        sim, app = app, sim
    return SimASGITransport(app, sim, **options)
