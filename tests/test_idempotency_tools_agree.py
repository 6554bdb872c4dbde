"""Which tool catches which class of idempotency bug: each test is one row of the table on
the checks page (docs/checks.md, "Which tool catches what"). A buggy handler must be caught
by every tool the row names, and its fixed twin pass them all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import pytest_bgwork as bg
import pytest_bgwork.strategies as bgst

pytestmark = pytest.mark.filterwarnings("ignore::pytest_bgwork.ExploreCoverageWarning")

Handler = Callable[[dict[str, Any]], Awaitable[None]]


def check_then_act(sim: bg.Simulation) -> Handler:
    """The racy "idempotent" charge: get, then set. Two deliveries at once both see nothing."""
    async def charge(payload: dict[str, Any]) -> None:
        if not (await sim.kv.get("charges", payload["id"])).exists:
            await sim.kv.set("charges", payload["id"], {"amount": 5})
            sim.effects.record("charge", key=payload["id"])
    return charge


def claim_first(sim: bg.Simulation) -> Handler:
    """The fix: claim the key with one atomic write; only the delivery that wrote acts."""
    async def charge(payload: dict[str, Any]) -> None:
        if await sim.kv.set("charges", payload["id"], {"amount": 5}, if_absent=True):
            sim.effects.record("charge", key=payload["id"])
    return charge


def charge_every_time(sim: bg.Simulation) -> Handler:
    """Not idempotent at all: every delivery charges."""
    async def charge(payload: dict[str, Any]) -> None:
        await sim.kv.set("charges", payload["id"], {"amount": 5})
        sim.effects.record("charge", key=payload["id"])
    return charge


async def _idempotent(sim: bg.Simulation, make: Callable[[bg.Simulation], Handler]) -> str | None:
    try:
        await bg.assert_idempotent(sim, make(sim), {"id": "o-1"})
    except bg.CheckFailed as exc:
        return str(exc)
    return None


def _explore(make: Callable[[bg.Simulation], Handler]) -> str | None:
    async def scenario(sim: bg.Simulation) -> None:
        handler = make(sim)
        sim.queues.create("orders")

        async def on_message(payload: dict[str, Any], delivery: object) -> None:
            await handler(payload)

        sim.queues.route("orders", on_message)
        await sim.queues.publish("orders", {"id": "o-1"})

    def charged_once(sim: bg.Simulation) -> None:
        bg.assert_effects_once(sim, "charge")

    # duplicate deliveries and delays: what makes two deliveries of one message overlap
    plans = bgst.fault_plans(max_faults=3, kinds=["duplicate", "delay"])
    try:
        bg.explore(scenario, plans, checks=[charged_once],
                   max_examples=60, seed=1)
    except bg.ExplorationFailed as exc:
        return str(exc)
    return None


CHAOS_FILE = """
import pytest

pytestmark = pytest.mark.filterwarnings("ignore::pytest_bgwork.ExploreCoverageWarning")
import pytest_bgwork as bg
from test_idempotency_tools_agree import check_then_act, claim_first, charge_every_time

async def run(sim, make):
    handler = make(sim)
    sim.queues.create("orders")
    async def on_message(payload, delivery):
        await handler(payload)
    sim.queues.route("orders", on_message)
    for _ in range(2):  # two orders a moment apart: deliveries overlap
        await sim.queues.publish("orders", {"id": "o-1"})
    await sim.run_until_idle()
    bg.assert_effects_once(sim, "charge")

@pytest.mark.asyncio
async def test_fixed(bgwork):
    await run(bgwork, claim_first)

@pytest.mark.asyncio
async def test_buggy(bgwork):
    await run(bgwork, {buggy})
