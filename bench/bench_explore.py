"""Exploration speed: examples per second of ``bg.explore`` on a report-job scenario.

The scenario is the one users write first: a POST-like handler writes a "queued"
status and publishes a job with an idempotency key; a worker writes "processing",
streams a CSV, closes it and writes "done". Fault plans come from
``bgst.fault_plans(max_faults=3)`` (kv.set left out, see ``POINTS``) and every example
runs the checks that matter.

Run: ``python bench/bench_explore.py [EXAMPLES]`` (default 200). Prints examples per
second for the full exploration (generation and Hypothesis overhead included) and for
bare example runs (one simulation per example, no Hypothesis), best of three.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import hypothesis
from _common import best_of

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.core.faults import FaultPlan

TERMINAL = {"done", "failed"}


async def report_jobs(sim: bg.Simulation) -> None:
    """Two report requests (one double-clicked) handled by a queue worker."""
    sim.queues.create("report-jobs", visibility_timeout=120, max_retries=3)

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        job = payload["job_id"]
        current = await sim.kv.get("report-status", job)
        if current.exists and current.data["kind"] == "done":
            return
        await sim.kv.set("report-status", job, {"kind": "processing"})
        try:
            stream = await sim.streams.create("monthly-reports", content_type="text/csv")
            try:
                for day in range(1, 8):
                    await stream.write(f"2026-01-{day:02d},{payload['account']},{day * 7}\n")
            finally:
                await stream.close()
        except Exception:
            final = delivery.attempt > 3
            await sim.kv.set("report-status", job, {"kind": "failed" if final else "queued"})
            raise
        await sim.kv.set("report-status", job, {"kind": "done", "url": stream.url})

    sim.queues.route("report-jobs", worker)

    async def post_report(account: str) -> None:
        job = f"rpt_{account}_2026-01"
        if not (await sim.kv.get("report-status", job)).exists:
            await sim.kv.set("report-status", job, {"kind": "queued"})
        for _ in range(3):
            try:
                await sim.queues.publish("report-jobs", {"job_id": job, "account": account},
                                         idempotency_key=job)
                return
            except (ConnectionError, TimeoutError):
                continue

    for account in ("acct_1", "acct_2", "acct_1"):
        with contextlib.suppress(ConnectionError, TimeoutError):  # the client sees a 503
            await post_report(account)


def status_terminal(sim: bg.Simulation) -> None:
    bg.assert_status_terminal(sim, "report-status", terminal=TERMINAL | {"queued"})


CHECKS = [bg.assert_nothing_lost, bg.assert_streams_closed, status_terminal]


#: Every default point but kv.set: a status store that fails on every call until the faults
#: heal leaves "processing" behind whatever the worker does (explore finds that at once).
POINTS = ["queue.deliver", "queue.ack", "kv.get", "stream.create", "stream.write", "stream.close"]


def explore_once(examples: int) -> bg.ExploreReport:
    return bg.explore(report_jobs, faults=bgst.fault_plans(max_faults=3, points=POINTS),
                      checks=CHECKS,
                      max_examples=examples, seed=1,
                      settings=hypothesis.settings(database=None))


def bare_runs(examples: int) -> None:
    """The same number of examples with no Hypothesis: simulation + scenario + checks only."""
    from pytest_bgwork.checking.explore import _run_example
    from pytest_bgwork.checking.replay import ReplayChoices
    from pytest_bgwork.core.wallclock import wall_clock

    with wall_clock:  # started once, as explore does
        for _ in range(examples):
            out = _run_example(report_jobs, CHECKS, 1, FaultPlan(), ReplayChoices([]), False)
            assert out.error is None, out.error


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    reports: list[bg.ExploreReport] = []
    explore_t = best_of(lambda: reports.append(explore_once(examples)))
    report = reports[-1]
    bare_t = best_of(lambda: bare_runs(examples))
    print(f"bg.explore on the report-job scenario, {examples} examples, best of 3")
    print(f"  exploration (Hypothesis + faults + checks): {report.examples} examples in "
          f"{explore_t:.3f}s = {report.examples / explore_t:.0f} examples/s")
    print(f"  bare example runs (no Hypothesis, no faults): {examples} in {bare_t:.3f}s = "
          f"{examples / bare_t:.0f} examples/s")
    print(report.summary())
    print(f"(python {sys.version.split()[0]}, hypothesis {hypothesis.__version__}, "
          f"measured {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
