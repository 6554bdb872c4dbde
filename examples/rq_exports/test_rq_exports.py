"""The RQ exports service on the simulation (bg_rq): RQ's real SimpleWorker, its Redis simulated.

The fixed job leaves every export ``done``; the first version is caught leaving one stuck
when a job is cut off after taking its lock: by a planted crash and under
``--bgwork-chaos=crash``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from rq import Queue

import pytest_bgwork as bg
from pytest_bgwork import adapters
from rq_exports import app

IDS = ["e1", "e2", "e3"]


@pytest.fixture(autouse=True)
def _bucket() -> None:
    app.BUCKET.clear()


def exports_done(sim: bg.Simulation) -> None:
    """Every export with a status is done."""
    __tracebackhide__ = True
    adapters.redis.assert_status_terminal(sim, "export:*", field="state", terminal={"done"})


def run_exports(sim: bg.Simulation, job: Callable[[str], Any], ids: list[str] = IDS) -> None:
    queue = Queue(connection=redis.Redis.from_url(app.REDIS_URL))
    for export_id in ids:
        app.request_export(queue, export_id, job)
    adapters.rq.work(sim, [queue])


def test_every_export_ends_done(bg_rq: bg.Simulation) -> None:
    run_exports(bg_rq, app.build_export)
    exports_done(bg_rq)
    assert set(app.BUCKET) == set(IDS)
    assert adapters.redis.snapshot(bg_rq, "lock:*") == {}


@pytest.mark.parametrize("job", [app.build_export, app.build_export_buggy])
def test_a_job_cut_off_with_the_lock_held(bg_rq: bg.Simulation, job: Callable[[str], Any]) -> None:
    bg_rq.faults.crash("rq.default", at="redis.hset", on_call=1)  # dies marking it running
    run_exports(bg_rq, job, ["e1"])
    if job is app.build_export_buggy:
        with pytest.raises(bg.CheckFailed, match="export:e1: state='queued'"):
            exports_done(bg_rq)
        return
    exports_done(bg_rq)
    assert app.BUCKET == {"e1": 1}  # run again once the lock and RQ's started entry lapsed
