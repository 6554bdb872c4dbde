"""Fault rules on ``bgwork_factory`` simulations that never fired are reported at teardown,
as for the ``bgwork`` simulation: a warning, a failure under strict."""

from __future__ import annotations

import pytest

FACTORY_RULES = """
import pytest

def test_unused(bgwork_factory):
    sim = bgwork_factory(seed=11)
    sim.faults.fail("kv.get")
    used = bgwork_factory(seed=12)
    used.faults.fail("kv.set")
    async def main():
        with pytest.raises(ConnectionError):
            await used.kv.set("s", "k", 1)
    used.run(main())

@pytest.mark.bgwork(strict=True)
def test_strict(bgwork_factory):
    bgwork_factory(seed=5).faults.fail("kv.get", on_call=2)

def test_fired(bgwork_factory):
    sim = bgwork_factory()
    sim.faults.fail("kv.get")
    async def main():
        with pytest.raises(ConnectionError):
            await sim.kv.get("s", "k")
    sim.run(main())

def test_failed_body_is_not_reported(bgwork_factory):
    bgwork_factory().faults.fail("kv.get")
    assert False, "the body failed"
"""


def test_factory_rules_that_never_fired_are_reported_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(FACTORY_RULES)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    result.assert_outcomes(passed=3, failed=1, errors=1)  # test_strict passes, then errors
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_strict*",
        "bgwork strict mode: bgwork_factory simulation seed=5: 1 fault rule(s) never fired*",
        "  - fail at kv.get on call 2 raising ConnectionError('injected fault'): kv.get was "
        "entered 0 time(s)",
    ])
    result.stdout.fnmatch_lines([
        "*UnusedFaultRuleWarning: bgwork_factory simulation seed=11: 1 fault rule(s) never fired, so "
        "the test never saw the fault it asked for:",
        "*- fail at kv.get on call 1 raising ConnectionError('injected fault'): kv.get was "
        "entered 0 time(s)",
    ])
    assert result.stdout.str().count("UnusedFaultRuleWarning: ") == 1  # only test_unused's seed=11
