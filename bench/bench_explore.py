"""Exploration speed: examples per second of ``bg.explore`` on a report-job scenario.

The scenario is the one users write first: a POST-like handler writes a "queued"
status and publishes a job with an idempotency key; a worker writes "processing",
streams a CSV, closes it and writes "done". Fault plans come from
``bgst.fault_plans(max_faults=3)`` (kv.set left out, see ``POINTS``) and every example
runs the checks that matter.

Run: ``python bench/bench_explore.py [EXAMPLES] [ROUNDS]`` (defaults 200, 5). Prints
examples per CPU second (``time.process_time``, best of ROUNDS interleaved rounds) of the
report-job exploration and of a one-message exploration (generation, shrinking and
Hypothesis overhead included), and for each, in the same run, what bounds it:

- Hypothesis alone: the same search with nothing run. A first exploration records each
  example's plan and the draws its simulation made (one latency draw per service call);
  then each example draws its plan and exactly those draws, so Hypothesis's engine makes
  the same examples; the line under it splits that time into the plan strategy, the
  per-call draws and the rest (the engine and explore's driver).
- Simulation alone: the same examples (plans and choices) replayed without Hypothesis.
- Their sum: the ceiling of an explorer on Hypothesis's engine with this simulation.

``bare_runs`` (the clean scenario without Hypothesis) is kept for ``bench/digests.py``.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class Recorded:
    """One exploration's examples, in order: each plan and the draws its simulation made."""

    scenario: Callable[[bg.Simulation], Any]
    checks: list[Any]
    #: Each run of the search, examples cut short by Hypothesis (its choices ran out) included.
    examples: list[tuple[FaultPlan, list[int | float], list[tuple[int, int] | None]]] = field(
        default_factory=list)
    #: ``max_examples``, and the examples the search counted (``ExploreReport.examples``).
    max_examples: int = 0
    counted: int = 0


def record(explore: Callable[[int], bg.ExploreReport], examples: int) -> Recorded:
    """Run ``explore`` once, noting each searched example's plan, choices and draw shapes."""
    from pytest_bgwork.checking import explore as ex

    real_run, real_integer, real_fraction = ex._run_example, ex.HypothesisChoices.integer, \
        ex.HypothesisChoices.fraction
    shapes: list[tuple[int, int] | None] = []
    rec: Recorded | None = None

    def run(scenario: Any, checks: Any, seed: int, plan: FaultPlan, choices: Any,
            keep_events: bool, latency: bool = True, platform: str = "agentuity") -> Any:
        nonlocal rec
        shapes.clear()
        out = real_run(scenario, checks, seed, plan, choices, keep_events, latency, platform)
        if rec is None:
            rec = Recorded(scenario, list(checks))
        if latency:  # not explore's clean learning run
            rec.examples.append((plan, list(out.choices), list(shapes)))
        return out

    def integer(self: Any, lo: int, hi: int, label: str = "") -> int:
        shapes.append((lo, hi))
        return real_integer(self, lo, hi, label)

    def fraction(self: Any, label: str = "") -> float:
        shapes.append(None)
        return real_fraction(self, label)

    ex._run_example = run
    ex.HypothesisChoices.integer = integer  # type: ignore[method-assign]
    ex.HypothesisChoices.fraction = fraction  # type: ignore[method-assign]
    try:
        report = explore(examples)
    finally:
        ex._run_example = real_run
        ex.HypothesisChoices.integer = real_integer  # type: ignore[method-assign]
        ex.HypothesisChoices.fraction = real_fraction  # type: ignore[method-assign]
    assert rec is not None
    rec.max_examples, rec.counted = examples, report.examples
    return rec


def simulation_alone(rec: Recorded) -> None:
    """The recorded examples replayed with no Hypothesis: simulation + scenario + checks."""
    from pytest_bgwork.checking.explore import _run_example
    from pytest_bgwork.checking.replay import ReplayChoices
    from pytest_bgwork.core.wallclock import wall_clock

    with wall_clock:  # started once, as explore does
        for plan, choices, _ in rec.examples:
            _run_example(rec.scenario, rec.checks, 1, plan, ReplayChoices(choices), False)


def hypothesis_alone(explore: Callable[[int], bg.ExploreReport], rec: Recorded) -> int:
    """The same search with nothing run: each example draws its plan and then exactly the
    draws its simulation made, so Hypothesis's engine generates the same examples; explore's
    glue (the engine driver, draws, outcome) stays, the simulation is gone.

    Returns how many examples drew another plan than recorded (0: the same search).
    """
    from pytest_bgwork.checking import explore as ex

    real_run = ex._run_example
    index = iter(range(len(rec.examples)))
    differ = 0

    def run(scenario: Any, checks: Any, seed: int, plan: FaultPlan, choices: Any,
            keep_events: bool, latency: bool = True, platform: str = "agentuity") -> Any:
        nonlocal differ
        if not latency:  # explore's clean learning run: not a searched example, run it
            return real_run(scenario, checks, seed, plan, choices, keep_events, latency, platform)
        i = next(index, None)
        if i is None or rec.examples[i][0] != plan:
            differ += 1
        for shape in rec.examples[i][2] if i is not None else ():
            if shape is None:
                choices.fraction()
            else:
                choices.integer(shape[0], shape[1], "latency")
        return ex._Outcome(None, "scenario", [], set(), list(choices.values), False, False)

    ex._run_example = run
    try:
        explore(rec.max_examples)
    finally:
        ex._run_example = real_run
    return differ


