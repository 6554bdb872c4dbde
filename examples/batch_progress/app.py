"""A batch import that reports progress as NDJSON on a durable stream.

``POST /api/batches`` creates a stream, answers 202 with its URL at once, and imports
the rows in the background (``waitUntil``), writing one JSON line per row and a final
``{"type": "done"}`` line (or ``{"type": "error"}``). The stream is closed in
``finally``, so a reader never waits forever on a batch that died.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

STREAM_NAME = "batch-progress"
CONTENT_TYPE = "application/x-ndjson"
#: Virtual seconds one row takes to import (stands in for a database write).
SECONDS_PER_ROW = 1.0
MAX_ROWS = 10_000


class Platform(Protocol):
    """What the app needs from its host: durable streams and a waitUntil runtime."""

    streams: Any
    runtime: Any


def line(**fields: Any) -> str:
    """One NDJSON line."""
    return json.dumps(fields, separators=(",", ":")) + "\n"


async def import_row(row: dict[str, Any]) -> None:
    """Import one row; a row without an ``email`` is rejected."""
    await asyncio.sleep(SECONDS_PER_ROW)
    if "email" not in row:
        raise ValueError(f"row {row!r} has no email")


def create_app(platform: Platform) -> Starlette:
    """Build the batch app around the host's streams and waitUntil runtime."""
    streams, runtime = platform.streams, platform.runtime

    async def run_batch(stream: Any, batch_id: str, rows: list[dict[str, Any]]) -> None:
        total = len(rows)
        try:
            for i, row in enumerate(rows, 1):
                try:
                    await import_row(row)
                except ValueError as exc:
                    await stream.write(line(type="row_error", row=i, error=str(exc)))
                await stream.write(line(type="progress", batch_id=batch_id, done=i, total=total))
            await stream.write(line(type="done", batch_id=batch_id, total=total))
        except Exception as exc:
            await stream.write(line(type="error", batch_id=batch_id, error=str(exc) or repr(exc)))
            raise
        finally:
            await stream.close()

    async def create_batch(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        rows = body.get("rows") if isinstance(body, dict) else None
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            return JSONResponse({"error": "rows must be a non-empty list of objects"}, status_code=400)
        if len(rows) > MAX_ROWS:
            return JSONResponse({"error": f"at most {MAX_ROWS} rows per batch"}, status_code=400)
        batch_id = "batch_" + hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:10]
        async with runtime.request("create-batch") as ctx:
            stream = await streams.create(
                STREAM_NAME, content_type=CONTENT_TYPE, metadata={"batch_id": batch_id}
            )
            ctx.wait_until(run_batch(stream, batch_id, rows))
            return JSONResponse(
                {"batch_id": batch_id, "progress_url": stream.url, "rows": len(rows)},
                status_code=202,
            )

    return Starlette(routes=[Route("/api/batches", create_batch, methods=["POST"])])
