"""Verdicts: injected errors the scenario or a task sees, vacuity on the clean run, paused(),
the platform at every entry point, unfired rules, non-determinism after a failure."""

from __future__ import annotations

import base64
import contextlib
import json
import pathlib
import zlib
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking.checks import NothingToCheck
from pytest_bgwork.core.faults import Fault, FaultPlan, _make_error, is_injected

QUIET = hypothesis.settings(database=None)
KV_SET_FAILS = bgst.fault_plans(points=["kv.set"], kinds=["fail"])


# -- injected-fault tagging ---------------------------------------------------------------------
def test_an_injected_error_is_tagged_and_so_is_anything_it_caused() -> None:
    injected = _make_error("ConnectionError('kv down')")
    assert isinstance(injected, ConnectionError) and is_injected(injected)
    assert not is_injected(ConnectionError("kv down")) and not is_injected(None)
    try:
        try:
            raise injected
        except ConnectionError as exc:
            raise RuntimeError("could not save the order") from exc
    except RuntimeError as caused:
        assert is_injected(caused)
    try:
        try:
            raise injected
        except ConnectionError:
            raise KeyError("raised while handling it")  # noqa: B904 - the implicit __context__
    except KeyError as during:
        assert is_injected(during)
    assert is_injected(ExceptionGroup("all injected", [injected, _make_error("TimeoutError()")]))
    assert not is_injected(ExceptionGroup("one is a bug", [injected, ValueError("bug")]))


def test_an_http_rule_tags_its_errors_and_its_responses() -> None:
    import httpx

    sim = bg.Simulation(seed=1)
    sim.faults.http("https://api.example/*", status=503)
    seen: list[bool] = []

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            response = await client.get("https://api.example/charge")
        try:
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            seen.append(is_injected(exc))

    try:
        sim.run(main())
    finally:
        sim.close()
    assert seen == [True]


async def save_order(sim: bg.Simulation) -> None:
    """A client that starts work, then sees an injected error on its own write."""
    sim.queues.create("orders")

    async def worker(payload: Any, delivery: Any) -> None:
        sim.effects.record("packed", key=payload["id"])

    sim.queues.route("orders", worker)
    await sim.queues.publish("orders", {"id": "o1"})
    await sim.kv.set("orders", "o1", {"kind": "placed"})  # the client does not catch errors


seen_errors: list[list[dict[str, Any]]] = []


def work_ran(sim: bg.Simulation) -> None:
    seen_errors.append([e.detail for e in sim.history.events
                        if e.service == "scenario" and e.op == "error"])
    bg.assert_effects_once(sim, "packed", keys=["o1"])


def test_an_injected_error_escaping_the_scenario_is_recorded_and_the_example_goes_on() -> None:
    seen_errors.clear()
    report = bg.explore(save_order, faults=KV_SET_FAILS, checks=[work_ran], seed=1,
                        max_examples=30, settings=QUIET, expect_states=[])
    assert report.examples == 30
    assert 0 < report.scenario_errors < 30
    assert f"  {report.scenario_errors} example(s): the scenario saw an injected error (recorded " \
           "as scenario.error; the example went on)" in report.summary()
    recorded = [errs for errs in seen_errors if errs]
    assert recorded, "some example failed the scenario's kv.set"
    assert recorded[0] == [{"injected": True, "error": "ConnectionError: injected fault"}] or \
        recorded[0] == [{"injected": True, "error": "TimeoutError: injected timeout"}]


def test_scenario_errors_fail_makes_every_escaping_error_fail_the_example() -> None:
    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(save_order, faults=KV_SET_FAILS, seed=1, settings=QUIET,
                   scenario_errors="fail")
    assert "failed in: scenario\n  ConnectionError: injected fault" in str(info.value)


def test_an_error_of_the_scenarios_own_still_fails_the_example() -> None:
    async def buggy(sim: bg.Simulation) -> None:
        with contextlib.suppress(ConnectionError):
            await sim.kv.set("orders", "o1", {"kind": "placed"})
        raise LookupError("the driver's own bug")

    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(buggy, faults=KV_SET_FAILS, seed=1, settings=QUIET)
    assert "failed in: scenario\n  LookupError: the driver's own bug" in str(info.value)


