"""adapters.rq: RQ's real SimpleWorker on the simulation's Redis, on virtual time."""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from rq import Queue, Retry
from rq.job import JobStatus

import pytest_bgwork as bg
from pytest_bgwork import adapters

runs: list[tuple[Any, ...]] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    runs.clear()


def add(a: int, b: int) -> int:
    runs.append(("add", a, b, time.monotonic()))
    return a + b


def flaky(name: str) -> str:
    runs.append((name, time.monotonic()))
    if len(runs) < 3:
        raise RuntimeError("the payment API is down")
    return name


def broken() -> None:
    raise ValueError("no such export")


def slow() -> str:
    time.sleep(100)
    return "late"


def write_status(export_id: str) -> str:
    r = redis.Redis()
    r.hset(f"export:{export_id}", "state", "running")
    r.hset(f"export:{export_id}", "state", "done")
    return export_id


def test_enqueue_runs_the_job_and_keeps_its_result(bg_rq: bg.Simulation) -> None:
    q = Queue(connection=redis.Redis())
    job = q.enqueue(add, 1, 2)
    assert job.id == "rq_job_1"  # ids from the simulation: same seed, same keys
    workers = adapters.rq.work(bg_rq, [q])
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == 3
    assert runs == [("add", 1, 2, 0.0)] and len(workers) == 1


def test_enqueue_in_runs_at_that_virtual_time(bg_rq: bg.Simulation) -> None:
    q = Queue(connection=redis.Redis())
    q.enqueue_in(timedelta(seconds=60), add, 3, 4)
    q.enqueue(add, 1, 1)
    later = q.enqueue_at(bg_rq.clock.now() + timedelta(hours=2), add, 5, 5)
    adapters.rq.work(bg_rq)
    assert runs == [("add", 1, 1, 0.0), ("add", 3, 4, 60.0), ("add", 5, 5, 7200.0)]
    assert later.return_value() == 10


def test_retry_intervals_run_on_virtual_time(bg_rq: bg.Simulation) -> None:
    q = Queue(connection=redis.Redis())
    job = q.enqueue(flaky, "charge", retry=Retry(max=3, interval=30))
    adapters.rq.work(bg_rq)
    assert runs == [("charge", 0.0), ("charge", 30.0), ("charge", 60.0)]
    assert job.get_status() == JobStatus.FINISHED


def test_the_failed_registry_holds_a_failing_job(bg_rq: bg.Simulation) -> None:
    q = Queue(connection=redis.Redis())
    job = q.enqueue(broken)
    adapters.rq.work(bg_rq)
    assert job.get_status() == JobStatus.FAILED
    assert q.failed_job_registry.get_job_ids() == [job.id]
    assert "ValueError: no such export" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]


