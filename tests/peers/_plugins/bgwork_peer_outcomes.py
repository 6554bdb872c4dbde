"""A pytest plugin for peer-suite runs: writes each test's outcome to a JSON file.

Loaded with ``-p bgwork_peer_outcomes`` into the subprocess that runs a peer library's
own tests; ``BGWORK_PEER_OUTCOMES`` names the file. A test's outcome is the worst of its
phases: ``error`` (set-up or teardown failed), ``timeout`` (pytest-timeout stopped it),
``failed``, ``skipped``, ``xfailed``, ``xpassed`` or ``passed``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

_RANK = {"passed": 0, "xpassed": 1, "xfailed": 1, "skipped": 2, "failed": 3, "error": 4, "timeout": 5}
_outcomes: dict[str, str] = {}
_reasons: dict[str, str] = {}


def _outcome(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr is not None else ""
    if report.failed and "Timeout (>" in text:
        return "timeout"
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    if report.when != "call" and report.failed:
        return "error"
    return report.outcome


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep the worst outcome of a test's phases, and the first line of why it failed."""
    outcome = _outcome(report)
    if report.when != "call" and outcome == "passed":
        _outcomes.setdefault(report.nodeid, "passed")
        return
    before = _outcomes.get(report.nodeid, "passed")
    if _RANK[outcome] >= _RANK[before]:
        _outcomes[report.nodeid] = outcome
        if report.longrepr is not None and outcome != "passed":
            crash = getattr(report.longrepr, "reprcrash", None)
            _reasons[report.nodeid] = str(getattr(crash, "message", report.longrepr))[:300]


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    """Write the outcomes (``{nodeid: [outcome, reason]}``) where the runner asked."""
    path = os.environ.get("BGWORK_PEER_OUTCOMES")
    if path:
        data = {k: [v, _reasons.get(k, "")] for k, v in sorted(_outcomes.items())}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The runner's per-test timeout is the most a test may take: it beats a suite's own
    longer ``@pytest.mark.timeout`` (Celery's integration tests carry 300 s), so a test that
    would block is stopped quickly."""
    limit = config.getoption("timeout", None)
    if not limit:
        return
    for item in items:
        item.add_marker(pytest.mark.timeout(float(limit)), append=False)