def split_alone(explore: Callable[[int], bg.ExploreReport], rec: Recorded) -> dict[str, float]:
    """One instrumented 'Hypothesis alone' pass: CPU seconds in the plan strategy, in the
    per-call draws, and in all the rest (Hypothesis's engine and explore's driver). The
    timers add their own cost, so read shares, not totals."""
    from pytest_bgwork.checking import explore as ex

    spent = {"plan": 0.0, "draws": 0.0}
    real_plan, real_integer = ex._draw_plan, ex.HypothesisChoices.integer

    def plan(data: Any, plans: Any) -> Any:
        started = _CPU()
        try:
            return real_plan(data, plans)
        finally:
            spent["plan"] += _CPU() - started

    def integer(self: Any, lo: int, hi: int, label: str = "") -> int:
        started = _CPU()
        try:
            return real_integer(self, lo, hi, label)
        finally:
            spent["draws"] += _CPU() - started

    ex._draw_plan = plan
    ex.HypothesisChoices.integer = integer  # type: ignore[method-assign]
    try:
        started = _CPU()
        hypothesis_alone(explore, rec)
        total = _CPU() - started
    finally:
        ex._draw_plan = real_plan
        ex.HypothesisChoices.integer = real_integer  # type: ignore[method-assign]
    return {"plan strategy": spent["plan"] / total, "per-call draws": spent["draws"] / total,
            "engine and driver": 1 - (spent["plan"] + spent["draws"]) / total}


_CPU = time.process_time


def through_given(explore: Callable[[int], bg.ExploreReport], examples: int) -> None:
    """The exploration with Hypothesis driven through ``@given(st.data())``, as before 0.2's
    engine path (``explore`` still uses it for verbose runs and observability)."""
    from pytest_bgwork.checking import explore as ex

    real = ex._engine_ok
    ex._engine_ok = lambda settings: False
    try:
        explore(examples)
    finally:
        ex._engine_ok = real


def _alone(differ: dict[str, int], name: str, explore: Callable[[int], bg.ExploreReport],
           rec: Recorded) -> None:
    differ[name] = hypothesis_alone(explore, rec)


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    warnings.simplefilter("ignore", bg.ExploreCoverageWarning)
    explorations = {"report-job": explore_once, "one-message": explore_one_message}
    aims = {"report-job": AIM_REPORT_JOB, "one-message": AIM_ONE_MESSAGE}
    explore_once(20)  # warm up: imports, Hypothesis's caches
    recorded = {name: record(fn, examples) for name, fn in explorations.items()}
    runs: dict[str, Callable[[], object]] = {}
    differ: dict[str, int] = {}
    for name, fn in explorations.items():
        rec = recorded[name]
        runs[name] = functools.partial(fn, examples)
        runs[f"{name}: through @given"] = functools.partial(through_given, fn, examples)
        runs[f"{name}: Hypothesis alone"] = functools.partial(_alone, differ, name, fn, rec)
        runs[f"{name}: simulation alone"] = functools.partial(simulation_alone, rec)
    best = interleaved(runs, rounds)
    print(f"bg.explore examples per CPU second · {examples} examples per run · best of {rounds} "
          "interleaved rounds · shared 2-core machine")
    for name in explorations:
        n = recorded[name].counted
        alone, sim = best[f"{name}: Hypothesis alone"], best[f"{name}: simulation alone"]
        rate = n / best[name]
        aim = aims[name]
        print(f"  {name:<34}{n:>5} examples {best[name]:>7.3f} s CPU {rate:>7.0f}/s   aim >= "
              f"{aim}/s: {'met' if rate >= aim else f'MISSED by {1 - rate / aim:.0%}'}")
        given = best[f"{name}: through @given"]
        print(f"    {'the same search through @given':<32}{given:>19.3f} s CPU {n / given:>7.0f}/s")
        print(f"    {'Hypothesis alone (same draws)':<32}{alone:>19.3f} s CPU {n / alone:>7.0f}/s")
        print(f"    {'simulation alone (same examples)':<32}{sim:>19.3f} s CPU {n / sim:>7.0f}/s")
        print(f"    {'ceiling: the two, nothing else':<32}{alone + sim:>19.3f} s CPU "
              f"{n / (alone + sim):>7.0f}/s"
              + (f"   (aim out of reach by {1 - n / (alone + sim) / aim:.0%})"
                 if n / (alone + sim) < aim else ""))
        shares = split_alone(explorations[name], recorded[name])
        draws = sum(len(shapes) for _, _, shapes in recorded[name].examples) / max(1, n)
        print(f"    (Hypothesis alone: {', '.join(f'{k} {v:.0%}' for k, v in shares.items())}; "
              f"{draws:.1f} per-call draws per example)")
        if differ.get(name):
            print(f"    ({differ[name]} examples of 'Hypothesis alone' drew another plan: not the "
                  "same search)")
    print("  Hypothesis alone: the same search (each example draws its plan and then exactly the\n"
          "  draws its simulation made) with nothing run. Simulation alone: the same examples\n"
          "  (plans and choices) replayed with no Hypothesis. Their sum is the ceiling of an\n"
          "  explorer on Hypothesis's engine with this simulation; the rest is explore's glue\n"
          "  and the cost of running both in one process (caches, garbage collection).")
    print(f"(python {sys.version.split()[0]}, hypothesis {hypothesis.__version__}, "
          f"measured {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
