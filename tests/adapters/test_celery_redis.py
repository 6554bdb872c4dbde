"""Celery with a ``redis://`` result backend: Celery's own Redis backend on ``adapters.redis``."""

from __future__ import annotations

import time
from time import sleep
from typing import Any

import pytest
from celery import Celery
from celery.exceptions import Ignore
from celery.exceptions import TimeoutError as CeleryTimeout

import pytest_bgwork as bg
from pytest_bgwork.adapters import celery as bc

app = Celery("redis_results", set_as_current=False)
app.conf.update(result_backend="redis://localhost:6379/0", broker_url="pyamqp://")
kv_app = Celery("kv_results", set_as_current=False)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def slow() -> str:
    time.sleep(10)  # ten virtual seconds: the body waits, it does not work
    return "slept"


@app.task(bind=True)
def ignored(self: Any) -> None:
    raise Ignore()


@app.task
def echo(message: str) -> None:
    import redis

    redis.Redis(host="localhost", port=6379).rpush("echo", message)


@app.task(acks_late=True, reject_on_worker_lost=True)
def record(order: str) -> str:
    import redis

    redis.Redis().rpush("orders", order)  # an unmodified body: a redis-py call, a fault point
    return order


@app.task
def nap(seconds: float) -> float:
    sleep(seconds)  # `from time import sleep` at import: still virtual while installed
    return bg.current().clock.monotonic()


def test_a_redis_backend_app_keeps_celerys_redis_backend(bgwork: bg.Simulation) -> None:
    from celery.backends.redis import RedisBackend

    with bc.install(bgwork, app) as worker:
        assert worker.results == "redis"
        assert isinstance(app.backend, RedisBackend)
        result = add.delay(2, 3)
        channels = app.backend.client.execute_command("PUBSUB CHANNELS")
        assert channels == [f"celery-task-meta-{result.id}".encode()]  # the result subscription
        assert result.get(timeout=5) == 5
        assert app.backend.client.execute_command("PUBSUB CHANNELS") == []  # get() ended it
    events = [(e.service, e.op) for e in bgwork.history.events]
    assert ("redis", "setex") in events and ("redis", "publish") in events


