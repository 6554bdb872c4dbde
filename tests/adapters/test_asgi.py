"""adapters.asgi: real FastAPI/Starlette BackgroundTasks on the simulation's runtime."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import BackgroundTasks, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse
from starlette.routing import Route

import pytest_bgwork as bg
from pytest_bgwork import adapters


class Outbox:
    """What the background functions did, with the virtual time each finished."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.done: list[tuple[str, float]] = []

    def note(self, what: str) -> None:
        self.done.append((what, self.sim.clock.monotonic()))


def make_app(out: Outbox) -> FastAPI:
    app = FastAPI()

    async def send_receipt(order_id: str) -> None:
        await asyncio.sleep(5)  # the mail API takes 5 virtual seconds
        out.note(f"receipt {order_id}")

    async def notify_crm(order_id: str) -> None:
        await asyncio.sleep(2)
        if order_id == "bad":
            raise ConnectionError("crm down")
        out.note(f"crm {order_id}")

    def write_audit_log(order_id: str) -> None:  # sync: Starlette runs it in anyio's thread pool
        out.note(f"audit {order_id} in {threading.current_thread().name}")

    @app.post("/orders/{order_id}")
    async def create_order(order_id: str, tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(send_receipt, order_id)
        tasks.add_task(notify_crm, order_id)
        tasks.add_task(write_audit_log, order_id)
        return {"order_id": order_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("handler failed")

    return app


@pytest.fixture
def out(bgwork: bg.Simulation) -> Outbox:
    return Outbox(bgwork)


@pytest_asyncio.fixture
async def client(bgwork: bg.Simulation, out: Outbox) -> AsyncIterator[httpx.AsyncClient]:
    transport = adapters.asgi.transport(bgwork, make_app(out))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
        yield c


@pytest.mark.asyncio
async def test_the_response_returns_before_the_background_tasks(
    bgwork: bg.Simulation, client: httpx.AsyncClient, out: Outbox
) -> None:
    response = await client.post("/orders/o1")
    assert response.status_code == 200 and response.json() == {"order_id": "o1"}
    assert bgwork.clock.monotonic() == 0.0 and out.done == []
    assert [t.name for t in bgwork.runtime.pending] == ["asgi.create_order", "send_receipt"]
    [measured] = bgwork.history.filter("runtime", "response")
    assert measured.detail["request"] == "POST /orders/o1" and measured.detail["seconds"] == 0.0
    await bgwork.runtime.drain()
    assert [what.split(" in ")[0] for what, _ in out.done] == ["receipt o1", "crm o1", "audit o1"]


@pytest.mark.asyncio
async def test_httpx_asgi_transport_hides_a_response_that_waits(bgwork: bg.Simulation, out: Outbox) -> None:
    """The reason for the adapter: httpx.ASGITransport returns after the background tasks."""
    transport = httpx.ASGITransport(app=make_app(out))
    async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
        await c.post("/orders/o1")
    assert bgwork.clock.monotonic() == 7.0  # the "response" came after 5 s + 2 s of background work
    assert len(out.done) == 3


@pytest.mark.asyncio
async def test_tasks_run_one_after_the_other_in_starlette_order(
    bgwork: bg.Simulation, client: httpx.AsyncClient, out: Outbox
) -> None:
    await client.post("/orders/o1")
    await bgwork.runtime.drain()
    assert [(what.split(" in ")[0], t) for what, t in out.done] == [
        ("receipt o1", 5.0), ("crm o1", 7.0), ("audit o1", 7.0)]  # sequential, not concurrent
    started = [e.detail["task"] for e in bgwork.history.filter("runtime", "wait_until")]
    assert started == ["asgi.create_order", "send_receipt", "notify_crm", "write_audit_log"]
    assert [e.detail["task"] for e in bgwork.history.filter("runtime", "task_done")] == [
        "send_receipt", "notify_crm", "write_audit_log", "asgi.create_order"]
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_the_first_failure_stops_the_remaining_tasks(
    bgwork: bg.Simulation, client: httpx.AsyncClient, out: Outbox
) -> None:
    response = await client.post("/orders/bad")
    assert response.status_code == 200  # the customer never sees it
    await bgwork.runtime.drain()
    assert [what for what, _ in out.done] == ["receipt bad"]  # write_audit_log never ran
    [error] = bgwork.runtime.errors
    assert error.task == "notify_crm" and isinstance(error.exception, ConnectionError)
    [stopped] = bgwork.history.filter("asgi", "background_stopped")
    assert stopped.detail["failed"] == "notify_crm" and stopped.detail["skipped"] == ["write_audit_log"]
    # the failure is reported once (the task), not again for the ASGI call that carried it
    assert [e.detail["task"] for e in bgwork.history.filter("runtime", "task_failed")] == ["notify_crm"]


@pytest.mark.asyncio
async def test_each_function_is_the_fault_point_task_func(
    bgwork: bg.Simulation, client: httpx.AsyncClient, out: Outbox
) -> None:
    bgwork.faults.fail("task.send_receipt", error=TimeoutError("mail api timeout"))
    await client.post("/orders/o2")
    await bgwork.runtime.drain()
    assert out.done == []  # Starlette's order: the failure at the first task stops the others
    [error] = bgwork.runtime.errors
    assert error.task == "send_receipt" and "mail api timeout" in str(error)
    [fault] = bgwork.history.filter("fault", "fail")
    assert fault.detail["point"] == "task.send_receipt"


@pytest.mark.asyncio
async def test_a_sync_task_runs_in_the_thread_pool_with_the_clock_held(bgwork: bg.Simulation) -> None:
    seen: list[tuple[str, float, float]] = []
    def slow_sync_job() -> None:
        start = bgwork.clock.monotonic()
        began = time.perf_counter()
        while time.perf_counter() - began < 0.05:  # real work taking real time
            pass
        seen.append((threading.current_thread().name, start, bgwork.clock.monotonic()))

    async def tick() -> None:
        await asyncio.sleep(1)
        seen.append(("tick", bgwork.clock.monotonic(), bgwork.clock.monotonic()))

    async def endpoint(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True}, background=BackgroundTask(slow_sync_job))

    app = Starlette(routes=[Route("/job", endpoint, methods=["POST"])])
    ticker = asyncio.create_task(tick())
    async with httpx.AsyncClient(transport=adapters.asgi.transport(bgwork, app), base_url="http://t") as c:
        await c.post("/job")
    await bgwork.runtime.drain()
    await ticker
    (thread, start, end), after = seen
    assert thread != threading.current_thread().name  # ran in a worker thread...
    assert start == end == 0.0  # ...while the virtual clock stood still...
    assert after == ("tick", 1.0, 1.0)  # ...and time moved on only once it finished


@pytest.mark.asyncio
async def test_shutdown_waits_for_the_tasks_then_cuts_them_off(
    bgwork: bg.Simulation, client: httpx.AsyncClient, out: Outbox
) -> None:
    await client.post("/orders/o3")
    with pytest.raises(AssertionError, match="send_receipt"):
        bg.assert_drained(bgwork)
    cut = await bgwork.runtime.shutdown(grace=6)
    assert bgwork.clock.monotonic() == 6.0
    # the call goes on after shutdown began (a server finishes the call it is in): notify_crm
    # runs inside it, then the grace period ends and cuts the call off, notify_crm with it
    assert [t.name for t in cut] == ["asgi.create_order"]
    assert [e.detail["task"] for e in bgwork.history.filter("asgi", "background_inline")] == ["notify_crm"]
    [stopped] = bgwork.history.filter("asgi", "background_stopped")
    assert stopped.detail["cancelled"] == "notify_crm" and stopped.detail["skipped"] == ["write_audit_log"]
    assert [what for what, _ in out.done] == ["receipt o3"]
    bg.assert_drained(bgwork)


@pytest.mark.asyncio
async def test_an_error_before_the_response_reaches_the_client(bgwork: bg.Simulation, out: Outbox) -> None:
    app = make_app(out)
    async with httpx.AsyncClient(transport=adapters.asgi.transport(bgwork, app), base_url="http://t") as c:
        with pytest.raises(RuntimeError, match="handler failed"):
            await c.get("/boom")
    transport = adapters.asgi.transport(bgwork, app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        response = await c.get("/boom")
    assert response.status_code == 500
    assert bgwork.runtime.pending == [] and bgwork.runtime.errors == []  # nothing left behind


def test_the_same_seed_gives_the_same_history() -> None:
    def run() -> str:
        with bg.Simulation(seed=3) as sim:
            out = Outbox(sim)

            async def main() -> None:
                transport = adapters.asgi.transport(sim, make_app(out))
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                    await asyncio.gather(c.post("/orders/a"), c.post("/orders/bad"))
                await sim.runtime.drain()

            sim.run(main())
            return sim.history.digest()

    assert run() == run()


def test_bad_arguments_are_refused_naming_them(bgwork: bg.Simulation, out: Outbox) -> None:
    with pytest.raises(TypeError, match=r"transport\(sim, app\): app must be an ASGI app"):
        adapters.asgi.transport(bgwork, None)
    with pytest.raises(TypeError, match=r"sim must be a pytest_bgwork Simulation"):
        adapters.asgi.transport(object(), make_app(out))  # type: ignore[arg-type]

    async def elsewhere() -> None:
        transport = adapters.asgi.transport(bgwork, make_app(out))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.post("/orders/x")

    with pytest.raises(bg.NotRunning, match="virtual loop"):
        asyncio.run(elsewhere())


def test_a_users_suite_catches_a_response_that_waits(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, httpx, pytest
        from fastapi import BackgroundTasks, FastAPI
        from pytest_bgwork import adapters

        async def send_email(to):
            await asyncio.sleep(3)

        app = FastAPI()

        @app.post("/fast")
        async def fast(tasks: BackgroundTasks):
            tasks.add_task(send_email, "a@example.com")

        @app.post("/slow")
        async def slow():
            await send_email("a@example.com")  # the bug: the response waits for the email

        @pytest.mark.asyncio
        @pytest.mark.parametrize("path", ["/fast", "/slow"])
        async def test_answers_at_once(bgwork, path):
            transport = adapters.asgi.transport(bgwork, app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                await c.post(path)
            [response] = bgwork.history.filter("runtime", "response")
            assert response.detail["seconds"] == 0, f"response took {response.detail['seconds']}s"
            await bgwork.runtime.drain()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_answers_at_once?/slow?*", "*response took 3.0s*"])


@pytest.mark.asyncio
async def test_middleware_and_streaming_responses(bgwork: bg.Simulation) -> None:
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import StreamingResponse

    done: list[float] = []

    async def later() -> None:
        await asyncio.sleep(4)
        done.append(bgwork.clock.monotonic())

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"a", b"b"):
            yield part

    async def stream(request: Any) -> StreamingResponse:
        return StreamingResponse(chunks(), background=BackgroundTask(later))

    async def passthrough(request: Any, call_next: Any) -> Any:
        return await call_next(request)

    app = Starlette(routes=[Route("/s", stream)], middleware=[Middleware(BaseHTTPMiddleware, dispatch=passthrough)])
    async with httpx.AsyncClient(transport=adapters.asgi.transport(bgwork, app), base_url="http://t") as c:
        response = await c.get("/s")
    assert response.content == b"ab" and bgwork.clock.monotonic() == 0.0
    await bgwork.runtime.drain()
    assert done == [4.0]


def test_the_old_argument_order_still_works_and_warns(bgwork: bg.Simulation, out: Outbox) -> None:
    app = make_app(out)
    with pytest.warns(DeprecationWarning, match=r"transport\(app, sim\) is now transport\(sim, app\)"):
        old = adapters.asgi.transport(app, bgwork)  # type: ignore[arg-type]
    assert old.app is app and old.sim is bgwork
