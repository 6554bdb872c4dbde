"""DESIGN §10 as a user reads it: users' real clients on the simulation (adapters on main)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_bgwork as bg
from pytest_bgwork import adapters


def test_adapters_are_not_imported_at_plugin_start_up() -> None:
    names = "('celery', 'taskiq', 'dramatiq', 'boto3', 'aiobotocore', 'agentuity', 'alienplatform')"
    code = f"import sys, pytest_bgwork.plugin; print(sorted(m for m in {names} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- celery ---------------------------------------------------------------------------------------


def test_celery_install_runs_unmodified_tasks_at_least_once() -> None:
    from celery import Celery

    app = Celery("shop")
    sim = bg.Simulation(seed=3)
    calls: list[str] = []

    @app.task(acks_late=True)
    def send_receipt(order: str) -> str:
        calls.append(order)
        return f"sent {order}"

    async def main() -> None:
        with adapters.celery.install(sim, app):
            send_receipt.delay("o1")
            await sim.run_until_idle()

    sim.run(main())
    assert calls == ["o1"]
    bg.assert_nothing_lost(sim)


def test_celery_retry_countdown_on_virtual_time() -> None:
    from celery import Celery

    app = Celery("shop")
    sim = bg.Simulation(seed=3)
    at: list[float] = []

    @app.task(bind=True, max_retries=3)
    def flaky(self, order: str) -> None:  # type: ignore[no-untyped-def]
        at.append(sim.clock.monotonic())
        if len(at) < 3:
            raise self.retry(countdown=600)

    async def main() -> None:
        with adapters.celery.install(sim, app):
            flaky.delay("o1")
            await sim.run_until_idle()

    sim.run(main())
    assert len(at) == 3
    assert at[1] - at[0] == pytest.approx(600, abs=1)


def test_bg_celery_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from celery import Celery

        app = Celery("shop")
        done = []

        @app.task
        def job(n):
            done.append(n)

        @pytest.fixture
        def celery_app():
            return app

        @pytest.mark.asyncio
        async def test_job(bgwork, bg_celery):
            job.delay(1)
            await bgwork.run_until_idle()
            assert done == [1]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


# -- taskiq ---------------------------------------------------------------------------------------


def test_taskiq_sim_broker() -> None:
    sim = bg.Simulation(seed=1)
    broker = adapters.taskiq.SimBroker(sim)
    done: list[int] = []

    @broker.task
    async def add(a: int, b: int) -> int:
        done.append(a + b)
        return a + b

    async def main() -> int:
        await broker.startup()
        task = await add.kiq(2, 3)
        await sim.run_until_idle()
        result = await task.wait_result()
        await broker.shutdown()
        return int(result.return_value)

    assert sim.run(main()) == 5
    assert done == [5]


# -- dramatiq -------------------------------------------------------------------------------------


def test_dramatiq_sim_broker_retries_on_virtual_time() -> None:
    import dramatiq

    sim = bg.Simulation(seed=1)
    broker = adapters.dramatiq.SimBroker(sim)
    dramatiq.set_broker(broker)
    at: list[float] = []

    @dramatiq.actor(max_retries=2, min_backoff=1000, max_backoff=1000)
    def flaky(n: int) -> None:
        at.append(sim.clock.monotonic())
        if len(at) < 2:
            raise RuntimeError("first try fails")

    async def main() -> None:
        flaky.send(1)
        await sim.run_until_idle()

    sim.run(main())
    assert len(at) == 2
    assert at[1] > at[0]
