"""The web examples' suites catch their buggy twins, plain and under chaos, and pass once fixed.

Each example ships its fixed code and a buggy twin (a copy with one bug). This runs the
example's own suite in a fresh pytester directory against each, as a user would run it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CHAOS = ["", "--bgwork-chaos=duplicate,fail-first,reorder,crash"]
#: (example, module the twin replaces, twin, the test that must catch it)
TWINS = [
    ("fastapi_receipts", "app.py", "buggy_app.py", "test_checkout_answers_before_the_receipt_email"),
    ("sqs_worker", "worker.py", "buggy_delete_first.py", "test_a_crash_mid_job_loses_nothing"),
    ("sqs_worker", "worker.py", "buggy_not_idempotent.py", "test_a_redelivered_job_mails_once"),
]


def _copy(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, example: str) -> Path:
    # a run that collected examples/ too has the originals imported under the same names
    for name in [m for m in sys.modules if m == example or m.startswith(f"{example}.")]:
        monkeypatch.delitem(sys.modules, name)
    target = pytester.path / example
    shutil.copytree(EXAMPLES / example, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _run(pytester: pytest.Pytester, chaos: str, *extra: str) -> pytest.RunResult:
    args = ["-p", "no:cacheprovider", "-q", *([chaos] if chaos else []), *extra]
    return pytester.runpytest(*args)


@pytest.mark.parametrize("chaos", CHAOS, ids=["plain", "chaos"])
@pytest.mark.parametrize("example", ["fastapi_receipts", "sqs_worker"])
def test_the_fixed_example_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, example: str,
                                  chaos: str) -> None:
    _copy(pytester, monkeypatch, example)
    result = _run(pytester, chaos)
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 4


@pytest.mark.parametrize("chaos", CHAOS, ids=["plain", "chaos"])
@pytest.mark.parametrize(("example", "module", "twin", "catcher"), TWINS, ids=[t[2] for t in TWINS])
def test_the_suite_catches_the_buggy_twin(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, example: str,
                                          module: str, twin: str, catcher: str, chaos: str) -> None:
    target = _copy(pytester, monkeypatch, example)
    shutil.copyfile(target / twin, target / module)
    result = _run(pytester, chaos, "-k", catcher)
    result.stdout.fnmatch_lines([f"FAILED *::{catcher}*"])
    assert result.parseoutcomes() == {"failed": 1, "deselected": result.parseoutcomes()["deselected"]}
