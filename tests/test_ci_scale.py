"""Exploration at CI scale: shared example database, explore_test (HypoFuzz), budgets, sharding."""

from __future__ import annotations

import shlex
import sys
import textwrap
import warnings
from collections.abc import Iterator

import hypothesis
import pytest
from _support.redis_server import RedisServer, running_redis
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase

import pytest_bgwork as bg
from pytest_bgwork.budget import count_explorations, parse_budget
from pytest_bgwork.checking import explore as explore_mod

# A scenario with a double-charge bug: the charge is recorded before the status write that
# may fail, so the retry charges again. ``FIXED`` writes first and checks before charging.
SCENARIO = '''
import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst

FIXED = {fixed}
PLANS = bgst.fault_plans(max_faults=2, points=["kv.set"], kinds=["fail"])


async def charge_order(sim):
    sim.queues.create("charges", max_retries=3, retry_delay=0)

    async def handler(payload, delivery):
        oid = payload["id"]
        if FIXED:
            if (await sim.kv.get("charged", oid)).exists:
                return
            await sim.kv.set("charged", oid, True)
            sim.effects.record("charge", key=oid)
        else:
            sim.effects.record("charge", key=oid)
            await sim.kv.set("charged", oid, True)

    sim.queues.route("charges", handler)
    await sim.queues.publish("charges", {{"id": "o-1"}})


def charged_once(sim):
    bg.assert_effects_once(sim, "charge", allow_empty=True)  # a dead letter charges nobody
'''


def write_scenario(pytester: pytest.Pytester, *, fixed: bool) -> None:
    pytester.makepyfile(orders=SCENARIO.format(fixed=fixed))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


# -- a failure found anywhere replays everywhere ------------------------------------------------
def test_a_failure_found_in_one_process_replays_first_in_another(
    pytester: pytest.Pytester, redis_server: RedisServer
) -> None:
    import redis

    pytester.makeconftest(f'''
import hypothesis, redis
from hypothesis.extra.redis import RedisExampleDatabase
hypothesis.settings.register_profile(
    "shared", database=RedisExampleDatabase(redis.Redis(port={redis_server.port}), key_prefix=b"t1:"))
hypothesis.settings.load_profile("shared")
''')
    write_scenario(pytester, fixed=False)
    pytester.makepyfile(test_orders='''
import pytest_bgwork as bg
from orders import PLANS, charge_order, charged_once

def test_charges_once():
    bg.explore(charge_order, faults=PLANS, checks=[charged_once], max_examples=100)
''')
    first = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-seed=1")
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*bg.explore(charge_order): found a failing example at example *"])
    key = explore_mod.database_key(_named("orders", "charge_order"), [_named("orders", "charged_once")])
    client = redis.Redis(port=redis_server.port)
    assert client.exists(b"t1:" + key), "the failing plan was not stored in the shared database"

    second = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-seed=2")
    second.assert_outcomes(failed=1)
    second.stdout.fnmatch_lines(["*bg.explore(charge_order): found a failing example at example 1 *"])

    write_scenario(pytester, fixed=True)  # the fix: same names, so the same key replays
    third = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--hypothesis-seed=3")
    third.assert_outcomes(passed=1)
    assert not client.exists(b"t1:" + key), "the stored failure was not replayed against the fix"


def _named(module: str, name: str) -> object:
    """A stand-in with the qualified name of a function in a pytester module."""
    def fn() -> None: ...
    fn.__module__, fn.__qualname__, fn.__name__ = module, name, name
    return fn


def test_the_key_is_the_names_of_scenario_and_checks_not_their_source() -> None:
    async def scenario(sim: bg.Simulation) -> None: ...

    def check(sim: bg.Simulation) -> None: ...

    key = explore_mod.database_key(scenario, [check])
    assert key.startswith(b"bgwork.explore:")
    assert explore_mod.database_key(_named(scenario.__module__, scenario.__qualname__),
                                    [_named(check.__module__, check.__qualname__)]) == key
    assert explore_mod.database_key(scenario, []) != key


def test_an_unreachable_database_is_reported_once_and_the_run_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    import redis
    from _support.redis_server import _free_port
    from hypothesis.extra.redis import RedisExampleDatabase

    port = _free_port()  # nothing listens there
    monkeypatch.chdir(tmp_path)  # the local fallback database goes under ./.hypothesis
    monkeypatch.setattr(explore_mod, "_reported_databases", set())
    db = RedisExampleDatabase(redis.Redis(port=port, socket_connect_timeout=1))

    async def scenario(sim: bg.Simulation) -> None:
        sim.effects.record("ran", key="x")

    with pytest.warns(bg.ExploreDatabaseWarning, match=rf"redis://localhost:{port}/0 cannot be reached"):
        report = bg.explore(scenario, faults=st.just(bg.FaultPlan()),
                            max_examples=3, settings=hypothesis.settings(database=db))
    assert report.examples >= 1  # it ran, on the local database
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second exploration does not report it again
        assert bg.explore(scenario, faults=st.just(bg.FaultPlan()),
                          max_examples=2, settings=hypothesis.settings(database=db)).examples >= 1


