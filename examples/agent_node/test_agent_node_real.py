"""The same agent node on 10xgraph's *real* BackgroundTaskManager (fixture bg_agentflow).

The real class (10xgraph 0.10.3, loaded on 3.11 by ``adapters.agentflow``) runs its tasks on
the simulation: they are in the history, fault points ``task.<name>`` apply, and
``bg.assert_drained`` sees them. The fake (``test_agent_node.py``) behaves the same way;
these tests pin the real class's surprises on the real class itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx

import pytest_bgwork as bg
from agent_node.app import MEMORY_NS, TRACE_TIMEOUT, TRACES_URL, SupportAgent

pytestmark = pytest.mark.asyncio
STATE = {"messages": [{"role": "user", "content": "I want a refund for order 42"}]}
CONFIG = {"thread_id": "thread_7"}


class Traces:
    """The tracing backend: answers after ``latency`` virtual seconds."""

    def __init__(self) -> None:
        self.latency = 0.5
        self.received: list[dict[str, object]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        import asyncio

        await asyncio.sleep(self.latency)
        self.received.append(json.loads(request.content))
        return httpx.Response(202)


@pytest.fixture
def traces(respx_mock: respx.MockRouter) -> Traces:
    backend = Traces()
    respx_mock.post(TRACES_URL).mock(side_effect=backend)
    return backend


@pytest_asyncio.fixture
async def agent(bgwork: bg.Simulation, bg_agentflow: Any, traces: Traces) -> AsyncIterator[SupportAgent]:
    async with httpx.AsyncClient() as http:
        yield SupportAgent(bg_agentflow(), bgwork.kv, http)  # the real class


async def test_the_node_answers_before_its_chores_finish(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces
) -> None:
    result = await agent.answer_node(STATE, CONFIG)
    assert bgwork.clock.monotonic() == 0.0 and agent.manager.get_task_count() == 2
    await agent.manager.wait_for_all()
    assert (await bgwork.kv.get(MEMORY_NS, "thread_7")).data == {"messages": result["messages"]}
    assert traces.received == [{"thread_id": "thread_7", "turn": 1}]
    assert [e.detail["name"] for e in bgwork.history.filter("task_manager", "task_done")] == [
        "save_memory", "export_trace"]
    bg.assert_drained(bgwork)  # the real timeout cancellers ended with their tasks (the adapter)


async def test_a_hung_exporter_is_cancelled_at_its_timeout_by_the_real_class(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces, caplog: pytest.LogCaptureFixture
) -> None:
    traces.latency = 600
    await agent.answer_node(STATE, CONFIG)
    with caplog.at_level(logging.WARNING, logger="tenxgraph.utils"):
        await agent.manager.wait_for_all(return_exceptions=True)
    assert bgwork.clock.monotonic() == TRACE_TIMEOUT
    assert traces.received == []
    assert "Background task 'export_trace' timed out after 2.0 seconds" in caplog.text
    await bgwork.run_until_idle()


async def test_a_fault_at_task_point_fails_the_chore(bgwork: bg.Simulation, agent: SupportAgent) -> None:
    bgwork.faults.fail("task.save_memory", error=ConnectionError("kv down"))
    await agent.answer_node(STATE, CONFIG)
    await agent.manager.wait_for_all(return_exceptions=True)
    [failed] = bgwork.history.filter("task_manager", "task_failed")
    assert failed.detail["name"] == "save_memory"
    assert not (await bgwork.kv.get(MEMORY_NS, "thread_7")).exists
    await bgwork.run_until_idle()


async def test_real_shutdown_alone_cancels_the_chores_at_once_instead_of_draining(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces
) -> None:
    """The real shutdown() cancels first and then waits: nothing is drained (aclose waits first)."""
    await agent.answer_node(STATE, CONFIG)
    report = await agent.manager.shutdown(timeout=10)
    assert (report["status"], report["initial_tasks"], report["remaining_tasks"]) == ("completed", 2, 0)
    assert traces.received == []  # the export never happened
    assert not (await bgwork.kv.get(MEMORY_NS, "thread_7")).exists  # nor did the memory save
    assert (await agent.aclose()) == {"status": "already_shutdown", "tasks_remaining": 0}
    await bgwork.run_until_idle()


async def test_real_aclose_drains_first(bgwork: bg.Simulation, agent: SupportAgent, traces: Traces) -> None:
    await agent.answer_node(STATE, CONFIG)
    report = await agent.aclose()
    assert (report["status"], report["initial_tasks"]) == ("completed", 0)
    assert len(traces.received) == 1 and (await bgwork.kv.get(MEMORY_NS, "thread_7")).exists
    await bgwork.run_until_idle()
