"""Shared test set-up: pytester runs get the same asyncio settings as this suite."""

from __future__ import annotations

import os
from typing import Any

import pytest

# Loaded once for the whole session: pytester's in-process runs forget the modules a run
# imported, so without this every run that explores imports Hypothesis again (~2 s each).
import pytest_bgwork.checking.explore  # noqa: F401


@pytest.fixture(autouse=True)
def _pytester_ini(request: pytest.FixtureRequest) -> None:
    """Give every pytester run an ini so pytest-asyncio's scope warning stays out of its output."""
    if "pytester" in request.fixturenames:
        pytester: pytest.Pytester = request.getfixturevalue("pytester")
        pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


# -- the browser check: required in CI, reported (never silently skipped) elsewhere ------------------
BROWSER_HOWTO = (
    "it needs headless Chromium at $BGWORK_CHROMIUM (default /usr/bin/chromium). Enable it with "
    "`apt-get update && apt-get install -y chromium` or BGWORK_CHROMIUM=/path/to/chromium; "
    "with CI set (as .ci/run does) a missing browser fails the run."
)


def chromium_path() -> str:
    """Where the browser check looks for headless Chromium."""
    return os.environ.get("BGWORK_CHROMIUM", "/usr/bin/chromium")


def browser_check_off() -> bool:
    """No browser here and not in CI: the browser check is left out, and the run says so."""
    return not os.path.exists(chromium_path()) and not os.environ.get("CI")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: renders in headless Chromium (required when CI is set)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not browser_check_off():
        return
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        items[:] = [item for item in items if not item.get_closest_marker("browser")]
        config.hook.pytest_deselected(items=browser)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "test_report_html.py" in report.nodeid:  # also on the xdist controller
        _browser_files_seen.add(report.nodeid.split("::")[0])


_browser_files_seen: set[str] = set()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if browser_check_off() and _browser_files_seen:
        terminalreporter.write_sep("-", "browser check did not run")
        terminalreporter.write_line(
            f"tests/test_report_html.py::test_chromium_renders_lanes_labels_and_fault_marks was "
            f"deselected: {BROWSER_HOWTO}"
        )
