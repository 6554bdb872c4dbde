"""Progress is readable while the batch runs, ends with ``done``, and the stream closes.

Each row takes a virtual second, so "halfway through" is ``await bgwork.advance(2.5)``:
no sleeps, no polling loops, no flaky timing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

import pytest_bgwork as bg
from batch_progress.app import CONTENT_TYPE, create_app

# Deployed on Agentuity (waitUntil, durable streams): its profiles apply.
pytestmark = [pytest.mark.asyncio, pytest.mark.bgwork(platform="agentuity")]
ROWS = [{"email": f"user{i}@example.com"} for i in range(5)]


@pytest_asyncio.fixture
async def client(bgwork: bg.Simulation) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(bgwork))
    async with httpx.AsyncClient(transport=transport, base_url="http://batches.test") as c:
        yield c


async def read_lines(sim: bg.Simulation, url: str) -> tuple[list[dict[str, Any]], bool]:
    """The NDJSON lines written so far, and whether the stream is still open."""
    result = await sim.streams.read_result(url)
    return [json.loads(x) for x in result.data.decode().splitlines()], result.partial


# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_progress_is_readable_while_the_batch_runs(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    response = await client.post("/api/batches", json={"rows": ROWS})
    assert response.status_code == 202
    assert bgwork.clock.monotonic() == 0  # answered before any row was imported
    url = response.json()["progress_url"]

    await bgwork.advance(2.5)
    lines, still_open = await read_lines(bgwork, url)
    assert still_open
    assert [(x["type"], x["done"]) for x in lines] == [("progress", 1), ("progress", 2)]

    await bgwork.run_until_idle()
    lines, still_open = await read_lines(bgwork, url)
    assert not still_open
    assert lines[-1] == {"type": "done", "batch_id": response.json()["batch_id"], "total": 5}
    assert [x["done"] for x in lines if x["type"] == "progress"] == [1, 2, 3, 4, 5]
    assert bgwork.clock.monotonic() == 5.0
    assert bgwork.streams.get(url).content_type == CONTENT_TYPE
    bg.assert_streams_closed(bgwork)
    bg.assert_drained(bgwork)


async def test_a_bad_row_is_reported_and_the_batch_goes_on(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    rows = [ROWS[0], {"name": "no email"}, ROWS[1]]
    url = (await client.post("/api/batches", json={"rows": rows})).json()["progress_url"]
    await bgwork.run_until_idle()
    lines, still_open = await read_lines(bgwork, url)
    assert [x["type"] for x in lines] == ["progress", "row_error", "progress", "progress", "done"]
    assert lines[1]["row"] == 2
    assert not still_open


async def test_a_failing_write_still_closes_the_stream(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    bgwork.faults.fail("stream.write", on_call=3, error=ConnectionError("stream store down"))
    url = (await client.post("/api/batches", json={"rows": ROWS})).json()["progress_url"]
    await bgwork.run_until_idle()
    lines, still_open = await read_lines(bgwork, url)
    assert not still_open, "closed in `finally`: a reader is never left waiting"
    assert lines[-1]["type"] == "error" and "stream store down" in lines[-1]["error"]
    assert len(bgwork.runtime.errors) == 1  # the runtime logged it; nobody else saw it
    bg.assert_streams_closed(bgwork)


@pytest.mark.parametrize(
    "body",
    [{}, {"rows": []}, {"rows": "a,b"}, {"rows": [1, 2]}, [1]],
    ids=["no-rows", "empty", "not-a-list", "not-objects", "not-an-object"],
)
async def test_bad_input_is_400_and_starts_nothing(
    bgwork: bg.Simulation, client: httpx.AsyncClient, body: object
) -> None:
    response = await client.post("/api/batches", json=body)
    assert response.status_code == 400
    assert bgwork.streams.all() == []
