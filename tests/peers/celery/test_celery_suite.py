"""Celery 5.7.0's own ``t/integration/test_tasks.py``, run on ``adapters.celery`` as written.

The suite is downloaded from the package index at test time (never copied here); the
glue ``bgwork_celery_glue`` replaces the session worker with the simulation and
installs each test's app on it. The tests keep their ``.get(timeout=...)`` calls. Every
test that does not pass is listed with its reason in ``expected.txt``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .._peer_suite import compare, read_expected, run_suite
from .._sdist import unpack

VERSION = "5.7.0"


@pytest.mark.timeout(900)
def test_celery_integration_tasks_match_expected_outcomes() -> None:
    pytest.importorskip("redis", reason="Celery's integration conftest imports redis")
    root = unpack("celery", VERSION)
    run = run_suite(root, ["t/integration/test_tasks.py"], "bgwork_celery_glue", per_test_timeout=10,
                    total_timeout=800, extra=["-p", "celery.contrib.pytest"])
    expected = read_expected(Path(__file__).with_name("expected.txt"))
    problems = compare(run, expected)
    print(f"celery {VERSION}: {run.count('passed')} of {len(run.outcomes)} passed in {run.seconds:.1f}s")
    assert not problems, "\n".join(problems) + "\n\n" + run.output
