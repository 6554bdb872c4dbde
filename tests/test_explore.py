"""bg.explore, the strategies and replay tokens: search, shrink, replay, determinism, coverage."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st
from hypothesis.database import InMemoryExampleDatabase

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking import replay
from pytest_bgwork.checking.explore import STATES, HypothesisChoices, interesting_states
from pytest_bgwork.core.faults import Fault, FaultPlan
from pytest_bgwork.core.history import Event

QUIET = hypothesis.settings(database=None)


# -- replay tokens --------------------------------------------------------------------------
def test_token_round_trips_seed_plan_choices_and_scenario() -> None:
    plan = FaultPlan([Fault("crash", "stream.write", "jobs", 2), Fault("duplicate", "queue.publish",
                                                                     "jobs", times=3)])
    token = replay.encode(7, plan, [0, 3, 0.25], scenario="test_x.<locals>.scenario")
    assert token.startswith("bgwork1:")
    assert re.fullmatch(r"bgwork1:[A-Za-z0-9_-]+", token)
    back = replay.decode(token)
    assert back == replay.Replay(7, plan, (0, 3, 0.25), "test_x.<locals>.scenario",
                                 version=bg.__version__)


def test_token_without_choices_means_seeded_choices() -> None:
    back = replay.decode(replay.encode(5, [{"kind": "fail", "point": "kv.set"}]))
    assert back.choices is None and back.scenario is None
    assert back.plan == FaultPlan([Fault("fail", "kv.set")])


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("nope", "expects a token starting with 'bgwork1:'"),
        (42, "expects a token starting with 'bgwork1:'"),
        ("bgwork1:!!!not-base64", "token is damaged"),
        ("bgwork1:" + "A" * 12, "token is damaged"),
    ],
)
def test_bad_tokens_say_what_is_wrong(token: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        replay.decode(token)


def test_replay_choices_give_back_the_recording_then_the_low_end() -> None:
    choices = replay.ReplayChoices([2, 0.5])
    assert choices.integer(0, 9) == 2
    assert choices.fraction() == 0.5
    assert choices.exhausted
    assert choices.integer(3, 9) == 3
    assert choices.fraction() == 0.0
    assert choices.values == [2, 0.5, 3, 0.0]


def test_replay_choices_refuse_a_recording_the_code_no_longer_fits() -> None:
    choices = replay.ReplayChoices([7])
    with pytest.raises(replay.ReplayMismatch, match=r"integer in \[0, 3\] \(jitter\): the code changed"):
        choices.integer(0, 3, "jitter")


def test_apply_gives_a_simulation_the_seed_choices_and_plan() -> None:
    sim = bg.Simulation(seed=1)
    replay.apply(sim, replay.encode(9, [Fault("fail", "kv.set")], [4]))
    assert sim.seed == 9
    assert sim.choices.integer(0, 9) == 4
    assert sim.faults.plan == FaultPlan([Fault("fail", "kv.set")])
    assert sim.random.random() == bg.Simulation(seed=9).random.random()
    sim.close()


# -- strategies -----------------------------------------------------------------------------
def test_fault_plans_shrink_to_the_empty_plan_and_to_one_plain_fault() -> None:
    plans = bgst.fault_plans()
    assert hypothesis.find(plans, lambda p: True, settings=QUIET) == FaultPlan([])
    one = hypothesis.find(plans, lambda p: len(p) >= 1, settings=QUIET)
    assert one == FaultPlan([Fault("fail", "queue.deliver", None, 1,
                                   "ConnectionError('injected fault')")])


@hypothesis.given(bgst.fault_plans(max_faults=2, points=["kv.set", "stream.write"],
                                   queues=["jobs"], kinds=["crash", "hang", "duplicate"]))
@hypothesis.settings(max_examples=50, database=None)
def test_fault_plans_stay_inside_their_arguments(plan: FaultPlan) -> None:
    assert len(plan) <= 2
    for fault in plan:
        assert fault.kind in ("crash", "hang", "duplicate")
        assert fault.queue == "jobs"
        if fault.kind == "crash":
            assert fault.point in ("kv.set", "stream.write")
        if fault.kind == "hang":
            assert fault.seconds >= 1
            assert fault.seconds <= 900
    sim = bg.Simulation()
    sim.faults.apply(plan)  # every drawn plan is a valid plan
    sim.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_faults": -1}, ValueError, "max_faults=...) expects an int from 0 to 100 "
                                         "(MAX_FAULTS); got -1"),
        ({"points": "kv.set"}, TypeError, "points= expects a list of names, e.g. ['kv.set']"),
        ({"points": ["kv set"]}, ValueError, "points= must be a fault point"),
        ({"kinds": ["explode"]}, ValueError, "kinds= may hold fail, crash"),
        ({"queues": []}, ValueError, "queues= must not be empty"),
        ({"max_on_call": 0}, ValueError, "max_on_call=...) expects an int >= 1 or None; got 0"),
    ],
)
def test_fault_plans_reject_bad_arguments(kwargs: dict[str, Any], error: type[Exception],
                                          message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        bgst.fault_plans(**kwargs)


def test_retry_schedules_shrink_to_the_defaults() -> None:
    schedules = bgst.retry_schedules(max_retries=(1, 3))
    assert hypothesis.find(schedules, lambda s: True, settings=QUIET) == {}
    assert hypothesis.find(schedules, lambda s: "max_retries" in s, settings=QUIET) == {
        "max_retries": 1
    }
    with pytest.raises(ValueError, match=r"retry_delay=...\) expects a \(lo, hi\) tuple"):
        bgst.retry_schedules(retry_delay=(5, 1))


def test_delivery_orders_shrink_to_publish_order() -> None:
    assert hypothesis.find(bgst.delivery_orders(4), lambda o: True, settings=QUIET) == [0, 1, 2, 3]
    swapped = hypothesis.find(bgst.delivery_orders(4), lambda o: o[0] != 0, settings=QUIET)
    assert sorted(swapped) == [0, 1, 2, 3] and swapped[0] == 1
    with pytest.raises(ValueError, match="delivery_orders"):
        bgst.delivery_orders(-1)


# -- explore: search and shrink ---------------------------------------------------------------
async def retry_then_email(sim: bg.Simulation) -> None:
    """Buggy: the email goes out before the status write, so a retried write sends it again."""
    for order in ("o1", "o2"):
        for _ in range(3):
            try:
                sim.effects.record("email", key=order)
                await sim.kv.set("status", order, {"kind": "done"})
                break
            except (ConnectionError, TimeoutError):
                continue


async def email_after_write(sim: bg.Simulation) -> None:
    """Fixed: write first, and only the attempt whose write succeeded sends the email."""
    for order in ("o1", "o2"):
        for _ in range(3):
            try:
                await sim.kv.set("status", order, {"kind": "done"})
            except (ConnectionError, TimeoutError):
                continue
            sim.effects.record("email", key=order)
            break


def emails_once(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email", allow_empty=True)  # dead letters send none


KV_FAULTS = bgst.fault_plans(points=["kv.set"], kinds=["fail", "delay"])


def test_explore_finds_the_bug_and_shrinks_it_to_one_fault() -> None:
    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(retry_then_email, faults=KV_FAULTS, checks=[emails_once], seed=3,
                   settings=QUIET)
    failure = info.value
    assert len(failure.plan) == 1
    assert failure.plan.faults[0].kind == "fail" and failure.plan.faults[0].point == "kv.set"
    assert failure.plan.faults[0].on_call == 1
    text = str(failure)
    assert text.startswith("bg.explore(retry_then_email): found a failing example at example ")
    assert "shrunk to 1 fault." in text
    assert "failed in: check emails_once" in text
    assert "assert_effects_once('email'): expected each key's 'email' effect exactly once" in text
    assert "seed: 3" in text
    assert "1. fail at kv.set on call 1 raising" in text
    assert f"timeline (digest {failure.digest[:16]}, identical on a second run):" in text
    assert f'@pytest.mark.bgwork(replay="{failure.token}")' in text
    assert replay.decode(failure.token).scenario == "retry_then_email"


def test_explore_passes_the_fixed_twin_and_reports_what_it_ran() -> None:
    report = bg.explore(email_after_write, faults=KV_FAULTS, checks=[emails_once], seed=3,
                        max_examples=40, settings=QUIET)
    assert report.examples == 40
    assert report.seed == 3 and not report.replayed
    assert report.examples_per_second > 0
    assert report.summary().startswith("bg.explore(email_after_write): 40 examples in ")
    assert report.warnings == []  # no queue traffic: the queue states do not apply


def test_a_scenario_error_is_a_failure_that_names_the_phase() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        await sim.kv.set("status", "o1", {"kind": "done"})  # does not catch injected errors

    with pytest.raises(bg.ExplorationFailed) as info:  # the strict reading: any error fails
        bg.explore(scenario, faults=KV_FAULTS, seed=1, settings=QUIET, scenario_errors="fail")
    assert "failed in: scenario\n  ConnectionError: injected fault" in str(info.value)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_choices_are_hypothesis_draws_that_shrink_to_the_smallest_failing_value() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        await sim.kv.set("jitter", "x", sim.choices.integer(0, 100, "jitter"))

    def small_jitter(sim: bg.Simulation) -> None:
        if sim.kv.items("jitter")["x"] > 40:
            raise bg.CheckFailed("jitter too big")

    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[small_jitter], seed=2, settings=QUIET)
    # then the kv.set's latency, shrunk to 0 (a plain yield); the token keeps them by kind
    assert replay.decode(info.value.token).keyed == {"jitter": (41,), "latency": (0,)}
    assert "choices: 2 drawn, 1 away from the default" in str(info.value)


def test_the_two_phases_heal_faults_before_the_checks() -> None:
    seen: list[tuple[bool, float]] = []

    async def scenario(sim: bg.Simulation) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(30, lambda: None)  # work still pending when the scenario returns

    def check(sim: bg.Simulation) -> None:
        seen.append((sim.faults.healed, sim.clock.monotonic()))

    bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[check], max_examples=3, seed=1, settings=QUIET)
    assert seen and all(item == (True, 30.0) for item in seen)


def test_async_checks_are_awaited() -> None:
    async def scenario(sim: bg.Simulation) -> None: ...

    async def check(sim: bg.Simulation) -> None:
        await asyncio.sleep(1)
        raise bg.CheckFailed("async check ran")

    with pytest.raises(bg.ExplorationFailed, match="async check ran"):
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[check], seed=1, settings=QUIET)


def test_every_example_gets_a_fresh_simulation() -> None:
    sims: list[bg.Simulation] = []

    async def scenario(sim: bg.Simulation) -> None:
        assert bg.current() is sim
        assert len(sim.history) == 0
        sims.append(sim)

    bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=5, seed=1, settings=QUIET)
    assert len({id(s) for s in sims}) == len(sims) >= 1


# -- determinism ---------------------------------------------------------------------------------
def test_nondeterminism_is_reported_with_likely_causes() -> None:
    counter = {"n": 0}

    async def scenario(sim: bg.Simulation) -> None:
        counter["n"] += 1  # state that leaks from one run into the next
        await sim.kv.set("runs", "n", counter["n"])

    def always_fails(sim: bg.Simulation) -> None:
        raise bg.CheckFailed("boom")

    with pytest.raises(bg.NonDeterministic) as info:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[always_fails], seed=1, settings=QUIET)
    text = str(info.value)
    assert "behaved differently when run again" in text
    assert re.search(r"digests [0-9a-f]{16} != [0-9a-f]{16}; first difference at event #0:\n"
                     r"  run 1: \+\s+0\.000s kv\.set .* value=\d+\n"
                     r"  run 2: \+\s+0\.000s kv\.set .* value=\d+", text)
    assert "state kept between examples in module globals" in text
    assert "uuid.uuid4()" in text


def test_a_failure_that_does_not_come_back_is_reported_as_nondeterminism() -> None:
    runs = {"n": 0}

    async def scenario(sim: bg.Simulation) -> None:
        runs["n"] += 1
        sim.choices.integer(0, 100)

    def flaky(sim: bg.Simulation) -> None:
        if runs["n"] % 3 == 0:
            raise bg.CheckFailed("only sometimes")

    with pytest.raises(bg.NonDeterministic, match="Hypothesis ran the failing example again "
                                                  "and it did not fail the same way"):
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[flaky], seed=1, settings=QUIET)


# -- settings, seeds, database, wall clock -----------------------------------------------------
def test_max_examples_none_takes_the_settings_value() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        sim.choices.integer(0, 10**6)  # a search space Hypothesis cannot exhaust in 7 tries

    report = bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=None, seed=1,
                        settings=hypothesis.settings(max_examples=7, database=None))
    assert report.examples == 7


def test_a_loaded_hypothesis_profile_applies() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        sim.choices.integer(0, 10**6)

    hypothesis.settings.register_profile("bgwork-test-fast", max_examples=4, database=None)
    previous = hypothesis.settings.get_current_profile_name()
    hypothesis.settings.load_profile("bgwork-test-fast")
    try:
        assert bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=None, seed=1).examples == 4
        assert bg.explore(scenario, faults=st.just(bg.FaultPlan()),
                          max_examples=6, seed=1).examples == 6  # the argument wins
    finally:
        hypothesis.settings.load_profile(previous)


def test_hypothesis_ci_profile_does_not_halve_the_search(pytester: pytest.Pytester,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis loads its ``ci`` profile (100 examples) by itself when $CI is set: a search
    that found a bug at example 124 locally passed on CI. A profile that chose a count wins."""
    pytester.makepyfile(
        """
        import hypothesis
        from hypothesis import strategies as st
        import pytest_bgwork as bg

        async def scenario(sim):
            sim.choices.integer(0, 10**6)

        def test_ci_profile():
            assert hypothesis.settings.get_current_profile_name() == "ci"
            report = bg.explore(scenario, faults=st.just(bg.FaultPlan()), seed=1)
            assert report.examples == 200

        def test_a_profile_with_its_own_count():
            hypothesis.settings.register_profile("mine", max_examples=30)
            hypothesis.settings.load_profile("mine")
            try:
                report = bg.explore(scenario, faults=st.just(bg.FaultPlan()), seed=1)
            finally:
                hypothesis.settings.load_profile("ci")
            assert report.examples == 30
        """
    )
    monkeypatch.setenv("CI", "true")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_the_same_seed_explores_the_same_examples() -> None:
    def run() -> list[FaultPlan]:
        plans: list[FaultPlan] = []

        async def scenario(sim: bg.Simulation) -> None:
            plans.append(sim.faults.plan)

        bg.explore(scenario, faults=bgst.fault_plans(), max_examples=20, seed=11, settings=QUIET)
        return plans

    assert run() == run()


