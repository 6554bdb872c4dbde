"""What ``bgst.fault_plans()`` draws: the distribution the default search relies on (issue 11).

A bug is found only if its cell (kind, point, options) is drawn often enough: these tests pin
that every cell of a small plan space is reachable and shrinks to itself, that few plans are
empty, that a write's errors mostly come after the write applied, and that shrinking still
ends at no fault or at the plainest fault. No timing: counts over seeded Hypothesis runs.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import sys

import hypothesis
import pytest
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking.explore import HypothesisChoices
from pytest_bgwork.core.faults import Fault, FaultPlan
from pytest_bgwork.strategies import learned_points

QUIET = hypothesis.settings(database=None, max_examples=2000,
                            suppress_health_check=list(hypothesis.HealthCheck))
CONN, TIMEOUT = "ConnectionError('injected fault')", "TimeoutError('injected timeout')"


def _sample(strategy: st.SearchStrategy[FaultPlan], n: int) -> list[FaultPlan]:
    """``n`` plans as a seeded search draws them (generation, mutations and all)."""
    seen: list[FaultPlan] = []

    @hypothesis.seed(1)
    @hypothesis.settings(database=None, max_examples=n, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(strategy)
    def draw(plan: FaultPlan) -> None:
        seen.append(plan)

    draw()
    return seen


def test_every_cell_of_a_small_space_is_reachable_and_shrinks_to_itself() -> None:
    plans = bgst.fault_plans(max_faults=1, points=["kv.get", "queue.publish"], kinds=["fail"],
                             max_on_call=2)
    cells = [FaultPlan()]
    for point, call, error, after in itertools.product(
            ("kv.get", "queue.publish"), (1, 2, None), (CONN, TIMEOUT), (False, True)):
        if after and point == "kv.get":
            continue  # a read cannot apply before it fails
        cells.append(FaultPlan([Fault("fail", point, None, call, error, after)]))
    assert len(cells) == 1 + 6 + 12
    for cell in cells:
        assert hypothesis.find(plans, lambda p, cell=cell: p == cell, settings=QUIET) == cell


def test_few_plans_are_empty() -> None:
    sizes = collections.Counter(len(p) for p in _sample(bgst.fault_plans(), 400))
    # the count is drawn uniform in 0..3 (st.lists made 40% of plans empty); Hypothesis's
    # mutations copy values between draws, so the sizes come out uneven, but every size comes
    assert set(sizes) == {0, 1, 2, 3}
    assert sizes[0] < 400 * 0.3, sizes
    assert min(sizes.values()) > 400 * 0.05, sizes


def test_the_six_failure_modes_are_even_and_errors_after_a_write_are_one_of_them() -> None:
    points = ["kv.set", "queue.ack", "queue.deliver", "queue.publish"]
    faults = [f for p in _sample(bgst.fault_plans(points=points), 400) for f in p]
    modes = collections.Counter("fail after apply" if f.after_apply else f.kind for f in faults)
    # fail, crash, duplicate, hang, delay and "fail after the write applied": a sixth each
    # (drawing the kind then a flag made the last one 1 fault in 40 at queue.publish)
    assert len(modes) == 6 and min(modes.values()) > 0.08 * len(faults), modes
    after = [f for f in faults if f.after_apply]
    assert {f.point for f in after} == {"kv.set", "queue.ack", "queue.publish"}  # writes only
    publish_after = [f for f in after if f.point == "queue.publish"]
    assert len(publish_after) > 0.03 * len(faults), (len(publish_after), len(faults))
    duplicates = [f for f in faults if f.kind == "duplicate"]
    assert sum(f.overlap for f in duplicates) > 0.6 * len(duplicates)  # 3 in 4 overlap


def test_plans_shrink_to_no_fault_and_to_the_plainest_fault() -> None:
    plans = bgst.fault_plans(points=["kv.get", "kv.set"])
    assert hypothesis.find(plans, lambda p: True, settings=QUIET) == FaultPlan([])
    assert hypothesis.find(plans, lambda p: len(p) >= 2, settings=QUIET) == FaultPlan(
        [Fault("fail", "kv.get", None, 1, CONN)] * 2)
    assert hypothesis.find(plans, lambda p: any(f.after_apply for f in p), settings=QUIET) == \
        FaultPlan([Fault("fail", "kv.set", None, 1, CONN, True)])
    assert hypothesis.find(plans, lambda p: any(f.kind == "hang" for f in p), settings=QUIET) == \
        FaultPlan([Fault("hang", "queue.deliver", "*", 1, seconds=1.0)])
    two = hypothesis.find(plans, lambda p: len(p) >= 2 and p.faults[-1].kind == "crash",
                          settings=QUIET)
    assert len(two) == 2 and two.faults[-1] == Fault("crash", "kv.get", "*", 1)
    # the fault that matters is kept, the others are deleted
    assert hypothesis.find(plans, lambda p: any(f.kind == "crash" for f in p),
                           settings=QUIET) == FaultPlan([Fault("crash", "kv.get", "*", 1)])


def test_max_faults_zero_draws_only_the_empty_plan() -> None:
    assert {len(p) for p in _sample(bgst.fault_plans(max_faults=0), 20)} == {0}


@pytest.mark.parametrize("fixed", [False, True])
def test_explore_draws_among_the_points_the_scenario_passes(fixed: bool) -> None:
    seen: collections.Counter[str] = collections.Counter()

    def note(plan: FaultPlan) -> FaultPlan:
        seen.update(f.point for f in plan if f.kind in ("fail", "crash", "delay"))
        return plan

    async def scenario(sim: bg.Simulation) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await sim.kv.set("ns", "k", 1)
            await sim.kv.get("ns", "k")

    points = ["kv.get", "kv.set"] if fixed else None
    report = bg.explore(scenario, faults=bgst.fault_plans(points=points).map(note), seed=3,
                        max_examples=40)
    assert report.points == ("kv.get", "kv.set")
    assert set(seen) == {"kv.get", "kv.set"}


@hypothesis.given(st.data())
@hypothesis.settings(max_examples=20, database=None)
def test_latencies_are_drawn_for_as_many_calls_as_the_clean_run_made(data: st.DataObject) -> None:
    # a plan that makes the scenario retry must not need more choices than its neighbour
    # without the fault: Hypothesis's mutations replay a neighbour's choices, and an example
    # that runs out of them is thrown away (the plans that matter were the ones lost)
    token = learned_points.set({"kv.get": 1, "kv.set": 2})
    try:
        choices = HypothesisChoices(data)
        conjecture = data.conjecture_data  # type: ignore[attr-defined]
        for _ in range(3):
            choices.integer(0, 1000, "latency")
        drawn = len(conjecture.choices)
        later = [choices.integer(0, 1000, "latency") for _ in range(4)]
        assert later == [0, 0, 0, 0] and len(conjecture.choices) == drawn
        choices.integer(0, 9, "queue.order")  # other choices are drawn as before
        assert len(conjecture.choices) == drawn + 1
        assert choices.values[3:7] == [0, 0, 0, 0]  # and recorded, so a replay repeats them
    finally:
        learned_points.reset(token)


SAMPLE_PLANS = """
import hashlib
import sys
import hypothesis
from pytest_bgwork import strategies as bgst

