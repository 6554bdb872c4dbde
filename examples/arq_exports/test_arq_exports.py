"""The arq exports service on the simulation (bg_arq): arq's real Worker, its Redis simulated.

The fixed job leaves every export ``done``; the first version is caught leaving one stuck
when a job is cut off after taking its lock: by a planted crash and under
``--bgwork-chaos=crash``.
"""

from __future__ import annotations

from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings

import pytest_bgwork as bg
from arq_exports import app
from pytest_bgwork import adapters

IDS = ["e1", "e2", "e3"]
REDIS = RedisSettings(host="redis", port=6379)


@pytest.fixture(autouse=True)
def _bucket() -> None:
    app.BUCKET.clear()


def exports_done(sim: bg.Simulation) -> None:
    """Every export with a status is done (none when every request failed)."""
    __tracebackhide__ = True
    adapters.redis.assert_status_terminal(sim, "export:*", field="state", terminal={"done"},
                                          allow_empty=True)


async def run_exports(settings: Any, ids: list[str] = IDS) -> None:
    pool = await create_pool(REDIS)
    for export_id in ids:
        await app.request_export(pool, export_id)
    await adapters.arq.worker(settings.functions, redis_settings=REDIS).async_run()


@pytest.mark.asyncio
async def test_every_export_ends_done(bg_arq: bg.Simulation) -> None:
    await run_exports(app.WorkerSettings)
    exports_done(bg_arq)
    assert set(app.BUCKET) == set(IDS)
    assert adapters.redis.snapshot(bg_arq, "lock:*") == {}


@pytest.mark.asyncio
async def test_a_second_request_is_not_queued_twice(bg_arq: bg.Simulation) -> None:
    await run_exports(app.WorkerSettings, ["e1", "e1"])
    assert app.BUCKET == {"e1": 1}


@pytest.mark.asyncio
@pytest.mark.parametrize("settings", [app.WorkerSettings, app.BuggyWorkerSettings])
async def test_a_job_cut_off_with_the_lock_held(bg_arq: bg.Simulation, settings: Any) -> None:
    bg_arq.faults.crash("arq.queue", at="redis.hset", on_call=1)  # dies marking it running
    await run_exports(settings, ["e1"])
    if settings is app.BuggyWorkerSettings:
        with pytest.raises(bg.CheckFailed, match="export:e1: state='queued'"):
            exports_done(bg_arq)
        return
    exports_done(bg_arq)
    assert app.BUCKET == {"e1": 1}  # run again once the lock and arq's in-progress key lapsed