def test_the_example_database_replays_a_known_failure_first() -> None:
    # seed= turns the database off, as Hypothesis's @seed does; without it the search is
    # Hypothesis's own, and this test holds whatever it draws.
    db = InMemoryExampleDatabase()
    settings = hypothesis.settings(database=db)
    with pytest.raises(bg.ExplorationFailed) as first:
        bg.explore(retry_then_email, faults=KV_FAULTS, checks=[emails_once], settings=settings)
    assert any(key.startswith(b"bgwork.explore:") for key in db.data)
    with pytest.raises(bg.ExplorationFailed) as second:
        bg.explore(retry_then_email, faults=KV_FAULTS, checks=[emails_once], settings=settings)
    assert "found a failing example at example 1 " in str(second.value)
    assert second.value.plan == first.value.plan


def test_a_seed_turns_the_example_database_off_like_hypothesis_seed() -> None:
    db = InMemoryExampleDatabase()
    with pytest.raises(bg.ExplorationFailed):
        bg.explore(retry_then_email, faults=KV_FAULTS, checks=[emails_once], seed=5,
                   settings=hypothesis.settings(database=db))
    assert db.data == {}


def test_the_wall_clock_patch_starts_once_per_explore(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_bgwork.core import wallclock

    started: list[int] = []
    real = wallclock._Patcher.start

    def counting(self: Any, factory: Any) -> None:
        started.append(1)
        real(self, factory)

    monkeypatch.setattr(wallclock._Patcher, "start", counting)
    days: list[str] = []

    async def scenario(sim: bg.Simulation) -> None:
        import datetime

        await asyncio.sleep(86400)
        days.append(datetime.date.today().isoformat())

    bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=10, seed=1, settings=QUIET)
    assert len(started) == 1
    assert set(days) == {"2026-01-02"}  # each example's wall clock is its own virtual one


