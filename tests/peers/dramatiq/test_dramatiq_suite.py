"""dramatiq 2.2.1's own tests, run on ``adapters.dramatiq.SimBroker`` (``stub_broker`` swapped).

The suite is downloaded from the package index at test time (never copied here). Its
sdist lacks ``tests/conftest.py``, ``tests/common.py`` and ``tests/middleware/`` (those
are only in the GitHub repository): the glue ``bgwork_dramatiq_glue`` supplies the
fixtures on the simulation. Every test that does not pass is listed with its reason in
``expected.txt``; the run prints "N passed of M applicable" and keeps a floor of passes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .._peer_suite import compare, read_expected, run_suite
from .._sdist import unpack

VERSION = "2.2.1"
#: The suite's files whose tests run on a stub broker or a result / rate-limiter backend
#: (the glue keeps only those tests).
PATHS = [
    "tests/test_actors.py",
    "tests/test_broker.py",
    "tests/test_callbacks.py",
    "tests/test_composition.py",
    "tests/test_encoders.py",
    "tests/test_generic_actors.py",
    "tests/test_messages.py",
    "tests/test_results.py",
    "tests/test_stub_broker.py",
    "tests/test_worker.py",
    "tests/test_barrier.py",
    "tests/test_bucket_rate_limiter.py",
    "tests/test_concurrent_rate_limiter.py",
    "tests/test_window_rate_limiter.py",
]
#: Passes this adapter must keep (of the applicable tests): a floor, so a regression that
#: expected.txt's alternatives ('failed|passed') would let through still fails.
MIN_PASSES = 139


def applicable(run_outcomes: dict[str, str], reasons: dict[str, str]) -> int:
    """Collected tests minus those expected.txt calls "not applicable"."""
    return sum(1 for nodeid in run_outcomes
               if not reasons.get(nodeid, "").startswith("not applicable"))


@pytest.mark.timeout(900)
def test_dramatiq_suite_matches_expected_outcomes() -> None:
    pytest.importorskip("pika", reason="dramatiq's test_broker.py imports its RabbitMQ broker (pika)")
    root = unpack("dramatiq", VERSION)
    run = run_suite(root, PATHS, "bgwork_dramatiq_glue", per_test_timeout=5, total_timeout=800,
                    extra=["--import-mode=importlib"])
    expected = read_expected(Path(__file__).with_name("expected.txt"))
    problems = compare(run, expected)
    passed, total = run.count("passed"), applicable(run.outcomes, expected.reasons)
    print(f"dramatiq {VERSION}: {passed} passed of {total} applicable "
          f"({len(run.outcomes)} collected) in {run.seconds:.1f}s")
    assert not problems, "\n".join(problems) + "\n\n" + run.output
    assert passed >= MIN_PASSES, f"{passed} passed, below the floor of {MIN_PASSES}"