def test_a_job_past_its_timeout_fails_when_it_returns(bg_rq: bg.Simulation) -> None:
    q = Queue(connection=redis.Redis())
    late = q.enqueue(slow, job_timeout=10)
    ok = q.enqueue(slow, job_timeout=200)
    adapters.rq.work(bg_rq)
    assert late.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in (late.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert ok.return_value() == "late"
    assert bg_rq.clock.monotonic() == 200.0  # each ran its 100 virtual s: no real wait


def test_a_crash_at_a_redis_fault_point_kills_the_worker_in_the_job(bg_rq: bg.Simulation) -> None:
    bg_rq.faults.crash("rq.default", at="redis.hset", on_call=2)  # dies after "running"
    r = redis.Redis()
    q = Queue(connection=r)
    dead = q.enqueue(write_status, "e1", job_timeout=30)
    after = q.enqueue(write_status, "e2")
    seen: list[tuple[Any, ...]] = []

    async def look() -> None:  # at 10 s, before the dead worker's entry lapses
        await asyncio.sleep(10)
        ar: Any = redis.asyncio.Redis()
        started = await ar.zrange(q.started_job_registry.key, 0, -1)  # "<job id>:<execution id>"
        seen.append((await ar.hget("export:e1", "state"), await ar.hget(dead.key, "status"),
                     [m.decode().split(":")[0] for m in started]))

    bg_rq.loop.create_task(look())
    workers = adapters.rq.work(bg_rq)
    assert len(workers) == 2  # the dead worker, then a restarted one ran e2
    assert seen == [(b"running", b"started", [dead.id])]  # left started: nothing recorded its end
    assert after.return_value() == "e2" and r.hget("export:e2", "state") == b"done"  # type: ignore[comparison-overlap]
    # RQ's clean-up finds it abandoned once its entry lapses (timeout + 60 s) and fails it
    assert dead.get_status() == JobStatus.FAILED and dead.id in q.failed_job_registry
    assert "AbandonedJobError" in (dead.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert r.hget("export:e1", "state") == b"running"  # type: ignore[comparison-overlap]
    crashed = [e for e in bg_rq.history if e.service == "rq" and e.op == "crashed"]
    assert [e.detail["job"] for e in crashed] == [dead.id]


def test_an_abandoned_job_with_retries_left_runs_again(bg_rq: bg.Simulation) -> None:
    bg_rq.faults.crash("rq.default", at="redis.hset", on_call=2)
    r = redis.Redis()
    q = Queue(connection=r)
    job = q.enqueue(write_status, "e1", job_timeout=30, retry=Retry(max=1))
    adapters.rq.work(bg_rq)
    assert job.get_status() == JobStatus.FINISHED
    assert r.hget("export:e1", "state") == b"done"  # type: ignore[comparison-overlap]
    assert bg_rq.clock.monotonic() >= 30  # not before the dead worker's entry lapsed


def test_work_needs_the_install(bgwork: bg.Simulation) -> None:
    with pytest.raises(bg.BgworkError, match="bg_rq fixture"):
        adapters.rq.work(bgwork)


@pytest.mark.bgwork(chaos="crash", seed=3)
def test_chaos_crash_kills_jobs_inside_their_body(bg_rq: bg.Simulation) -> None:
    r = redis.Redis()
    q = Queue(connection=r)
    jobs = [q.enqueue(write_status, f"e{i}") for i in range(8)]
    workers = adapters.rq.work(bg_rq)
    crashed = [e.detail["job"] for e in bg_rq.history if e.service == "rq" and e.op == "crashed"]
    assert crashed and len(workers) == len(crashed) + 1
    for job in jobs:  # a crashed job is found abandoned and failed; every other one finished
        status = job.get_status()
        assert status == (JobStatus.FAILED if job.id in crashed else JobStatus.FINISHED), job.id


def test_the_plugin_loads_without_importing_rq() -> None:
    code = ("import sys, pytest_bgwork.plugin\nfrom pytest_bgwork import adapters\n"
            "assert 'rq' not in sys.modules and 'pytest_bgwork.adapters.rq' not in sys.modules\n"
            "adapters.rq\nassert 'rq' in sys.modules\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ok"


def test_the_worker_uses_the_queues_redis(bg_rq: bg.Simulation) -> None:
    r = redis.Redis.from_url("redis://cache:6380/0")
    q = Queue("exports", connection=r)
    job = q.enqueue(add, 2, 2)
    workers = adapters.rq.work(bg_rq, [q])
    assert job.return_value() == 4
    assert adapters.redis.snapshot(bg_rq, "rq:worker:*", url="redis://localhost:6379/0") == {}
    assert workers[0].connection is r


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# imported here, once: pytester's in-process runs drop the modules a run imported, and a
# second run would otherwise pair a fresh redis-py with the adapter bound to the first
sys.path.insert(0, str(EXAMPLES))
try:
    importlib.import_module("rq_exports.test_rq_exports")
finally:
    sys.path.remove(str(EXAMPLES))

RQ_SUITE = """
    import pytest
    from rq_exports import app, buggy_app
    from rq_exports.test_rq_exports import FakeMailProvider, failed_checks, request_all
    from pytest_bgwork import adapters

    @pytest.mark.parametrize("n", range(4))
    @pytest.mark.parametrize("impl", [app, buggy_app], ids=["app", "buggy"])
    def test_rq_exports(bg_rq, impl, n):
        app.BUCKET.clear()
        app.MAILER = FakeMailProvider()
        adapters.rq.work(bg_rq, [request_all(impl)])
        assert failed_checks(bg_rq) == []
"""
MODES = ["duplicate", "fail-first", "reorder", "crash", "latency", "overlap",
         "duplicate,fail-first,reorder,crash,latency,overlap"]
#: The modes that catch the twin from the command line, and the check that says so;
#: reorder, latency and overlap cannot act on one FIFO worker (the example says why).
RQ_FOUND = {"duplicate": "one_email_each", "fail-first": "exports_done",
            "crash": "exports_done|one_email_each",
            "duplicate,fail-first,reorder,crash,latency,overlap": "exports_done|one_email_each"}


@pytest.mark.parametrize("mode", MODES)
def test_rq_exports_under_each_chaos_mode(pytester: pytest.Pytester, mode: str) -> None:
    """``pytest --bgwork-chaos=<mode>`` on the example's direct test: the correct job passes
    in every mode; the twin fails in each mode that can act on it, naming the check."""
    pytester.syspathinsert(EXAMPLES)
    pytester.makepyfile(RQ_SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={mode}", "-vv")
    out = result.stdout.str()
    assert not re.search(r"FAILED .*test_rq_exports\[app-", out), out[-3000:]
    if mode in RQ_FOUND:
        assert re.search(r"FAILED .*test_rq_exports\[buggy-\d\]", out), out[-3000:]
        assert re.search(rf"AssertionError: assert \[.*'({RQ_FOUND[mode]})'.*\] == \[\]", out), out[-3000:]
    else:
        result.assert_outcomes(passed=8)


@pytest.mark.asyncio
async def test_work_from_an_async_test_runs_in_a_thread_on_virtual_time(bg_rq: bg.Simulation) -> None:
    q = Queue(connection=redis.Redis())
    job = q.enqueue_in(timedelta(minutes=5), add, 2, 3)
    await asyncio.to_thread(adapters.rq.work, bg_rq, [q])
    assert job.return_value() == 5 and runs == [("add", 2, 3, 300.0)]


def test_bad_arguments_name_the_fix(bg_rq: bg.Simulation) -> None:
    with pytest.raises(ValueError, match=r"max_bursts=\): must be at least 1; got 0"):
        adapters.rq.work(bg_rq, max_bursts=0)
    with pytest.raises(ValueError, match="give at least one queue name"):
        adapters.rq.work(bg_rq, [])
    with pytest.raises(TypeError, match="sim must be a pytest_bgwork Simulation"), \
            adapters.rq.install("sim"):  # type: ignore[arg-type]
        pass


def test_work_leaves_pytests_signal_handlers_alone(bg_rq: bg.Simulation) -> None:
    import signal

    before = signal.getsignal(signal.SIGINT)
    Queue(connection=redis.Redis()).enqueue(add, 1, 1)
    adapters.rq.work(bg_rq)
    assert signal.getsignal(signal.SIGINT) is before and runs
