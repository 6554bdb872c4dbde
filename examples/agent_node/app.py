"""An agentflow-style support agent whose node hands slow chores to a BackgroundTaskManager.

``SupportAgent.answer_node(state, config)`` drafts a reply and returns it at once; saving
the conversation memory and exporting the trace run in the background, each with a
timeout and a context (thread id) so a stuck one is cancelled and logged with it.
``SupportAgent.aclose()`` drains the chores, then shuts the manager down: ``shutdown()``
alone cancels whatever is still running (agentflow's class cancels first, then waits).

The manager is passed in: agentflow's ``BackgroundTaskManager`` in production, the
simulation's fake (same API) in tests.
"""

from __future__ import annotations

from typing import Any, Protocol

import httpx

TRACES_URL = "https://traces.example/v1/spans"
MEMORY_NS = "agent-memory"
#: Background chores get bounded time: a hung exporter must not pin memory forever.
MEMORY_TIMEOUT = 5.0
TRACE_TIMEOUT = 2.0
SHUTDOWN_TIMEOUT = 10.0


class TaskManager(Protocol):
    """The part of agentflow's ``BackgroundTaskManager`` the agent uses."""

    def create_task(self, coro: Any, *, name: str = ..., timeout: float | None = ...,
                    context: dict[str, Any] | None = ...) -> Any: ...
    async def wait_for_all(self, timeout: float | None = ..., return_exceptions: bool = ...) -> Any: ...
    async def cancel_all(self) -> Any: ...
    async def shutdown(self, timeout: float | None = ...) -> dict[str, Any]: ...


def draft_reply(question: str) -> str:
    """The model call, reduced to a rule so the example stays about background work."""
    if "refund" in question.lower():
        return "I've opened a refund request; you'll get an email within a day."
    return "Thanks! A teammate will follow up shortly."


class SupportAgent:
    """One graph node plus its background chores."""

    def __init__(self, manager: TaskManager, kv: Any, http: httpx.AsyncClient) -> None:
        self.manager = manager
        self.kv = kv
        self.http = http

    async def save_memory(self, thread_id: str, messages: list[dict[str, str]]) -> None:
        """Persist the conversation so the next turn remembers it."""
        await self.kv.set(MEMORY_NS, thread_id, {"messages": messages})

    async def export_trace(self, thread_id: str, turn: int) -> None:
        """Send the turn's span to the tracing backend (best effort)."""
        response = await self.http.post(TRACES_URL, json={"thread_id": thread_id, "turn": turn})
        response.raise_for_status()

    async def answer_node(self, state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
        """The node: answer now, persist and trace in the background."""
        thread_id = config["thread_id"]
        question = state["messages"][-1]["content"]
        messages = [*state["messages"], {"role": "assistant", "content": draft_reply(question)}]
        context = {"thread_id": thread_id, "turn": len(messages) // 2}
        # Pass coroutines (save_memory(...)), not functions; name and time-box each chore.
        self.manager.create_task(
            self.save_memory(thread_id, messages), name="save_memory",
            timeout=MEMORY_TIMEOUT, context=context,
        )
        self.manager.create_task(
            self.export_trace(thread_id, context["turn"]), name="export_trace",
            timeout=TRACE_TIMEOUT, context=context,
        )
        return {"messages": messages}

    async def stop(self) -> None:
        """The user pressed stop: drop the chores still running for this session."""
        await self.manager.cancel_all()

    async def aclose(self) -> dict[str, Any]:
        """Drain the chores before the process exits, then shut down; report what could not finish.

        ``shutdown()`` cancels every task first and only then waits, so calling it alone
        would lose a trace export in flight: wait for the chores (bounded) first.
        """
        await self.manager.wait_for_all(timeout=SHUTDOWN_TIMEOUT, return_exceptions=True)
        return await self.manager.shutdown(timeout=SHUTDOWN_TIMEOUT)
