"""A two-worker pull scenario explored: examples per CPU second, and where the time goes.

Run ``python bench/bench_pull.py`` (output: ``bench/bench_pull.out``). The scenario is
``examples/pull_exports`` (the correct app): two workers the scenario owns
(``sim.workers``) poll the exports queue, two exports are requested; every example runs
the fault window, the heal phase and three checks. The search is ``bg.explore`` with the
default ``bgst.fault_plans()``. "Simulation alone" runs the same scenario with no fault and
no Hypothesis, as many times: the floor the explorer's own work adds to. The profile lines
name the functions that take the most of the search's time. Aim: >= 100 examples/s.
No timing is asserted anywhere in the tests.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import interleaved
from pull_exports import app
from pull_exports.test_pull_exports import CHECKS, scenario_for

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst

EXAMPLES = 200
AIM = 100.0
scenario = scenario_for(app)


def search() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ExploreCoverageWarning)
        report = bg.explore(scenario, faults=bgst.fault_plans(), checks=CHECKS, seed=1,
                            max_examples=EXAMPLES)
    assert report.examples == EXAMPLES, report.examples


def simulation_alone() -> None:
    for seed in range(EXAMPLES):
        sim = bg.Simulation(seed=seed)

        async def main(sim: bg.Simulation = sim) -> None:
            await scenario(sim)
            await sim.run_until_idle()
            sim.faults.heal()
            await sim.run_until_idle()
            for check in CHECKS:
                check(sim)

        sim.run(main())
        sim.close()


def main() -> None:
    best = interleaved({"search": search, "alone": simulation_alone}, rounds=5)
    rate = EXAMPLES / best["search"]
    verdict = "met" if rate >= AIM else f"MISSED by {100 * (1 - rate / AIM):.0f}%"
    print("bg.explore of a two-worker pull scenario (examples/pull_exports) · "
          f"{EXAMPLES} examples per run · best of 5 interleaved rounds (CPU)")
    print(f"  explore, default fault plans   {best['search']:.3f} s CPU  {rate:7.0f}/s   "
          f"aim >= {AIM:.0f}/s: {verdict}")
    print(f"  simulation alone (no faults)   {best['alone']:.3f} s CPU  "
          f"{EXAMPLES / best['alone']:7.0f}/s")
    profile = cProfile.Profile()
    profile.enable()
    search()
    profile.disable()
    stats = pstats.Stats(profile)
    total = max(stats.total_tt, 1e-9)  # type: ignore[attr-defined]
    rows = []
    for (file, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = "pytest_bgwork" if "pytest_bgwork" in file else (
            "hypothesis" if "hypothesis" in file else ("asyncio" if "asyncio" in file else
                                                     "examples" if "examples" in file else "other"))
        rows.append((tt, where, func))
    by_area: dict[str, float] = {}
    for tt, where, _ in rows:
        by_area[where] = by_area.get(where, 0.0) + tt
    print("  where the search's time goes (own time, profiled run):")
    for where, tt in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"    {where:<16}{100 * tt / total:5.1f}%")
    print("  top functions (own time):")
    for tt, where, func in sorted(rows, reverse=True)[:8]:
        print(f"    {100 * tt / total:5.1f}%  {where}: {func}")
    print(f"(python {sys.version.split()[0]}, measured {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
