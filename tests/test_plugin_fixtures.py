"""The ``bg_*`` fixtures: the fixture spelling of ``bgwork.<service>``; an alias outside
that set (``bg_task_manager``) still works for one release and warns with its replacement."""

from __future__ import annotations

import pytest

DOCUMENTED = {"bg_clock": "clock", "bg_queues": "queues", "bg_kv": "kv",
              "bg_streams": "streams", "bg_runtime": "runtime", "bg_faults": "faults"}


def test_documented_fixtures_are_the_attributes_and_warn_nothing(pytester: pytest.Pytester) -> None:
    args = ", ".join(DOCUMENTED)
    checks = "\n".join(f"    assert {name} is bgwork.{attr}" for name, attr in DOCUMENTED.items())
    pytester.makepyfile(f"def test_fixtures(bgwork, {args}):\n{checks}\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error::DeprecationWarning")
    result.assert_outcomes(passed=1)


def test_bg_task_manager_still_works_and_names_its_replacement(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        async def test_manager(bgwork, bg_task_manager):
            assert bg_task_manager is bgwork.task_manager
            bg_task_manager.create_task(bgwork.kv.set("s", "k", 1), name="save")
            await bg_task_manager.wait_for_all()
            assert (await bgwork.kv.get("s", "k")).data == 1
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*DeprecationWarning: the bg_task_manager fixture is deprecated: use bgwork.task_manager "
        "(take the bgwork fixture); the alias goes in the next release",
    ])


def test_bg_task_manager_fails_under_error_on_deprecation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_manager(bg_task_manager):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error::DeprecationWarning")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*DeprecationWarning: the bg_task_manager fixture is deprecated*"])
