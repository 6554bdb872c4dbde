"""Celery on the simulation: the worker's rules, each shown by an unmodified task."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery, chain, chord, group
from celery.exceptions import Ignore, Reject, WorkerLostError

import pytest_bgwork as bg
from pytest_bgwork.adapters import celery as bc

app = Celery("tests", set_as_current=False)
runs: list[tuple[str, Any, float]] = []


def _log(name: str, value: Any) -> None:
    runs.append((name, value, bg.current().clock.monotonic()))


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    runs.clear()


@app.task(bind=True, acks_late=True, max_retries=3)
def flaky(self: Any, x: int) -> int:
    _log("flaky", self.request.retries)
    if self.request.retries < 2:
        raise self.retry(countdown=60)
    return x * 2


@app.task
def write_early(key: str) -> str:
    """Default (early ack): the worker acks before the body runs."""
    _log("write_early", key)
    bc.call(bg.current().kv.set("ledger", key, "written"))
    return key


@app.task(acks_late=True, reject_on_worker_lost=True)
def write_late_requeue(key: str) -> str:
    _log("write_late_requeue", key)
    bc.call(bg.current().kv.set("ledger", key, "written"))
    return key


@app.task(acks_late=True)
def write_late(key: str) -> str:
    _log("write_late", key)
    bc.call(bg.current().kv.set("ledger", key, "written"))
    return key


@app.task
def remind(user: str) -> str:
    _log("remind", user)
    return user


@app.task(bind=True, acks_late=True)
def rejecting(self: Any) -> str:
    _log("rejecting", self.request.delivery_info.get("redelivered"))
    if not self.request.delivery_info.get("redelivered"):
        raise Reject("not yet", requeue=True)
    return "second time"


@app.task(acks_late=True)
def broken() -> None:
    _log("broken", None)
    raise ValueError("bad invoice")


@app.task
def add(x: int, y: int) -> int:
    _log("add", (x, y))
    return x + y


@app.task(bind=True)
def ignoring(self: Any) -> None:
    _log("ignoring", None)
    raise Ignore()


@app.task
def on_error(request: Any, exc: Exception, traceback: Any) -> None:
    _log("on_error", repr(exc))


@app.task(time_limit=30)
def limited() -> None:
    pass


def _deliveries(sim: bg.Simulation) -> int:
    return len(sim.history.filter("queue", "deliver"))


@pytest.mark.asyncio
async def test_retry_with_countdown_completes_on_virtual_time(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = flaky.delay(21)
        await bgwork.run_until_idle()
    assert [r[1:] for r in runs] == [(0, 0.0), (1, 60.0), (2, 120.0)]
    assert result.state == "SUCCESS" and result.get() == 42
    assert bgwork.clock.monotonic() >= 120


def test_task_ids_and_history_are_deterministic() -> None:
    def once() -> tuple[str, str]:
        with bg.Simulation(seed=3) as sim:
            async def main() -> str:
                with bc.install(sim, app):
                    r = flaky.delay(1)
                    await sim.run_until_idle()
                    return str(r.id)

            return sim.run(main()), sim.history.digest()

    first, second = once(), once()
    assert first == second
    assert first[0] == "00000000-0000-4000-8000-000000000001"


@pytest.mark.asyncio
async def test_early_ack_loses_the_job_when_the_worker_dies(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("celery", at="kv.set")
    with bc.install(bgwork, app):
        result = write_early.delay("inv-1")
        await bgwork.run_until_idle()
    assert [r[0] for r in runs] == ["write_early"]  # never run again
    assert bgwork.kv.items("ledger") == {}
    assert result.state == "FAILURE" and isinstance(result.result, WorkerLostError)
    assert bgwork.queues.stats("celery")["acked"] == 1  # acked before the body ran


@pytest.mark.asyncio
async def test_acks_late_with_reject_on_worker_lost_redelivers(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("celery", at="kv.set")
    with bc.install(bgwork, app):
        result = write_late_requeue.delay("inv-2")
        await bgwork.run_until_idle()
    assert [r[0] for r in runs] == ["write_late_requeue"] * 2
    assert bgwork.kv.items("ledger") == {"inv-2": "written"}
    assert result.get() == "inv-2"


@pytest.mark.asyncio
async def test_acks_late_without_reject_on_worker_lost_still_acks(bgwork: bg.Simulation) -> None:
    # Celery's documented surprise: acks_late alone acks a message whose worker died
    bgwork.faults.crash("celery", at="kv.set")
    with bc.install(bgwork, app):
        result = write_late.delay("inv-3")
        await bgwork.run_until_idle()
    assert len(runs) == 1
    assert result.state == "FAILURE" and isinstance(result.result, WorkerLostError)
    assert bgwork.queues.stats("celery")["acked"] == 1


@pytest.mark.asyncio
async def test_eta_longer_than_the_visibility_timeout_runs_twice(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):  # Redis's default visibility timeout: 3600 s
        remind.apply_async(("ana",), countdown=5400)
        await bgwork.run_until_idle()
    assert [r[1:] for r in runs] == [("ana", 5400.0), ("ana", 5400.0)]
    assert bgwork.history.count("queue", "visibility_expired") == 1


@pytest.mark.asyncio
async def test_eta_within_the_visibility_timeout_runs_once(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app, visibility_timeout=43200):
        remind.apply_async(("ana",), countdown=5400)
        await bgwork.run_until_idle()
    assert [r[1:] for r in runs] == [("ana", 5400.0)]


@pytest.mark.asyncio
async def test_reject_with_requeue_redelivers(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = rejecting.delay()
        await bgwork.run_until_idle()
    assert [r[1] for r in runs] == [False, True]
    assert result.get() == "second time"


@pytest.mark.asyncio
async def test_a_failing_acks_late_task_is_acked_and_stores_its_error(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = broken.delay()
        await bgwork.run_until_idle()
    assert len(runs) == 1
    assert result.state == "FAILURE"
    with pytest.raises(ValueError, match="bad invoice"):
        result.get()
    assert bgwork.queues.stats("celery")["acked"] == 1


@pytest.mark.asyncio
async def test_get_on_an_unfinished_task_raises_instead_of_blocking(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = remind.apply_async(("bo",), countdown=10)
        with pytest.raises(bc.ResultNotReady, match="run_until_idle"):
            result.get()
        await bgwork.run_until_idle()
        assert result.get() == "bo"


@pytest.mark.asyncio
async def test_expired_tasks_are_revoked(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = remind.apply_async(("cy",), countdown=120, expires=60)
        await bgwork.run_until_idle()
    assert runs == []
    assert result.state == "REVOKED"


@pytest.mark.asyncio
async def test_chains_and_groups_run(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        chained = chain(add.s(1, 2), add.s(10)).delay()
        grouped = group(add.s(i, i) for i in range(3)).delay()
        await bgwork.run_until_idle()
    assert chained.get() == 13
    assert grouped.get() == [0, 2, 4]


@pytest.mark.asyncio
async def test_unsupported_features_raise_naming_them(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        with pytest.raises(bc.UnsupportedFeature, match="chords"):
            chord([add.s(1, 1)], add.s(1)).delay()
        with pytest.raises(bc.UnsupportedFeature, match="time limits"):
            limited.delay()
        with pytest.raises(bc.UnsupportedFeature, match="priorities"):
            add.apply_async((1, 2), priority=5)
    eager = Celery("eager", set_as_current=False)
    eager.conf.task_always_eager = True
    with pytest.raises(bc.UnsupportedFeature, match="task_always_eager"), bc.install(bgwork, eager):
        pass


@pytest.mark.asyncio
async def test_unregistered_tasks_are_logged_and_discarded(
        bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    from celery.signals import task_unknown

    unknown: list[str] = []

    def on_unknown(sender: Any, name: str, **kwargs: Any) -> None:
        unknown.append(name)

    task_unknown.connect(on_unknown)
    try:
        with bc.install(bgwork, app):
            result = app.send_task("billing.nowhere")
            await bgwork.run_until_idle()
    finally:
        task_unknown.disconnect(on_unknown)
    assert "Received unregistered task of type 'billing.nowhere'" in caplog.text
    assert unknown == ["billing.nowhere"]
    assert _deliveries(bgwork) == 1 and bgwork.queues.stats("celery")["acked"] == 1  # not retried
    assert result.state == "FAILURE"


@pytest.mark.asyncio
async def test_install_restores_the_app_and_refuses_nesting(bgwork: bg.Simulation) -> None:
    app.conf.broker_url = "redis://localhost:6379/0"
    try:
        with bc.install(bgwork, app):
            assert app.conf.broker_url == "bgwork://"
            with pytest.raises(RuntimeError, match="already active"), bc.install(bgwork, app):
                pass
        assert app.conf.broker_url == "redis://localhost:6379/0"
        with pytest.raises(bg.NotRunning, match="install"):
            bc._require_active("publishing")
    finally:
        app.conf.broker_url = None


@pytest.mark.asyncio
async def test_a_publish_fault_from_the_test_thread_is_reported(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("queue.publish", error=ConnectionError("broker down"))
    with pytest.raises(bg.BgworkError, match="broker down"), bc.install(bgwork, app):
        remind.delay("dee")
        await bgwork.run_until_idle()
    with bc.install(bgwork, app) as worker:  # cleared on purpose: no error
        remind.delay("eve")
        await bgwork.run_until_idle()
        assert worker.publish_errors == []
    assert [r[1] for r in runs] == ["eve"]


def test_call_outside_a_task_body_raises() -> None:
    async def noop() -> None:
        pass

    with pytest.raises(bg.NotRunning, match="await"):
        bc.call(noop())


def test_the_fixture_installs_the_users_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from celery import Celery
        from pytest_bgwork.adapters import celery as bc

        app = Celery("p", set_as_current=False)

        @app.task
        def hello(name):
            return f"hi {name}"

        @pytest.fixture
        def celery_app():
            return app

        @pytest.mark.asyncio
        async def test_it(bgwork, bg_celery):
            assert bg_celery.app is app
            r = hello.delay("x")
            await bgwork.run_until_idle()
            assert r.get() == "hi x"

        def test_after(bgwork):
            assert app.conf.broker_url != "bgwork://"
            assert bc._active is None
        """
    )
    result = pytester.runpytest("-p", "pytest_bgwork.adapters._task_fixtures")
    result.assert_outcomes(passed=2)