def test_a_sync_get_waits_on_virtual_time(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = slow.delay()
        with pytest.raises(CeleryTimeout):
            result.get(timeout=5)
        assert bgwork.clock.monotonic() == pytest.approx(5, abs=1)
        assert result.get() == "slept"
        assert bgwork.clock.monotonic() == 10


def test_a_get_nothing_will_finish_raises_instead_of_waiting_forever(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = ignored.delay()  # Ignore: no state is ever stored
        with pytest.raises(bc.ResultNotReady, match="idle"):
            result.get()


@pytest.mark.asyncio
async def test_get_on_the_loop_raises_instead_of_blocking(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        result = add.delay(1, 1)
        with pytest.raises(bc.ResultNotReady, match="blocking"):
            result.get()
        await bgwork.run_until_idle()
        assert result.get() == 2


def test_task_bodies_and_the_test_share_the_simulated_server(bgwork: bg.Simulation) -> None:
    import redis

    with bc.install(bgwork, app):
        echo.delay("hello").get(timeout=5)
        assert redis.Redis().lrange("echo", 0, -1) == [b"hello"]


def test_results_mode_is_chosen_and_checked(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, kv_app) as worker:
        assert worker.results == "kv"
    with bc.install(bgwork, app, results="kv") as worker:
        assert worker.results == "kv"
        assert type(app.backend).__name__ == "BgworkBackend"  # results in sim.kv
    with (pytest.raises(ValueError, match=r"results='redis'.*not a redis:// URL"),
          bc.install(bgwork, kv_app, results="redis")):
        pass
    with (pytest.raises(ValueError, match="'auto', 'kv' or 'redis'"),
          bc.install(bgwork, app, results="memcache")):
        pass


def test_users_redis_backend_suite_runs_as_written(pytester: pytest.Pytester) -> None:
    """A user's test file, written for a real worker and Redis, runs on the simulation."""
    pytester.makepyfile(
        """
        import time

        import pytest
        import redis
        from celery import Celery

        app = Celery("shop", broker="pyamqp://", backend="redis://localhost:6379/1",
                     set_as_current=False)

        @app.task(bind=True, max_retries=3)
        def charge(self, order):
            r = redis.Redis(host="localhost", port=6379, db=1)
            r.incr(f"attempts:{order}")
            if self.request.retries < 2:
                raise self.retry(countdown=30)
            return f"charged {order}"

        @pytest.fixture
        def celery_app():
            return app

        def test_charge(bgwork, bg_celery):
            result = charge.delay("o-1")
            assert result.get(timeout=120) == "charged o-1"
            assert redis.Redis(port=6379, db=1).get("attempts:o-1") == b"3"
            assert time.monotonic() == 60.0
        """
    )
    result = pytester.runpytest("-p", "pytest_bgwork.adapters._task_fixtures")
    result.assert_outcomes(passed=1)


def test_a_crash_fires_inside_an_unmodified_task_body_at_its_redis_call(bgwork: bg.Simulation) -> None:
    import redis

    bgwork.faults.crash("celery", at="redis.rpush")
    with bc.install(bgwork, app):
        assert record.delay("o-7").get(timeout=7200) == "o-7"
        assert redis.Redis().lrange("orders", 0, -1) == [b"o-7"]  # the first run died before it
    crashed = bgwork.history.filter("queue", "crashed")
    assert len(crashed) == 1 and bgwork.queues.stats("celery")["redelivered"] == 1


def test_from_time_import_sleep_in_a_task_module_is_virtual(bgwork: bg.Simulation) -> None:
    with bc.install(bgwork, app):
        assert nap.delay(30).get(timeout=60) == 30.0
        assert type(globals()["sleep"]) is not type(len)  # rebound for the block
    assert type(globals()["sleep"]) is type(len)  # the C function again


def test_concurrency_makes_tasks_wait_for_a_pool_process_and_expire(bgwork: bg.Simulation) -> None:
    from celery.exceptions import TaskRevokedError

    with bc.install(bgwork, app, concurrency=1):
        busy = [slow.delay() for _ in range(2)]  # 20 virtual seconds of work for one process
        late = add.apply_async((1, 1), expires=5)
        with pytest.raises(TaskRevokedError):
            late.get(timeout=60)
        assert [r.get() for r in busy] == ["slept", "slept"]
        assert bgwork.clock.monotonic() == 20
    with (pytest.raises(ValueError, match=r"concurrency=\.\.\.\): expected a whole number >= 1"),
          bc.install(bgwork, app, concurrency=0)):
        pass


@app.task
def total(values: list[int]) -> int:
    return sum(values)


def test_chords_run_on_celerys_redis_backend(bgwork: bg.Simulation) -> None:
    from celery import chord

    with bc.install(bgwork, app):
        result = chord([add.s(i, i) for i in range(3)])(total.s())
        assert result.get(timeout=10) == 6


@pytest.mark.timeout(30)
def test_an_unsubscribe_while_the_server_is_busy_waits_for_the_loop(bgwork: bg.Simulation) -> None:
    """``AsyncResult.__del__`` (the garbage collector) may run inside another redis call,
    which holds the simulated server's lock: its unsubscribe is put off, never deadlocked."""
    from celery.result import AsyncResult

    with bc.install(bgwork, app) as worker:
        backend = app.backend
        pending = AsyncResult("some-task", app=app)
        backend.add_pending_result(pending)  # subscribes to its channel
        channels = [b"celery-task-meta-some-task"]
        assert backend.client.execute_command("PUBSUB CHANNELS") == channels
        (server,) = worker.redis_servers()
        with server.lock:  # as inside a command of another client
            backend.on_result_fulfilled(pending)
        assert backend.client.execute_command("PUBSUB CHANNELS") == channels  # put off
        time.sleep(1)  # the loop runs
        assert backend.client.execute_command("PUBSUB CHANNELS") == []


def test_a_result_the_cycle_collector_drops_leaves_the_history_alone(bgwork: bg.Simulation) -> None:
    """Which results the collector frees, and when, is not the code's to decide: their
    unsubscribes are left out, so the same seed gives the same history."""
    import gc

    from celery.result import AsyncResult

    with bc.install(bgwork, app):
        backend = app.backend
        dropped = AsyncResult("dropped-task", app=app)
        backend.add_pending_result(dropped, weak=True)
        dropped.cycle = dropped  # type: ignore[attr-defined]  # only the cycle collector frees it
        del dropped
        before = len(bgwork.history)
        gc.collect()
        assert len(bgwork.history) == before  # no redis.unsubscribe at the collector's moment
        assert backend.client.execute_command("PUBSUB CHANNELS") == [b"celery-task-meta-dropped-task"]
