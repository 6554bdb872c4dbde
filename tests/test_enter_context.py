"""``sim.enter_context``: set-up a whole explored example needs (an adapter, a respx mock)
stays open after an injected error escapes the scenario, through the heal phase and the
checks, and is exited when the example's simulation closes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import respx
from hypothesis import strategies as st

import pytest_bgwork as bg

MAIL_URL = "https://mail.example/send"
#: The publish applies, then the client sees a dropped connection: the job runs all the same.
PUBLISH_LOST_REPLY = bg.FaultPlan([bg.Fault("fail", "queue.publish", error="ConnectionError('reset')",
                                            after_apply=True)])


def mail_api(sim: bg.Simulation) -> Callable[[httpx.Request], httpx.Response]:
    def send(request: httpx.Request) -> httpx.Response:
        sim.effects.record("email", key=request.headers["idempotency-key"])
        return httpx.Response(202)
    return send


def deploy(sim: bg.Simulation) -> None:
    async def mail_receipt(payload: dict[str, Any], delivery: bg.Delivery) -> None:
        async with httpx.AsyncClient() as http:
            await http.post(MAIL_URL, headers={"idempotency-key": payload["order"]})

    sim.queues.create("receipts")
    sim.queues.route("receipts", mail_receipt)


async def with_block(sim: bg.Simulation) -> None:
    with respx.mock(assert_all_called=False) as mock:
        mock.post(MAIL_URL).mock(side_effect=mail_api(sim))
        deploy(sim)
        await sim.queues.publish("receipts", {"order": "o1"})  # the error escapes here
        await sim.run_until_idle()


async def entered(sim: bg.Simulation) -> None:
    mock = sim.enter_context(respx.mock(assert_all_called=False))
    mock.post(MAIL_URL).mock(side_effect=mail_api(sim))
    deploy(sim)
    await sim.queues.publish("receipts", {"order": "o1"})
    await sim.run_until_idle()


def receipt_mailed(sim: bg.Simulation) -> None:
    assert sim.effects.count("email") == 1, f"{sim.effects.count('email')} receipts mailed"


def test_a_with_block_closes_when_the_injected_error_escapes_and_the_job_runs_unmocked() -> None:
    """The pattern the docs warn about: the job the publish started runs after the ``with``
    closed, so its request is unmocked (refused), and the check fails."""
    with pytest.raises(bg.ExplorationFailed, match=r"(?s)0 receipts mailed.*http\.unmocked"):
        bg.explore(with_block, faults=st.just(PUBLISH_LOST_REPLY), checks=[receipt_mailed],
                   seed=1, max_examples=3)


@pytest.mark.filterwarnings("ignore::pytest_bgwork.ExploreCoverageWarning")
def test_a_context_entered_on_the_simulation_stays_open_for_the_whole_example() -> None:
    report = bg.explore(entered, faults=st.just(PUBLISH_LOST_REPLY), checks=[receipt_mailed],
                        seed=1, max_examples=3)
    assert report.scenario_errors == 3  # the client saw the error each time; the job ran


def test_entered_contexts_exit_last_first_when_the_simulation_closes() -> None:
    exited: list[str] = []

    @contextlib.contextmanager
    def ctx(name: str) -> Iterator[str]:
        yield name
        exited.append(name)

    sim = bg.Simulation(seed=1)
    assert sim.enter_context(ctx("adapter")) == "adapter"
    sim.enter_context(ctx("mock"))
    sim.run(sim.run_until_idle())
    assert exited == []
    sim.close()
    assert exited == ["mock", "adapter"]
    sim.close()  # idempotent: nothing exits twice
    assert exited == ["mock", "adapter"]


def test_enter_context_refuses_what_is_not_a_context_manager_and_a_closed_simulation() -> None:
    sim = bg.Simulation(seed=1)
    with pytest.raises(TypeError, match=r"enter_context\(cm=\.\.\.\) expects a context manager"):
        sim.enter_context("respx.mock")  # type: ignore[arg-type]
    sim.close()
    with pytest.raises(bg.NotRunning, match="the simulation is closed"):
        sim.enter_context(contextlib.nullcontext())