# -- bad use ------------------------------------------------------------------------------------
def test_explore_is_synchronous_and_refuses_a_running_loop() -> None:
    async def scenario(sim: bg.Simulation) -> None: ...

    async def inside() -> None:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()))

    sim = bg.Simulation()
    with pytest.raises(bg.BgworkError, match=r"bg\.explore\(\) is synchronous"):
        sim.run(inside())
    sim.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scenario": lambda sim: None}, TypeError, "expects an `async def scenario(sim)`"),
        ({"faults": [Fault("fail", "kv.set")]}, TypeError, "expects a strategy such as"),
        ({"checks": emails_once}, TypeError, "expects a list of checks"),
        ({"checks": [1]}, TypeError, "expects callables taking `sim`"),
        ({"max_examples": 0}, ValueError, "max_examples=...) expects an int >= 1; got 0"),
        ({"seed": "1"}, TypeError, "seed=...) expects an int or None"),
        ({"settings": {"max_examples": 3}}, TypeError, "expects a hypothesis.settings object"),
    ],
)
def test_explore_rejects_bad_arguments(kwargs: dict[str, Any], error: type[Exception],
                                       message: str) -> None:
    args: dict[str, Any] = {"scenario": email_after_write, **kwargs}
    with pytest.raises(error, match=re.escape(message)):
        bg.explore(**args)


