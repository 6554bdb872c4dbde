"""Start-up: what importing the plugin costs, from ``python -X importtime`` and CPU time.

Run ``python bench/bench_startup.py [RUNS] [--against DIR]`` (default 15 runs). Each run is
a fresh ``python -X importtime -c "import pytest_bgwork.plugin"``; for every module the
smallest self time over the runs is kept (the least disturbed by other load on a shared
machine), and the package's figure is the sum over ``pytest_bgwork*`` modules. Aim: <= 30 ms,
and none of the heavy libraries loaded.

Two states of the bytecode cache, both measured (the children share one private
``PYTHONPYCACHEPREFIX``; nothing is written next to the sources):

- *cached*: every module has its ``.pyc``, as after ``pip install`` (which compiles them)
  or any earlier run; this is what users pay, and the verdict.
- *from source*: pytest and the standard library cached, ``pytest_bgwork`` compiled on each
  import, as on a machine with ``PYTHONDONTWRITEBYTECODE=1`` and an editable install
  (this one: the earlier figures of this bench were taken that way).

``--against DIR`` measures a second copy of the package (a directory holding ``pytest_bgwork/``,
e.g. ``git archive <commit> pytest_bgwork | tar -x -C DIR``) in the same rounds, as the anchor.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

AIM_MS = 30.0
HEAVY = ("hypothesis", "httpx", "respx", "freezegun", "croniter", "pytest_bgwork.report_html")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")
PLUGIN = "import pytest_bgwork.plugin"
#: The children run elsewhere, so ``sys.path[0]`` (their cwd) holds no copy of the package and
#: ``PYTHONPATH`` picks the one measured (it comes before the venv's editable install).
_CWD = tempfile.gettempdir()


def importtime(env: dict[str, str]) -> dict[str, int]:
    """Self time (µs) of each module a fresh ``import pytest_bgwork.plugin`` loads."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", PLUGIN], env=env, cwd=_CWD,
                         capture_output=True, text=True, check=True).stderr
    return {m.group(4): int(m.group(1)) for m in map(_LINE.match, out.splitlines()) if m}


