"""The peers' expected-outcomes format: kinds, the score line and the floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._peer_suite import Run, check_floor, compare, read_expected, score

TEXT = """\
collected: 5
failed t.py::a -- not applicable: STS is not SQS
failed t.py::b -- difference: AWS's text (docs/adapters/sqs.md#differences-from-moto)
failed|timeout t.py::c -- gap: a real worker's threads
"""


def test_each_line_states_its_kind_and_the_score_counts_applicable_tests(tmp_path: Path) -> None:
    path = tmp_path / "expected.txt"
    path.write_text(TEXT, encoding="utf-8")
    expected = read_expected(path, strict=True)
    assert expected.kinds == {"t.py::a": "not applicable", "t.py::b": "difference", "t.py::c": "gap"}
    run = Run({"t.py::a": "failed", "t.py::b": "failed", "t.py::c": "timeout", "t.py::d": "passed",
               "t.py::e": "passed"}, {}, 1.0, "")
    assert compare(run, expected) == []
    result = score(run, expected)
    assert result.line("lib 1.0") == "lib 1.0: 2 passed of 4 applicable (1 not applicable)"
    check_floor(result, 2, "lib 1.0")
    with pytest.raises(AssertionError, match=r"2 passed of 4 applicable .*below the floor of 3 passes"):
        check_floor(result, 3, "lib 1.0")


def test_compare_names_each_changed_outcome(tmp_path: Path) -> None:
    path = tmp_path / "expected.txt"
    path.write_text(TEXT, encoding="utf-8")
    run = Run({"t.py::a": "passed", "t.py::b": "failed", "t.py::c": "failed", "t.py::d": "error"},
              {"t.py::d": "boom"}, 1.0, "")
    assert compare(run, read_expected(path)) == [
        "collected 4 tests, expected.txt says 5",
        "t.py::a: passed (expected failed)",
        "t.py::d: error (expected passed) -- boom",
    ]


@pytest.mark.parametrize(("line", "message"), [
    ("failed t.py::a -- SendTaskError: Cannot send", "must start with its kind"),
    ("failed t.py::a -- difference: no page named", "names its docs page"),
    ("failed t.py::a", "expected '<outcome> <node id> -- <reason>'"),
])
def test_strict_refuses_a_line_without_its_kind(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "expected.txt"
    path.write_text(f"collected: 1\n{line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        read_expected(path, strict=True)


def test_lenient_reading_counts_a_reason_without_a_kind_as_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "expected.txt"
    path.write_text("collected: 2\nfailed t.py::a -- SendTaskError\n"
                    "failed t.py::b -- documented difference: x (docs/a.md)\n", encoding="utf-8")
    assert read_expected(path).kinds == {"t.py::a": "gap", "t.py::b": "difference"}


@pytest.mark.parametrize("lib", ["moto", "taskiq"])
def test_the_moved_suites_state_every_kind(lib: str) -> None:
    expected = read_expected(Path(__file__).parent / lib / "expected.txt", strict=True)
    assert expected.outcomes