# -- explore_test: a Hypothesis test pytest runs and HypoFuzz fuzzes --------------------------------
def test_explore_test_is_a_pytest_test_with_explores_report(pytester: pytest.Pytester) -> None:
    write_scenario(pytester, fixed=False)
    pytester.makepyfile(test_fuzz='''
import pytest_bgwork as bg
from hypothesis import settings
from orders import PLANS, charge_order, charged_once

test_charge_fuzz = bg.explore_test(charge_order, faults=PLANS, checks=[charged_once],
                                   max_examples=100, settings=settings(database=None))
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*test_charge_fuzz*",
        "*bg.explore(charge_order): found a failing example at example *",
        "*fault plan:*",
        "*fail at kv.set*",
        "*replay it exactly with:*",
    ])
    write_scenario(pytester, fixed=True)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_hypofuzz_finds_the_bug_in_a_bounded_run(pytester: pytest.Pytester) -> None:
    """HypoFuzz collects the explore_test and its fuzzer finds the double charge."""
    write_scenario(pytester, fixed=False)
    pytester.makepyfile(test_fuzz='''
import pytest_bgwork as bg
from orders import PLANS, charge_order, charged_once

test_charge_fuzz = bg.explore_test(charge_order, faults=PLANS, checks=[charged_once])
''')
    pytester.makepyfile(run_fuzz=textwrap.dedent('''
        import sys
        from hypothesis import settings
        from hypothesis.database import InMemoryExampleDatabase
        # derandomize=False: under CI=true Hypothesis loads its "ci" profile (derandomized),
        # and HypoFuzz skips derandomized tests
        settings.register_profile("mem", database=InMemoryExampleDatabase(), derandomize=False)
        settings.load_profile("mem")
        from hypofuzz.collection import collect_tests

        targets = collect_tests(["test_fuzz.py", "-p", "no:cacheprovider"]).fuzz_targets
        print("targets:", [t.nodeid for t in targets])
        (target,) = targets
        target._enter_fixtures()
        for n in range(1, 2001):  # bounded: a few seconds at most
            target.run_one()
            if target.has_found_failure:
                print(f"found the failure after {n} inputs")
                break
        else:
            print("no failure in 2000 inputs")
        target._exit_fixtures()
    '''))
    result = pytester.run(sys.executable, "run_fuzz.py", timeout=300)
    result.stdout.fnmatch_lines(["targets: ['test_fuzz.py::test_charge_fuzz']",
                                 "found the failure after * inputs"])


# -- budgets --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "parsed"), [
    ("50", (50.0, None)), ("50x", (50.0, None)), ("0.5x", (0.5, None)),
    ("600s", (1.0, 600.0)), ("10m", (1.0, 600.0)), ("1h", (1.0, 3600.0)),
])
def test_budget_forms(raw: str, parsed: tuple[float, float | None]) -> None:
    assert parse_budget(raw) == parsed


@pytest.mark.parametrize("raw", ["", "fast", "-3", "0", "10d", "5 5"])
def test_a_malformed_budget_is_a_usage_error_listing_the_forms(pytester: pytest.Pytester, raw: str) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(f"--bgwork-explore-budget={raw}") if raw else pytester.runpytest(
        "-o", "bgwork_explore_budget=5 5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bgwork-explore-budget / bgwork_explore_budget expects N or Nx "
                                 "(multiply max_examples, e.g. 50 or 0.5x), Ns / Nm / Nh*"])


COUNTING = '''
import pytest_bgwork as bg
from hypothesis import settings
from pytest_bgwork import strategies as bgst

async def quiet(sim):
    await sim.kv.get("ns", "k")

def test_explores():
    report = bg.explore(quiet, faults=bgst.fault_plans(points=["kv.get"], kinds=["delay"]), max_examples=3,
                        settings=settings(database=None))
    print(f"EXAMPLES={{report.examples}}")
    assert report.examples == {expected}
'''


def test_a_multiplier_budget_scales_max_examples(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_one=COUNTING.format(expected=15))
    pytester.runpytest("--bgwork-explore-budget=5").assert_outcomes(passed=1)
    pytester.makepyfile(test_one=COUNTING.format(expected=3))
    pytester.runpytest().assert_outcomes(passed=1)  # and the budget did not leak into this run


def test_a_time_budget_is_shared_over_the_runs_explorations(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_two='''
import pytest_bgwork as bg
from hypothesis import settings
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking import explore as explore_mod

async def quiet(sim):
    await sim.kv.get("ns", "k")

def test_first():
    assert explore_mod._budget.remaining == 2 and explore_mod._budget.seconds == 1.0
    report = bg.explore(quiet, faults=bgst.fault_plans(points=["kv.get"], kinds=["delay"]), max_examples=2,
                        settings=settings(database=None))
    assert report.examples > 2   # rounds go on until the 0.5 s share is spent
    assert explore_mod._budget.remaining == 1

test_second = bg.explore_test(quiet, max_examples=2, settings=settings(database=None))

def test_plain():
    pass
''')
    pytester.runpytest("-p", "no:cacheprovider", "--bgwork-explore-budget=1s").assert_outcomes(passed=3)


def test_explorations_are_counted_from_what_a_test_calls() -> None:
    class Item:
        def __init__(self, obj: object) -> None:
            self.obj = obj

    def calls_explore() -> None:
        bg.explore  # noqa: B018 - only the name matters to the counter

    def nested() -> None:
        def inner() -> None:
            bg.explore  # noqa: B018

    def plain() -> None:
        print("no exploration here")

    async def scenario(sim: bg.Simulation) -> None: ...

    built = bg.explore_test(scenario, faults=st.just(bg.FaultPlan()), settings=hypothesis.settings(database=None))
    items = [Item(calls_explore), Item(nested), Item(plain), Item(built)]
    assert count_explorations(items) == 3  # type: ignore[arg-type]


# -- sharded chaos ------------------------------------------------------------------------------
SUITE = '''
import pytest, pytest_bgwork as bg

def make(n):
    @pytest.mark.asyncio
    async def test(bgwork):
        bgwork.queues.create("mail")
        async def handler(payload, delivery):
            bgwork.effects.record("email", key=payload["n"])
        bgwork.queues.route("mail", handler)
        await bgwork.queues.publish("mail", {"n": n})
        await bgwork.run_until_idle()
        bg.assert_effects_once(bgwork, "email")
    return test

for i in range(6):
    globals()[f"test_mail_{i}"] = make(i)
'''


def _red_lines(result: pytest.RunResult) -> dict[str, str]:
    """node id -> its 'seed N · replay: ...' line, for each failing test."""
    out: dict[str, str] = {}
    for line in result.outlines:
        if "· replay: pytest '" in line:
            node = line.split("pytest '", 1)[1].split("'", 1)[0]
            out[node] = line.strip().split("seed ", 1)[1]
    return out


def test_chaos_seeds_depend_only_on_the_node_id_under_xdist_and_sharding(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mail=SUITE)
    args = ["-p", "no:cacheprovider", "--bgwork-chaos=duplicate"]
    serial = pytester.runpytest(*args)
    serial.assert_outcomes(failed=6)
    lines = _red_lines(serial)
    assert len(lines) == 6
    parallel = pytester.runpytest_subprocess(*args, "-n", "2")
    parallel.assert_outcomes(failed=6)
    assert _red_lines(parallel) == lines
    parallel.stdout.fnmatch_lines(["*6 simulation(s)*"])  # the summary aggregates the workers
    shard = pytester.runpytest_subprocess(*args, "--splits", "2", "--group", "2")
    shard_lines = _red_lines(shard)
    assert shard_lines and all(lines[node] == line for node, line in shard_lines.items())
    node, line = next(iter(shard_lines.items()))  # replay one red test from its report line alone
    command = shlex.split(line.split("replay: ", 1)[1].split(" · ")[0])
    again = pytester.runpytest(*command[1:], "-p", "no:cacheprovider")
    again.assert_outcomes(failed=1)
    assert _red_lines(again) == {node: line}


def test_in_memory_database_sanity() -> None:
    """explore wraps the configured database but keeps using it while it answers."""
    db = InMemoryExampleDatabase()

    async def scenario(sim: bg.Simulation) -> None:
        sim.effects.record("x", key="1")
        sim.effects.record("x", key="1")

    with pytest.raises(bg.ExplorationFailed):
        bg.explore(scenario, faults=st.just(bg.FaultPlan()),
                   checks=[lambda sim: bg.assert_effects_once(sim, "x")], max_examples=5,
                   settings=hypothesis.settings(database=db))
    assert any(k.startswith(b"bgwork.explore:") for k in db.data)
