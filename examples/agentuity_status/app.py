"""A report worker that keeps each job's status record on Agentuity KV, through the real SDK.

``publish_job`` writes ``{"kind": "queued"}`` and enqueues the job; the queue pushes it to
``handle_job``, which marks it ``running``, builds the report, emails the customer and marks
it ``done``. The status lives in Agentuity's key-value store via ``agentuity.KeyValueStore``
(the real 0.0.106 client, unmodified); the mailer is any client that takes an idempotency
key (Resend, Postmark and SES all do).

``handle_job_buggy`` is the version first written: it sends the email without the key, so
a redelivered job (at-least-once queues redeliver) emails the customer twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from agentuity import KeyValueStore
from opentelemetry import trace

QUEUE = "report_jobs"
STATUS = "report-status"
#: Agentuity KV refuses TTLs under 60 s; 0.0.106's set(params={"ttl": ...}) never sends one
#: (the SDK bug), so this status in fact never expires: do not rely on expiry.
STATUS_TTL = 7 * 86400


def status_store() -> KeyValueStore:
    """The KV client as deployed (the base URL and key come from the environment)."""
    return KeyValueStore(os.environ.get("AGENTUITY_TRANSPORT_URL", "https://agentuity.ai"),
                         os.environ.get("AGENTUITY_SDK_KEY", "dev"), trace.get_tracer(__name__))


Mailer = Callable[..., Any]


async def publish_job(queues: Any, kv: KeyValueStore, job_id: str, email: str) -> None:
    """Record the job as queued, then enqueue it (idempotent by job id)."""
    await kv.set(STATUS, job_id, {"kind": "queued"}, {"ttl": STATUS_TTL})
    await queues.publish(QUEUE, {"job_id": job_id, "email": email}, idempotency_key=job_id)


async def handle_job(job: dict[str, Any], kv: KeyValueStore, send_email: Mailer) -> None:
    """Idempotent: a job already done is skipped, and the email carries the job id as its key."""
    job_id = job["job_id"]
    current = await kv.get(STATUS, job_id)
    if current.exists and (await current.data.json()).get("kind") == "done":
        return  # a redelivered copy of a finished job
    await kv.set(STATUS, job_id, {"kind": "running"})
    send_email(job["email"], f"Your report {job_id} is ready", idempotency_key=f"report-ready/{job_id}")
    await kv.set(STATUS, job_id, {"kind": "done"})


async def handle_job_buggy(job: dict[str, Any], kv: KeyValueStore, send_email: Mailer) -> None:
    """The first version: every delivery emails again."""
    job_id = job["job_id"]
    await kv.set(STATUS, job_id, {"kind": "running"})
    send_email(job["email"], f"Your report {job_id} is ready")
    await kv.set(STATUS, job_id, {"kind": "done"})