@pytest.mark.parametrize("value", ["lenient", "", None, True])
def test_scenario_errors_is_validated(value: Any) -> None:
    with pytest.raises(ValueError, match=r"explore\(scenario_errors=...\) must be one of "
                                         r"'continue', 'fail'; got"):
        bg.explore(save_order, faults=st.just(bg.FaultPlan()), scenario_errors=value)
    with pytest.raises(ValueError, match=r"explore_test\(scenario_errors=...\) must be one of"):
        bg.explore_test(save_order, faults=st.just(bg.FaultPlan()), scenario_errors=value)


# -- tasks that failed because of an injected fault ---------------------------------------------
def _run_task(body: str) -> bg.Simulation:
    sim = bg.Simulation(seed=1)
    sim.faults.fail("kv.set", on_call=1)

    async def task() -> None:
        if body == "injected":
            await sim.kv.set("audit", "a1", 1)
        elif body == "wrapped":
            try:
                await sim.kv.set("audit", "a1", 1)
            except ConnectionError as exc:
                raise RuntimeError("audit failed") from exc
        else:
            raise ZeroDivisionError("the task's own bug")

    async def main() -> None:
        sim.runtime.wait_until(task, name="record_audit")
        await sim.run_until_idle()

    sim.run(main())
    return sim


@pytest.mark.parametrize("body", ["injected", "wrapped"])
def test_a_task_failed_by_an_injected_fault_is_not_a_task_error(body: str) -> None:
    sim = _run_task(body)
    try:
        assert len(sim.runtime.errors) == 1  # still recorded and logged
        bg.assert_no_task_errors(sim)
    finally:
        sim.close()


def test_a_task_that_fails_on_its_own_is_still_reported() -> None:
    sim = _run_task("bug")
    try:
        with pytest.raises(bg.CheckFailed, match="ZeroDivisionError: the task's own bug"):
            bg.assert_no_task_errors(sim)
    finally:
        sim.close()


def test_a_fault_at_a_task_point_does_not_fail_explore() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        async def audit() -> None:
            sim.effects.record("audit", key="a1")

        sim.runtime.wait_until(audit, name="record_audit")

    faults = bgst.fault_plans(points=["task.record_audit"], kinds=["fail"])
    report = bg.explore(scenario, faults=faults, seed=2, max_examples=20, settings=QUIET)
    assert report.examples == 20


# -- vacuity, judged once on the clean run ------------------------------------------------------
async def charge_if_found(sim: bg.Simulation) -> None:
    """The API reads the order; when the read fails it answers 500 and charges nothing."""
    await sim.kv.set("orders", "o1", {"total": 5})
    try:
        await sim.kv.get("orders", "o1")
    except (ConnectionError, TimeoutError):
        return
    sim.effects.record("charge", key="o1")


def charged_once(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "charge")


def test_absence_in_a_faulty_example_is_no_failure() -> None:
    faults = bgst.fault_plans(points=["kv.get"], kinds=["fail"])
    report = bg.explore(charge_if_found, faults=faults, checks=[charged_once], seed=1,
                        max_examples=30, settings=QUIET)
    assert report.examples == 30


def test_a_check_whose_name_never_appears_in_the_clean_run_is_refused_before_the_search() -> None:
    def charged_once_misspelt(sim: bg.Simulation) -> None:
        bg.assert_effects_once(sim, "chrage")

    with pytest.raises(NothingToCheck) as info:
        bg.explore(charge_if_found, faults=bgst.fault_plans(), checks=[charged_once_misspelt],
                   seed=1, settings=QUIET)
    text = str(info.value)
    assert text.startswith("bg.explore(charge_if_found): refused before the search: on the clean "
                           "run (no faults) check ")
    assert "assert_effects_once('chrage'): no effect named 'chrage' was ever recorded, so there " \
           "is nothing to check (recorded: 'charge' x1); did you mean 'charge'?" in text


def test_a_status_namespace_never_written_in_the_clean_run_is_refused() -> None:
    def stuck(sim: bg.Simulation) -> None:
        bg.assert_status_terminal(sim, "status")

    test = bg.explore_test(charge_if_found, faults=st.just(bg.FaultPlan()), checks=[stuck], seed=1, settings=QUIET)
    with pytest.raises(NothingToCheck, match=r"no key was ever written to KV namespace 'status'"):
        test()


