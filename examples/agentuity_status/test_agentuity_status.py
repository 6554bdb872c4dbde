"""The status worker on the real agentuity SDK, answered by the simulation (fixture bg_agentuity).

Runs plain and under ``--bgwork-chaos=duplicate,fail-first,reorder,crash``: the fixed
handler keeps every status terminal and emails each customer once; the first version is
caught emailing twice when the queue redelivers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import pytest_bgwork as bg
from agentuity_status.app import QUEUE, STATUS, handle_job, handle_job_buggy, publish_job, status_store
from pytest_bgwork import adapters


def mailer(sim: bg.Simulation) -> Callable[..., None]:
    """The email provider: a repeated idempotency key sends nothing (as Resend or SES do)."""
    sent: set[str] = set()

    def send_email(to: str, subject: str, *, idempotency_key: str | None = None) -> None:
        if idempotency_key is not None:
            if idempotency_key in sent:
                return
            sent.add(idempotency_key)
        sim.effects.record("email", key=to, subject=subject)

    return send_email


def start_worker(sim: bg.Simulation, handler: Any) -> None:
    kv, send_email = status_store(), mailer(sim)
    sim.queues.create(QUEUE, max_retries=5, retry_delay=0)

    async def worker(payload: dict[str, Any], delivery: bg.Delivery) -> None:
        await handler(payload, kv, send_email)

    sim.queues.route(QUEUE, worker)


@pytest.mark.asyncio
async def test_each_job_ends_done_and_emails_once(bg_agentuity: bg.Simulation) -> None:
    sim = bg_agentuity
    start_worker(sim, handle_job)
    for n in range(3):
        await publish_job(sim.queues, status_store(), f"job_{n}", f"c{n}@example.com")
    await sim.run_until_idle()
    bg.assert_status_terminal(sim, STATUS, field="kind", terminal={"done"})
    bg.assert_effects_once(sim, "email")
    bg.assert_nothing_lost(sim)
    assert sim.kv.items(STATUS) == {f"job_{n}": {"kind": "done"} for n in range(3)}


@pytest.mark.asyncio
async def test_the_status_ttl_is_lost_by_the_sdk(bg_agentuity: bg.Simulation) -> None:
    """publish_job asks for a 7-day TTL; agentuity 0.0.106 never sends it, so nothing expires."""
    bg_agentuity.queues.create(QUEUE)
    await publish_job(bg_agentuity.queues, status_store(), "job_1", "c@example.com")
    assert [v.ttl for v in bg_agentuity.kv.history(STATUS, "job_1")] == [None]


@pytest.mark.asyncio
async def test_a_redelivered_job_emails_twice_in_the_first_version(bg_agentuity: bg.Simulation) -> None:
    sim = bg_agentuity
    start_worker(sim, handle_job_buggy)
    sim.faults.duplicate(QUEUE, times=2)  # the queue delivers the job twice, as at-least-once queues do
    await publish_job(sim.queues, status_store(), "job_1", "c@example.com")
    await sim.run_until_idle()
    with pytest.raises(bg.CheckFailed, match="email"):
        bg.assert_effects_once(sim, "email")


def scenario(handler: Any) -> Any:
    async def run(sim: bg.Simulation) -> None:
        with adapters.agentuity.install(sim):
            start_worker(sim, handler)
            for _ in range(3):  # a client retries a publish that failed (it may have applied)
                try:
                    await publish_job(sim.queues, status_store(), "job_1", "c@example.com")
                    break
                except Exception:
                    continue
            await sim.run_until_idle()

    return run


def emails_once(sim: bg.Simulation) -> None:
    __tracebackhide__ = True
    if sim.effects.count("email"):
        bg.assert_effects_once(sim, "email")


def test_explore_finds_the_double_email_and_clears_the_fix() -> None:
    from pytest_bgwork import strategies as bgst

    # seeded, so every run searches the same examples; 200 (the default) finds it on
    # every seed 0-9 checked, on the Hypothesis versions CI installs
    with pytest.raises(bg.ExplorationFailed, match="email"):
        bg.explore(scenario(handle_job_buggy), faults=bgst.fault_plans(max_faults=2),
                   checks=[emails_once], seed=1)
    # a crash after the email is pinned below (test_a_crash_after_the_email...), so expect no state here
    bg.explore(scenario(handle_job), faults=bgst.fault_plans(max_faults=2), checks=[emails_once],
               seed=1, expect_states=[])


@pytest.mark.asyncio
@pytest.mark.parametrize(("handler", "emails"), [(handle_job, 1), (handle_job_buggy, 2)])
async def test_a_crash_after_the_email_resends_it_only_without_the_key(
    bg_agentuity: bg.Simulation, handler: Any, emails: int
) -> None:
    sim = bg_agentuity
    start_worker(sim, handler)
    sim.faults.crash(QUEUE, at="kv.set", on_call=2)  # the worker dies writing "done", after the email
    await publish_job(sim.queues, status_store(), "job_1", "c@example.com")
    await sim.run_until_idle()
    assert sim.queues.stats(QUEUE)["crashed"] >= 1
    # under chaos the buggy twin may email even more often; the fixed one always once
    assert sim.effects.count("email") == 1 if emails == 1 else sim.effects.count("email") >= emails
    bg.assert_status_terminal(sim, STATUS, field="kind", terminal={"done"})
