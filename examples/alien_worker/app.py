"""An Alien worker that renders thumbnails from a queue, holding a lease while it works.

``worker(name)`` polls ``alienplatform.queue("thumbnails")``: for each message it renews
its lease (rendering takes 45 s, longer than the queue's 30 s visibility), claims the job in
``alienplatform.kv("thumbnails")`` with a conditional write that expires with the lease (so a
copy delivered twice renders once, and a crashed worker's claim frees itself), renders,
stores the result and acks. All through the real ``alienplatform`` SDK, unmodified.

``worker_buggy`` is the first version: no lease renewal, no claim. When a render outlasts
the 30 s lease the message becomes visible again and a second worker renders it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from alienplatform import kv, queue

QUEUE = "thumbnails"
RENDER_SECONDS = 45
LEASE_SECONDS = 120
POLL_SECONDS = 10
POLLS = 30

jobs = queue(QUEUE)
store = kv("thumbnails")

Render = Callable[[str], Awaitable[bytes]]


async def worker(name: str, render: Render) -> None:
    """Process messages until ``POLLS`` polls found nothing new to do."""
    for _ in range(POLLS):
        batch = await jobs.receive(1)
        if not batch:
            await asyncio.sleep(POLL_SECONDS)
            continue
        message = batch[0]
        image_id = json.loads(message.payload)["image_id"]
        await jobs.renew_lease(message.receipt_handle, LEASE_SECONDS)  # before the long work
        if await store.exists(f"thumb:{image_id}"):
            await jobs.ack(message.receipt_handle)  # a copy of a job already done
            continue
        if not await store.put(f"claim:{image_id}", name.encode(), ttl_seconds=LEASE_SECONDS, condition="absent"):
            continue  # another worker holds it; our lease lapses and the copy comes back later
        png = await render(image_id)
        await store.put(f"thumb:{image_id}", png)
        await jobs.ack(message.receipt_handle)


async def worker_buggy(name: str, render: Render) -> None:
    """The first version: the lease runs out mid-render and nothing stops a second render."""
    for _ in range(POLLS):
        batch = await jobs.receive(1)
        if not batch:
            await asyncio.sleep(POLL_SECONDS)
            continue
        message = batch[0]
        image_id = json.loads(message.payload)["image_id"]
        png = await render(image_id)
        await store.put(f"thumb:{image_id}", png)
        await jobs.ack(message.receipt_handle)
