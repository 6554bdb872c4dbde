"""An exports service with a pull worker: the API queues an export, workers poll for it.

The worker is the shape most queue consumers have outside push platforms: a loop that
receives a message, does the work, and deletes the message when the work is done (an SQS
``receive_message`` loop, a Redis ``BRPOP`` loop). Nothing here knows it runs in a test:
``sim`` stands for the service clients the app builds at start-up.

Three rules make it safe on an at-least-once queue with several workers:

- delete the message only after the work is done (a worker killed mid-job leaves it to
  come back after its visibility timeout);
- make the side effect idempotent: the mail provider sends once per Idempotency-Key, and
  the worker passes one derived from the export id;
- never let an older job overwrite a newer one's result: a user's dashboard shows their
  newest finished export, and two workers may finish a user's exports in either order
  (a standard queue does not keep order, and one job may simply run slower), so the worker
  writes it with a compare-and-set that keeps the newer export.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

QUEUE = "exports"
STATUS = "export-status"
#: The export each user's dashboard shows: their newest finished one.
LATEST = "latest-export"
#: How long a worker sleeps after an empty receive (a short poll), and the queue's lease.
POLL_SECONDS = 1.0
VISIBILITY_TIMEOUT = 60


def create_queue(sim: Any) -> None:
    """Make the exports queue (what infrastructure-as-code does in production)."""
    sim.queues.create(QUEUE, visibility_timeout=VISIBILITY_TIMEOUT)


async def request_export(sim: Any, export_id: str, email: str) -> None:
    """The API: publish the export's job (the worker records its status from then on)."""
    await sim.queues.publish(QUEUE, {"export_id": export_id, "email": email},
                             idempotency_key=export_id)


async def send_mail(sim: Any, to: str, export_id: str, *, idempotency_key: str | None) -> None:
    """The mail provider's API: one email per Idempotency-Key (none given: every call mails).

    Its memory of keys is kept in the simulation (a KV namespace of its own), so snapshots
    and restores see it, as they see the app's state.
    """
    if idempotency_key is None or await sim.kv.set("mail-provider", idempotency_key, to,
                                                   if_absent=True):
        sim.effects.record("email", key=export_id)


def export_number(export_id: str) -> int:
    """The API mints export ids in request order (``exp-1``, ``exp-2``, ...): the number."""
    return int(export_id.rsplit("-", 1)[1])


async def show_latest(sim: Any, email: str, export_id: str) -> None:
    """Point ``email``'s dashboard at ``export_id`` unless it shows a newer export already.

    A compare-and-set (``if_version``; ``if_absent`` for the first): a worker that lost
    the race reads again, so an older export never replaces a newer one.
    """
    while True:
        shown = await sim.kv.get(LATEST, email)
        if shown.exists and export_number(shown.data) >= export_number(export_id):
            return
        condition = {"if_version": shown.version} if shown.exists else {"if_absent": True}
        if await sim.kv.set(LATEST, email, export_id, **condition):
            return


async def handle(sim: Any, job: dict[str, Any]) -> None:
    """One export: mark it running, build it, mail the link, show it, mark it done."""
    export_id = job["export_id"]
    await sim.kv.set(STATUS, export_id, {"status": "running"})
    await sim.kv.set("export-files", export_id, {"rows": 42})
    await send_mail(sim, job["email"], export_id, idempotency_key=f"export-{export_id}")
    await show_latest(sim, job["email"], export_id)
    await sim.kv.set(STATUS, export_id, {"status": "done"})


def export_worker(sim: Any) -> Coroutine[Any, Any, None]:
    """The worker loop: receive, handle, delete; sleep ``POLL_SECONDS`` when the queue is empty."""
    async def loop() -> None:
        while True:
            delivery = await sim.queues.receive(QUEUE)
            if delivery is None:
                await asyncio.sleep(POLL_SECONDS)
                continue
            await handle(sim, delivery.payload)
            await delivery.ack()  # delete only once the work is done
    return loop()
