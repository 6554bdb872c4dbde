"""The RQ exports service on the simulation (bg_rq): RQ's real SimpleWorker, its Redis simulated.

The worker is a pull consumer the test owns: ``sim.workers.start`` runs
``adapters.rq.work`` (SimpleWorker bursts until no job is queued, scheduled or abandoned)
in a thread, under a supervisor that starts it again if it dies. The correct job
(``app.py``) and its twin (``buggy_app.py``) pass the same direct test with one clean
run; the twin is caught by a planted crash, by ``bg.explore`` with its default fault
plans, and by chaos ``duplicate`` (a job run twice mails twice), ``fail-first`` (its
first Redis call fails, the error is swallowed, the export stays ``queued``) and
``crash`` (a lock that never expires, or a second mail); the correct job stays green in
every mode.

Three modes cannot act on this example, by RQ's design: one SimpleWorker runs the jobs of
a queue one at a time, in the queue's FIFO order (RPUSH, then LPOP), and one job is
popped by one worker only. So ``overlap`` has no second copy to start, and ``reorder``
(a pause before each job) and ``latency`` shift every job alike without changing which
runs first; the twin's bugs need a failure or a re-run, which none of them causes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import hypothesis
import pytest
import redis
from rq import Queue

import pytest_bgwork as bg
from pytest_bgwork import adapters
from pytest_bgwork.checking import chaos
from rq_exports import app, buggy_app

USER = "ann"
IDS = ["e1", "e2", "e3"]
MAIL_PROVIDER_URL = "redis://mail-provider:6379/0"


class FakeMailProvider:
    """The mail provider: one email per Idempotency-Key, its memory a Redis of its own."""

    def send(self, to: str, export_id: str, *, idempotency_key: str | None) -> None:
        keys = redis.Redis.from_url(MAIL_PROVIDER_URL)
        if idempotency_key is None or keys.set(idempotency_key, to, nx=True):
            bg.current().effects.record("email", key=export_id)


@pytest.fixture(autouse=True)
def _start_up() -> None:
    app.BUCKET.clear()
    app.MAILER = FakeMailProvider()


app.MAILER = FakeMailProvider()  # for explore and chaos runs outside a test's fixtures


def queue() -> Queue:
    return Queue(connection=redis.Redis.from_url(app.REDIS_URL))


def request_all(impl: ModuleType) -> Queue:
    """The clients: each requests its export, retrying a request that failed (a 5xx)."""
    q = queue()
    for export_id in IDS:
        for _ in range(3):
            try:
                app.request_export(q, USER, export_id, impl.build_export)
                break
            except Exception:  # a Redis error: the client sees a 5xx
                continue
    return q


def start_worker(sim: bg.Simulation, q: Queue) -> None:
    """RQ's worker, supervised: a thread running SimpleWorker bursts, started again if it dies."""
    sim.workers.start("rq", lambda: asyncio.to_thread(adapters.rq.work, sim, [q]))


def scenario_for(impl: ModuleType) -> Callable[[bg.Simulation], Any]:
    async def scenario(sim: bg.Simulation) -> None:
        start_worker(sim, request_all(impl))  # after the requests: a burst returns on an empty queue
    return scenario


# -- the checks -----------------------------------------------------------------------------
def exports_done(sim: bg.Simulation) -> None:
    """Every export with a status is done, unless its job failed for good (RQ's failed-job
    registry, which an operator handles): a job that "succeeded" with its export not done
    lost it."""
    __tracebackhide__ = True
    jobs = adapters.redis.snapshot(sim, "rq:job:*", url=app.REDIS_URL)
    for key, fields in adapters.redis.snapshot(sim, "export:*", url=app.REDIS_URL).items():
        job = jobs.get(f"rq:job:build-{key.split(':', 1)[1]}", {})
        if fields.get("state") != "done" and job.get("status") != "failed":
            adapters.redis.assert_status_terminal(sim, "export:*", field="state", terminal={"done"},
                                                  url=app.REDIS_URL)


