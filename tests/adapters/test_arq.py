"""adapters.arq: arq's real Worker and pool on the simulation's Redis, on virtual time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from arq import Retry, create_pool
from arq.connections import RedisSettings
from arq.cron import cron
from arq.jobs import JobStatus
from arq.worker import func

import pytest_bgwork as bg
from pytest_bgwork import adapters

runs: list[tuple[Any, ...]] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()


def now() -> float:
    return asyncio.get_running_loop().time()


async def record(ctx: dict[str, Any], name: str) -> str:
    runs.append((name, ctx["job_try"], now()))
    return name


async def flaky(ctx: dict[str, Any], name: str) -> str:
    runs.append((name, ctx["job_try"], now()))
    if ctx["job_try"] < 3:
        raise Retry(defer=30)
    return name


async def tick(ctx: dict[str, Any]) -> None:
    runs.append(("tick", ctx["job_try"], now()))


async def slow(ctx: dict[str, Any], name: str) -> str:
    runs.append((name, ctx["job_try"], now()))
    await asyncio.sleep(100)
    return name


async def write_status(ctx: dict[str, Any], export_id: str) -> str:
    r = ctx["redis"]
    runs.append((export_id, ctx["job_try"], now()))
    await r.hset(f"export:{export_id}", "state", "running")
    await r.hset(f"export:{export_id}", "state", "done")
    return export_id


@pytest.mark.asyncio
async def test_deferred_jobs_and_retries_run_on_virtual_time(bg_arq: bg.Simulation) -> None:
    pool = await create_pool(RedisSettings())
    await pool.enqueue_job("record", "now")
    await pool.enqueue_job("record", "later", _defer_by=60)
    await pool.enqueue_job("flaky", "retried")
    worker = adapters.arq.worker([record, flaky])
    await worker.async_run()
    assert runs == [("now", 1, 0.0), ("retried", 1, 0.0), ("retried", 2, 30.0),
                    ("later", 1, 60.0), ("retried", 3, 60.0)]
    assert (worker.jobs_complete, worker.jobs_retried, worker.jobs_failed) == (3, 2, 0)
    assert bg_arq.clock.monotonic() < 61  # polls every 0.5 virtual s; no real wait


@pytest.mark.asyncio
async def test_an_idle_worker_skips_the_polls_that_could_find_nothing(bg_arq: bg.Simulation) -> None:
    """A job deferred by an hour runs at 3600 s after a handful of polls, not 7,200; a job
    enqueued meanwhile by another client starts at the next poll of arq's 0.5 s grid."""
    pool = await create_pool(RedisSettings())
    await pool.enqueue_job("record", "later", _defer_by=3600)

    async def client() -> None:
        await asyncio.sleep(100.2)
        await (await create_pool(RedisSettings())).enqueue_job("record", "meanwhile")

    feeder = asyncio.create_task(client())
    await adapters.arq.worker([record]).async_run()
    await feeder
    assert runs == [("meanwhile", 1, 100.5), ("later", 1, 3600.0)]
    polls = bg_arq.history.count("redis", "zrangebyscore")
    assert polls < 10, f"{polls} polls"  # arq alone polls 7,200 times in that hour


@pytest.mark.asyncio
async def test_job_timeout_and_max_tries(bg_arq: bg.Simulation) -> None:
    pool = await create_pool(RedisSettings())
    job = await pool.enqueue_job("slow", "s1")
    assert job is not None
    worker = adapters.arq.worker([func(slow, timeout=10)])
    await worker.async_run()
    assert runs == [("s1", 1, 0.0)]
    assert worker.jobs_failed == 1
    info = await job.result_info()
    assert info is not None and isinstance(info.result, asyncio.TimeoutError)
    assert info.finish_time is not None and (info.finish_time - info.start_time).total_seconds() == 10

    runs.clear()
    flaky_job = await pool.enqueue_job("flaky", "f1")
    assert flaky_job is not None
    worker = adapters.arq.worker([func(flaky, max_tries=2)])
    await worker.async_run()
    assert [r[1] for r in runs] == [1, 2]  # the third try is refused: max_tries=2
    assert await flaky_job.status() == JobStatus.complete
    info = await flaky_job.result_info()
    assert info is not None and not info.success


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")  # arq's own close()
async def test_cron_jobs_fire_on_the_virtual_clock(bg_arq: bg.Simulation) -> None:
    worker = adapters.arq.worker(cron_jobs=[cron(tick, minute={0, 30}, second=0,
                                                 run_at_startup=False)],
                                 burst=False, functions=[], poll_delay=10)
    task = asyncio.create_task(worker.async_run())
    await asyncio.sleep(2 * 3600 + 30)
    await worker.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    start = bg_arq.clock.time() - now()  # the wall clock at loop time 0
    minutes = [time.gmtime(start + t).tm_min for _, _, t in runs]
    assert minutes == [30, 0, 30, 0]  # :00 and :30 of two virtual hours


@pytest.mark.asyncio
async def test_a_crash_inside_a_job_is_run_again_as_arq_does(bg_arq: bg.Simulation) -> None:
    bg_arq.faults.crash("arq.queue", at="redis.hset", on_call=2)  # dies after "running"
    pool = await create_pool(RedisSettings())
    await pool.enqueue_job("write_status", "e1")
    worker = adapters.arq.worker([func(write_status, timeout=60)])
    await worker.async_run()
    assert [r[:2] for r in runs] == [("e1", 1), ("e1", 2)]
    assert runs[1][2] == pytest.approx(70, abs=1)  # once its in-progress key lapsed (60 + 10 s)
    assert adapters.redis.snapshot(bg_arq, "export:*") == {"export:e1": {"state": "done"}}
    assert bg_arq.history.count("fault", "crash") == 1
    assert bg_arq.history.count("arq", "crashed") == 1


def test_worker_outside_install_names_the_fix() -> None:
    with pytest.raises(bg.BgworkError, match="bg_arq"):
        adapters.arq.worker([record])


def test_the_fixture_runs_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest
        from arq import create_pool
        from arq.connections import RedisSettings
        from pytest_bgwork import adapters

        done = []

        async def job(ctx, n):
            done.append((n, ctx["job_try"]))

        @pytest.mark.asyncio
        async def test_deferred(bg_arq):
            pool = await create_pool(RedisSettings(host="redis", port=6379))
            await pool.enqueue_job("job", 1, _defer_by=600)
            await adapters.arq.worker([job], redis_settings=RedisSettings(host="redis"),
                                      poll_delay=5).async_run()
            assert done == [(1, 1)]
            assert bg_arq.clock.monotonic() >= 600
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
