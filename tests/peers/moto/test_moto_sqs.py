"""moto's own SQS tests, run unmodified on ``adapters.sqs`` with only ``mock_aws`` replaced.

The suite is downloaded at test time from moto's sdist (never copied here), run in a
subprocess by ``moto_glue`` (our ``mock_aws``: a seeded simulation with the adapter
installed), and every test's outcome is compared with ``expected.toml``: a test not
listed there must pass; a listed one must end as listed, with its reason (not applicable:
the adapter does not claim the operation; or a documented difference, with its docs
link). Any change of outcome, better or worse, fails here until the file says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

import pytest_bgwork

from .._sdist import unpack

HERE = Path(__file__).parent
EXPECTED = HERE / "expected.toml"
KINDS = ("not-applicable", "difference")


def load_expected() -> dict[str, Any]:
    """The suite's pinned version, paths and each non-passing test with its reason."""
    data = tomllib.loads(EXPECTED.read_text(encoding="utf-8"))
    for nodeid, entry in data["tests"].items():
        assert entry.get("kind") in KINDS, f"{nodeid}: kind must be one of {KINDS}"
        assert entry.get("outcome") in ("failed", "error", "skipped"), f"{nodeid}: outcome"
        assert entry.get("reason"), f"{nodeid}: every non-passing test needs its reason"
        if entry["kind"] == "difference":
            assert str(entry.get("docs", "")).startswith("docs/"), f"{nodeid}: a difference links its docs"
    return data


def run_suite(tmp_path: Path) -> dict[str, str]:
    """Run moto's SQS tests on the adapter in a fresh interpreter; their outcomes by node id."""
    data = load_expected()
    suite = data["suite"]
    root = unpack(suite["dist"], suite["version"])
    report = tmp_path / "outcomes.json"
    src = str(Path(pytest_bgwork.__file__).resolve().parent.parent)  # this checkout's package
    env = {**os.environ, "BGWORK_PEER_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join([str(HERE), src]), "PYTHONHASHSEED": "0"}
    env.pop("PYTEST_ADDOPTS", None)
    args = [sys.executable, "-m", "pytest", *suite["paths"], "-p", "moto_glue",
            "-p", "no:cacheprovider", "-p", "no:cov", "-q", "-o", "addopts=", "--tb=line",
            "-p", "no:warnings", "-p", "no:randomly", "-p", "no:xdist"]
    for path in suite.get("ignore", []):
        args.append(f"--ignore={path}")
    for nodeid in suite.get("deselect", []):
        args.append(f"--deselect={nodeid}")
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert report.exists(), f"moto's suite did not run:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    outcomes: dict[str, str] = json.loads(report.read_text(encoding="utf-8"))
    return outcomes


def compare(outcomes: dict[str, str], expected: dict[str, Any]) -> list[str]:
    """Each test whose outcome is not the expected one, as a line naming both."""
    problems = []
    for nodeid in sorted(set(outcomes) | set(expected)):
        want = expected.get(nodeid, {}).get("outcome", "passed")
        got = outcomes.get(nodeid, "not run")
        if want != got:
            why = expected.get(nodeid, {}).get("reason", "")
            problems.append(f"{nodeid}: expected {want}, got {got}" + (f" ({why})" if why else ""))
    return problems


@pytest.mark.timeout(900)
def test_moto_sqs_suite_outcomes_match_the_expected_file(tmp_path: Path) -> None:
    data = load_expected()
    outcomes = run_suite(tmp_path)
    problems = compare(outcomes, data["tests"])
    applicable = [n for n in outcomes if data["tests"].get(n, {}).get("kind") != "not-applicable"]
    passes = [n for n in applicable if outcomes[n] == "passed"]
    print(f"moto {data['suite']['version']}: {len(outcomes)} tests, {len(applicable)} applicable, "
          f"{len(passes)} pass")
    assert not problems, "outcomes changed; update expected.toml with the reason:\n" + "\n".join(problems)
    assert len(passes) >= data["suite"]["min_passes"]


def test_compare_names_each_changed_outcome() -> None:
    expected = {"t::a": {"outcome": "failed", "kind": "difference", "reason": "r"}}
    assert compare({"t::a": "passed", "t::b": "failed"}, expected) == [
        "t::a: expected failed, got passed (r)", "t::b: expected passed, got failed"]
    assert compare({"t::a": "failed", "t::b": "passed"}, expected) == []
