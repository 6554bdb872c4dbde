"""The exports service on arq: status in a Redis hash, a Redis lock per export, an arq job.

``request_export`` (the API's POST body) enqueues ``build_export`` with the export id as
arq's job id (a second request for the same export is not queued twice) and records
``export:<id>`` as ``queued``. The job takes the export's lock (``SET ... NX PX``),
marks it ``running``, writes the file, mails the link (with an Idempotency-Key), moves
the user's "latest export" pointer (only forward: a Lua compare on the request's
sequence number), marks it ``done`` and releases the lock with a compare-and-delete
script. A Redis or mail error, or a lock held by another run, makes arq run the job
again later (``Retry``); a worker that dies mid-job leaves a lock that expires.

``buggy_app.py`` is the version first written; its bugs are listed there.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Protocol

import redis.exceptions
from arq import ArqRedis, Retry
from arq.jobs import Job, JobStatus
from arq.worker import func

LOCK_MS = 30_000
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
#: Move ``user:<name>``'s latest export to ARGV[1] only if its sequence number is newer.
SET_LATEST = ("if tonumber(ARGV[2]) > tonumber(redis.call('hget', KEYS[1], 'seq') or '0') then "
              "redis.call('hset', KEYS[1], 'export', ARGV[1], 'seq', ARGV[2]) end return 0")
#: Files written to the bucket: export id -> writes (S3 puts; an overwrite is harmless).
BUCKET: dict[str, int] = {}
#: Errors that mean "try again later": Redis's, and the mail API's network errors.
TRANSIENT = (redis.exceptions.RedisError, ConnectionError, TimeoutError)


class Mailer(Protocol):
    """The mail provider's client: one email per Idempotency-Key (none: every call mails)."""

    async def send(self, to: str, export_id: str, *, idempotency_key: str | None) -> None: ...


class _Unset:
    async def send(self, to: str, export_id: str, *, idempotency_key: str | None) -> None:
        raise RuntimeError("arq_exports.app.MAILER is made at start-up (the tests set a fake one)")


#: The mail provider's client, made at start-up (the tests put a fake one here).
MAILER: Mailer = _Unset()


async def write_file(export_id: str) -> None:
    await asyncio.sleep(2)  # building the file takes a while
    BUCKET[export_id] = BUCKET.get(export_id, 0) + 1


class EnqueueLost(Exception):
    """arq reported the job as already queued, but it is not there."""


async def request_export(pool: ArqRedis, user: str, export_id: str, seq: int) -> None:
    """The API: enqueue the job (one per export id), then record the export as queued.

    ``enqueue_job`` returns ``None`` for "a job with this id exists", and also when the
    connection dropped at its ``EXEC`` (redis-py turns that into a ``WatchError``, which
    arq 0.28 reads as "enqueued meanwhile"): so ``None`` is checked, never trusted.
    """
    job_id = f"build:{export_id}"
    job = await pool.enqueue_job("build_export", user, export_id, seq, _job_id=job_id)
    if job is None and await Job(job_id, pool).status() == JobStatus.not_found:
        raise EnqueueLost(job_id)  # the client gets an error and retries
    await pool.hsetnx(f"export:{export_id}", "state", "queued")


async def build_export(ctx: dict[str, Any], user: str, export_id: str, seq: int) -> None:
    """Safe to run again, concurrently, after a worker died mid-way, or out of order."""
    r: ArqRedis = ctx["redis"]
    key, lock, token = f"export:{export_id}", f"lock:export:{export_id}", f"{ctx['job_id']}/{ctx['job_try']}"
    try:
        if await r.hget(key, "state") == b"done":
            return
        if not await r.set(lock, token, nx=True, px=LOCK_MS):
            raise Retry(defer=10)  # another run holds it, or a dead one did: try again later
        try:
            await r.hset(key, "state", "running")
            await write_file(export_id)
            await MAILER.send(user, export_id, idempotency_key=f"export-{export_id}")
            await r.eval(SET_LATEST, 1, f"user:{user}", export_id, seq)  # type: ignore[misc]
            await r.hset(key, mapping={"state": "done", "url": f"s3://exports/{export_id}.csv"})
        finally:
            await r.eval(RELEASE, 1, lock, token)  # type: ignore[misc]
    except TRANSIENT as exc:  # a dropped connection, a lost reply, the mail API down
        raise Retry(defer=5) from exc


class WorkerSettings:
    """``arq arq_exports.app.WorkerSettings`` in production."""

    functions: ClassVar[list[Any]] = [func(build_export, name="build_export", timeout=60, max_tries=5)]