# -- paused() -----------------------------------------------------------------------------------
def test_paused_fires_no_rule_and_draws_no_latency_but_counts_the_calls() -> None:
    sim = bg.Simulation(seed=1)
    sim.faults.fail("kv.set", on_call=None)
    sim.faults.apply([Fault("latency", "*", seconds=0.1)])
    times: list[float] = []

    async def main() -> None:
        with sim.faults.paused():
            assert sim.faults.is_paused and not sim.faults.healed
            for i in range(3):
                await sim.kv.set("seed", f"k{i}", i)
        times.append(sim.clock.monotonic())
        assert not sim.faults.is_paused
        with pytest.raises(ConnectionError):
            await sim.kv.set("seed", "k3", 3)

    try:
        sim.run(main())
    finally:
        sim.close()
    assert sim.faults.calls("kv.set") == 4
    assert sim.kv.items("seed") == {"k0": 0, "k1": 1, "k2": 2}
    assert sim.faults.injected == 1
    assert times == [pytest.approx(times[0])]
    assert [e.op for e in sim.history.events if e.service == "kv"].count("set") >= 3


def test_paused_set_up_keeps_an_exploration_from_failing_it() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        with sim.faults.paused():
            await sim.kv.set("orders", "o1", {"kind": "placed"})
        sim.effects.record("placed", key="o1")

    def placed(sim: bg.Simulation) -> None:
        bg.assert_effects_once(sim, "placed", keys=["o1"])

    with pytest.raises(bg.ExplorationFailed):  # without paused(), the set-up's write fails
        bg.explore(_unpaused(scenario), faults=KV_SET_FAILS, checks=[placed], seed=1,
                   settings=QUIET)
    bg.explore(scenario, faults=KV_SET_FAILS, checks=[placed], seed=1, max_examples=30,
               settings=QUIET)


def _unpaused(scenario: Any) -> Any:
    async def unpaused(sim: bg.Simulation) -> None:
        await sim.kv.set("orders", "o1", {"kind": "placed"})
        sim.effects.record("placed", key="o1")

    return unpaused


# -- the report names only faults that fired; a failure is reported even when flaky ------------
async def retry_then_email(sim: bg.Simulation) -> None:
    """Buggy: the email goes out before the status write, so a retried write sends it again."""
    for _ in range(3):
        try:
            sim.effects.record("email", key="o1")
            await sim.kv.set("status", "o1", {"kind": "done"})
            break
        except (ConnectionError, TimeoutError):
            continue


