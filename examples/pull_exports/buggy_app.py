"""The exports worker with three bugs that direct tests with one clean delivery never see.

- It mails without an Idempotency-Key: every run of a job mails again, so any redelivery
  (a duplicate, a worker killed after the email, two workers given one message) sends a
  second email.
- It swallows a job's error and deletes the message anyway ("so a bad job cannot block
  the queue"): a job whose first service call failed is lost, its status stuck at queued.
- It points the user's dashboard at each export it finishes (a plain write): when a user's
  two exports run on two workers and the older one finishes last, the dashboard goes back
  to the older export. A clean run finishes them in request order; a reordered receive or
  a slower call does not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from pull_exports.app import (
    LATEST,
    POLL_SECONDS,
    QUEUE,
    STATUS,
    create_queue,
    request_export,
    send_mail,
)

__all__ = ["create_queue", "export_worker", "handle", "request_export"]

log = logging.getLogger(__name__)


async def handle(sim: Any, job: dict[str, Any]) -> None:
    export_id = job["export_id"]
    await sim.kv.set(STATUS, export_id, {"status": "running"})
    await sim.kv.set("export-files", export_id, {"rows": 42})
    await send_mail(sim, job["email"], export_id, idempotency_key=None)  # the bug
    await sim.kv.set(LATEST, job["email"], export_id)  # the third: the last to finish wins
    await sim.kv.set(STATUS, export_id, {"status": "done"})


def export_worker(sim: Any) -> Coroutine[Any, Any, None]:
    async def loop() -> None:
        while True:
            delivery = await sim.queues.receive(QUEUE)
            if delivery is None:
                await asyncio.sleep(POLL_SECONDS)
                continue
            try:
                await handle(sim, delivery.payload)
            except Exception:  # the second bug: log and move on...
                log.exception("export failed")
            await delivery.ack()  # ...deleting a job that never finished
    return loop()
