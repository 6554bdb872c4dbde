"""taskiq on the simulation: SimBroker delivers unmodified tasks at least once."""

from __future__ import annotations

from typing import Any

import pytest
from taskiq.middlewares import SmartRetryMiddleware

import pytest_bgwork as bg
from pytest_bgwork.adapters.taskiq import RESULTS_NS, SimBroker

#: Module level, as apps declare it: the simulation running the code is used.
broker = SimBroker().with_middlewares(
    SmartRetryMiddleware(default_retry_count=3, default_delay=10, use_jitter=True))
runs: list[tuple[str, Any, float]] = []


@pytest.fixture(autouse=True)
def _clear_runs() -> None:
    runs.clear()


def _log(name: str, value: Any) -> None:
    runs.append((name, value, bg.current().clock.monotonic()))


@broker.task
async def enrich(user: str) -> dict[str, str]:
    _log("enrich", user)
    await bg.current().kv.set("profiles", user, {"plan": "pro"})
    return {"user": user}


@broker.task(ack_type="when_received")
async def enrich_early_ack(user: str) -> None:
    _log("enrich_early_ack", user)
    await bg.current().kv.set("profiles", user, {"plan": "pro"})


@broker.task(retry_on_error=True)
async def flaky(user: str) -> str:
    _log("flaky", user)
    if len(runs) < 3:
        raise ConnectionError("enrichment API down")
    return user


@broker.task
def sync_task(x: int) -> int:
    _log("sync_task", x)
    return x + 1


@pytest.mark.asyncio
async def test_results_live_in_sim_kv_and_ids_are_deterministic(bgwork: bg.Simulation) -> None:
    await broker.startup()
    task = await enrich.kiq("ana")
    assert task.task_id == "taskiq_1"
    result = await task.wait_result(timeout=5)
    assert result.return_value == {"user": "ana"}
    assert bgwork.kv.items(RESULTS_NS)["taskiq_1"]["return_value"] == {"user": "ana"}


@pytest.mark.asyncio
async def test_the_delay_label_is_honoured_beyond_the_queue_cap(bgwork: bg.Simulation) -> None:
    await enrich.kicker().with_labels(delay=30).kiq("bo")
    await enrich.kicker().with_labels(delay=3600).kiq("cy")
    await bgwork.run_until_idle()
    assert [(r[1], r[2]) for r in runs] == [("bo", 30.0), ("cy", 3600.0)]


@pytest.mark.asyncio
async def test_default_ack_when_saved_redelivers_after_a_crash(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("taskiq", at="kv.set")
    task = await enrich.kiq("dee")
    await bgwork.run_until_idle()
    assert [r[2] for r in runs] == [0.0, 30.0]  # the visibility timeout, then again
    assert (await task.wait_result()).return_value == {"user": "dee"}


@pytest.mark.asyncio
async def test_ack_when_received_loses_the_job_on_a_crash(bgwork: bg.Simulation) -> None:
    bgwork.faults.crash("taskiq", at="kv.set")
    await enrich_early_ack.kiq("eve")
    await bgwork.run_until_idle()
    assert len(runs) == 1 and bgwork.kv.items("profiles") == {}
    assert bgwork.queues.stats("taskiq")["acked"] == 1


def test_smart_retry_jitter_comes_from_sim_choices() -> None:
    def delays(seed: int) -> list[float]:
        runs.clear()
        with bg.Simulation(seed=seed) as sim:
            async def main() -> None:
                await flaky.kiq("fay")
                await sim.run_until_idle()

            sim.run(main())
        return [r[2] for r in runs]

    first = delays(1)
    assert first == delays(1)
    assert first != delays(2)
    assert 10 <= first[1] < 11 and len(first) == 3


@pytest.mark.asyncio
async def test_errors_are_stored_and_faults_reach_async_tasks(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("kv.set", error=ConnectionError("kv down"))
    task = await enrich.kiq("gus")
    result = await task.wait_result()
    assert result.is_err and "kv down" in str(result.error)


@pytest.mark.asyncio
async def test_sync_tasks_run_inline_with_the_clock_held(bgwork: bg.Simulation) -> None:
    task = await sync_task.kiq(1)
    assert (await task.wait_result()).return_value == 2
    assert runs[0][2] == 0.0


@pytest.mark.asyncio
async def test_the_broker_does_not_listen(bgwork: bg.Simulation) -> None:
    with pytest.raises(RuntimeError, match="run_until_idle"):
        broker.listen()


@pytest.mark.asyncio
async def test_a_bound_broker_from_the_fixture(bgwork: bg.Simulation, bg_taskiq: SimBroker) -> None:
    @bg_taskiq.task
    async def ping() -> str:
        return "pong"

    assert bg_taskiq.sim is bgwork
    assert (await (await ping.kiq()).wait_result()).return_value == "pong"


@pytest.mark.asyncio
async def test_a_broker_wide_ack_type(bgwork: bg.Simulation) -> None:
    early = SimBroker(bgwork, queue="early", ack_type="when_received")

    @early.task
    async def write() -> None:
        _log("write", None)
        await bgwork.kv.set("profiles", "x", {})

    bgwork.faults.crash("early", at="kv.set")
    await write.kiq()
    await bgwork.run_until_idle()
    assert len(runs) == 1 and bgwork.queues.stats("early")["acked"] == 1  # acked, then lost


@pytest.mark.asyncio
async def test_several_brokers_share_one_simulation(bgwork: bg.Simulation) -> None:
    first, second = SimBroker(bgwork), SimBroker(bgwork)

    @first.task(task_name="first.hello")
    async def hello() -> str:
        return "first"

    @second.task(task_name="second.hello")
    async def hello2() -> str:
        return "second"

    a, b = await hello.kiq(), await hello2.kiq()
    assert (await a.wait_result(timeout=5)).return_value == "first"
    assert (await b.wait_result(timeout=5)).return_value == "second"
    assert bgwork.queues.stats("taskiq")["acked"] == 2  # one simulated queue, as one Redis list


@pytest.mark.asyncio
async def test_a_results_exception_keeps_its_type(bgwork: bg.Simulation) -> None:
    import pydantic

    class Invoice(pydantic.BaseModel):
        total: int

    @bg_broker.task
    async def parse(raw: str) -> int:
        return Invoice.model_validate_json(raw).total

    task = await parse.kiq('{"total": "many"}')
    result = await task.wait_result(timeout=5)
    assert isinstance(result.error, pydantic.ValidationError)  # not a plain Exception
    assert bgwork.kv.items(RESULTS_NS)[task.task_id]["is_err"] is True  # the record is still JSON


bg_broker = SimBroker()


def test_a_kick_on_a_foreign_loop_is_refused_naming_the_fix(bgwork: bg.Simulation) -> None:
    import asyncio

    from taskiq.exceptions import SendTaskError

    async def main() -> None:
        await enrich.kiq("hal")

    with pytest.raises(SendTaskError) as info:
        asyncio.run(main())  # a loop the simulation does not run: nothing would deliver it
    assert isinstance(info.value.__cause__, bg.NotRunning)
    assert "sim.run(main())" in str(info.value.__cause__)