def emails_once(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email", allow_empty=True)


NEVER_FIRES = Fault("fail", "kv.get", on_call=1, error="ConnectionError('never')")
FIRES = Fault("fail", "kv.set", on_call=1, error="ConnectionError('kv down')")


def test_rules_that_never_fired_are_dropped_after_shrinking_and_the_failure_re_verified() -> None:
    from hypothesis import strategies as st

    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(retry_then_email, faults=st.just(FaultPlan([NEVER_FIRES, FIRES])),
                   checks=[emails_once], seed=1, settings=QUIET)
    failure = info.value
    assert failure.plan == FaultPlan([FIRES])
    text = str(failure)
    assert "shrunk to 1 fault." in text
    assert "kv.get" not in text.split("fault plan:")[1].split("choices:")[0]
    from pytest_bgwork.checking import replay

    assert replay.decode(failure.token).plan == FaultPlan([FIRES])  # the token replays it


def test_a_replayed_plan_marks_the_rules_that_never_fired() -> None:
    from pytest_bgwork.checking import replay

    token = replay.encode(1, FaultPlan([NEVER_FIRES, FIRES]), [], scenario="retry_then_email")
    with replay.activate(token), pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(retry_then_email, faults=st.just(bg.FaultPlan()), checks=[emails_once], settings=QUIET)
    text = str(info.value)
    assert "1. fail at kv.get on call 1 raising ConnectionError('never') (never fired)" in text
    assert "2. fail at kv.set on call 1 raising ConnectionError('kv down')\n" in text


def test_a_failure_is_reported_with_its_token_even_when_shrinking_meets_nondeterminism() -> None:
    state = {"failed": False}

    def fails_once(sim: bg.Simulation) -> None:
        if sim.faults.injected and not state["failed"]:
            state["failed"] = True
            raise bg.CheckFailed("the order was charged twice (only this once)")

    with pytest.raises(bg.NonDeterministic) as info:
        bg.explore(retry_then_email, faults=KV_SET_FAILS, checks=[fails_once], seed=1,
                   settings=QUIET)
    text = str(info.value)
    assert "Hypothesis ran the failing example again and it did not fail the same way." in text
    assert "The first failing example (example " in text
    assert "fails_once\n    the order was charged twice (only this once)" in text
    assert info.value.token is not None
    assert f'@pytest.mark.bgwork(replay="{info.value.token}")' in text
    assert isinstance(info.value.error, bg.CheckFailed)


# -- the platform reaches every entry point -----------------------------------------------------
PLATFORM_FILE = '''
import json
import pytest
from hypothesis import strategies as st
import pytest_bgwork as bg

async def scenario(sim):
    sim.queues.create("charges")

    async def worker(payload, delivery):
        sim.effects.record("charge", key=payload["id"])

    sim.queues.route("charges", worker)

    async def app(scope, receive, send):  # the webhook endpoint publishes with the event id
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        event = json.loads(body)
        await sim.queues.publish("charges", event, idempotency_key=event["id"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    await sim.webhooks.deliver(app, "/hook", {"id": "evt_1"}, times=2)  # delivered twice

def charged_once(sim):
    print("PLATFORM=" + sim.platform)
    bg.assert_effects_once(sim, "charge")

NO_FAULTS = st.just(bg.FaultPlan())  # the platform's own duplicate, without faults

MARK
def test_explore():
    bg.explore(scenario, faults=NO_FAULTS, checks=[charged_once], seed=1, max_examples=3)

test_explore_fuzz = MARKED(bg.explore_test(scenario, faults=NO_FAULTS, checks=[charged_once], seed=1,
                                           max_examples=3))
'''


@pytest.mark.parametrize("how", ["default", "marker", "option", "ini", "argument"])
def test_the_platform_reaches_explore_and_explore_test_in_a_plain_test(
        pytester: pytest.Pytester, how: str) -> None:
    source = PLATFORM_FILE.replace("MARK\n", '@pytest.mark.bgwork(platform="aws")\n'
                                   if how == "marker" else "")
    source = source.replace("MARKED(", 'pytest.mark.bgwork(platform="aws")(' if how == "marker"
                            else "(")
    if how == "argument":
        source = source.replace("max_examples=3)", "max_examples=3, platform='aws')")
    pytester.makepyfile(test_platform=source)
    if how == "ini":
        pytester.makeini("[pytest]\nbgwork_platform = aws\nasyncio_default_fixture_loop_scope = function\n")
    args = ["-p", "no:cacheprovider", "-s"] + (["--bgwork-platform=aws"] if how == "option" else [])
    result = pytester.runpytest(*args)
    out = result.stdout.str()
    if how == "default":  # Agentuity deduplicates the second publish by its idempotency key
        result.assert_outcomes(passed=2)
        assert "PLATFORM=agentuity" in out and "PLATFORM=aws" not in out
        return
    # SQS standard queues do not: the webhook delivered twice charges twice, and both find it
    result.assert_outcomes(failed=2)
    assert "PLATFORM=aws" in out and "PLATFORM=agentuity" not in out
    result.stdout.fnmatch_lines(["*assert_effects_once('charge'): expected each key's 'charge' "
                                 "effect exactly once; 1 key had it more than once:"])


# -- the fault point ``http`` is the network, not an in-process app -----------------------------
async def _asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("kind", ["adapters.asgi.transport", "httpx.ASGITransport"])
def test_an_http_fault_does_not_fail_a_request_to_an_in_process_app(kind: str) -> None:
    import httpx

    from pytest_bgwork.adapters import asgi

    sim = bg.Simulation(seed=1)
    sim.faults.fail("http", on_call=None)
    sim.faults.http("https://api.mail.example/*", status=503, on_call=None)
    got: list[int] = []

    async def main() -> None:
        transport: httpx.AsyncBaseTransport = (
            asgi.transport(_asgi_ok, sim) if kind == "adapters.asgi.transport"
            else httpx.ASGITransport(app=_asgi_ok))
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            got.append((await client.post("/orders")).status_code)
        async with httpx.AsyncClient() as outbound:  # the network still fails
            with pytest.raises(httpx.ConnectError):
                await outbound.get("https://api.mail.example/send")

    try:
        sim.run(main())
    finally:
        sim.close()
    assert got == [200]
    assert sim.faults.calls("http") == 1


# -- on_call, max_on_call, max_faults -------------------------------------------------------------
def _calls_drawn(learned: dict[str, int] | None, n: int = 300, **kwargs: Any) -> set[int | None]:
    from hypothesis import strategies as st

    from pytest_bgwork.strategies import learned_points

    seen: set[int | None] = set()

    @hypothesis.seed(1)
    @hypothesis.settings(database=None, max_examples=n, phases=[hypothesis.Phase.generate],
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(st.data())
    def draw(data: st.DataObject) -> None:
        token = learned_points.set(learned)
        try:
            plan = data.draw(bgst.fault_plans(max_faults=1, points=["kv.get"], kinds=["crash"],
                                              **kwargs))
        finally:
            learned_points.reset(token)
        seen.update(f.on_call for f in plan)

    draw()
    return seen


def test_on_call_is_drawn_among_every_call_the_clean_run_made() -> None:
    seen = _calls_drawn({"kv.get": 17})
    assert max(c for c in seen if c is not None) > 10  # was never past 3
    assert seen <= set(range(1, 18))
    assert _calls_drawn({"kv.get": 17}, max_on_call=5) <= {1, 2, 3, 4, 5}
    assert _calls_drawn(None) <= {1, 2, 3}  # outside explore: DEFAULT_MAX_ON_CALL
    assert max(c for c in _calls_drawn(None, max_on_call=8) if c is not None) > 3


def test_on_call_shrinks_toward_call_1() -> None:
    from pytest_bgwork.strategies import learned_points

    token = learned_points.set({"kv.get": 17})
    try:
        plan = hypothesis.find(bgst.fault_plans(points=["kv.get"], kinds=["crash"]),
                               lambda p: any((f.on_call or 0) >= 9 for f in p), settings=QUIET)
    finally:
        learned_points.reset(token)
    assert [f.on_call for f in plan] == [9]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_faults": 100001}, "fault_plans(max_faults=...) expects an int from 0 to 100 "
                             "(MAX_FAULTS); got 100001."),
    ({"max_on_call": 0}, "fault_plans(max_on_call=...) expects an int >= 1 or None; got 0."),
    ({"max_on_call": True}, "fault_plans(max_on_call=...) expects an int >= 1 or None; got True."),
])
def test_fault_plans_refuse_numbers_past_their_limits(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        bgst.fault_plans(**kwargs)
    assert str(info.value).startswith(message)
    assert bgst.MAX_FAULTS == 100


# -- replay tokens recorded by earlier releases -------------------------------------------------
TOKENS = json.loads((pathlib.Path(__file__).parent / "fixtures" / "replay_tokens.json").read_text())


def _raw_token(data: dict[str, Any]) -> str:
    """A token holding exactly ``data`` (as an earlier or a later version would write it)."""
    raw = json.dumps(data).encode()
    return "bgwork1:" + base64.urlsafe_b64encode(zlib.compress(raw)).decode().rstrip("=")


async def email_then_status(sim: bg.Simulation) -> None:
    """The scenario ``fixtures/record_tokens.py`` recorded the tokens with (same name)."""
    sim.queues.create("orders", visibility_timeout=30, max_retries=2)

    async def worker(payload: Any, delivery: Any) -> None:
        sim.effects.record("email", key=payload["id"])
        await sim.kv.set("status", payload["id"], {"kind": "done"})

    sim.queues.route("orders", worker)
    for order in ("o1", "o2"):
        await sim.queues.publish("orders", {"id": order}, idempotency_key=order)


def emails_once_strict(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email")


emails_once_strict.__qualname__ = emails_once_strict.__name__ = "emails_once"


def _replay(token: str) -> bg.ExplorationFailed:
    from pytest_bgwork.checking import replay

    with replay.activate(token), pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(email_then_status, faults=st.just(bg.FaultPlan()), checks=[emails_once_strict])
    return info.value


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_a_token_recorded_by_0_2_replays_the_recorded_run(seed: str) -> None:
    recorded = TOKENS["versions"]["0.2.0"][seed]
    failure = _replay(recorded["token"])
    assert failure.digest == recorded["digest"]  # the very history 0.2 recorded
    text = str(failure)
    assert text.startswith("bg.explore(email_then_status): replayed the example from the token.\n"
                           "failed in: check emails_once\n")
    assert "note:" not in text


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_a_token_recorded_by_0_1_replays_its_plan_and_is_never_nondeterministic(seed: str) -> None:
    recorded = TOKENS["versions"]["0.1.0"][seed]
    failure = _replay(recorded["token"])  # ExplorationFailed, not NonDeterministic
    assert "failed in: check emails_once" in str(failure)
    assert repr(failure.plan) == recorded["plan"]  # the plan is data: the same faults


def test_a_token_whose_choices_this_version_draws_differently_is_refused() -> None:
    from pytest_bgwork.checking import replay

    old = replay.decode(TOKENS["versions"]["0.2.0"]["1"]["token"])
    token = _raw_token({"seed": old.seed, "plan": old.plan.to_data(), "choices": [0.5, 7, 3],
                        "scenario": old.scenario})  # as 0.2 wrote it: no version
    with replay.activate(token), pytest.raises(replay.ReplayRefused) as info:
        bg.explore(email_then_status, faults=st.just(bg.FaultPlan()), checks=[emails_once_strict])
    text = str(info.value)
    assert text.startswith("bg.explore(email_then_status): the replay token was recorded by "
                           "pytest-bgwork 0.1 or 0.2 (the token names no version), which drew its "
                           f"choices differently from this version ({bg.__version__}): replay "
                           "token choice #1 is 0.5, but the code now asks for an integer in ")
    assert "Nothing was judged. Record a fresh token: run this test without the replay marker " \
           "and with --bgwork-seed=1 (or bg.explore(..., seed=1))" in text


def test_a_token_names_its_version_and_a_replay_that_differs_says_so() -> None:
    from pytest_bgwork.checking import replay

    fresh = replay.decode(_replay(TOKENS["versions"]["0.2.0"]["1"]["token"]).token)
    assert fresh.version == bg.__version__ and fresh.digest is not None
    changed = replay.encode(fresh.seed, fresh.plan, fresh.choices, scenario=fresh.scenario,
                            digest="0" * 64)
    text = str(_replay(changed))
    assert f"note: this replay's history (digest {fresh.digest}) differs from the one recorded " \
           f"by pytest-bgwork {bg.__version__} (digest 0000000000000000)" in text
    with pytest.raises(ValueError, match=r"recorded by pytest-bgwork 99\.0, newer than this one"):
        replay.decode(_raw_token({"seed": 1, "plan": [], "choices": [], "version": "99.0"}))


# -- the report: logs of the failing example only, effects outside attempts ---------------------
LOGS_FILE = '''
import logging
import hypothesis
import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst

log = logging.getLogger("app")

async def scenario(sim):
    for _ in range(3):
        try:
            log.warning("EXAMPLE-LOG sending the email")
            sim.effects.record("email", key="o1")
            await sim.kv.set("status", "o1", {"kind": "done"})
            break
        except (ConnectionError, TimeoutError):
            continue

def emails_once(sim):
    bg.assert_effects_once(sim, "email", allow_empty=True)

def test_explore():
    bg.explore(scenario, faults=bgst.fault_plans(points=["kv.set"], kinds=["fail"]),
               checks=[emails_once], seed=3, settings=hypothesis.settings(database=None))
'''


def test_a_failing_exploration_prints_only_the_final_replays_logs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_logs=LOGS_FILE)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- Captured log call -*",
                                 "WARNING  app:test_logs.py:* EXAMPLE-LOG sending the email"])
    # the failing example sends the email twice (a retried write): two records, its own only
    assert result.stdout.str().count("EXAMPLE-LOG sending the email") == 2


