"""taskiq 0.13.0's own tests, run on ``adapters.taskiq.SimBroker`` (``InMemoryBroker`` swapped).

The suite is downloaded from the package index at test time (never copied here); the
glue ``bgwork_taskiq_glue`` swaps the broker and runs each test on a simulation. Every
test that does not pass is listed with its reason in ``expected.txt``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .._peer_suite import check_floor, compare, read_expected, run_suite, score
from .._sdist import unpack

VERSION = "0.13.0"
#: The suite's files that use ``InMemoryBroker`` (directly or through a tasks module).
PATHS = [
    "tests/brokers/test_inmemory.py",
    "tests/cli/scheduler/test_send_with_timeout.py",
    "tests/cli/scheduler/test_updater.py",
    "tests/depends/test_progress_tracker.py",
    "tests/formatters/test_proxy_formatter.py",
    "tests/middlewares/admin_middleware/test_arguments_formatting.py",
    "tests/middlewares/test_task_retry.py",
    "tests/opentelemetry",
    "tests/receiver/test_receiver.py",
    "tests/scheduler/test_label_based_sched.py",
    "tests/scheduler/test_scheduler.py",
    "tests/test_exceptions_flow.py",
    "tests/test_kicker.py",
    "tests/test_requeue.py",
    "tests/test_retry_task.py",
]
#: The issue's target: at least 100 applicable tests pass.
MIN_PASSES = 100


@pytest.mark.timeout(900)
def test_taskiq_suite_matches_expected_outcomes() -> None:
    pytest.importorskip("opentelemetry.test", reason="the suite's otel tests need opentelemetry-test-utils")
    pytest.importorskip("polyfactory", reason="the suite's admin-middleware test needs polyfactory")
    root = unpack("taskiq", VERSION)
    run = run_suite(root, PATHS, "bgwork_taskiq_glue", per_test_timeout=8, total_timeout=800)
    expected = read_expected(Path(__file__).with_name("expected.txt"), strict=True)
    problems = compare(run, expected)
    result = score(run, expected)
    print(f"{result.line(f'taskiq {VERSION}')} in {run.seconds:.1f}s")
    assert not problems, "\n".join(problems) + "\n\n" + run.output
    check_floor(result, MIN_PASSES, f"taskiq {VERSION}")
