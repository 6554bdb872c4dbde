"""``sim.workers``: pull workers the scenario owns, supervised like processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking import chaos

QUEUE = "jobs"


def pull_loop(sim: bg.Simulation, done: list[str], *, poll: float = 1.0,
              writes: int = 2) -> Callable[[], Coroutine[Any, Any, None]]:
    """A worker loop: receive, write ``writes`` statuses, delete; sleep ``poll`` when empty."""
    async def loop() -> None:
        while True:
            d = await sim.queues.receive(QUEUE)
            if d is None:
                await asyncio.sleep(poll)
                continue
            job = d.payload["id"]
            for i in range(writes):
                await sim.kv.set("status", job, f"step-{i + 1}")
            done.append(job)
            await d.ack()
    return loop


def ops(sim: bg.Simulation, service: str) -> list[tuple[str, dict[str, Any]]]:
    return [(e.op, e.detail) for e in sim.history.events if e.service == service]


async def publish(sim: bg.Simulation, n: int) -> None:
    for i in range(n):
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client saw an error (explore)
            await sim.queues.publish(QUEUE, {"id": f"job-{i}"})


def test_a_waiting_worker_does_not_keep_run_until_idle_busy() -> None:
    sim = bg.Simulation(seed=1)
    done: list[str] = []

    async def main() -> None:
        sim.queues.create(QUEUE)
        sim.workers.start("w", pull_loop(sim, done))
        await publish(sim, 3)
        await sim.run_until_idle()

    sim.run(main())
    assert done == ["job-0", "job-1", "job-2"]
    # returned as soon as the work was done, not after a week of polls
    assert sim.clock.monotonic() <= 1.0
    assert sim.close() is None
    assert sim.history.count("sim", "cancelled_at_teardown") == 0
    assert [op for op, _ in ops(sim, "worker")] == ["start", "stop"]


def test_a_crash_kills_the_worker_mid_job_its_message_comes_back_and_it_restarts() -> None:
    sim = bg.Simulation(seed=1)
    done: list[str] = []
    sim.faults.crash(QUEUE, at="kv.set", on_call=2)  # between the two writes of job-0

    async def main() -> None:
        sim.queues.create(QUEUE, visibility_timeout=30)
        sim.workers.start("w", pull_loop(sim, done))
        await publish(sim, 2)
        await sim.run_until_idle()

    sim.run(main())
    assert done == ["job-1", "job-0"]  # job-0 came back after its visibility timeout
    worker = sim.workers.get("w")
    assert (worker.runs, worker.crashes) == (2, 1)
    assert [op for op, _ in ops(sim, "worker")] == ["start", "crashed", "start"]
    crashed = [d for op, d in ops(sim, "queue") if op == "crashed"]
    assert crashed == [{"queue": QUEUE, "id": "msg_1", "attempt": 1}]
    # kill -9: the job stopped at its second write; the redelivery is attempt 2 at t=+31s
    assert [(e.t, e.detail["attempt"]) for e in sim.history.filter("queue", "deliver")
            if e.detail["id"] == "msg_1"] == [(1.0, 1), (31.0, 2)]
    bg.assert_nothing_lost(sim)
    bg.assert_drained(sim)
    sim.close()


def test_a_worker_whose_loop_raises_is_restarted_and_its_job_comes_back() -> None:
    sim = bg.Simulation(seed=1)
    done: list[str] = []
    boom = [True]

    def factory() -> Coroutine[Any, Any, None]:
        async def loop() -> None:
            while True:
                d = await sim.queues.receive(QUEUE)
                if d is None:
                    await asyncio.sleep(1)
                    continue
                if boom[0]:
                    boom[0] = False
                    raise RuntimeError("bug in the worker")
                done.append(d.payload["id"])
                await d.ack()
        return loop()

    async def main() -> None:
        sim.queues.create(QUEUE, visibility_timeout=30)
        sim.workers.start("w", factory)
        await publish(sim, 1)
        await sim.run_until_idle()

    sim.run(main())
    assert done == ["job-0"]
    failed = [d for op, d in ops(sim, "worker") if op == "failed"]
    assert failed == [{"name": "w", "run": 1, "error": "RuntimeError: bug in the worker",
                       "injected": False}]
    assert sim.workers.get("w").runs == 2
    with pytest.raises(AssertionError, match=r"worker w failed: RuntimeError: bug in the worker"):
        bg.assert_no_task_errors(sim)  # the user's bug, although the restart hid it
    sim.close()


def test_a_worker_loop_that_returns_is_not_restarted() -> None:
    sim = bg.Simulation(seed=1)

    async def once() -> None:
        await asyncio.sleep(1)

    async def main() -> None:
        sim.workers.start("w", once)
        await sim.advance(2)

    sim.run(main())
    assert [op for op, _ in ops(sim, "worker")] == ["start", "exit"]
    assert sim.workers.get("w").state == "exited"
    sim.close()


def test_start_refuses_a_coroutine_a_bad_name_and_a_second_worker_of_one_name() -> None:
    sim = bg.Simulation()

    async def loop() -> None:
        await asyncio.sleep(1)

    async def main() -> None:
        coro = loop()
        with pytest.raises(TypeError, match=r"not a coroutine: pass `lambda: worker_loop\(sim\)`"):
            sim.workers.start("w", coro)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"workers.start\(name=...\) must be 1 to 100"):
            sim.workers.start("a worker", loop)
        with pytest.raises(ValueError, match=r"restart_delay"):
            sim.workers.start("w", loop, restart_delay=-1)
        sim.workers.start("w", loop)
        with pytest.raises(ValueError, match="worker 'w' is already running"):
            sim.workers.start("w", loop)
        with pytest.raises(KeyError, match=r"no worker 'x' \(workers: 'w'\)"):
            sim.workers.get("x")

    sim.run(main())
    sim.close()


def test_explore_heals_and_keeps_the_workers_running() -> None:
    """A fault in a job kills the worker; the supervisor restarts it through the heal phase."""
    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create(QUEUE, visibility_timeout=30)
        done: list[str] = []
        sim.workers.start("w1", pull_loop(sim, done))
        sim.workers.start("w2", pull_loop(sim, done))
        await publish(sim, 2)

    def statuses_final(sim: bg.Simulation) -> None:
        """A deleted job wrote its last status (a dead-lettered one is the operator's)."""
        for m in sim.queues.messages(QUEUE):
            if m.state == "acked":
                assert sim.kv.items("status")[m.payload["id"]] == "step-2"

    report = bg.explore(scenario, faults=bgst.fault_plans(),
                        checks=[bg.assert_nothing_lost, statuses_final], max_examples=60, seed=1)
    assert report.examples > 0


def test_explore_finds_a_worker_that_deletes_before_the_work() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create(QUEUE, visibility_timeout=30)

        async def loop() -> None:
            while True:
                d = await sim.queues.receive(QUEUE)
                if d is None:
                    await asyncio.sleep(1)
                    continue
                await d.ack()  # the bug: deleted before the work is done
                await sim.kv.set("status", d.payload["id"], "working")
                await sim.kv.set("status", d.payload["id"], "done")

        sim.workers.start("w", loop)
        await publish(sim, 1)

    def finished(sim: bg.Simulation) -> None:
        bg.assert_status_terminal(sim, "status", terminal={"done"}, allow_empty=True)

    with pytest.raises(bg.ExplorationFailed, match=r"failed in: check .*finished\n.*stuck"):
        bg.explore(scenario, faults=bgst.fault_plans(), checks=[finished], max_examples=100,
                   seed=1)


# -- chaos on pull workers ---------------------------------------------------------------
def run_chaos(modes: str, loop_factory: Callable[[bg.Simulation, list[str]], Any], n: int = 2,
              seed: int = 1, workers: int = 1) -> tuple[bg.Simulation, list[str]]:
    sim = bg.Simulation(seed=seed)
    chaos.apply(sim, modes)
    done: list[str] = []

    async def main() -> None:
        sim.queues.create(QUEUE, visibility_timeout=30)
        for k in range(workers):
            sim.workers.start(f"w{k + 1}", loop_factory(sim, done))
        await publish(sim, n)
        await sim.run_until_idle()

    sim.run(main())
    sim.close()
    return sim, done


def test_chaos_fail_first_fails_the_first_attempts_next_service_call() -> None:
    sim, done = run_chaos("fail-first", lambda s, d: pull_loop(s, d), n=1)
    fired = sim.history.filter("fault", "fail")
    assert [(e.detail["point"], e.attempt) for e in fired] == [("kv.set", "jobs/msg_1#1")]
    assert done == ["job-0"]  # the worker died, restarted, and attempt 2 finished it
    assert [e.detail["attempt"] for e in sim.history.filter("queue", "deliver")] == [1, 2]
    assert sim.workers.get("w1").failures == 1
    [failed] = sim.history.filter("worker", "failed")
    assert failed.detail["injected"] is True
    bg.assert_no_task_errors(sim)  # caused by the injected fault: judged by the business checks


def test_chaos_crash_kills_a_pull_worker_mid_job_at_a_drawn_point() -> None:
    points = set()
    for seed in range(12):
        sim, done = run_chaos("crash", lambda s, d: pull_loop(s, d, writes=3), n=1, seed=seed)
        crash = sim.history.filter("fault", "crash")
        assert len(crash) == 1 and crash[0].attempt == "jobs/msg_1#1"
        points.add((crash[0].detail["point"], len(sim.kv.history("status", "job-0"))))
        assert done[-1] == "job-0" and sim.workers.get("w1").crashes == 1
        bg.assert_nothing_lost(sim)
    # drawn among the job's points: each of its writes, or its delete (the ack)
    # (the writes before the crash, plus the redelivery's 3)
    assert points == {("kv.set", 3), ("kv.set", 4), ("kv.set", 5), ("queue.ack", 6)}


def test_chaos_duplicate_redelivers_a_pull_message_before_its_delete_never_after() -> None:
    sim, done = run_chaos("duplicate", lambda s, d: pull_loop(s, d), n=1)
    assert done == ["job-0", "job-0"]
    acks = [(e.detail["attempt"], e.detail["stale"], e.detail["deleted"])
            for e in sim.history.filter("queue", "ack")]
    # the first receive's visibility lapsed before its delete: that delete was stale
    assert acks == [(1, True, False), (2, False, True)]
    seqs = [(e.op, e.detail.get("attempt")) for e in sim.history.events if e.service == "queue"
            and e.op in ("visibility_expired", "ack", "deliver")]
    assert seqs == [("deliver", 1), ("visibility_expired", 1), ("ack", 1), ("deliver", 2),
                    ("ack", 2)]