# -- interesting states ---------------------------------------------------------------------------
async def queued_emails(sim: bg.Simulation) -> None:
    """A worker that checks a marker before emailing (crash-after-email can still repeat it)."""
    sim.queues.create("orders", visibility_timeout=30, max_retries=2)

    async def worker(payload: dict[str, Any], delivery: Any) -> None:
        if (await sim.kv.get("emailed", payload["id"])).exists:
            return
        sim.effects.record("email", key=payload["id"])
        await sim.kv.set("emailed", payload["id"], True)

    sim.queues.route("orders", worker)
    for order in ("o1", "o2"):
        for _ in range(3):  # a publish may fail (also after it applied): retry with the key
            try:
                await sim.queues.publish("orders", {"id": order}, idempotency_key=order)
                break
            except (ConnectionError, TimeoutError):
                pass


def test_the_report_counts_the_interesting_states_the_search_reached() -> None:
    # 400 examples: what Hypothesis draws depends on the constants of the modules loaded (its
    # local-constants pool), so a search that reaches all four states in 200 alone may not
    # in a busier process
    report = bg.explore(queued_emails, faults=bgst.fault_plans(), checks=[bg.assert_nothing_lost],
                        seed=1, settings=QUIET, max_examples=400)
    assert report.queue_traffic
    assert all(report.reached(state) for state in STATES)
    assert report.warnings == []
    assert "  reached a stale ack (" in report.summary()
    with pytest.raises(KeyError, match="unknown state 'nope'"):
        report.reached("nope")


