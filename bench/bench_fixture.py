"""Per-test cost of the ``bgwork`` fixture over a plain fixture, in CPU time.

Run ``python bench/bench_fixture.py [N] [ROUNDS]`` (defaults 400 tests, 5 rounds). Each
round runs pytest subprocesses over N tiny tests: sync tests taking ``bgwork`` or a
plain fixture, and ``async def`` tests (pytest-asyncio) taking ``bgwork`` or a plain
fixture. Every file starts with one ``bgwork`` test, so the one-time costs of a session
(imports, the wall-clock patch's first module scan) are in both runs; a fifth run
without it shows that one-time cost. A subprocess's CPU time (user + system, from ``resource.getrusage``) includes
start-up and collection; both variants pay those alike, so the difference divided by N
is what the fixture adds per test. Variants interleave within each round and the best
(least disturbed) round of each is kept, so load from elsewhere on a shared machine
slows one round of each, not one variant.

The tests themselves do nothing (an ``await asyncio.sleep(0)`` in the async ones), so
the difference is set-up and teardown: the simulation, the wall-clock patch, the
loop, the report hooks. Aim: at most 1 ms of CPU per test over the plain fixture.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

AIM_MS = 1.0

SYNC = """
import pytest

@pytest.fixture
def plain():
    yield object()

{warm}

@pytest.mark.parametrize("i", range({n}))
def test_it({fixture}, i):
    pass
"""

ASYNC = """
import asyncio
import pytest

@pytest.fixture
def plain():
    yield object()

{warm}

@pytest.mark.asyncio
@pytest.mark.parametrize("i", range({n}))
async def test_it({fixture}, i):
    await asyncio.sleep(0)
"""


#: One bgwork test first in every file, so one-time costs (imports, the first module
#: scan of the wall-clock patch) are paid alike and the difference is per test.
WARM = "def test_warm(bgwork):\n    assert bgwork.seed is not None\n"


def write_suite(root: Path, n: int) -> dict[str, Path]:
    files = {}
    path = root / "test_cold_plain.py"
    path.write_text(textwrap.dedent(SYNC).format(n=n, fixture="plain", warm=""))
    files["sync plain, no bgwork test at all"] = path
    for kind, template in (("sync", SYNC), ("async", ASYNC)):
        for fixture in ("plain", "bgwork"):
            path = root / f"test_{kind}_{fixture}.py"
            path.write_text(textwrap.dedent(template).format(n=n, fixture=fixture, warm=WARM))
            files[f"{kind} {fixture}"] = path
    (root / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    return files


def child_cpu(path: Path) -> float:
    """CPU seconds (user + system) of one pytest run over ``path``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         "-p", "no:cov", "-p", "no:xdist", "-p", "no:looptime_plugin", "-p", "no:looptime_chronometers",
         "-p", "no:looptime_timeproxies", str(path)],
        cwd=path.parent, capture_output=True, text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as tmp:
        files = write_suite(Path(tmp), n)
        best = {name: float("inf") for name in files}
        for _ in range(rounds):
            for name, path in files.items():
                best[name] = min(best[name], child_cpu(path))
    print(f"bgwork fixture per-test cost: {n} tests per run, best of {rounds} interleaved rounds, "
          "CPU time (user+sys) of a pytest subprocess; shared 2-core machine")
    print(f"{'run':<36}{'CPU s':>9}{'ms/test':>10}")
    for name, seconds in best.items():
        print(f"{name:<36}{seconds:>9.3f}{seconds / n * 1e3:>10.3f}")
    once = best["sync plain"] - best["sync plain, no bgwork test at all"]
    print(f"one-time cost of the first bgwork test in a session: {once * 1e3:.0f} ms CPU "
          "(imports, the first module scan)")
    for kind in ("sync", "async"):
        plain, ours = best[f"{kind} plain"], best[f"{kind} bgwork"]
        extra = (ours - plain) / n * 1e3
        print(f"{kind}: bgwork adds {extra:.3f} ms CPU per test over a plain fixture "
              f"(ratio {ours / plain:.2f}x the plain run) · aim <= {AIM_MS:g} ms: "
              f"{'met' if extra <= AIM_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