@pytest.mark.asyncio
async def test_ignore_acks_and_link_error_runs_the_errback(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        ignoring.delay()
        broken.apply_async(link_error=on_error.s())
        await bgwork.run_until_idle()
    assert sorted(r[0] for r in runs) == ["broken", "ignoring", "on_error"]
    assert "bad invoice" in next(r[1] for r in runs if r[0] == "on_error")
    stats = bgwork.queues.stats("celery")  # the errback ran inline in the worker (Celery's way)
    assert stats["acked"] == stats["published"] == 2


@pytest.mark.asyncio
async def test_the_transport_answers_kombus_channel_calls(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app), app.connection_for_write() as conn:
        channel = conn.default_channel
        assert not channel._has_queue("reports")
        channel.queue_declare("reports")
        assert channel._has_queue("reports") and "reports" in bgwork.queues.names()
        assert channel._size("reports") == 0 and channel._purge("reports") == 0
        with pytest.raises(bc.UnsupportedFeature, match="consuming"):
            channel._get("reports")


# -- user-style tests: written as for a real worker, `.get()` included --------------------------
@app.task(bind=True, max_retries=3)
def charge(self: Any, order: str) -> str:
    _log("charge", self.request.retries)
    if self.request.retries < 2:
        raise self.retry(countdown=30)
    return f"charged {order}"


@app.task(autoretry_for=(ConnectionError,), retry_backoff=10, retry_jitter=False, max_retries=4)
def fetch_rates(currency: str) -> float:
    _log("fetch_rates", currency)
    if len([r for r in runs if r[0] == "fetch_rates"]) < 3:
        raise ConnectionError("rates API down")
    return 1.25


@app.task(autoretry_for=(ConnectionError,), max_retries=2, default_retry_delay=5)
def never_up() -> None:
    _log("never_up", None)
    raise ConnectionError("down for good")


@app.task(acks_late=True, reject_on_worker_lost=True)
def book(seat: str) -> str:
    _log("book", seat)
    bc.call(bg.current().kv.set("seats", seat, "booked"))
    return seat


def test_user_retry_then_get(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        assert charge.delay("o-1").get(timeout=300) == "charged o-1"
    assert [r[2] for r in runs] == [0.0, 30.0, 60.0]


def test_user_countdown_then_get(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = remind.apply_async(("ana",), countdown=600)
        assert result.get() == "ana"
    assert bgwork.clock.monotonic() == 600


def test_user_get_times_out_on_virtual_time(bgwork: bg.Simulation) -> None:
    from celery.exceptions import TimeoutError as CeleryTimeout

    with bc.install(bgwork, app):
        result = remind.apply_async(("bo",), countdown=600)
        with pytest.raises(CeleryTimeout):
            result.get(timeout=10)
        assert bgwork.clock.monotonic() == 10  # virtual seconds; no real wait
        assert result.get() == "bo"


def test_user_autoretry_with_backoff(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        assert fetch_rates.delay("EUR").get(timeout=120) == 1.25
    assert [r[2] for r in runs] == [0.0, 10.0, 30.0]  # retry_backoff=10: 10 s, then 20 s


def test_user_autoretry_gives_up(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = never_up.delay()
        with pytest.raises(ConnectionError, match="down for good"):
            result.get()
    assert len(runs) == 3 and result.state == "FAILURE"


def test_user_failure_propagates_through_get(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = broken.delay()
        with pytest.raises(ValueError, match="bad invoice"):
            result.get()
        assert result.get(propagate=False).args == ("bad invoice",)


def test_user_acks_late_crash_is_redelivered(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("celery", at="kv.set")
    with bc.install(bgwork, app):
        assert book.delay("12A").get() == "12A"
    assert [r[2] for r in runs] == [0.0, 0.0]  # reject_on_worker_lost: requeued at once
    assert bgwork.kv.items("seats") == {"12A": "booked"}


def test_user_chain_get(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        assert chain(add.s(1, 2), add.s(10), add.s(100)).delay().get() == 113


def test_user_group_get(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        assert group(add.s(i, i) for i in range(4)).delay().get() == [0, 2, 4, 6]


def test_user_several_results_in_order(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        late = remind.apply_async(("late",), countdown=50)
        soon = remind.apply_async(("soon",), countdown=5)
        assert soon.get() == "soon" and bgwork.clock.monotonic() == 5
        assert late.get() == "late" and bgwork.clock.monotonic() == 50


def test_user_received_signal_and_log(bgwork: bg.Simulation, caplog: pytest.LogCaptureFixture) -> None:
    from celery.signals import task_received

    seen: list[str] = []

    def on_received(sender: Any, request: Any, **kwargs: Any) -> None:
        seen.append(request.name)

    task_received.connect(on_received)
    caplog.set_level("INFO", logger="celery.worker.strategy")
    try:
        with bc.install(bgwork, app):
            result = add.delay(2, 2)
            assert result.get() == 4
    finally:
        task_received.disconnect(on_received)
    assert seen == [add.name]
    assert f"Task {add.name}[{result.id}] received" in caplog.text


def test_user_revoke_discards_the_task_as_a_worker_does(bgwork: bg.Simulation) -> None:
    from celery.exceptions import TaskRevokedError
    from celery.signals import task_revoked

    revoked: list[str] = []

    def on_revoked(sender: Any, request: Any, **kwargs: Any) -> None:
        revoked.append(request.id)

    task_revoked.connect(on_revoked)
    try:
        with bc.install(bgwork, app):
            result = remind.apply_async(("cy",), countdown=60)
            result.revoke()  # while its ETA holds it: it never runs
            with pytest.raises(TaskRevokedError):
                result.get()
            assert result.status == "REVOKED"
            assert bgwork.queues.stats("celery")["acked"] == 1  # discarded: acked, not retried
            other = remind.delay("dee")
            assert other.get() == "dee"  # only the revoked id is discarded
    finally:
        task_revoked.disconnect(on_revoked)
    assert revoked == [result.id]
    assert "remind" not in [r[0] for r in runs if r[1] == "cy"]


def test_user_revoke_by_stamped_headers(bgwork: bg.Simulation) -> None:
    from celery.canvas import StampingVisitor
    from celery.exceptions import TaskRevokedError

    class Stamp(StampingVisitor):
        def __init__(self, value: str) -> None:
            self.value = value

        def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
            return {"monitoring_id": self.value}

    with bc.install(bgwork, app):
        app.control.revoke_by_stamped_headers({"monitoring_id": ["m-1"]})
        for value, revoked in (("m-1", True), ("m-2", False)):
            sig = remind.si(value)
            sig.stamp(visitor=Stamp(value))
            result = sig.apply_async()
            if revoked:
                with pytest.raises(TaskRevokedError):
                    result.get()
            else:
                assert result.get() == "m-2"


def test_user_remote_control_with_replies(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        assert app.control.ping(timeout=1) == [{bc.HOSTNAME: {"ok": "pong"}}]
        assert bgwork.clock.monotonic() == 1  # the client waits its timeout for more replies
        registered = app.control.inspect(timeout=1).registered()
        assert add.name in registered[bc.HOSTNAME]
        assert app.control.inspect(timeout=1).active() == {bc.HOSTNAME: []}
        reply = app.control.revoke("some-id", reply=True, timeout=1)
        assert reply == [{bc.HOSTNAME: {"ok": "tasks {'some-id'} flagged as revoked"}}]


def test_user_unsupported_remote_control_raises_naming_it(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        with pytest.raises(bc.UnsupportedFeature, match="'shutdown'"):
            app.control.shutdown()
        with pytest.raises(bc.UnsupportedFeature, match=r"revoke\(terminate=True\)"):
            app.control.revoke("some-id", terminate=True)


def test_worker_state_is_celerys_and_fresh_for_each_install(bgwork: bg.Simulation) -> None:
    from celery.worker import state as worker_state

    worker_state.revoked.add("left-by-someone")
    with bc.install(bgwork, app):
        assert "left-by-someone" not in worker_state.revoked  # ids restart in every simulation
        result = add.delay(1, 2)
        assert result.get() == 3
        assert result.id in worker_state.successful_requests
        assert not worker_state.active_requests
    assert "left-by-someone" in worker_state.revoked  # put back
    assert result.id not in worker_state.successful_requests
    worker_state.revoked.discard("left-by-someone")


@pytest.fixture
def logging_restored() -> Any:
    """``start_worker`` sets up Celery's logging (it hijacks the root logger) before the
    worker is refused: put every logger back as it was, so later tests' ``caplog`` works."""
    import logging

    loggers = [logging.getLogger(), *(v for v in logging.Logger.manager.loggerDict.values()
                                      if isinstance(v, logging.Logger))]
    saved = [(lg, lg.level, lg.disabled, lg.propagate, list(lg.handlers)) for lg in loggers]
    disable = logging.root.manager.disable
    yield
    logging.disable(disable)
    for lg, level, disabled, propagate, handlers in saved:
        lg.setLevel(level)
        lg.disabled, lg.propagate, lg.handlers = disabled, propagate, handlers
    for v in logging.Logger.manager.loggerDict.values():  # loggers made by the worker's set-up
        if isinstance(v, logging.Logger) and all(v is not s[0] for s in saved):
            v.disabled = False


@pytest.mark.usefixtures("logging_restored")
def test_a_real_worker_on_bgwork_fails_at_once(bgwork: bg.Simulation) -> None:
    from celery.contrib.testing.worker import start_worker

    with (bc.install(bgwork, app), pytest.raises(bc.UnsupportedFeature, match="real Celery worker"),
          start_worker(app, perform_ping_check=False, shutdown_timeout=5)):
        pass  # never reached: it used to wait forever for a worker that could not start