def test_a_search_that_never_got_there_warns() -> None:
    with pytest.warns(bg.ExploreCoverageWarning) as caught:
        report = bg.explore(queued_emails, faults=st.just(bg.FaultPlan()), checks=[bg.assert_nothing_lost], seed=1,
                            settings=QUIET)  # no fault plans: nothing interesting can happen
    text = str(caught[0].message)
    assert text.startswith("bg.explore(queued_emails) never reached: a redelivery while an "
                           "earlier attempt was still running; a dead letter; a crash after an "
                           "effect; a stale ack. A search that never got there proved nothing")
    assert report.warnings == [text]
    assert "  never   a dead letter" in report.summary()


def _ev(seq: int, service: str, op: str, label: str | None = None, **detail: Any) -> Event:
    return Event(seq, float(seq), service, op, "ok", detail, label)


def test_interesting_states_read_from_the_history() -> None:
    q = {"queue": "jobs", "id": "msg_1"}
    events = [
        _ev(0, "queue", "deliver", attempt=1, **q),
        _ev(1, "queue", "visibility_expired", attempt=1, **q),
        _ev(2, "queue", "deliver", attempt=2, **q),  # #1 still running
        _ev(3, "effect", "email", "jobs/msg_1#2", key="o1"),
        _ev(4, "queue", "crashed", attempt=2, **q),
        _ev(5, "queue", "ack", attempt=1, stale=True, **q),
        _ev(6, "queue", "dead_letter", attempts=2, **q),
    ]
    assert interesting_states(events) == {
        "redelivery_while_running", "crash_after_effect", "stale_ack", "dead_letter"}
    sequential = [events[0], _ev(1, "queue", "attempt_failed", attempt=1, error="x", **q),
                  events[2], _ev(3, "queue", "crashed", attempt=2, **q)]
    assert interesting_states(sequential) == set()


