"""Run a peer library's own tests on an adapter and compare outcomes to an expected file.

``expected.txt`` (one per suite folder) lists every test that does not pass, one line
each: ``<outcome> <node id> -- <reason>`` (``failed|timeout`` for a test that races),
where the reason says either "not applicable" (the adapter does not claim the
operation) or names a documented difference with its docs page. Every other collected
test must pass, and the header line ``collected: N`` pins how many tests the suite has,
so a test whose outcome changes (or that disappears) fails.
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


@dataclass
class Expected:
    """What ``expected.txt`` says: the number collected and each non-passing test's outcome."""

    collected: int
    outcomes: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


def read_expected(path: Path) -> Expected:
    """Parse an ``expected.txt`` (``#`` comments, ``collected: N``, ``<outcome> <id> -- <why>``)."""
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
        exp.outcomes[parts[1].strip()] = parts[0]
        exp.reasons[parts[1].strip()] = why.strip()
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
              total_timeout: float, extra: list[str] | None = None) -> Run:
    """Run ``paths`` of the unpacked suite at ``root`` with the glue plugin ``glue`` loaded.

    The glue lives beside this file's suite folders (``tests/peers/<lib>/``); this work
    tree comes first on ``PYTHONPATH`` so its ``pytest_bgwork`` is the one under test.
    pytest-timeout stops a test that runs past ``per_test_timeout`` real seconds.
    """
    lib_dir = PEERS / glue.removeprefix("bgwork_").removesuffix("_glue")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "outcomes.json"
        env = dict(os.environ)
        # not tests/peers itself: its folders are named after the libraries they test
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(PEERS / "_plugins"), str(lib_dir)])
        env["BGWORK_PEER_OUTCOMES"] = str(out)
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
