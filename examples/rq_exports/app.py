"""The exports service on RQ: status in a Redis hash, a Redis lock per export, an RQ job.

``request_export`` (the API's POST body) enqueues ``build_export`` (job id
``build-<id>``, retried every 10 s on error) and records ``export:<id>`` as ``queued``.
The job takes the export's lock (``SET ... NX PX``), marks it ``running``, writes the
file, mails the link (with an Idempotency-Key), marks it ``done`` and releases the lock
with a compare-and-delete script. A Redis or mail error, or a lock held by another run,
fails the try, and RQ's ``Retry`` runs it again; a worker that dies mid-job leaves a lock
that expires, and RQ retries the abandoned job.

``buggy_app.py`` is the version first written; its bugs are listed there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from rq import Queue, Retry, get_current_job

REDIS_URL = "redis://redis:6379/0"
LOCK_MS = 30_000
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
#: Files written to the bucket: export id -> writes (S3 puts; an overwrite is harmless).
BUCKET: dict[str, int] = {}


class Mailer(Protocol):
    """The mail provider's client: one email per Idempotency-Key (none: every call mails)."""

    def send(self, to: str, export_id: str, *, idempotency_key: str | None) -> None: ...


class _Unset:
    def send(self, to: str, export_id: str, *, idempotency_key: str | None) -> None:
        raise RuntimeError("rq_exports.app.MAILER is made at start-up (the tests set a fake one)")


#: The mail provider's client, made at start-up (the tests put a fake one here).
MAILER: Mailer = _Unset()


class LockBusy(Exception):
    """Another run holds the export's lock (or a dead one did): try again later."""


def write_file(export_id: str) -> None:
    time.sleep(2)  # building the file takes a while
    BUCKET[export_id] = BUCKET.get(export_id, 0) + 1


def request_export(queue: Queue, user: str, export_id: str,
                   job: Callable[[str, str], Any] | None = None) -> None:
    """The API: enqueue the job, then record the export as queued."""
    queue.enqueue(job or build_export, user, export_id, job_id=f"build-{export_id}",
                  job_timeout=60, retry=Retry(max=5, interval=10))
    queue.connection.hsetnx(f"export:{export_id}", "state", "queued")


def build_export(user: str, export_id: str) -> None:
    """Safe to run again, concurrently, or after a worker died mid-way."""
    r = redis.Redis.from_url(REDIS_URL)
    job = get_current_job()
    key, lock = f"export:{export_id}", f"lock:export:{export_id}"
    token = f"{job.id if job else '?'}/{job.retries_left if job else 0}"
    if r.hget(key, "state") == b"done":  # type: ignore[comparison-overlap]  # redis-py: bytes here
        return
    if not r.set(lock, token, nx=True, px=LOCK_MS):
        raise LockBusy(lock)  # RQ's Retry runs it again in 10 s
    try:
        r.hset(key, "state", "running")
        write_file(export_id)
        MAILER.send(user, export_id, idempotency_key=f"export-{export_id}")
        r.hset(key, mapping={"state": "done", "url": f"s3://exports/{export_id}.csv"})
    finally:
        r.eval(RELEASE, 1, lock, token)
