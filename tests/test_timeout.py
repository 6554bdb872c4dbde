"""pytest-timeout (``signal`` method) firing in a test that uses ``bgwork``.

The timeout's ``Failed`` is raised from a signal handler wherever the test happens to be,
so it must leave no fake clock and no simulation behind: the outcome lands in the phase
that ran out of time, pytest's durations stay real, and the next test sees the real clock.
Each timed-out test spins the CPU for a bounded number of iterations (no sleep); the
timeout cuts it after 0.5 s.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

SPIN = '''
def spin():
    n = 0
    for i in range(10**9):  # minutes of work: the timeout ends it
        n += i
    return n
'''

NEXT_TEST = '''
def test_next_test_sees_real_clocks():
    import datetime as dt
    import time
    from freezegun import api
    import pytest_bgwork as bg
    from pytest_bgwork.core.wallclock import wall_clock

    assert not wall_clock.active
    assert dt.datetime is api.real_datetime and time.time is api.real_time
    with pytest.raises(bg.NotRunning):
        bg.current()
'''


def _durations(stdout: str) -> list[float]:
    """Every duration pytest printed: the ``--durations`` lines and the final ``in N s``."""
    found = [float(x) for x in re.findall(r"^([0-9.]+)s (?:setup|call|teardown) ", stdout, re.M)]
    found += [float(x) for x in re.findall(r" in ([0-9.]+)s", stdout)]
    return found


def _run(pytester: pytest.Pytester) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-p", "no:xdist", "-p", "timeout",
        "--durations=0", "-vv", "-rA",
    )


def test_a_timeout_in_an_async_bgwork_test_fails_its_call_with_real_durations(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        "import asyncio\nimport pytest\n" + SPIN + '''
@pytest.mark.timeout(0.5, method="signal", func_only=True)  # a slow set-up under load is not this case
async def test_spins(bgwork):
    await asyncio.sleep(30)  # virtual: costs nothing
    spin()
''' + NEXT_TEST
    )
    result = _run(pytester)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*::test_spins FAILED*",
        "E * Failed: Timeout (>0.5s) from pytest-timeout.",
        "*s call * test_*::test_spins",
    ])
    result.stdout.no_fnmatch_line("*ERROR*")
    stdout = result.stdout.str()
    durations = _durations(stdout)
    # pytest's timing reads ``time.perf_counter``: a virtual clock leaking into it printed ~1.77e9 s
    assert len(durations) == 7 and max(durations) < 120, durations


def test_a_timeout_while_the_fixture_patches_the_clock_is_a_setup_error_with_real_durations(
    pytester: pytest.Pytester,
) -> None:
    """The reported case: the first ``bgwork`` set-up of a process was slow (it scanned every
    module), the timeout fired inside the wall-clock patch and left it half done, so every
    later duration and clock read the virtual time (~1.77e9 s)."""
    pytester.makeconftest(SPIN + '''
import pytest
from pytest_bgwork.core import wallclock

real_find_sites = wallclock._Patcher._find_sites

def slow_find_sites(self, *args):
    found = real_find_sites(self, *args)  # half of the patch is done by now
    spin()
    return found

@pytest.fixture
def slow_patch(monkeypatch):
    monkeypatch.setattr(wallclock._Patcher, "_find_sites", slow_find_sites)
''')
    pytester.makepyfile(
        "import pytest\n" + '''
@pytest.mark.timeout(0.5, method="signal")
async def test_slow_setup(slow_patch, bgwork):
    raise AssertionError("never runs: the set-up timed out")
''' + NEXT_TEST
    )
    result = _run(pytester)
    result.assert_outcomes(errors=1, passed=1)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_slow_setup*",
        "E * Failed: Timeout (>0.5s) from pytest-timeout.",
        "*s setup * test_*::test_slow_setup",
    ])
    stdout = result.stdout.str()
    durations = _durations(stdout)
    assert len(durations) == 6  # no call phase and max(durations) < 120, durations
