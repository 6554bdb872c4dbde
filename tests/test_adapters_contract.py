"""Users' real clients on the simulation (docs/adapters/), as a user reads the docs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from fastapi import BackgroundTasks, FastAPI

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


# -- agentuity: the real SDK's KeyValueStore, its HTTP API answered on any base URL --------------


def test_agentuity_install_backs_the_sdk_with_sim_kv() -> None:
    from agentuity import KeyValueStore
    from opentelemetry import trace

    sim = bg.Simulation(seed=1)
    seen: list[object] = []

    async def main() -> None:
        kv = KeyValueStore("https://agentuity.ai", "sk_test", trace.get_tracer("acceptance"))
        await kv.set("report-status", "job-1", {"kind": "done"})
        r = await kv.get("report-status", "job-1")
        seen.append((r.exists, await r.data.json()))

    with adapters.agentuity.install(sim):
        sim.run(main())
    assert seen == [(True, {"kind": "done"})]
    bg.assert_status_terminal(sim, "report-status", field="kind", terminal={"done", "failed"})


def test_agentuity_faults_reach_the_sdk() -> None:
    from agentuity import KeyValueStore
    from opentelemetry import trace

    sim = bg.Simulation(seed=1)
    sim.faults.fail("kv.set", on_call=1, error=ConnectionError("kv down"))
    failed: list[bool] = []

    async def main() -> None:
        kv = KeyValueStore("http://localhost:3500/sdk", "sk_test", trace.get_tracer("acceptance"))
        try:
            await kv.set("report-status", "job-1", {"kind": "done"})
        except Exception:  # whatever the SDK raises for a failed call
            failed.append(True)

    with adapters.agentuity.install(sim):
        sim.run(main())
    assert failed == [True]
    assert not sim.kv.items("report-status")


def test_bg_agentuity_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from agentuity import KeyValueStore
        from opentelemetry import trace

        @pytest.mark.asyncio
        async def test_status(bg_agentuity):
            kv = KeyValueStore("https://agentuity.ai", "sk", trace.get_tracer("t"))
            await kv.set("status", "j1", {"kind": "done"})
            assert bg_agentuity.kv.items("status") == {"j1": {"kind": "done"}}
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- alien: the real alienplatform Kv and Queue on the simulation ----------------------------------


def test_alien_install_kv_and_queue() -> None:
    import alienplatform

    sim = bg.Simulation(seed=1)
    seen: list[object] = []

    async def main() -> None:
        with adapters.alien.install(sim):
            status = alienplatform.kv("report-status")
            await status.put("job-1", b'{"kind": "done"}')
            entry = await status.get("job-1")
            seen.append(entry.value)
            jobs = alienplatform.queue("report-jobs")
            await jobs.send({"job": "job-1"})
            seen.append(sim.queues.stats("report-jobs"))

    sim.run(main())
    assert seen[0] == b'{"kind": "done"}'
    assert sim.kv.items("report-status") == {"job-1": {"kind": "done"}}


def test_bg_alien_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import alienplatform

        @pytest.mark.asyncio
        async def test_kv(bg_alien):
            status = alienplatform.kv("status")
            await status.put("j1", b"x")
            assert (await status.get("j1")).value == b"x"
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- agentflow: 10xgraph's real BackgroundTaskManager, loaded on 3.11 ----------------------------


def test_agentflow_real_manager_class_runs_on_the_simulation() -> None:
    Manager = adapters.agentflow.real_manager_class()
    assert Manager.__name__ == "BackgroundTaskManager"
    assert Manager is not bg.BackgroundTaskManager
    sim = bg.Simulation(seed=1)
    done: list[float] = []

    async def job() -> None:
        await asyncio.sleep(600)
        done.append(sim.clock.monotonic())

    async def main() -> None:
        with adapters.agentflow.install(sim):
            m = Manager()
            m.create_task(job(), name="job")
            await m.wait_for_all()

    real = time.perf_counter()
    sim.run(main())
    assert done == [pytest.approx(600)]
    assert time.perf_counter() - real < 60


# -- Starlette/FastAPI BackgroundTasks: the response returns before the tasks ----------------------


def test_asgi_transport_returns_before_background_tasks() -> None:
    import httpx

    app = FastAPI()
    sent: list[float] = []
    sim = bg.Simulation(seed=1)

    async def send_email(order: str) -> None:
        await asyncio.sleep(30)
        sent.append(sim.clock.monotonic())

    @app.post("/checkout")
    async def checkout(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(send_email, "o1")
        return {"status": "ok"}

    async def main() -> tuple[int, float]:
        t0 = sim.clock.monotonic()
        async with httpx.AsyncClient(transport=adapters.asgi.transport(sim, app), base_url="http://app") as client:
            r = await client.post("/checkout")
        answered = sim.clock.monotonic() - t0
        assert not sent  # the response came back before the email
        await sim.runtime.drain()
        return r.status_code, answered

    status, answered = sim.run(main())
    assert status == 200 and answered < 30
    assert len(sent) == 1
    bg.assert_drained(sim)


def test_asgi_background_task_is_fault_point_task_func() -> None:
    import httpx

    app = FastAPI()
    sim = bg.Simulation(seed=1)

    async def send_email() -> None:
        pass

    @app.post("/checkout")
    async def checkout(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(send_email)
        return {"status": "ok"}

    sim.faults.fail("task.send_email", on_call=1, error=RuntimeError("smtp down"))

    async def main() -> int:
        async with httpx.AsyncClient(transport=adapters.asgi.transport(sim, app), base_url="http://app") as client:
            r = await client.post("/checkout")
        await sim.runtime.drain()
        return r.status_code

    assert sim.run(main()) == 200  # the failure never reaches the response
    assert [str(e.exception) for e in sim.runtime.errors] == ["smtp down"]  # recorded at the point
    bg.assert_no_task_errors(sim)  # an injected fault's consequence, not an error of the app's code


# -- boto3 / aiobotocore SQS on sim.queues ------------------------------------------------------


def test_sqs_install_boto3_on_sim_queues() -> None:
    import boto3

    sim = bg.Simulation(seed=1)

    async def main() -> list[str]:
        sqs = boto3.client("sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        url = sqs.create_queue(QueueName="report-jobs")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody='{"job": "j1"}')
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return [m["Body"] for m in got]

    with adapters.sqs.install(sim):
        assert sim.run(main()) == ['{"job": "j1"}']
    bg.assert_nothing_lost(sim)


def test_bg_sqs_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import boto3

        def test_send(bgwork, bg_sqs):
            async def main():
                sqs = boto3.client("sqs", region_name="us-east-1")
                url = sqs.create_queue(QueueName="jobs")["QueueUrl"]
                sqs.send_message(QueueUrl=url, MessageBody="hi")
            bgwork.run(main())
            assert len(bgwork.queues.messages("jobs")) == 1

        def test_yields_the_simulation(bgwork, bg_sqs):
            from pytest_bgwork import adapters
            assert bg_sqs is bgwork  # like bg_agentuity and bg_alien
            assert adapters.sqs.backend(bg_sqs).sim is bgwork  # the backend stays reachable
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_simulation_run_imports_no_adapter_sdk() -> None:
    code = (
        "import sys, asyncio, pytest_bgwork as bg\n"
        "from pytest_bgwork import adapters\n"
        "bg.Simulation(seed=0).run(asyncio.sleep(1))\n"
        "print(sorted(m for m in ('celery', 'taskiq', 'dramatiq', 'boto3', 'fastapi', 'alienplatform', 'hypothesis')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_adapter_raises_one_not_simulated_error() -> None:
    from pytest_bgwork import adapters

    assert adapters.celery.UnsupportedFeature is bg.UnsupportedFeature
    assert adapters.dramatiq.UnsupportedFeature is bg.UnsupportedFeature
    assert adapters.sqs.UnsupportedOperation is bg.UnsupportedFeature
    assert adapters.agentuity.NotSimulated is bg.UnsupportedFeature