def test_hypothesis_choices_record_what_they_drew() -> None:
    recorded: list[list[int | float]] = []

    @hypothesis.given(st.data())
    @hypothesis.settings(max_examples=5, database=None)
    def run(data: st.DataObject) -> None:
        choices = HypothesisChoices(data)
        a = choices.integer(0, 5)
        b = choices.integer(3, 3)
        c = choices.fraction()
        assert 0 <= a <= 5 and b == 3 and 0 <= c < 1
        recorded.append(choices.values)

    run()
    assert all(len(v) == 3 and v[1] == 3 for v in recorded)


# -- through pytest: the replay marker ------------------------------------------------------------
EXPLORE_FILE = """
import hypothesis, pytest
import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst

async def scenario(sim):
    sim.queues.create("orders", visibility_timeout=30, max_retries=2)

    async def worker(payload, delivery):
        sim.effects.record("email", key=payload["id"])  # sent again on every redelivery
        await sim.kv.set("emailed", payload["id"], True)

    sim.queues.route("orders", worker)
    for order in ("o1", "o2"):
        for _ in range(3):  # a publish may fail (also after it applied): retry with the key
            try:
                await sim.queues.publish("orders", {"id": order}, idempotency_key=order)
                break
            except (ConnectionError, TimeoutError):
                pass

def emails_once(sim):
    bg.assert_effects_once(sim, "email")

MARK

def test_explore():
    try:
        bg.explore(scenario, faults=bgst.fault_plans(), checks=[emails_once], seed=4,
                   settings=hypothesis.settings(database=None))
    except bg.ExplorationFailed as exc:
        print("DIGEST=" + exc.digest)
        print("TOKEN=" + exc.token)
        print("FAULTS=" + str(len(exc.plan)))
        raise
"""


def test_a_replay_marker_reruns_exactly_the_failing_example(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_search=EXPLORE_FILE.replace("MARK", ""))
    first = pytester.runpytest("-p", "no:cacheprovider", "-s")
    first.assert_outcomes(failed=1)
    out = first.stdout.str()
    token = re.search(r"TOKEN=(\S+)", out)
    digest = re.search(r"DIGEST=([0-9a-f]{64})", out)
    assert token and digest
    assert "FAULTS=1" in out  # the default budget found it, and it shrank to one fault
    first.stdout.fnmatch_lines([
        "*ExplorationFailed: bg.explore(scenario): found a failing example at example * "
        "(* run in all, shrinking included), shrunk to 1 fault.",
        "*replay it exactly with:",
        f'*@pytest.mark.bgwork(replay="{token.group(1)}")',
    ])
    pytester.makepyfile(test_replay=EXPLORE_FILE.replace(
        "MARK", f"@pytest.mark.bgwork(replay={token.group(1)!r})"))
    again = pytester.runpytest("-p", "no:cacheprovider", "-s", "test_replay.py")
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines([
        f"*DIGEST={digest.group(1)}",
        "*bg.explore(scenario): replayed the example from the token.",
    ])


