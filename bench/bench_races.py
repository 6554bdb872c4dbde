"""Races the default search must find (issue 11): examples until found, seeds 1-10.

Run ``python bench/bench_races.py [max_examples]`` (default 200). For each case in
``tests/races_cases.py`` — a check-then-act race, a lost update, a publish retried without
an idempotency key, a webhook whose retried delivery enqueues twice — it explores the
buggy version with the default ``bgst.fault_plans()`` on seeds 1-10 and prints at which
example the first failure came (before shrinking), then explores the fixed twin (a
conditional write or a key) on the same seeds and counts false alarms (must be 0).
Exit status 1 if a seed missed a bug or a twin failed. Output: ``bench/bench_races.out``.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from races_cases import CASES

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst

SEEDS = range(1, 11)


def found_at(case: str, fixed: bool, seed: int, max_examples: int) -> int:
    """The example number of the first failure, or 0 when none of ``max_examples`` failed."""
    scenario, checks = CASES[case](fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bg.ExploreCoverageWarning)
        try:
            bg.explore(scenario, faults=bgst.fault_plans(), checks=checks, seed=seed,
                       max_examples=max_examples)
        except bg.ExplorationFailed as failure:
            return failure.example
    return 0


def main() -> int:
    max_examples = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    print(f"examples until the first failure, default bgst.fault_plans(), "
          f"max_examples={max_examples}, seeds {SEEDS.start}-{SEEDS.stop - 1}")
    print(f"{'case':<24}{'per seed':<44}{'median':>7}{'max':>5}{'twin false alarms':>19}")
    ok = True
    started = time.process_time()
    for case in CASES:
        found = [found_at(case, False, seed, max_examples) for seed in SEEDS]
        alarms = sum(1 for seed in SEEDS if found_at(case, True, seed, max_examples))
        missed = found.count(0)
        ok = ok and not missed and not alarms
        shown = " ".join(str(n) if n else "-" for n in found)
        hits = [n for n in found if n]
        median = f"{statistics.median(hits):g}" if hits else "-"
        print(f"{case:<24}{shown:<44}{median:>7}{max(hits, default=0):>5}"
              f"{f'{alarms}/{len(SEEDS)}':>19}" + (f"  MISSED on {missed} seed(s)" if missed else ""))
    print(f"all found on every seed, no false alarm: {'yes' if ok else 'NO'} "
          f"({time.process_time() - started:.0f} s CPU)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
