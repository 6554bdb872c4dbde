"""Publishing helpers the task-framework adapters share."""

from __future__ import annotations

import asyncio
import contextvars
from typing import TYPE_CHECKING, Any

from ..services.delivery import MAX_DELAY

if TYPE_CHECKING:
    from ..simulation import Simulation

__all__ = ["publish_delayed"]


async def publish_delayed(sim: Simulation, queue: str, payload: Any, delay: float,
                          errors: list[BaseException], holds: set[asyncio.Task[Any]]) -> None:
    """Publish ``payload`` to ``queue`` visible after ``delay`` virtual seconds.

    Up to the queue's 900 s cap it is a delayed publish; beyond it the message is held on
    a virtual timer and published with the last 900 s as its delay (what a scheduler in
    front of SQS does), so a framework's long backoff still works. A held publish that
    fails later is appended to ``errors`` (nothing is lost silently).
    """
    if delay <= MAX_DELAY:
        await sim.queues.publish(queue, payload, delay=max(0.0, delay))
        return

    async def hold() -> None:
        await asyncio.sleep(delay - MAX_DELAY)
        await sim.queues.publish(queue, payload, delay=MAX_DELAY)

    task = sim.loop.create_task(hold(), context=contextvars.Context())  # the broker holds it
    holds.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        holds.discard(t)
        if not t.cancelled() and t.exception() is not None:
            errors.append(t.exception())  # type: ignore[arg-type]

    task.add_done_callback(done)
