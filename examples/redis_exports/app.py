"""An exports service: status in a Redis hash, a Redis lock per export, a queue worker.

``request_export`` (the API's POST body) enqueues the job and records ``export:<id>``
as ``queued`` (SQS in production; ``sim.queues`` is the queue here, and
``adapters.sqs`` puts boto3 on the same queues). The worker, ``handle_export``, takes
the export's lock (``SET lock:export:<id> <token> NX PX 30000``), marks it ``running``,
writes the file, marks it ``done`` and releases the lock with a compare-and-delete Lua
script. Everything Redis is redis.asyncio, unmodified, as deployed.

It also mails the link (with an Idempotency-Key) and moves the user's "latest export"
pointer forward only (a Lua compare on the request's sequence number).

``handle_export_buggy`` is the version first written: it checks the lock, then takes
it, with no expiry, and a worker that finds it taken acks the job ("someone else is on
it"); it mails without an Idempotency-Key; and the last job to finish moves the
pointer. When a worker dies holding the lock the redelivered job is dropped and the
status sticks; a job run twice (a redelivery, two copies at once) mails twice; jobs
that finish out of request order leave the pointer on an older export.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aredis

QUEUE = "exports"
#: The lock outlives a normal export (a few seconds) and expires well before the queue's
#: redelivery of a dead worker's job (visibility timeout 60 s).
LOCK_MS = 30_000
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

#: Move ``user:<name>``'s latest export to ARGV[1] only if its sequence number is newer.
SET_LATEST = ("if tonumber(ARGV[2]) > tonumber(redis.call('hget', KEYS[1], 'seq') or '0') then "
              "redis.call('hset', KEYS[1], 'export', ARGV[1], 'seq', ARGV[2]) end return 0")
USER = "ann"

Storage = Callable[[str], Awaitable[None]]


async def _no_mailer(to: str, export_id: str, idempotency_key: str | None) -> None:
    raise RuntimeError("redis_exports.app.MAILER is made at start-up (the tests set a fake one)")


#: The mail provider's client: ``await MAILER(to, export_id, idempotency_key)``, made at
#: start-up (the tests put a fake one here).
MAILER: Callable[[str, str, str | None], Awaitable[None]] = _no_mailer


def redis_client() -> aredis.Redis:
    """The Redis client as deployed (the URL comes from the environment)."""
    return aredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"),
                                 decode_responses=True)


async def request_export(r: aredis.Redis, queues: Any, export_id: str, seq: int = 1) -> None:
    """The API: enqueue the export (idempotent by export id), then record it as queued.

    In this order a failed publish leaves no status behind that nothing will finish, and
    ``HSETNX`` never moves back an export the worker already started.
    """
    await queues.publish(QUEUE, {"export_id": export_id, "seq": seq}, idempotency_key=export_id)
    await r.hsetnx(f"export:{export_id}", "state", "queued")


async def export_status(r: aredis.Redis, export_id: str) -> dict[str, str]:
    """The API's GET: the status hash."""
    return await r.hgetall(f"export:{export_id}")  # type: ignore[no-any-return,misc]


class Busy(Exception):
    """Another worker holds this export's lock: the job is retried later."""


async def handle_export(r: aredis.Redis, write_file: Storage, job: dict[str, str], token: str) -> None:
    """Build one export. Safe to run twice, concurrently, or after a worker died mid-way."""
    key = f"export:{job['export_id']}"
    if await r.hget(key, "state") == "done":
        return  # a redelivered copy of a finished export
    lock = f"lock:{key}"
    if not await r.set(lock, token, nx=True, px=LOCK_MS):
        raise Busy(key)  # nack: retried after the holder finishes or its lock expires
    try:
        await r.hset(key, "state", "running")
        await write_file(job["export_id"])
        await MAILER(USER, job["export_id"], f"export-{job['export_id']}")
        await r.eval(SET_LATEST, 1, f"user:{USER}", job["export_id"], job.get("seq", 1))  # type: ignore[misc]
        await r.hset(key, mapping={"state": "done", "url": f"s3://exports/{job['export_id']}.csv"})
    finally:
        await r.eval(RELEASE, 1, lock, token)  # only our own lock


async def handle_export_buggy(r: aredis.Redis, write_file: Storage, job: dict[str, str], token: str) -> None:
    """The first version: check, then take a lock without expiry; a taken lock acks the job."""
    key = f"export:{job['export_id']}"
    lock = f"lock:{key}"
    if await r.get(lock):
        return  # "someone else is on it" -- or a dead worker was
    await r.set(lock, token)  # another copy may have checked meanwhile
    await r.hset(key, "state", "running")
    await write_file(job["export_id"])
    await MAILER(USER, job["export_id"], None)  # every run mails
    await r.hset(key, mapping={"state": "done", "url": f"s3://exports/{job['export_id']}.csv"})
    await r.hset(f"user:{USER}", mapping={"export": job["export_id"], "seq": job.get("seq", 1)})
    await r.delete(lock)