def one_email_each(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email", allow_empty=True)


CHECKS = [exports_done, one_email_each]


def failed_checks(sim: bg.Simulation) -> list[str]:
    failed = []
    for check in CHECKS:
        try:
            check(sim)
        except AssertionError:
            failed.append(check.__name__)
    return failed


# -- direct tests ---------------------------------------------------------------------------
@pytest.mark.bgwork(chaos="")  # one clean run each: both versions pass
@pytest.mark.parametrize("impl", [app, buggy_app], ids=["app", "buggy"])
def test_every_export_ends_done(bg_rq: bg.Simulation, impl: ModuleType) -> None:
    adapters.rq.work(bg_rq, [request_all(impl)])
    assert failed_checks(bg_rq) == []
    assert set(app.BUCKET) == set(IDS)
    assert adapters.redis.snapshot(bg_rq, "lock:*", url=app.REDIS_URL) == {}


@pytest.mark.bgwork(chaos="")
@pytest.mark.parametrize("impl", [app, buggy_app], ids=["app", "buggy"])
def test_a_job_cut_off_with_the_lock_held(bg_rq: bg.Simulation, impl: ModuleType) -> None:
    bg_rq.faults.crash("rq.default", at="redis.hset", on_call=1)  # dies marking e1 running
    adapters.rq.work(bg_rq, [request_all(impl)])
    if impl is buggy_app:
        with pytest.raises(bg.CheckFailed, match="export:e1: state='queued'"):
            exports_done(bg_rq)
        return
    exports_done(bg_rq)
    assert app.BUCKET["e1"] == 1  # run again once the lock and RQ's started entry lapsed


# -- explore, default settings --------------------------------------------------------------
@pytest.fixture
def rq_installed() -> Iterator[None]:
    """RQ patched for ``bg.explore``'s examples (each runs on its own simulation). Not the
    bg_rq fixture: its simulation would own this test's thread, where explore runs its own."""
    host = bg.Simulation(seed=0)
    try:
        with adapters.rq.install(host):
            yield
    finally:
        host.close()


#: 25 examples, not the default 200, and no shrinking for the twin: each RQ job is about
#: 60 Redis round trips (RQ's registries, executions, heartbeats), each a fault point and
#: a latency draw, and the worker's thread takes turns with the loop on each. 25 examples
#: take about 5 s; shrinking the twin's failure through its hundred latency draws took
#: minutes (it is found at example 11 on this seed, in about 4 s).
EXAMPLES = 25


def test_explore_finds_a_bug_of_the_twin(rq_installed: None) -> None:
    no_shrink = hypothesis.settings(max_examples=EXAMPLES, phases=[hypothesis.Phase.generate])
    with pytest.raises(bg.ExplorationFailed, match=r"exports_done|one_email_each"):
        bg.explore(scenario_for(buggy_app), checks=CHECKS, seed=1, settings=no_shrink)


def test_explore_leaves_the_app_green(rq_installed: None) -> None:
    bg.explore(scenario_for(app), checks=CHECKS, seed=1, max_examples=EXAMPLES)


# -- chaos, each mode alone -----------------------------------------------------------------
def run_under_chaos(impl: ModuleType, modes: str, seed: int) -> list[str]:
    """Run the scenario under chaos ``modes``; the checks that failed."""
    sim = bg.Simulation(seed=seed)
    chaos.apply(sim, modes)
    try:
        with adapters.rq.install(sim):
            async def main() -> None:
                await scenario_for(impl)(sim)
                await sim.run_until_idle()
            sim.run(main())
            return failed_checks(sim)
    finally:
        sim.close()


#: What each mode finds in the twin (the other three cannot act: see the module's docstring).
FOUND = {"duplicate": {"one_email_each"}, "fail-first": {"exports_done"},
         "crash": {"exports_done", "one_email_each"}}


@pytest.mark.parametrize("mode", sorted(FOUND))
def test_each_chaos_mode_finds_a_bug_of_the_twin(mode: str) -> None:
    found = [run_under_chaos(buggy_app, mode, seed) for seed in (1, 2, 3)]
    assert any(FOUND[mode] & set(f) for f in found), found


@pytest.mark.parametrize("mode", ["reorder", "latency", "overlap"])
def test_modes_that_cannot_act_on_one_fifo_worker(mode: str) -> None:
    assert run_under_chaos(buggy_app, mode, seed=1) == []


@pytest.mark.parametrize("modes", [*chaos.MODES, ",".join(chaos.MODES)])
def test_chaos_leaves_the_app_green(modes: str) -> None:
    assert run_under_chaos(app, modes, seed=1) == []
