"""Monthly CSV reports built in the background: a FastAPI app, a queue worker, a poller.

``POST /api/reports`` queues a job and answers 202 with a status URL; a queue pushes
each job to ``POST /api/workers/report-jobs``, which writes the CSV to a durable
stream and records the outcome in a key-value status; ``wait_for_report`` polls it.

The app gets its clients from ``create_app(platform)``: in production ``platform``
bundles real queue, key-value and stream clients; in tests it is the simulation.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import datetime as dt
import hashlib
from typing import Any, Protocol

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

QUEUE = "report-jobs"
#: The queue as deployed: 4 attempts a minute apart, each invisible to other workers
#: for 2 minutes (a worker that takes longer than that is presumed dead).
QUEUE_SETTINGS: dict[str, Any] = {"max_retries": 3, "visibility_timeout": 120, "retry_delay": 60}
WORKER_PATH = "/api/workers/report-jobs"
STATUS_NS = "report-status"
#: A status must outlive every retry of its job, or a poller sees 404 mid-retry.
STATUS_TTL = 7 * 86400
STREAM_NAME = "monthly-reports"
#: The push queue numbers each delivery (1, 2, ...), as QStash or Cloud Tasks do in theirs.
ATTEMPT_HEADER = "x-bgwork-attempt"
PUBLISH_TRIES = 3
TERMINAL = frozenset({"done", "failed"})
#: A cron job fails jobs no attempt finished for this long: one dead-lettered before its
#: worker ever ran (or after a crash) would otherwise say "queued" forever. It must be
#: well past the longest retry window (4 x 120 s visibility + 3 x 60 s delays = 660 s).
STALE_AFTER = 30 * 60
REAPER_PATH = "/api/cron/reap-report-jobs"
REAPER_CRON = "0 * * * *"


class Platform(Protocol):
    """What the app needs from its host: a queue, a key-value store and durable streams."""

    queues: Any
    kv: Any
    streams: Any


class ReportRequest(BaseModel):
    """One monthly report for one account."""

    account_id: str = Field(pattern=r"^acct_[a-z0-9]{1,32}$")
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")


def job_id_for(req: ReportRequest) -> str:
    """One job per account and month, so a double-clicked POST queues the report once."""
    digest = hashlib.sha256(f"{req.account_id}:{req.month}".encode()).hexdigest()
    return f"rpt_{digest[:12]}"


def csv_rows(account_id: str, month: str) -> list[str]:
    """The report body: a header and one line per day (stands in for a database query)."""
    year, mon = (int(part) for part in month.split("-"))
    days = calendar.monthrange(year, mon)[1]
    rows = ["date,account_id,orders,revenue_cents\n"]
    for day in range(1, days + 1):
        orders = (day * 7 + mon) % 13
        rows.append(f"{month}-{day:02d},{account_id},{orders},{orders * 1999}\n")
    return rows


def create_app(
    platform: Platform,
    *,
    status_ttl: float = STATUS_TTL,
    max_retries: int = QUEUE_SETTINGS["max_retries"],
) -> FastAPI:
    """Build the app around ``platform``'s clients (real ones, or a bgwork simulation)."""
    app = FastAPI(title="reports")
    kv, queues, streams = platform.kv, platform.queues, platform.streams

    async def set_status(job_id: str, status: dict[str, Any], *, if_absent: bool = False) -> bool:
        stamped = {**status, "updated_at": dt.datetime.now(dt.UTC).isoformat()}
        return await kv.set(STATUS_NS, job_id, stamped, ttl=status_ttl, if_absent=if_absent)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": ".".join(map(str, e["loc"][1:])), "error": e["msg"]} for e in exc.errors()]
        return JSONResponse({"error": "invalid request", "details": errors}, status_code=400)

    @app.post("/api/reports", status_code=202)
    async def create_report(req: ReportRequest) -> JSONResponse:
        job_id = job_id_for(req)
        status_url = f"/api/reports/{job_id}"
        # Write "queued" before publishing: a fast worker's "processing" must not be
        # overwritten by a late "queued". A repeated POST leaves the live status alone: a
        # conditional write (SET NX), since two concurrent POSTs could both see no status.
        try:
            await set_status(job_id, {"kind": "queued"}, if_absent=True)
        except (ConnectionError, TimeoutError):
            # The write may have happened; a retried POST publishes the job either way.
            return JSONResponse({"error": "status store unavailable, try again"}, status_code=503)
        payload = {"job_id": job_id, "account_id": req.account_id, "month": req.month}
        error: Exception | None = None
        for _ in range(PUBLISH_TRIES):
            try:
                # The job id is the idempotency key: retrying a publish that timed out
                # (but may have happened) enqueues the job once.
                await queues.publish(QUEUE, payload, idempotency_key=job_id)
                break
            except (ConnectionError, TimeoutError) as exc:
                error = exc
        else:
            # Never enqueued: say so, or the poller would wait on "queued" forever. (If a
            # publish did land after all, the worker's statuses overwrite this one.)
            with contextlib.suppress(ConnectionError, TimeoutError):
                await set_status(job_id, {"kind": "failed", "error": f"could not enqueue: {error}"})
            return JSONResponse({"error": "queue unavailable, try again"}, status_code=503)
        return JSONResponse(
            {"job_id": job_id, "status_url": status_url},
            status_code=202,
            headers={"Location": status_url},
        )

    @app.get("/api/reports/{job_id}")
    async def get_report(job_id: str) -> JSONResponse:
        record = await kv.get(STATUS_NS, job_id)
        if not record.exists:
            return JSONResponse({"error": f"no report job {job_id!r}"}, status_code=404)
        return JSONResponse({"job_id": job_id, **record.data})

    @app.post(WORKER_PATH)
    async def work(request: Request) -> JSONResponse:
        job = await request.json()
        job_id = job["job_id"]
        attempt = int(request.headers.get(ATTEMPT_HEADER, "1"))
        try:
            current = await kv.get(STATUS_NS, job_id)
            if current.exists and current.data.get("kind") == "done":
                # A duplicate or late delivery of a finished job: acknowledge, change nothing.
                return JSONResponse({"job_id": job_id, "skipped": "already done"})
            await set_status(job_id, {"kind": "processing", "attempt": attempt})
            stream = await streams.create(
                STREAM_NAME, content_type="text/csv", metadata={"job_id": job_id}
            )
            try:
                for row in csv_rows(job["account_id"], job["month"]):
                    await stream.write(row)
            finally:
                await stream.close()
            await set_status(job_id, {"kind": "done", "url": stream.url, "attempt": attempt})
        except Exception as exc:
            last = attempt > max_retries
            # Only the last attempt is final; earlier ones go back to "queued" so a
            # poller keeps waiting for the retry instead of reporting a false failure.
            kind = "failed" if last else "queued"
            with contextlib.suppress(Exception):  # the queue retries; the status follows then
                await set_status(job_id, {"kind": kind, "error": str(exc) or repr(exc),
                                          "attempt": attempt})
            return JSONResponse({"job_id": job_id, "error": str(exc) or repr(exc)}, status_code=500)
        return JSONResponse({"job_id": job_id, "url": stream.url})

    @app.post(REAPER_PATH)
    async def reap_stale_jobs() -> JSONResponse:
        now = dt.datetime.now(dt.UTC)
        reaped = []
        for job_id in await kv.keys(STATUS_NS):
            record = await kv.get(STATUS_NS, job_id)
            if not record.exists or record.data["kind"] in TERMINAL:
                continue
            age = now - dt.datetime.fromisoformat(record.data["updated_at"])
            if age.total_seconds() > STALE_AFTER:
                # A late attempt that still finishes overwrites this with "done".
                await set_status(job_id, {**record.data, "kind": "failed",
                                          "error": f"no attempt finished in {STALE_AFTER // 60} minutes"})
                reaped.append(job_id)
        return JSONResponse({"reaped": reaped})

    return app


async def wait_for_report(
    client: httpx.AsyncClient, status_url: str, *, interval: float = 2.0, timeout: float = 3600.0
) -> dict[str, Any]:
    """Poll ``status_url`` until the job is ``done`` or ``failed``; return that status.

    Raises ``TimeoutError`` after ``timeout`` seconds, and ``httpx.HTTPStatusError`` if
    the status disappears (404): a status that expires mid-retry is a bug worth seeing.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await client.get(status_url)
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        if status["kind"] in TERMINAL:
            return status
        if loop.time() >= deadline:
            raise TimeoutError(f"report {status_url} still {status['kind']!r} after {timeout:g}s")
        await asyncio.sleep(interval)
