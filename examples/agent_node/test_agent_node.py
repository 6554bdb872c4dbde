"""An agent node that answers now and finishes its chores in a BackgroundTaskManager.

The fake manager behaves as agentflow's (10xgraph's) class, surprises included: its
``shutdown()`` cancels running chores before it waits, and a ``wait_for_all`` timeout
cancels what is left without raising. The history and the log say what was cut off.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
import respx

import pytest_bgwork as bg
from agent_node.app import MEMORY_NS, TRACE_TIMEOUT, TRACES_URL, SupportAgent
from pytest_bgwork.services.task_manager import BackgroundTaskManager

pytestmark = pytest.mark.asyncio
STATE = {"messages": [{"role": "user", "content": "I want a refund for order 42"}]}
CONFIG = {"thread_id": "thread_7"}


class Traces:
    """The tracing backend: answers after ``latency`` virtual seconds."""

    def __init__(self) -> None:
        self.latency = 0.5
        self.received: list[dict[str, object]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.latency)
        self.received.append(json.loads(request.content))
        return httpx.Response(202)


@pytest.fixture
def traces(respx_mock: respx.MockRouter) -> Traces:
    backend = Traces()
    respx_mock.post(TRACES_URL).mock(side_effect=backend)
    return backend


@pytest_asyncio.fixture
async def agent(bgwork: bg.Simulation, traces: Traces) -> AsyncIterator[SupportAgent]:
    async with httpx.AsyncClient() as http:
        yield SupportAgent(bgwork.task_manager, bgwork.kv, http)


async def test_the_node_answers_before_its_chores_finish(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces
) -> None:
    result = await agent.answer_node(STATE, CONFIG)
    assert result["messages"][-1]["content"].startswith("I've opened a refund request")
    assert bgwork.clock.monotonic() == 0.0
    assert bgwork.task_manager.get_task_count() == 2
    await agent.manager.wait_for_all()
    memory = await bgwork.kv.get(MEMORY_NS, "thread_7")
    assert memory.data == {"messages": result["messages"]}
    assert traces.received == [{"thread_id": "thread_7", "turn": 1}]
    bg.assert_drained(bgwork)


async def test_a_hung_exporter_is_cancelled_at_its_timeout_and_logged_with_its_context(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces, caplog: pytest.LogCaptureFixture
) -> None:
    traces.latency = 600  # the tracing backend stopped answering
    await agent.answer_node(STATE, CONFIG)
    with caplog.at_level(logging.WARNING):
        await agent.manager.wait_for_all(return_exceptions=True)
    assert bgwork.clock.monotonic() == TRACE_TIMEOUT  # not 600 s: the timeout cut it short
    assert traces.received == []
    [timeout] = bgwork.history.filter("task_manager", "timeout")
    assert timeout.detail["name"] == "export_trace"
    assert "thread_7" in caplog.text  # the warning carries the context
    assert (await bgwork.kv.get(MEMORY_NS, "thread_7")).exists  # the other chore finished


async def test_stop_cancels_the_chores_still_running(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces
) -> None:
    traces.latency = 1.5
    await agent.answer_node(STATE, CONFIG)
    await bgwork.advance(1)
    await agent.stop()
    assert bgwork.task_manager.get_task_count() == 0
    assert traces.received == []
    assert bgwork.history.count("task_manager", "cancelled") == 1
    bg.assert_drained(bgwork)


async def test_aclose_drains_then_shuts_down(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces
) -> None:
    await agent.answer_node(STATE, CONFIG)
    report = await agent.aclose()
    assert report["status"] == "completed"
    assert (report["initial_tasks"], report["remaining_tasks"]) == (0, 0)  # drained before the shutdown
    assert len(traces.received) == 1 and bgwork.clock.monotonic() == 0.5
    assert (await agent.aclose())["status"] == "already_shutdown"
    # The real class accepts tasks after shutdown: they run, but nobody waits for them.
    await agent.answer_node(STATE, CONFIG)
    assert bgwork.history.count("task_manager", "create_task", after_shutdown=True) == 2
    await agent.manager.wait_for_all()


async def test_mistake_shutdown_alone_cancels_the_chores_in_flight(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces
) -> None:
    await agent.answer_node(STATE, CONFIG)
    report = await agent.manager.shutdown(timeout=10)
    # "completed", yet nothing was sent: shutdown cancelled both chores before it waited
    assert report["status"] == "completed" and report["initial_tasks"] == 2
    assert traces.received == [] and not (await bgwork.kv.get(MEMORY_NS, "thread_7")).exists
    cancelled = bgwork.history.filter("task_manager", "cancelled")
    assert [(e.detail["name"], e.detail["reason"]) for e in cancelled] == [("save_memory", "shutdown"),
                                                                           ("export_trace", "shutdown")]


# -- the common mistakes ------------------------------------------------------------------
async def test_mistake_passing_the_coroutine_function_instead_of_a_coroutine(
    agent: SupportAgent,
) -> None:
    with pytest.raises(TypeError, match=r"save_memory\(\.\.\.\)|call it"):
        agent.manager.create_task(agent.save_memory, name="save_memory")  # not save_memory(...)


async def test_mistake_a_wait_for_all_timeout_cancels_work_without_raising(
    bgwork: bg.Simulation, agent: SupportAgent, traces: Traces, caplog: pytest.LogCaptureFixture
) -> None:
    traces.latency = 1.5
    await agent.answer_node(STATE, CONFIG)
    with caplog.at_level(logging.WARNING):
        assert await agent.manager.wait_for_all(timeout=1) is None  # no error, as in production
    # The export was still going after 1 s: wait_for_all cancelled it; the history says so.
    cancelled = bgwork.history.filter("task_manager", "cancelled")
    assert [(e.detail["name"], e.detail["reason"]) for e in cancelled] == [("export_trace", "wait_for_all timeout")]
    assert traces.received == [] and "export_trace" in caplog.text


async def test_mistake_unbounded_fan_out_drops_tasks_at_the_cap(
    bgwork: bg.Simulation, traces: Traces, caplog: pytest.LogCaptureFixture
) -> None:
    manager = BackgroundTaskManager(max_pending_tasks=3)
    async with httpx.AsyncClient() as http:
        agent = SupportAgent(manager, bgwork.kv, http)
        with caplog.at_level(logging.WARNING):
            for turn in range(2):  # two turns, two chores each: one over the cap
                await agent.answer_node(STATE, {"thread_id": f"thread_{turn}"})
        assert manager.get_task_count() == 3
        assert bgwork.history.count("task_manager", "dropped") == 1
        assert "max_pending_tasks" in caplog.text
        await manager.shutdown()
