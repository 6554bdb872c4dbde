"""``--bgwork-timeline=always`` prints each passed test's timeline once, also with ``-rA``."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("flags", [[], ["-rA"], ["-rP"]])
def test_a_passed_tests_timeline_is_printed_once(pytester: pytest.Pytester, flags: list[str]) -> None:
    pytester.makepyfile(
        """
        def test_ok(bgwork):
            bgwork.history.record("kv", "set", key="visible")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=always", *flags)
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("key=visible") == 1, result.stdout.str()