def child_cpu(code: str, env: dict[str, str]) -> float:
    """CPU seconds (user + system) of ``python -c code``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=_CWD, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def beyond_pytest(env: dict[str, str]) -> list[str]:
    """Modules other than ``pytest_bgwork*`` the plugin loads that ``import pytest`` does not."""
    code = ("import sys, pytest; before = set(sys.modules); import pytest_bgwork.plugin; "
            "print(' '.join(sorted(m for m in set(sys.modules) - before "
            "if not m.startswith('pytest_bgwork'))))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=_CWD, capture_output=True,
                         text=True, check=True).stdout
    return out.split()


class Result(NamedTuple):
    best: dict[str, int]  # module -> smallest self time (µs)
    cpu: float  # smallest CPU seconds of ``import pytest, pytest_bgwork.plugin``
    plain: float  # smallest CPU seconds of ``import pytest``, in the same rounds


def measure(envs: dict[str, dict[str, str]], runs: int) -> dict[str, Result]:
    """Per-module best self times and best CPU over ``import pytest``, rounds interleaved."""
    best: dict[str, dict[str, int]] = {label: {} for label in envs}
    cpu = dict.fromkeys(envs, float("inf"))
    plain = float("inf")
    any_env = next(iter(envs.values()))
    for _ in range(runs):
        plain = min(plain, child_cpu("import pytest", any_env))
        for label, env in envs.items():
            for module, self_us in importtime(env).items():
                best[label][module] = min(best[label].get(module, self_us), self_us)
            cpu[label] = min(cpu[label], child_cpu(f"import pytest; {PLUGIN}", env))
    return {label: Result(best[label], cpu[label], plain) for label in envs}


def report(label: str, result: Result, verdict: bool) -> None:
    ours = {m: t for m, t in result.best.items() if m.startswith("pytest_bgwork")}
    total_ms = sum(ours.values()) / 1000
    heavy = [m for m in HEAVY if m in result.best]
    aim = f" · aim <= {AIM_MS:g} ms: {'met' if total_ms <= AIM_MS else 'MISSED'}" if verdict else ""
    print(f"  {label}: {len(ours)} pytest_bgwork* modules, self time {total_ms:.1f} ms{aim}")
    for module, self_us in sorted(ours.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {module:<42}{self_us / 1000:>7.2f} ms self")
    print(f"    heavy libraries loaded: {', '.join(heavy) if heavy else 'none'}")
    print(f"    CPU: python -c 'import pytest' {result.plain * 1000:.0f} ms; with the plugin "
          f"{result.cpu * 1000:.0f} ms: the plugin adds {(result.cpu - result.plain) * 1000:.0f} ms")


def pytest_runs(env: dict[str, str], runs: int) -> None:
    """CPU of whole ``pytest`` runs of one test: without the plugin, with it, and with the
    test using ``bgwork`` (the simulation and freezegun then load, on first use), interleaved;
    the plugin-off run twice, so the spread between identical runs shows the noise."""
    with tempfile.TemporaryDirectory(prefix="bgwork-startup-") as where:
        Path(where, "test_plain.py").write_text("def test_plain():\n    pass\n")
        Path(where, "test_sim.py").write_text("def test_sim(bgwork):\n    assert bgwork.seed >= 0\n")
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        off = [*base, "-p", "no:bgwork", "test_plain.py"]
        cases = {"plugin off (-p no:bgwork), a plain test": off,
                 "plugin on, a plain test": [*base, "test_plain.py"],
                 "plugin on, a test using bgwork": [*base, "test_sim.py"],
                 "plugin off again (the noise floor)": off}
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(runs):
            for label, argv in cases.items():
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run(argv, env=env, cwd=where, check=True, capture_output=True)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                best[label] = min(best[label], cpu)
    first = next(iter(best))
    print(f"whole pytest runs of one test (this venv's plugins), CPU best of {runs}, cached bytecode:")
    for label, cpu in best.items():
        extra = "" if label == first else f"  ({(cpu - best[first]) * 1000:+.0f} ms)"
        print(f"  {label:<44}{cpu * 1000:>6.0f} ms{extra}")


def main() -> None:
    args = sys.argv[1:]
    against = None
    if "--against" in args:
        at = args.index("--against")
        against = str(Path(args[at + 1]).resolve())
        del args[at:at + 2]
    runs = int(args[0]) if args else 15
    here = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(prefix="bgwork-pycache-") as prefix:
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cached["PYTHONPYCACHEPREFIX"] = prefix
        roots = {"this checkout": here}
        if against is not None:
            roots[f"--against {against}"] = against
        copies = {label: {**cached, "PYTHONPATH": root} for label, root in roots.items()}
        beyond = {}
        for label, env in copies.items():  # warm-up: write every module's .pyc into the prefix
            importtime(env)
            beyond[label] = beyond_pytest(env)
        print(f"import pytest_bgwork.plugin · -X importtime, per-module best of {runs} runs, "
              f"interleaved · shared {os.cpu_count()}-core machine, load average "
              f"{os.getloadavg()[0]:.1f} · Python {sys.version_info.major}.{sys.version_info.minor}")
        for label, modules in beyond.items():
            print(f"{label}: modules the plugin loads that `import pytest` does not (besides "
                  f"pytest_bgwork*): {' '.join(modules) if modules else 'none'}")
        print("bytecode cached (as installed; the verdict):")
        for label, result in measure(copies, runs).items():
            report(label, result, verdict=label == "this checkout")
        pytest_runs(copies["this checkout"], runs)
        for root in roots.values():  # drop the package's .pyc and write none from now on
            shutil.rmtree(prefix + os.path.join(root, "pytest_bgwork"))
        source = {label: {**env, "PYTHONDONTWRITEBYTECODE": "1"} for label, env in copies.items()}
        print("pytest_bgwork compiled from source on each import (PYTHONDONTWRITEBYTECODE=1, "
              "no .pyc), pytest cached:")
        for label, result in measure(source, runs).items():
            report(label, result, verdict=False)


if __name__ == "__main__":
    main()
