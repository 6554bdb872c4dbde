"""The exports worker, owned by the test through ``sim.workers``: direct tests, explore, chaos.

Workers poll the queue (two in the explore scenario, eight in the direct test). The
correct app (``app.py``) and its buggy twin (``buggy_app.py``: mails without an
Idempotency-Key, deletes a job whose handling raised, and lets an older export overwrite
a newer one on the dashboard) pass the same direct test. ``bg.explore`` with the default
fault plans (``bgst.fault_plans()``) and chaos mode find the twin's bugs and leave the
app green: ``duplicate``, ``crash`` and ``overlap`` redeliver a job (a second email),
``fail-first`` fails a job's first call (a lost job), ``reorder`` and ``latency`` let a
user's older export finish last (the dashboard goes back). Run the direct test under any
mode: ``pytest examples/pull_exports --bgwork-chaos=reorder``.
"""

from __future__ import annotations

import contextlib
import itertools
from types import ModuleType
from typing import Any

import pytest

import pytest_bgwork as bg
from pull_exports import app, buggy_app
from pytest_bgwork import strategies as bgst
from pytest_bgwork.checking import chaos

#: What the explore scenario requests: one user's two exports, in a row.
EXPORTS = [("exp-1", "ann@example.com"), ("exp-2", "ann@example.com")]
#: The direct test: each user requests two exports in a row (exp-1 and exp-2 are ann's).
USERS = ["ann@example.com", "bob@example.com", "cat@example.com", "dan@example.com",
         "eve@example.com"]
#: Workers in the direct test, as in production: a user's two exports run side by side.
DIRECT_WORKERS = 8


def deploy(sim: bg.Simulation, impl: ModuleType, workers: int = 2) -> None:
    """Create the queue and start ``workers`` exports workers, supervised by the simulation."""
    impl.create_queue(sim)
    for n in range(1, workers + 1):
        sim.workers.start(f"exporter-{n}", lambda: impl.export_worker(sim))


async def request_all(sim: bg.Simulation, impl: ModuleType,
                      exports: list[tuple[str, str]] = EXPORTS) -> None:
    """The clients: each requests an export; one whose request failed saw an error (a 500)."""
    for export_id, email in exports:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await impl.request_export(sim, export_id, email)


async def serve_users(sim: bg.Simulation, impl: ModuleType) -> None:
    """Each user requests two exports in a row; the workers finish them all."""
    exports = [(f"exp-{2 * n + k}", email) for n, email in enumerate(USERS) for k in (1, 2)]
    await request_all(sim, impl, exports)
    await sim.run_until_idle()  # returns once the queue is empty: the workers only poll


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


def dashboard_never_goes_back(sim: bg.Simulation) -> None:
    """No user's dashboard ever goes from an export to an older one."""
    for email in sim.kv.items(app.LATEST):
        shown = [v for v in sim.kv.history(app.LATEST, email) if v.op == "set"]
        for before, after in itertools.pairwise(shown):
            assert app.export_number(after.data) >= app.export_number(before.data), (
                f"{email}'s dashboard went back from {before.data} to the older "
                f"{after.data} at t={after.t:g}s")


CHECKS = [bg.assert_nothing_lost, every_export_done, one_email_each,
          dashboard_never_goes_back]


@pytest.mark.parametrize("impl", [app, buggy_app], ids=["app", "buggy"])
@pytest.mark.asyncio
async def test_each_export_is_done_mailed_once_and_shown(bgwork: bg.Simulation,
                                                         impl: ModuleType) -> None:
    """The direct test: green for both twins on clean deliveries; under any chaos mode
    (``--bgwork-chaos=<mode>``) the twin fails and the app stays green."""
    deploy(bgwork, impl, workers=DIRECT_WORKERS)
    await serve_users(bgwork, impl)
    for check in CHECKS:
        check(bgwork)


def scenario_for(impl: ModuleType) -> Any:
    async def scenario(sim: bg.Simulation) -> None:
        deploy(sim, impl)
        await request_all(sim, impl)
    return scenario


def test_explore_finds_a_bug_of_the_twin() -> None:
    with pytest.raises(bg.ExplorationFailed, match=r"every_export_done|one_email_each|dashboard_never_goes_back"):
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
            deploy(sim, impl, workers=DIRECT_WORKERS)
            await serve_users(sim, impl)
        sim.run(main())
        for check in CHECKS:
            try:
                check(sim)
            except AssertionError:
                failed.append(check.__name__)
    finally:
        sim.close()
    return failed


MODES = [*chaos.MODES, ",".join(chaos.MODES)]
#: What each mode finds in the twin: a redelivery mails twice; a failed first call is lost;
#: an older export finishing last (a reordered receive, a slower call) is shown.
FOUND = {"duplicate": ["one_email_each"], "fail-first": ["every_export_done"],
         "crash": ["one_email_each"], "overlap": ["one_email_each"],
         "reorder": ["dashboard_never_goes_back"],
         "latency": ["dashboard_never_goes_back"]}


@pytest.mark.parametrize("modes", MODES)
def test_chaos_finds_a_bug_of_the_twin(modes: str) -> None:
    found = run_under_chaos(buggy_app, modes, seed=1)
    assert set(FOUND.get(modes, found)) <= set(found) and found


@pytest.mark.parametrize("modes", MODES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_chaos_leaves_the_app_green(modes: str, seed: int) -> None:
    assert run_under_chaos(app, modes, seed) == []
