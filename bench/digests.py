"""History digests of every example test and every bench scenario: the behaviour check.

Run ``python bench/digests.py > bench/digests.out`` before and after an optimisation and
``git diff bench/digests.out``: an optimisation must leave every line unchanged (or
``changes/<you>.md`` says what changed and why).

Each line is ``name  digest  (simulations)``. A test's or scenario's digest is the
SHA-256 over the history digests (and final virtual times) of every simulation it
made, in order: the ``bgwork`` fixture's, the ``bgwork_factory``'s and each example of
``bg.explore`` alike (``sim.cancelled_at_teardown`` events left out: they name asyncio's
process-wide task counter, so they are not reproducible across runs).
The example tests run in-process through ``pytest.main``.

Two runs print the same lines. A ``bg.explore`` without ``seed=`` searches with
Hypothesis's own randomness and first replays what the example database holds, so each
test and scenario runs with a fresh, empty, private Hypothesis directory (never the
repository's ``.hypothesis/``, which this tool neither reads nor writes) and the example
tests run with ``--hypothesis-seed=0``.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

import pytest_bgwork as bg
from pytest_bgwork import plugin
from pytest_bgwork.simulation import Simulation

ROOT = Path(__file__).resolve().parent.parent
_seen: list[Simulation] = []
_private: list[Path] = []  # the run's temporary directory, once made
_homes = itertools.count(1)


@contextmanager
def fresh_hypothesis_home() -> Iterator[None]:
    """Point Hypothesis at a new, empty directory (database, caches) for the block.

    The default settings' database follows the home directory from one access to the next, so
    nothing one test or scenario saved can be replayed by another, or by the next run.
    """
    set_hypothesis_home_dir(_private[0] / f"{next(_homes):04d}")
    try:
        yield
    finally:
        set_hypothesis_home_dir(_private[0] / "between")


def _fingerprint(sim: Simulation) -> str:
    # ``sim.cancelled_at_teardown`` events name asyncio's process-wide task counter
    # ("Task-4") and come in set order, so they differ from run to run: left out here.
    h = hashlib.sha256()
    for event in sim.history.events:
        if event.name != "sim.cancelled_at_teardown":
            h.update(event.canonical().encode() + b"\n")
    return f"{h.hexdigest()}@{sim.clock.monotonic():.6f}"


@contextmanager
def recording() -> Iterator[list[Simulation]]:
    """Collect every ``Simulation`` created inside the block, in creation order."""
    real_init = Simulation.__init__

    def init(self: Simulation, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        _seen.append(self)

    _seen.clear()
    Simulation.__init__ = init  # type: ignore[method-assign]
    try:
        yield _seen
    finally:
        Simulation.__init__ = real_init  # type: ignore[method-assign]


def combined(sims: list[Simulation]) -> str:
    h = hashlib.sha256()
    for sim in sims:
        h.update(_fingerprint(sim).encode() + b"\n")
    return h.hexdigest()[:32]


class _PerTest:
    """A pytest plugin: the digest of the simulations each test made."""

    def __init__(self) -> None:
        self.lines: list[str] = []

        self.failed: set[str] = set()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.failed.add(report.nodeid)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        with fresh_hypothesis_home(), recording() as sims:
            result = yield
            made = list(sims)
        if made:
            failed = "  FAILED" if item.nodeid in self.failed else ""
            self.lines.append(f"{item.nodeid}  {combined(made)}  ({len(made)}){failed}")
        return result


def example_tests() -> list[str]:
    collector = _PerTest()
    out = io.StringIO()
    with redirect_stdout(out):
        code = pytest.main(["examples", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                            "-p", "no:xdist", "--hypothesis-seed=0", "--rootdir", str(ROOT)],
                           plugins=[collector])
    if code not in (0, 1):  # 1: some test failed; its line says so and the rest still count
        raise SystemExit(f"the example tests did not run ({code}):\n{out.getvalue()[-3000:]}")
    return collector.lines


def scenario(name: str, run: Callable[[], object]) -> str:
    with fresh_hypothesis_home(), recording() as sims:
        run()
        made = list(sims)
    return f"bench:{name}  {combined(made)}  ({len(made)})"


def bench_scenarios() -> list[str]:
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_explore
    import bench_kv
    import bench_loop
    import bench_queues

    return [
        scenario("loop.sequential(1000)", bench_loop.on_bgwork(bench_loop.sequential, 1000)),
        scenario("loop.concurrent(1000)", bench_loop.on_bgwork(bench_loop.concurrent, 1000)),
        scenario("queues.throughput(2000)", lambda: bench_queues.bgwork_throughput(2000)),
        scenario("queues.redelivery(200)", lambda: bench_queues.bgwork_redelivery(200)),
        scenario("kv.set_get(2000)", lambda: bench_kv.bench_bgwork(2000)),
        scenario("explore.report_jobs.bare(5)", lambda: bench_explore.bare_runs(5)),
        scenario("explore.report_jobs(60)", lambda: bench_explore.explore_once(60)),
        scenario("explore.one_message(60)", lambda: bench_explore.explore_one_message(60)),
    ]


def main() -> None:
    assert bg.Simulation is Simulation and plugin is not None
    with tempfile.TemporaryDirectory(prefix="bgwork-digests-") as private:
        _private[:] = [Path(private)]
        set_hypothesis_home_dir(Path(private) / "between")
        try:
            lines = example_tests() + bench_scenarios()
        finally:
            set_hypothesis_home_dir(None)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