def test_the_report_does_not_say_no_effect_when_effects_were_recorded_outside_attempts() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        sim.queues.create("orders")

        async def worker(payload: Any, delivery: Any) -> None:
            await sim.kv.set("status", payload["id"], {"kind": "done"})

        sim.queues.route("orders", worker)
        await sim.queues.publish("orders", {"id": "o1"})
        sim.effects.record("receipt", key="o1")  # outside any queue attempt

    report = bg.explore(scenario, faults=st.just(bg.FaultPlan()),
                        seed=1, max_examples=2, settings=QUIET, expect_states=[])
    text = report.summary()
    assert "recorded no effect)" not in text
    assert "n/a     a crash after an effect (the scenario recorded no effect inside a queue " \
           "attempt)" in text


def test_the_clean_run_learns_the_points_the_run_passed_not_those_the_checks_read() -> None:
    async def scenario(sim: bg.Simulation) -> None:
        await sim.kv.set("status", "o1", {"kind": "done"})

    async def reads_back(sim: bg.Simulation) -> None:  # a check that calls kv.get itself
        assert (await sim.kv.get("status", "o1")).data == {"kind": "done"}

    report = bg.explore(scenario, faults=st.just(bg.FaultPlan()),
                        checks=[reads_back], seed=1, max_examples=1, settings=QUIET)
    assert report.points == ("kv.set",)


