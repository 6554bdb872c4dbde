"""The RQ exports job as first written: three bugs a direct test with one clean run never sees.

- Its lock never expires, and a taken lock ends the job ("someone else is on it"): a job
  cut off after taking the lock (a crash) leaves the export stuck for good.
- It swallows a job's error ("a bad job cannot block the queue"): a job whose first
  Redis call failed ends as a success, its export stuck at ``queued``.
- It mails without an Idempotency-Key: a job run twice mails twice.
"""

from __future__ import annotations

import logging

import redis

from rq_exports import app
from rq_exports.app import REDIS_URL, write_file

__all__ = ["build_export"]

log = logging.getLogger(__name__)


def build_export(user: str, export_id: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    key, lock = f"export:{export_id}", f"lock:export:{export_id}"
    try:
        if not r.set(lock, "1", nx=True):  # bug 1: no expiry...
            return  # ...and "someone else is on it" -- or a run that died was
        r.hset(key, "state", "running")
        write_file(export_id)
        app.MAILER.send(user, export_id, idempotency_key=None)  # bug 3: every run mails
        r.hset(key, mapping={"state": "done", "url": f"s3://exports/{export_id}.csv"})
        r.delete(lock)
    except Exception:  # bug 2: log and move on
        log.exception("export %s failed", export_id)
