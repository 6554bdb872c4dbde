"""``pytest examples/pull_exports --bgwork-chaos=<mode>``: each chaos mode alone, and all six
together, turns the buggy twin's direct test red with the bug that mode shows, while the
correct app stays green. Without chaos both are green (the direct test alone sees no bug).

``reorder`` and ``latency`` only change order and timing: the twin's dashboard bug (the
last export to finish is shown, even when it is older) is what they show.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_bgwork.checking import chaos

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pull_exports" / "test_pull_exports.py"
DIRECT = "test_each_export_is_done_mailed_once_and_shown"

#: What each mode shows in the twin, as the failure prints it.
SHOWN = {
    "duplicate": "*assert_effects_once('email'): expected each key's 'email' effect exactly once*",
    "overlap": "*assert_effects_once('email'): expected each key's 'email' effect exactly once*",
    "crash": "*assert_effects_once('email'): expected each key's 'email' effect exactly once*",
    "fail-first": "*its job was deleted but its status is None*",  # its first call failed
    "reorder": "*dashboard went back from exp-* to the older exp-*",
    "latency": "*dashboard went back from exp-* to the older exp-*",
}


def run_direct_test(pytester: pytest.Pytester, *options: str) -> pytest.RunResult:
    """The example's direct test, both twins, as a user runs it (its own rootdir and ini)."""
    return pytester.runpytest_subprocess(str(EXAMPLE), "-k", DIRECT, "-p", "no:cacheprovider",
                                         "-p", "no:randomly", *options)


def test_without_chaos_both_twins_pass_the_direct_test(pytester: pytest.Pytester) -> None:
    run_direct_test(pytester).assert_outcomes(passed=2)


@pytest.mark.parametrize("mode", chaos.MODES)
def test_each_chaos_mode_alone_finds_the_twin(pytester: pytest.Pytester, mode: str) -> None:
    result = run_direct_test(pytester, f"--bgwork-chaos={mode}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([SHOWN[mode], f"FAILED *{DIRECT}[[]buggy[]]*"])
    result.stdout.no_fnmatch_line(f"FAILED *{DIRECT}[[]app[]]*")


def test_all_chaos_modes_together_find_the_twin(pytester: pytest.Pytester) -> None:
    result = run_direct_test(pytester, f"--bgwork-chaos={','.join(chaos.MODES)}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"FAILED *{DIRECT}[[]buggy[]]*"])