@pytest.mark.parametrize("own_bug", [False, True])
def test_a_task_manager_task_follows_the_same_rule(own_bug: bool) -> None:
    sim = bg.Simulation(seed=1)
    sim.faults.fail("kv.set", on_call=1)

    async def save_memory() -> None:
        if own_bug:
            raise KeyError("thread_id")
        await sim.kv.set("memory", "t1", {"facts": []})

    async def main() -> None:
        sim.task_manager.create_task(save_memory(), name="save_memory")
        await sim.run_until_idle()

    try:
        sim.run(main())
        assert [r.status for r in sim.task_manager.tasks] == ["failed"]
        if own_bug:
            with pytest.raises(bg.CheckFailed, match="task-manager task save_memory"):
                bg.assert_no_task_errors(sim)
        else:
            bg.assert_no_task_errors(sim)
    finally:
        sim.close()


# -- keyed draws: a new kind of draw does not shift the old ones --------------------------------
NEW_DRAW = {"on": False}


async def jittered(sim: bg.Simulation) -> None:
    if NEW_DRAW["on"]:  # a later version's new kind of draw, before the others
        sim.choices.integer(0, 9, "a.new.kind")
    for key in ("a", "b"):
        await sim.kv.set("jitter", key, sim.choices.integer(0, 100, "jitter"))


