"""One shape for the fault methods: each takes its target positionally or by keyword
(``point=``, ``queue=``, ``url=``) and ``on_call=``; the defaults follow one rule."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core.faults import FaultInjector

Build = Callable[[FaultInjector], bg.Fault]

#: (positional spelling, keyword spelling) pairs that must build the same rule.
PAIRS: dict[str, tuple[Build, Build]] = {
    "fail": (lambda f: f.fail("kv.set", on_call=2, error=ConnectionError("down")),
             lambda f: f.fail(point="kv.set", on_call=2, error=ConnectionError("down"))),
    "fail-queue": (lambda f: f.fail("kv.set", queue="jobs"),
                   lambda f: f.fail(queue="jobs", point="kv.set")),
    "delay": (lambda f: f.delay("queue.deliver", seconds=30),
              lambda f: f.delay(point="queue.deliver", seconds=30)),
    "crash-at": (lambda f: f.crash("jobs", at="stream.write", on_call=1),
                 lambda f: f.crash(queue="jobs", point="stream.write", on_call=1)),
    "crash-point": (lambda f: f.crash("jobs", at="stream.write"),
                    lambda f: f.crash("jobs", point="stream.write")),
    "duplicate": (lambda f: f.duplicate("jobs", times=3),
                  lambda f: f.duplicate(queue="jobs", times=3)),
    "hang": (lambda f: f.hang("jobs", seconds=300),
             lambda f: f.hang(queue="jobs", seconds=300)),
    "http": (lambda f: f.http("https://api.example/*", status=503),
             lambda f: f.http(url="https://api.example/*", status=503)),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_the_keyword_form_builds_the_same_fault(name: str) -> None:
    positional, keyword = PAIRS[name]
    with bg.Simulation(seed=1) as a, bg.Simulation(seed=1) as b:
        assert positional(a.faults) == keyword(b.faults)
        assert a.faults.plan == b.faults.plan


def test_crash_point_and_at_are_one_argument() -> None:
    with bg.Simulation(seed=1) as sim:
        with pytest.raises(TypeError, match=r"at='stream.write' and point='kv.set'.*give one"):
            sim.faults.crash("jobs", at="stream.write", point="kv.set")
        with pytest.raises(TypeError, match=r"needs the fault point.*point='stream.write'"):
            sim.faults.crash("jobs")
        with pytest.raises(ValueError, match=r"point= must be a fault point.*'stream.wrte'"):
            sim.faults.crash("jobs", point="stream.wrte")
        with pytest.raises(ValueError, match=r"at= must be a fault point"):
            sim.faults.crash("jobs", at="stream.wrte")
        assert sim.faults.plan == bg.FaultPlan()


def _table(text: str) -> dict[str, str]:
    """method -> the ``on_call`` default cell of the fault-method table in ``text``."""
    rows = re.findall(r"^\s*\| `(\w+)\(.*?\| `([^`]+)`[^|]*\|\s*$", text, re.M)
    return dict(rows)


@pytest.mark.parametrize("source", ["docstring", "docs/faults.md"])
def test_the_table_states_each_methods_on_call_default(source: str) -> None:
    text = (inspect.getdoc(FaultInjector) or "" if source == "docstring"
            else (Path(__file__).parent.parent / source).read_text())
    table = _table(text)
    assert set(table) == {"fail", "crash", "hang", "http", "delay", "duplicate"}
    for method, cell in table.items():
        default: Any = inspect.signature(getattr(FaultInjector, method)).parameters["on_call"].default
        assert cell == repr(default), (method, cell, default)
        # the rule: incidents default to the first call, environment properties to every call
        assert default == (1 if method in {"fail", "crash", "hang", "http"} else None)


def test_design_and_keyword_spellings_warn_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_spellings(bgwork):
            f = bgwork.faults
            f.fail("kv.set", on_call=2, error=ConnectionError("kv down"))
            f.crash("report-jobs", at="stream.write", on_call=1)
            f.crash(queue="report-jobs", point="stream.write")
            f.duplicate("report-jobs", times=2)
            f.hang("report-jobs", seconds=300)
            f.delay("queue.deliver", seconds=30)
            f.http(url="https://api.example/*", timeout=True)
            assert len(f.plan) == 7
            f.clear()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1)
