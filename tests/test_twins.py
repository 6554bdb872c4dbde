"""Correct twins stay green and buggy twins are found, with ``bg.explore``'s default fault plans.

Each scenario is written as a new user would write it from the docs: the driver requests
the work, the app's workers and background tasks do it, and the checks are business
checks (``assert_effects_once``, ``assert_nothing_lost``, ...). No ``try``/``except``
around the driver's calls and no ``allow_empty``: the harness records an injected error
the driver sees as ``scenario.error`` and judges vacuity on the clean run, so a correct
app passes every seed. The buggy twin of each example is found on every seed.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import respx
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import adapters
from pytest_bgwork import strategies as bgst

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
if str(EXAMPLES) not in sys.path:  # as pytest's rootdir insertion does when it collects examples/
    sys.path.insert(0, str(EXAMPLES))

from agentuity_status import app as status_app  # noqa: E402
from agentuity_status.test_agentuity_status import start_worker as start_status_worker  # noqa: E402
from fastapi_receipts import app as receipts_app  # noqa: E402
from fastapi_receipts import buggy_app as receipts_buggy  # noqa: E402
from pull_exports import app as exports_app  # noqa: E402
from pull_exports import buggy_app as exports_buggy  # noqa: E402

SEEDS = [1, 2, 3]
Scenario = Callable[[bg.Simulation], Any]


def explore(scenario: Scenario, checks: list[Callable[[bg.Simulation], Any]], seed: int,
            max_examples: int) -> bg.ExploreReport:
    """``bg.explore`` with the default fault plans and default strategy settings."""
    return bg.explore(scenario, faults=bgst.fault_plans(), checks=checks, seed=seed,
                      max_examples=max_examples)


# -- pull_exports: a pull worker; the twin mails without an Idempotency-Key, deletes failed jobs
# -- and lets a user's older export overwrite the newer one on their dashboard


EXPORTS = [("exp-1", "ann@example.com"), ("exp-2", "ann@example.com")]


def exports_scenario(impl: ModuleType) -> Scenario:
    async def exports(sim: bg.Simulation) -> None:
        impl.create_queue(sim)
        for n in (1, 2):
            sim.workers.start(f"exporter-{n}", lambda: impl.export_worker(sim))
        for export_id, email in EXPORTS:  # the API: a request that fails is the client's error
            await impl.request_export(sim, export_id, email)
    return exports


def mailed_once(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email")


def deleted_exports_are_done(sim: bg.Simulation) -> None:
    """A job the worker deleted (it said the work was finished) has its export done."""
    statuses = sim.kv.items(exports_app.STATUS)
    for m in sim.queues.messages(exports_app.QUEUE):
        if m.state == "acked":
            assert statuses.get(m.payload["export_id"]) == {"status": "done"}, (
                f"export {m.payload['export_id']}: deleted with status "
                f"{statuses.get(m.payload['export_id'])}")


def dashboard_never_goes_back(sim: bg.Simulation) -> None:
    """A user's dashboard never goes from an export to an older one."""
    for email in sim.kv.items(exports_app.LATEST):
        shown = [exports_app.export_number(v.data)
                 for v in sim.kv.history(exports_app.LATEST, email) if v.op == "set"]
        assert shown == sorted(shown), f"{email}'s dashboard went back: {shown}"


EXPORT_CHECKS = [bg.assert_nothing_lost, mailed_once, deleted_exports_are_done,
                 dashboard_never_goes_back]


@pytest.mark.filterwarnings("ignore::pytest_bgwork.ExploreCoverageWarning")
@pytest.mark.parametrize("seed", SEEDS)
def test_pull_exports_app_stays_green(seed: int) -> None:
    report = explore(exports_scenario(exports_app), EXPORT_CHECKS, seed, max_examples=60)
    assert report.examples == 60


@pytest.mark.parametrize("seed", SEEDS)
def test_pull_exports_buggy_twin_is_found(seed: int) -> None:
    with pytest.raises(bg.ExplorationFailed, match=r"mailed_once|deleted_exports_are_done|dashboard"):
        explore(exports_scenario(exports_buggy), EXPORT_CHECKS, seed, max_examples=60)


# -- fastapi_receipts: checkout answers before the receipt; the twin awaits the email first


ORDER = {"order_id": "ord_42", "email": "ada@example.com", "total_cents": 1999}