"""


def _chaos(pytester: pytest.Pytester, buggy: str, mode: str) -> pytest.RunResult:
    pytester.syspathinsert(str(__import__("pathlib").Path(__file__).parent))
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_chaos_row=CHAOS_FILE.replace("{buggy}", buggy))
    return pytester.runpytest("-p", "no:cacheprovider", f"--bgwork-chaos={mode}")


@pytest.mark.asyncio
async def test_row_overlapping_duplicate_check_then_act(bgwork: bg.Simulation) -> None:
    """Two deliveries at once: assert_idempotent (overlap schedules) and explore agree."""
    text = await _idempotent(bgwork, check_then_act)
    assert text is not None
    assert ("schedule 'overlap: a second delivery runs while the first is at kv.set (entry 1)':\n"
            "  effect charge key='o-1': clean run 1 time; this schedule 2 times") in text
    assert "schedule 'duplicate delivery" not in text  # sequential duplicates miss it
    assert await _idempotent(bgwork, claim_first) is None


def test_row_overlapping_duplicate_explore() -> None:
    found = _explore(check_then_act)
    assert found is not None
    assert "- key 'o-1': 2 times" in found, found
    assert _explore(claim_first) is None


def test_row_overlapping_duplicate_chaos_overlap(pytester: pytest.Pytester) -> None:
    result = _chaos(pytester, "check_then_act", "overlap")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED test_chaos_row.py::test_buggy*"])


@pytest.mark.asyncio
async def test_row_sequential_duplicate(bgwork: bg.Simulation) -> None:
    text = await _idempotent(bgwork, charge_every_time)
    assert text is not None and ("schedule 'duplicate delivery: 2 runs in a row':\n"
                                 "  effect charge key='o-1': clean run 1 time; this schedule 2 times") in text


def test_row_sequential_duplicate_chaos_duplicate(pytester: pytest.Pytester) -> None:
    result = _chaos(pytester, "charge_every_time", "duplicate")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*FAILED test_chaos_row.py::test_buggy*"])


def test_row_sequential_duplicate_explore() -> None:
    found = _explore(charge_every_time)
    assert found is not None and "- key 'o-1': 2 times" in found


def email_then_mark(sim: bg.Simulation) -> Handler:
    """Crash between writes: the email goes out, the crash comes before the "sent" mark."""
    async def notify(payload: dict[str, Any]) -> None:
        if (await sim.kv.get("sent", payload["id"])).exists:
            return
        sim.effects.record("email", key=payload["id"])
        await sim.kv.set("sent", payload["id"], True)
    return notify


def mark_with_the_provider_key(sim: bg.Simulation) -> Handler:
    """The fix: the provider dedupes by an idempotency key (its memory is the effects)."""
    async def notify(payload: dict[str, Any]) -> None:
        if (await sim.kv.get("sent", payload["id"])).exists:
            return
        if not any(e.key == payload["id"] for e in sim.effects.all()):
            sim.effects.record("email", key=payload["id"])
        await sim.kv.set("sent", payload["id"], True)
    return notify


@pytest.mark.asyncio
async def test_row_crash_between_writes(bgwork: bg.Simulation) -> None:
    text = await _idempotent(bgwork, email_then_mark)
    assert text is not None
    assert ("schedule 'crash at kv.set (entry 1), then restart':\n"
            "  effect email key='o-1': clean run 1 time; this schedule 2 times") in text
    assert await _idempotent(bgwork, mark_with_the_provider_key) is None


def test_row_crash_between_writes_explore() -> None:
    def explore(make: Callable[[bg.Simulation], Handler]) -> str | None:
        async def scenario(sim: bg.Simulation) -> None:
            handler = make(sim)
            sim.queues.create("orders")

            async def on_message(payload: dict[str, Any], delivery: object) -> None:
                await handler(payload)

            sim.queues.route("orders", on_message)
            await sim.queues.publish("orders", {"id": "o-1"})

        def emailed_once(sim: bg.Simulation) -> None:
            bg.assert_effects_once(sim, "email")

        try:
            bg.explore(scenario, bgst.fault_plans(max_faults=1, kinds=["crash"], points=["kv.set"]),
                       checks=[emailed_once], max_examples=60, seed=1)
        except bg.ExplorationFailed as exc:
            return str(exc)
        return None

    found = explore(email_then_mark)
    assert found is not None and "- key 'o-1': 2 times" in found
    assert explore(mark_with_the_provider_key) is None


def test_row_publish_retry() -> None:
    """A publish that timed out after it took effect, retried by the app: the message twice.
    Only bg.explore injects "fail after the write applied"; assert_idempotent runs faults off."""
    def scenario_for(key: bool) -> Callable[[bg.Simulation], Awaitable[None]]:
        async def scenario(sim: bg.Simulation) -> None:
            sim.queues.create("orders")
            sim.queues.create("emails")

            async def on_order(payload: dict[str, Any], delivery: object) -> None:
                for _ in range(3):  # the app retries a publish that raised
                    try:
                        await sim.queues.publish("emails", {"order": payload["id"]},
                                                 idempotency_key=f"email-{payload['id']}" if key else None)
                        return
                    except Exception:  # an injected error (or timeout) from the publish
                        continue

            async def on_email(payload: dict[str, Any], delivery: object) -> None:
                sim.effects.record("email", key=payload["order"])

            sim.queues.route("orders", on_order)
            sim.queues.route("emails", on_email)
            for _ in range(3):  # the client retries too, with a key: its order queues once
                try:
                    await sim.queues.publish("orders", {"id": "o-1"}, idempotency_key="o-1")
                    return
                except Exception:  # an injected error (or timeout) from the publish
                    continue
        return scenario

    def emailed_once(sim: bg.Simulation) -> None:  # at most once: every publish may fail
        bg.assert_effects_once(sim, "email", allow_empty=True)

    plans = bgst.fault_plans(max_faults=1, points=["queue.publish"], kinds=["fail"])
    with pytest.raises(bg.ExplorationFailed, match=r"- key 'o-1': 2 times"):
        bg.explore(scenario_for(key=False), plans, checks=[emailed_once], max_examples=60, seed=1)
    bg.explore(scenario_for(key=True), plans, checks=[emailed_once], max_examples=60, seed=1)
