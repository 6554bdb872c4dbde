"""Run a peer library's own tests on an adapter and compare outcomes to an expected file.

``expected.txt`` (one per suite folder) lists every test that does not pass, one line
each: ``<outcome> <node id> -- <kind>: <reason>`` (``failed|timeout`` for a test that
races). The kind is one of ``KINDS``:

- ``not applicable``: the test exercises something the real service or library does not
  have, or the adapter does not claim (a mock's own settings, STS, a foreign event loop);
  it does not count among the applicable tests;
- ``difference``: a documented divergence, whose reason names its docs page (``docs/...``);
- ``gap``: something the adapter should do and does not yet.

Every other collected test must pass, and the header line ``collected: N`` pins how many
tests the suite has, so a test whose outcome changes (or that disappears) fails. A suite's
score is "N passed of M applicable" (applicable: collected minus not applicable), held to a
floor (``check_floor``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEERS = Path(__file__).resolve().parent


#: The kinds of non-passing test an ``expected.txt`` line states, before its reason.
KINDS = ("not applicable", "difference", "gap")
#: Older spellings still found in suites that have not moved to ``KINDS`` (read as such).
_ALIASES = {"documented difference": "difference"}


@dataclass
class Expected:
    """What ``expected.txt`` says: the number collected and each non-passing test's outcome,
    reason and kind (``KINDS``; ``gap`` for a reason that states none, unless strict)."""

    collected: int
    outcomes: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    @property
    def not_applicable(self) -> set[str]:
        """The node ids listed as not applicable."""
        return {n for n, k in self.kinds.items() if k == "not applicable"}


def _kind(why: str) -> str | None:
    """The kind a reason starts with (``"difference: ..."``), or ``None``."""
    head = why.split(":", 1)[0].strip().lower()
    head = _ALIASES.get(head, head)
    return head if head in KINDS and ":" in why else None


def read_expected(path: Path, *, strict: bool = False) -> Expected:
    """Parse an ``expected.txt`` (``#`` comments, ``collected: N``,
    ``<outcome> <id> -- <kind>: <why>``).

    ``strict``: every line must state its kind, and a difference must name its docs page;
    otherwise a reason without a kind counts as a ``gap`` (it stays applicable).
    """
    collected = -1
    exp = Expected(collected)
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("collected:"):
            exp.collected = int(line.split(":", 1)[1])
            continue
        head, sep, why = line.partition(" -- ")
        parts = head.split(None, 1)
        if not sep or len(parts) != 2 or not why.strip():
            raise ValueError(f"{path}:{n}: expected '<outcome> <node id> -- <reason>', got {raw!r}")
        nodeid, why = parts[1].strip(), why.strip()
        kind = _kind(why)
        if strict and kind is None:
            raise ValueError(f"{path}:{n}: the reason must start with its kind, one of "
                             f"{', '.join(KINDS)} (e.g. '-- gap: ...'), got {why!r}")
        if strict and kind == "difference" and "docs/" not in why:
            raise ValueError(f"{path}:{n}: a difference names its docs page (docs/...), got {why!r}")
        exp.outcomes[nodeid] = parts[0]
        exp.reasons[nodeid] = why
        exp.kinds[nodeid] = kind or "gap"
    if exp.collected < 0:
        raise ValueError(f"{path}: no 'collected: N' line")
    return exp


@dataclass
class Run:
    """One run of a peer suite: outcomes by node id, the wall time and the run's output."""

    outcomes: dict[str, str]
    reasons: dict[str, str]
    seconds: float
    output: str

    def count(self, outcome: str) -> int:
        """How many tests ended with ``outcome``."""
        return sum(1 for o in self.outcomes.values() if o == outcome)


def run_suite(root: Path, paths: list[str], glue: str, *, per_test_timeout: float,
              total_timeout: float, extra: list[str] | None = None,
              env_extra: dict[str, str] | None = None) -> Run:
    """Run ``paths`` of the unpacked suite at ``root`` with the glue plugin ``glue`` loaded.

    The glue lives beside this file's suite folders (``tests/peers/<lib>/``); this work
    tree comes first on ``PYTHONPATH`` so its ``pytest_bgwork`` is the one under test.
    pytest-timeout stops a test that runs past ``per_test_timeout`` real seconds.
    ``env_extra``: more environment variables for the run (e.g. ``PYTHONHASHSEED``).
    """
    lib_dir = PEERS / glue.removeprefix("bgwork_").removesuffix("_glue")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outcomes.json"
        env = dict(os.environ)
        # not tests/peers itself: its folders are named after the libraries they test
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(PEERS / "_plugins"), str(lib_dir)])
        env["BGWORK_PEER_OUTCOMES"] = str(out)
        env.update(env_extra or {})
        env.pop("PYTEST_ADDOPTS", None)
        env.pop("PYTEST_XDIST_WORKER", None)
        cmd = [sys.executable, "-m", "pytest", *paths, "-p", glue, "-p", "bgwork_peer_outcomes",
               "-p", "no:cacheprovider", "-p", "no:randomly", "-q", "--tb=native",
               "--bgwork-timeline=never", f"--timeout={per_test_timeout}",
               "-o", "addopts=", *(extra or [])]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                              timeout=total_timeout, check=False)
        seconds = time.perf_counter() - start
        output = proc.stdout[-6000:] + proc.stderr[-3000:]
        if not out.exists():
            raise AssertionError(f"the peer suite wrote no outcomes (exit {proc.returncode}):\n{output}")
        data = json.loads(out.read_text(encoding="utf-8"))
    return Run({k: v[0] for k, v in data.items()}, {k: v[1] for k, v in data.items()}, seconds, output)


def compare(run: Run, expected: Expected) -> list[str]:
    """Every difference between a run and its expected file, one readable line each."""
    problems = []
    if len(run.outcomes) != expected.collected:
        problems.append(f"collected {len(run.outcomes)} tests, expected.txt says {expected.collected}")
    for nodeid, outcome in sorted(run.outcomes.items()):
        want = expected.outcomes.get(nodeid, "passed")
        if outcome not in want.split("|"):  # "failed|timeout": a test that races, either way
            why = run.reasons.get(nodeid, "")
            problems.append(f"{nodeid}: {outcome} (expected {want}){' -- ' + why if why else ''}")
    for nodeid in sorted(set(expected.outcomes) - set(run.outcomes)):
        problems.append(f"{nodeid}: listed in expected.txt but not collected")
    return problems


@dataclass
class Score:
    """A run's score: how many of the applicable tests passed, and how many were not applicable."""

    passed: int
    applicable: int
    not_applicable: int

    def line(self, suite: str) -> str:
        """``"<suite>: N passed of M applicable (K not applicable)"``, as the suite test prints it."""
        return (f"{suite}: {self.passed} passed of {self.applicable} applicable "
                f"({self.not_applicable} not applicable)")


def score(run: Run, expected: Expected) -> Score:
    """Applicable = collected minus the tests ``expected.txt`` calls not applicable."""
    skip = expected.not_applicable
    applicable = [n for n in run.outcomes if n not in skip]
    passed = sum(1 for n in applicable if run.outcomes[n] == "passed")
    return Score(passed, len(applicable), len(run.outcomes) - len(applicable))


def check_floor(result: Score, min_passes: int, suite: str) -> None:
    """Fail unless at least ``min_passes`` applicable tests passed (the suite's target)."""
    if result.passed < min_passes:
        raise AssertionError(f"{result.line(suite)}: below the floor of {min_passes} passes")
