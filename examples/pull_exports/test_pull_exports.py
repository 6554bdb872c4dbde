"""The exports worker, owned by the test through ``sim.workers``: direct tests, explore, chaos.

Two workers poll the queue. The correct app (``app.py``) and its buggy twin
(``buggy_app.py``: mails without an Idempotency-Key, and deletes a job whose handling
raised) pass the same direct test; ``bg.explore`` with the default fault plans (``bgst.fault_plans()``) and chaos
(``duplicate``, ``fail-first``, ``crash``, ``overlap`` each alone, and all six modes
together) find the twin's bugs and leave the app green. (``reorder`` and ``latency`` change
timing only: neither bug depends on it.)
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any

import pytest

import pytest_bgwork as bg
from pull_exports import app, buggy_app
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking import chaos

EXPORTS = [("exp-1", "ann@example.com"), ("exp-2", "bob@example.com")]


def deploy(sim: bg.Simulation, impl: ModuleType, workers: int = 2) -> None:
    """Create the queue and start ``workers`` exports workers, supervised by the simulation."""
    impl.create_queue(sim)
    for n in range(1, workers + 1):
        sim.workers.start(f"exporter-{n}", lambda: impl.export_worker(sim))


async def request_all(sim: bg.Simulation, impl: ModuleType) -> None:
    """The clients: each requests an export; one whose request failed saw an error (a 500)."""
    for export_id, email in EXPORTS:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await impl.request_export(sim, export_id, email)


def every_export_done(sim: bg.Simulation) -> None:
    """Every export whose job was deleted (the worker said it was finished) is done.

    A job that used up its retries went to the dead-letter list, which an operator
    handles: its status may stay running, and ``assert_nothing_lost`` counts it.
    """
    finished = {m.payload["export_id"] for m in sim.queues.messages(app.QUEUE)
                if m.state == "acked"}
    for export_id in sorted(finished):
        status = sim.kv.items(app.STATUS).get(export_id)
        assert status == {"status": "done"}, (
            f"export {export_id}: its job was deleted but its status is {status}")


def one_email_each(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email", allow_empty=True)


CHECKS = [bg.assert_nothing_lost, every_export_done, one_email_each]


@pytest.mark.bgwork(chaos="")  # the direct test: one clean delivery each
@pytest.mark.parametrize("impl", [app, buggy_app], ids=["app", "buggy"])
@pytest.mark.asyncio
async def test_each_export_is_done_and_mailed_once(bgwork: bg.Simulation, impl: ModuleType) -> None:
    deploy(bgwork, impl)
    await request_all(bgwork, impl)
    await bgwork.run_until_idle()  # returns once the queue is empty: the workers only poll
    for check in CHECKS:
        check(bgwork)
    assert bgwork.effects.count("email") == 2


def scenario_for(impl: ModuleType) -> Any:
    async def scenario(sim: bg.Simulation) -> None:
        deploy(sim, impl)
        await request_all(sim, impl)
    return scenario


def test_explore_finds_a_bug_of_the_twin() -> None:
    with pytest.raises(bg.ExplorationFailed, match=r"every_export_done|one_email_each"):
        bg.explore(scenario_for(buggy_app), faults=bgst.fault_plans(), checks=CHECKS, seed=1)


def test_explore_leaves_the_app_green() -> None:
    bg.explore(scenario_for(app), faults=bgst.fault_plans(), checks=CHECKS, seed=1)


def run_under_chaos(impl: ModuleType, modes: str, seed: int) -> list[str]:
    """Run the scenario under chaos ``modes``; the checks that failed."""
    sim = bg.Simulation(seed=seed)
    chaos.apply(sim, modes)
    failed = []
    try:
        async def main() -> None:
            await scenario_for(impl)(sim)
            await sim.run_until_idle()
        sim.run(main())
        for check in CHECKS:
            try:
                check(sim)
            except AssertionError:
                failed.append(check.__name__)
    finally:
        sim.close()
    return failed


MODES = ["duplicate", "fail-first", "crash", "overlap", ",".join(chaos.MODES)]
#: What each mode finds in the twin: a redelivery mails twice; a failed first call is lost.
FOUND = {"duplicate": ["one_email_each"], "fail-first": ["every_export_done"],
         "crash": ["one_email_each"], "overlap": ["one_email_each"]}


@pytest.mark.parametrize("modes", MODES)
def test_chaos_finds_a_bug_of_the_twin(modes: str) -> None:
    found = run_under_chaos(buggy_app, modes, seed=1)
    assert set(FOUND.get(modes, found)) <= set(found) and found


@pytest.mark.parametrize("modes", MODES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chaos_leaves_the_app_green(modes: str, seed: int) -> None:
    assert run_under_chaos(app, modes, seed) == []
