"""Exploration speed: examples per second of ``bg.explore`` on a report-job scenario.

The scenario is the one users write first: a POST-like handler writes a "queued"
status and publishes a job with an idempotency key; a worker writes "processing",
streams a CSV, closes it and writes "done". Fault plans come from
``bgst.fault_plans(max_faults=3)`` (kv.set left out, see ``POINTS``) and every example
runs the checks that matter.

Run: ``python bench/bench_explore.py [EXAMPLES] [ROUNDS]`` (defaults 200, 5). Prints
examples per CPU second (``time.process_time``, best of ROUNDS interleaved rounds) for
the report-job exploration and a one-message exploration (generation, shrinking and
Hypothesis overhead included), for bare report-job runs (one simulation per example, no
Hypothesis), and for Hypothesis alone drawing the same plans with nothing to run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any

import hypothesis
from _common import interleaved

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
    bg.assert_status_terminal(sim, "report-status", terminal=TERMINAL | {"queued"}, allow_empty=True)


CHECKS = [bg.assert_nothing_lost, bg.assert_streams_closed, status_terminal]


#: Every default point but kv.set: a status store that fails on every call until the faults
#: heal leaves "processing" behind whatever the worker does (explore finds that at once).
POINTS = ["queue.deliver", "queue.ack", "kv.get", "stream.create", "stream.write", "stream.close"]


async def one_message(sim: bg.Simulation) -> None:
    """The smallest queue scenario: one message whose handler writes one status."""
    sim.queues.create("jobs", visibility_timeout=30, max_retries=2)

    async def handler(payload: dict[str, Any], delivery: Any) -> None:
        await sim.kv.set("status", payload["id"], {"kind": "done"})

    sim.queues.route("jobs", handler)
    with contextlib.suppress(ConnectionError, TimeoutError):
        await sim.queues.publish("jobs", {"id": "job_1"})


ONE_MESSAGE_POINTS = ["queue.deliver", "queue.ack", "kv.set"]


def explore_one_message(examples: int) -> bg.ExploreReport:
    return bg.explore(one_message, faults=bgst.fault_plans(max_faults=2, points=ONE_MESSAGE_POINTS),
                      checks=[bg.assert_nothing_lost], max_examples=examples, seed=1,
                      settings=hypothesis.settings(database=None))


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


AIM_REPORT_JOB = 400
AIM_ONE_MESSAGE = 1500


def hypothesis_alone(examples: int) -> None:
    """Hypothesis with nothing to run: the report-job plans and five integer draws per example.

    The ceiling of any explorer built on Hypothesis's engine for this search.
    """
    plans = bgst.fault_plans(max_faults=3, points=POINTS)

    @hypothesis.seed(1)
    @hypothesis.settings(max_examples=examples, database=None, deadline=None)
    @hypothesis.given(hypothesis.strategies.data())
    def empty(data: Any) -> None:
        data.draw(plans)
        for _ in range(5):
            data.draw(hypothesis.strategies.integers(0, 3))

    empty()


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    counts: dict[str, int] = {}

    def count(name: str, report: bg.ExploreReport) -> None:
        counts[name] = report.examples

    explore_once(20)  # warm up: imports, Hypothesis's caches
    best = interleaved({
        "report-job": lambda: count("report-job", explore_once(examples)),
        "one-message": lambda: count("one-message", explore_one_message(examples)),
        "report-job, bare runs": lambda: bare_runs(examples),
        "Hypothesis alone": lambda: hypothesis_alone(examples),
    }, rounds)
    counts["report-job, bare runs"] = counts["Hypothesis alone"] = examples
    print(f"bg.explore examples per CPU second · {examples} examples per run · best of {rounds} "
          "interleaved rounds · shared 2-core machine")
    aims = {"report-job": AIM_REPORT_JOB, "one-message": AIM_ONE_MESSAGE}
    for name, seconds in best.items():
        rate = counts[name] / seconds
        aim = aims.get(name)
        verdict = f"   aim >= {aim}/s: {'met' if rate >= aim else 'MISSED'}" if aim else ""
        print(f"  {name:<24}{counts[name]:>5} examples {seconds:>7.3f} s CPU {rate:>7.0f}/s{verdict}")
    print("  (bare runs: simulation + scenario + checks, no Hypothesis; Hypothesis alone: the\n"
          "   same plans drawn with no simulation: the engine's own ceiling)")
    print(f"(python {sys.version.split()[0]}, hypothesis {hypothesis.__version__}, "
          f"measured {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
