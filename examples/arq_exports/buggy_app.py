"""The arq exports job as first written: three bugs a direct test with one clean run never sees.

- Its lock never expires, and a taken lock ends the job ("someone else is on it"): a job
  cut off after taking the lock (a crash) leaves the export stuck for good.
- It swallows a job's error ("a bad job cannot block the queue"): a job whose first
  Redis call failed ends as a success, its export stuck at ``queued``.
- It mails without an Idempotency-Key, and moves the user's latest-export pointer to
  whichever job finishes last: a job run twice mails twice, and jobs that finish out of
  request order leave the pointer on an older export.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from arq import ArqRedis
from arq.worker import func

from arq_exports import app
from arq_exports.app import request_export, write_file

__all__ = ["WorkerSettings", "build_export", "request_export"]

log = logging.getLogger(__name__)


async def build_export(ctx: dict[str, Any], user: str, export_id: str, seq: int) -> None:
    r: ArqRedis = ctx["redis"]
    key, lock = f"export:{export_id}", f"lock:export:{export_id}"
    try:
        if not await r.set(lock, "1", nx=True):  # bug 1: no expiry...
            return  # ...and "someone else is on it" -- or a run that died was
        await r.hset(key, "state", "running")
        await write_file(export_id)
        await app.MAILER.send(user, export_id, idempotency_key=None)  # bug 3: every run mails
        await r.hset(key, mapping={"state": "done", "url": f"s3://exports/{export_id}.csv"})
        await r.hset(f"user:{user}", mapping={"export": export_id, "seq": seq})  # the last to finish wins
        await r.delete(lock)
    except Exception:  # bug 2: log and move on
        log.exception("export %s failed", export_id)


class WorkerSettings:
    functions: ClassVar[list[Any]] = [func(build_export, name="build_export", timeout=60, max_tries=5)]