def receipts_scenario(impl: ModuleType) -> Scenario:
    async def checkout(sim: bg.Simulation) -> None:
        async def mail_api(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(2)  # the mail provider takes two seconds; one email per key
            key = request.headers["idempotency-key"]
            if not any(e.detail["key"] == key for e in sim.history.filter("effect", "email")):
                sim.effects.record("email", key=key)
            return httpx.Response(202)

        async with httpx.AsyncClient() as http:
            with respx.mock(assert_all_called=False) as mock:
                mock.post(impl.MAIL_URL).mock(side_effect=mail_api)
                transport = adapters.asgi.transport(sim, impl.create_app(http))
                async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as client:
                    await client.post("/orders", json=ORDER)
                await sim.runtime.drain()  # the receipt goes out while the mail API is mocked
    return checkout


def checkout_never_waits(sim: bg.Simulation) -> None:
    slow = [e.detail for e in sim.history.filter("runtime", "response") if e.detail["seconds"] > 0]
    assert not slow, f"checkout waited for the receipt email: {slow}"


def receipt_once(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email")


RECEIPT_CHECKS = [checkout_never_waits, receipt_once]


@pytest.mark.parametrize("seed", SEEDS)
def test_fastapi_receipts_app_stays_green(seed: int) -> None:
    report = explore(receipts_scenario(receipts_app), RECEIPT_CHECKS, seed, max_examples=30)
    assert report.examples == 30


@pytest.mark.parametrize("seed", SEEDS)
def test_fastapi_receipts_buggy_twin_is_found(seed: int) -> None:
    with pytest.raises(bg.ExplorationFailed, match="checkout waited for the receipt email"):
        explore(receipts_scenario(receipts_buggy), RECEIPT_CHECKS, seed, max_examples=30)


# -- agentuity_status: the real agentuity SDK; the twin emails without an idempotency key


def status_scenario(handler: Callable[..., Any]) -> Scenario:
    async def report(sim: bg.Simulation) -> None:
        with adapters.agentuity.install(sim):
            start_status_worker(sim, handler)
            await status_app.publish_job(sim.queues, status_app.status_store(), "job_1",
                                         "c@example.com")
            await sim.run_until_idle()
    return report


def report_emailed_once(sim: bg.Simulation) -> None:
    bg.assert_effects_once(sim, "email")


@pytest.mark.filterwarnings("ignore::pytest_bgwork.ExploreCoverageWarning")
@pytest.mark.parametrize("seed", SEEDS)
def test_agentuity_status_app_stays_green(seed: int) -> None:
    """An injected ConnectError the SDK raised (through respx) escaped the scenario
    unrecognised, and explore failed the correct app with "failed in: scenario"."""
    report = explore(status_scenario(status_app.handle_job), [report_emailed_once], seed,
                     max_examples=60)
    assert report.examples == 60 and report.scenario_errors > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_agentuity_status_buggy_twin_is_found(seed: int) -> None:
    with pytest.raises(bg.ExplorationFailed, match=r"report_emailed_once"):
        explore(status_scenario(status_app.handle_job_buggy), [report_emailed_once], seed,
                max_examples=60)


# -- the harness false alarm the receipts twin met --------------------------------------------


def _cancel_a_task_before_it_starts() -> int:
    """Run a simulation whose background task is cancelled before its first step; the
    number of emails it sent. The simulation is dropped on return, as explore drops each."""
    sim = bg.Simulation(seed=1)

    async def send_receipt() -> None:
        sim.effects.record("email", key="o1")

    async def main() -> None:
        record = sim.runtime.wait_until(send_receipt())
        assert record.task is not None
        record.task.cancel()  # as a crash of its request does, before its first step
        await asyncio.sleep(1)

    sim.run(main())
    sim.close()
    return len(sim.history.filter("effect", "email"))


def test_a_background_task_cancelled_before_it_started_is_closed() -> None:
    """A fault that ends a request before its background task's first step (the task is
    cancelled unstarted) left the task's coroutine never awaited, and the plugin failed the
    correct receipts app with "coroutine(s) were never awaited"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _cancel_a_task_before_it_starts() == 0
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


# -- explore draws faults by default ----------------------------------------------------------


async def _save_order(sim: bg.Simulation) -> None:
    await sim.kv.set("orders", "o1", {"kind": "placed"})


def test_explore_without_faults_draws_the_default_fault_plans() -> None:
    """A user who leaves ``faults=`` out gets faults (it drew none before: interleavings only)."""
    assert bg.explore(_save_order, max_examples=20, seed=1).scenario_errors > 0
    quiet = bg.explore(_save_order, faults=st.just(bg.FaultPlan()), max_examples=20, seed=1)
    assert quiet.scenario_errors == 0


def test_explore_test_without_faults_draws_the_default_fault_plans() -> None:
    with pytest.raises(bg.ExplorationFailed, match=r"fail at kv\.set"):
        bg.explore_test(_save_order, max_examples=20, seed=1, scenario_errors="fail")()
    bg.explore_test(_save_order, faults=st.just(bg.FaultPlan()), max_examples=20, seed=1,
                    scenario_errors="fail")()