if sys.argv[1] == "with-constants":
    import many_constants  # noqa: F401  (a local module: Hypothesis mines its constants)
seen = []


@hypothesis.seed(1)
@hypothesis.settings(database=None, max_examples=60, phases=[hypothesis.Phase.generate])
@hypothesis.given(bgst.fault_plans())
def sample(plan):
    seen.append(plan.describe())


sample()
print(len(seen), hashlib.sha256(repr(seen).encode()).hexdigest())
"""


def test_a_seeded_search_draws_the_same_plans_whatever_modules_are_loaded(
        pytester: pytest.Pytester) -> None:
    # Hypothesis draws some integers from the constants of the loaded modules' source, a pool
    # that differs between processes (a test run alone or in the whole suite); the plans
    # must not depend on it, or a seeded search finds a bug in one process and not another
    pytester.makepyfile(many_constants="INTS = [" + ", ".join(map(str, range(0, 4000, 7))) + "]",
                        sample_plans=SAMPLE_PLANS)
    script = str(pytester.path / "sample_plans.py")
    plain = pytester.run(sys.executable, script, "plain")
    loaded = pytester.run(sys.executable, script, "with-constants")
    assert plain.ret == 0 and loaded.ret == 0, (plain.stderr.str(), loaded.stderr.str())
    assert plain.outlines[-1] == loaded.outlines[-1]