def small_jitter(sim: bg.Simulation) -> None:
    if sum(sim.kv.items("jitter").values()) > 60:
        raise bg.CheckFailed("jitter too big")


def test_a_token_keeps_its_draws_by_kind_so_a_new_kind_does_not_shift_them() -> None:
    from pytest_bgwork.checking import replay

    NEW_DRAW["on"] = False
    with pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(jittered, faults=st.just(bg.FaultPlan()), checks=[small_jitter], seed=2, settings=QUIET)
    recorded = info.value
    keyed = replay.decode(recorded.token).keyed
    assert keyed is not None and sum(keyed["jitter"]) == 61
    NEW_DRAW["on"] = True
    try:
        again = _replay_with(recorded.token, jittered, small_jitter)
    finally:
        NEW_DRAW["on"] = False
    assert again.digest == recorded.digest  # the same history: the jitter draws did not shift
    assert "note:" not in str(again)


def _replay_with(token: str, scenario: Any, check: Any) -> bg.ExplorationFailed:
    from pytest_bgwork.checking import replay

    with replay.activate(token), pytest.raises(bg.ExplorationFailed) as info:
        bg.explore(scenario, faults=st.just(bg.FaultPlan()), checks=[check])
    return info.value


SCENARIO_ERROR_FILE = '''
import pytest_bgwork as bg
from pytest_bgwork import strategies as bgst

async def place_order(sim):
    sim.queues.create("orders")

    async def pack(payload, delivery):
        sim.effects.record("packed", key=payload["id"])

    sim.queues.route("orders", pack)
    await sim.queues.publish("orders", {"id": "o1"})
    await sim.kv.set("orders", "o1", {"kind": "placed"})  # the client does not catch errors

def packed(sim):
    bg.assert_effects_once(sim, "packed", keys=["o1"])

FAULTS = bgst.fault_plans(points=["kv.set"], kinds=["fail"])

def test_lenient():
    bg.explore(place_order, faults=FAULTS, checks=[packed], seed=1, max_examples=30)

test_lenient_fuzz = bg.explore_test(place_order, faults=FAULTS, checks=[packed], seed=1,
                                    max_examples=30)

def test_strict():
    bg.explore(place_order, faults=FAULTS, checks=[packed], seed=1, max_examples=30,
               scenario_errors="fail")

test_strict_fuzz = bg.explore_test(place_order, faults=FAULTS, checks=[packed], seed=1,
                                   max_examples=30, scenario_errors="fail")
'''


def test_a_client_error_passes_explore_and_explore_test_unless_strict(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_orders=SCENARIO_ERROR_FILE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-W",
                                "ignore::pytest_bgwork.ExploreCoverageWarning")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*failed in: scenario", "*ConnectionError: injected fault"])
    assert "FAILED test_orders.py::test_strict" in result.stdout.str()
    assert "FAILED test_orders.py::test_strict_fuzz" in result.stdout.str()
