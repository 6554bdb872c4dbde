"""A nightly billing rollup behind a cron endpoint that never runs twice at once.

The platform's cron POSTs ``/api/cron/nightly-rollup`` at 02:00 UTC. Cron does not wait
for the last run: a run that outlasts its interval (a slow billing API) would overlap
the next one and invoice a day twice. So the endpoint takes a lease in the key-value
store first (renewed by a heartbeat while the run goes, expiring on its own if the
process dies) and skips when another run holds it. Each run rolls up every day since
the last one it finished, so a skipped night is caught up by the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CRON = "0 2 * * *"
CRON_PATH = "/api/cron/nightly-rollup"
USAGE_URL = "https://billing.example/v1/usage"
INVOICES_URL = "https://billing.example/v1/invoices"
LOCKS_NS, LOCK_KEY = "locks", "nightly-rollup"
ROLLUPS_NS, CURSOR_KEY = "rollups", "next-day"  # the first day not rolled up yet
#: The lease lives this long unless renewed; a dead run frees the job after at most this.
LEASE_TTL = 600
#: Renew the lease this often while the run goes (well inside LEASE_TTL).
HEARTBEAT = LEASE_TTL / 3


class Platform(Protocol):
    """What the app needs from its host: a key-value store with TTLs."""

    kv: Any


def create_app(platform: Platform, http: httpx.AsyncClient) -> Starlette:
    """Build the cron endpoint around the host's key-value client and an httpx client."""
    kv = platform.kv

    async def heartbeat(owner: str) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            held = await kv.get(LOCKS_NS, LOCK_KEY)
            if not held.exists or held.data["owner"] != owner:
                return  # the lease lapsed and another run took it: never renew theirs
            # compare-and-set: renew only the version read, so a takeover in between wins
            await kv.set(LOCKS_NS, LOCK_KEY, {"owner": owner}, ttl=LEASE_TTL,
                         if_version=held.version)

    async def roll_up(day: dt.date) -> dict[str, Any]:
        usage = await http.get(USAGE_URL, params={"day": day.isoformat()})
        usage.raise_for_status()
        total = sum(item["cents"] for item in usage.json()["items"])
        invoice = await http.post(
            INVOICES_URL,
            json={"day": day.isoformat(), "total_cents": total},
            headers={"Idempotency-Key": f"invoice-{day.isoformat()}"},
        )
        invoice.raise_for_status()
        return {"day": day.isoformat(), "total_cents": total}

    async def nightly(request: Request) -> JSONResponse:
        body = await request.json()
        run_id = body["run"]
        yesterday = dt.datetime.fromisoformat(body["scheduled_at"]).date() - dt.timedelta(days=1)
        # Take the lease with a conditional write (SET NX): two replicas that both read
        # "no lease" and then wrote it would both run the job and invoice a day twice.
        if not await kv.set(LOCKS_NS, LOCK_KEY, {"owner": run_id}, ttl=LEASE_TTL, if_absent=True):
            lock = await kv.get(LOCKS_NS, LOCK_KEY)
            if lock.exists and lock.data["owner"] != run_id:
                return JSONResponse({"run": run_id,
                                     "skipped": f"run {lock.data['owner']} holds the lease"})
            # our own run's lease (a retried request), or it just lapsed: take it again
            await kv.set(LOCKS_NS, LOCK_KEY, {"owner": run_id}, ttl=LEASE_TTL,
                         **({"if_version": lock.version} if lock.exists else {"if_absent": True}))
        beat = asyncio.create_task(heartbeat(run_id))
        done: list[str] = []
        try:
            cursor = await kv.get(ROLLUPS_NS, CURSOR_KEY)
            if cursor.exists:
                day = dt.date.fromisoformat(cursor.data)
            else:
                # First run ever: start with yesterday, and remember it at once, so a
                # run that fails today still leaves today's day for the next one.
                day = yesterday
                await kv.set(ROLLUPS_NS, CURSOR_KEY, day.isoformat())
            while day <= yesterday:
                try:
                    totals = await roll_up(day)
                except httpx.HTTPError as exc:
                    # Fail this run (cron records it); the next one resumes from this day.
                    return JSONResponse({"run": run_id, "rolled_up": done,
                                         "error": f"{day}: {exc}"}, status_code=502)
                await kv.set(ROLLUPS_NS, day.isoformat(), totals)
                done.append(day.isoformat())
                day += dt.timedelta(days=1)
                await kv.set(ROLLUPS_NS, CURSOR_KEY, day.isoformat())
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            held = await kv.get(LOCKS_NS, LOCK_KEY)
            if held.exists and held.data["owner"] == run_id:  # never free another run's lease
                await kv.delete(LOCKS_NS, LOCK_KEY, if_version=held.version)
        return JSONResponse({"run": run_id, "rolled_up": done})

    return Starlette(routes=[Route(CRON_PATH, nightly, methods=["POST"])])