def test_a_replayed_example_that_passes_is_a_passing_regression_test(
    pytester: pytest.Pytester,
) -> None:
    token = replay.encode(4, [Fault("fail", "kv.set", on_call=1)], [], scenario="scenario")
    pytester.makepyfile(f"""
        import pytest
        import pytest_bgwork as bg

        runs = []

        async def scenario(sim):
            runs.append(sim.faults.plan)
            try:
                await sim.kv.set("status", "o1", {{"kind": "done"}})
            except ConnectionError:
                await sim.kv.set("status", "o1", {{"kind": "done"}})

        @pytest.mark.bgwork(replay={token!r})
        def test_fixed():
            report = bg.explore(scenario, max_examples=50)
            assert report.replayed and report.examples == 1 and len(runs) == 1
            assert len(runs[0]) == 1
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_replay_token_applies_its_seed_and_plan_to_a_plain_bgwork_test(
    pytester: pytest.Pytester,
) -> None:
    token = replay.encode(1234, [Fault("fail", "kv.set", on_call=1)])
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.asyncio
        @pytest.mark.bgwork(replay={token!r})
        async def test_plain(bgwork):
            assert bgwork.seed == 1234
            with pytest.raises(ConnectionError):
                await bgwork.kv.set("ns", "k", 1)
            await bgwork.kv.set("ns", "k", 1)
    """)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_damaged_replay_token_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.bgwork(replay="bgwork1:broken")
        def test_x(bgwork):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*@pytest.mark.bgwork(replay=...): replay= token is damaged*"])
    assert result.ret != 0


def test_explore_freezes_the_old_heap_only_while_it_runs_and_leaves_a_frozen_heap_alone() -> None:
    import gc

    seen: list[int] = []

    async def scenario(sim: bg.Simulation) -> None:
        seen.append(gc.get_freeze_count())

    assert gc.get_freeze_count() == 0
    bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=3, seed=1, settings=QUIET)
    assert seen and min(seen) > 0  # the heap from before the search was frozen during it
    assert gc.get_freeze_count() == 0  # and given back after
    gc.freeze()
    try:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=3, seed=1, settings=QUIET)
        assert gc.get_freeze_count() > 0  # someone else's freeze is not undone
    finally:
        gc.unfreeze()


# -- the engine path: what @given(st.data()) would do, without its per-example wrapper -------------
def _explore_via(engine: bool, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[
        list[tuple[Any, ...]], str]:
    """Run ``bg.explore`` through the engine path or through ``@given``: every example's
    plan and choices, in order, and the failure text (or "passed")."""
    from pytest_bgwork.checking import explore as ex

    seen: list[tuple[Any, ...]] = []
    real = ex._run_example

    def spy(*args: Any, **kw: Any) -> Any:
        out = real(*args, **kw)
        seen.append((args[3], tuple(out.choices)))
        return out

    monkeypatch.setattr(ex, "_run_example", spy)
    monkeypatch.setattr(ex, "_engine_ok", (lambda s: True) if engine else (lambda s: False))
    try:
        bg.explore(**kwargs)
        text = "passed"
    except bg.ExplorationFailed as failure:
        text = str(failure)
    monkeypatch.undo()
    return seen, text


@pytest.mark.parametrize("scenario", [retry_then_email, email_after_write])
@pytest.mark.parametrize("how", ["seed", "derandomize"])
def test_the_engine_path_runs_the_examples_given_runs(
        scenario: Any, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs: dict[str, Any] = dict(scenario=scenario, faults=KV_FAULTS, checks=[emails_once],
                                  max_examples=60)
    if how == "seed":
        kwargs.update(seed=5, settings=QUIET)
    else:  # the search's random comes from the test function's digest, as under @given
        kwargs.update(settings=hypothesis.settings(database=None, derandomize=True))
    engine = _explore_via(True, monkeypatch, **kwargs)
    given = _explore_via(False, monkeypatch, **kwargs)
    assert len(engine[0]) >= 5 and engine[1] != "passed" if scenario is retry_then_email \
        else len(engine[0]) > 60 and engine[1] == "passed"
    assert engine == given  # same plans and choices in the same order, same failure text


@pytest.mark.parametrize("how", ["unsatisfiable", "no_phases"])
def test_the_engine_path_stops_as_given_does_with_the_same_words(
        how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this Hypothesis's words are ("examples" before 6.170, "test cases" after)."""
    import unittest

    from hypothesis.control import currently_in_test_context

    async def rejects(sim: bg.Simulation) -> None:
        if sim.choices.integer(0, 1) >= 0 and currently_in_test_context():
            hypothesis.reject()  # not in explore's first, clean run

    async def writes(sim: bg.Simulation) -> None:
        await sim.kv.set("ns", "k", "v", sim.choices.integer(0, 1))

    kwargs: dict[str, Any] = dict(max_examples=10, seed=1, faults=st.just(bg.FaultPlan()))
    if how == "unsatisfiable":
        kwargs.update(scenario=rejects, settings=QUIET)
        expected: type[BaseException] = hypothesis.errors.Unsatisfiable
    else:
        kwargs.update(scenario=writes, settings=hypothesis.settings(QUIET, phases=[]))
        expected = unittest.SkipTest
    texts = []
    for engine in (True, False):
        from pytest_bgwork.checking import explore as ex

        monkeypatch.setattr(ex, "_engine_ok", lambda s, engine=engine: engine)
        with pytest.raises(expected) as caught:
            bg.explore(**kwargs)
        texts.append(str(caught.value))
    assert texts[0] == texts[1], texts
    assert ("Unable to satisfy assumptions of run." if how == "unsatisfiable"
            else "Hypothesis has been told to run no ") in texts[0]


@pytest.mark.parametrize("version, engine", [
    ("low", True), ("high", True), ("below", False), ("above", False), ("next_major", False)])
def test_the_engine_path_runs_only_on_the_hypothesis_versions_it_was_tested_on(
        version: str, engine: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import hypothesis.version

    from pytest_bgwork.checking import explore as ex

    low, high = ex.ENGINE_TESTED
    info = {"low": low, "high": high, "below": (low[0], low[1], low[2] - 1) if low[2]
            else (low[0], low[1] - 1, 99), "above": (high[0], high[1], high[2] + 1),
            "next_major": (high[0] + 1, 0, 0)}[version]
    monkeypatch.setattr(hypothesis.version, "__version_info__", info)
    assert ex._engine_ok(QUIET) is engine
    used: list[str] = []
    real_engine, real_given = ex._run_engine, hypothesis.given

    def engine_path(*args: Any) -> None:
        used.append("engine")
        real_engine(*args)

    def given(*args: Any, **kwargs: Any) -> Any:
        used.append("given")
        return real_given(*args, **kwargs)

    monkeypatch.setattr(ex, "_run_engine", engine_path)
    monkeypatch.setattr(hypothesis, "given", given)

    async def scenario(sim: bg.Simulation) -> None:
        await sim.kv.set("ns", "k", "v")

    bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=5, seed=1, settings=QUIET)
    assert used == ["engine" if engine else "given"]


def test_every_example_draws_the_global_random_from_its_simulations_seed() -> None:
    import random

    firsts: list[float] = []

    async def scenario(sim: bg.Simulation) -> None:
        firsts.append(random.random())
        await sim.kv.set("k", "v", sim.choices.integer(0, 9))

    random.seed(123)
    before = random.getstate()
    bg.explore(scenario, faults=st.just(bg.FaultPlan()), max_examples=20, seed=1, settings=QUIET)
    # the search leaves the global random exactly where it found it (the clean run too)
    assert random.getstate() == before
    # inside a simulation the random module draws from its seed: every example alike
    assert len(firsts) > 20 and set(firsts) == {random.Random("bgwork-random:1").random()}
