"""Report jobs, end to end, under the faults production will bring.

Each test deploys the app the way production does: the queue pushes every job to the
worker endpoint (``queues.route(..., app=, path=)``); the test talks to the API over
httpx and polls with the same helper a client would use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

import pytest_bgwork as bg
from report_jobs.app import (
    QUEUE,
    QUEUE_SETTINGS,
    REAPER_CRON,
    REAPER_PATH,
    STALE_AFTER,
    STATUS_NS,
    STATUS_TTL,
    WORKER_PATH,
    ReportRequest,
    create_app,
    csv_rows,
    job_id_for,
    wait_for_report,
)

# Deployed on Agentuity (queue, key-value store, durable streams): its profiles apply.
pytestmark = [pytest.mark.asyncio, pytest.mark.bgwork(platform="agentuity")]
REQUEST = {"account_id": "acct_42", "month": "2026-02"}
FULL_CSV = "".join(csv_rows("acct_42", "2026-02")).encode()


def deploy(sim: bg.Simulation, **options: Any) -> FastAPI:
    """Deploy as production does: the queue pushes to the worker, cron calls the reaper."""
    sim.queues.create(QUEUE, **QUEUE_SETTINGS)
    app = create_app(sim, **options)
    sim.queues.route(QUEUE, app=app, path=WORKER_PATH)
    sim.schedules.create("reap-report-jobs", cron=REAPER_CRON, app=app, path=REAPER_PATH)
    return app


def client_for(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://reports.test")


@pytest_asyncio.fixture
async def client(bgwork: bg.Simulation) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(deploy(bgwork)) as c:
        yield c


async def submit(client: httpx.AsyncClient, body: dict[str, Any] = REQUEST) -> str:
    response = await client.post("/api/reports", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["status_url"])


def statuses(sim: bg.Simulation, job_id: str) -> list[str]:
    """Every status the job went through, in order (``expired`` for a TTL lapse)."""
    return [v.data["kind"] if v.op == "set" else v.op for v in sim.kv.history(STATUS_NS, job_id)]


JOB = job_id_for(ReportRequest(**REQUEST))


# -- the happy path, and bad requests ----------------------------------------------------
# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_a_report_goes_from_queued_to_done_with_its_csv(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    response = await client.post("/api/reports", json=REQUEST)
    assert response.status_code == 202
    status_url = response.json()["status_url"]
    assert response.headers["location"] == status_url == f"/api/reports/{JOB}"
    assert (await client.get(status_url)).json()["kind"] == "queued"

    status = await wait_for_report(client, status_url)
    assert status["kind"] == "done"
    assert await bgwork.streams.read(status["url"]) == FULL_CSV
    assert statuses(bgwork, JOB) == ["queued", "processing", "done"]
    await bgwork.run_until_idle()  # the poller is done; redeliveries may still be under way
    bg.assert_streams_closed(bgwork)
    bg.assert_nothing_lost(bgwork)
    bg.assert_status_terminal(bgwork, STATUS_NS)


async def test_posting_the_same_report_twice_queues_it_once(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    first, second = await submit(client), await submit(client)
    assert first == second
    publishes = bgwork.history.filter("queue", "publish", queue=QUEUE)
    assert [p.detail["duplicate"] for p in publishes] == [False, True]
    await bgwork.run_until_idle()  # the worker runs the one job; the test leaves no work behind
    delivered = {e.detail["id"] for e in bgwork.history.filter("queue", "deliver", queue=QUEUE)}
    assert delivered == {publishes[0].detail["id"]}  # (chaos may deliver it more than once)


@pytest.mark.parametrize(
    "body",
    [
        {"account_id": "acct_42"},
        {"account_id": "acct_42", "month": "2026-13"},
        {"account_id": "ACCT 42", "month": "2026-02"},
        {"account_id": "acct_42", "month": 202602},
        ["acct_42", "2026-02"],
    ],
    ids=["no-month", "month-13", "bad-account", "month-not-text", "not-an-object"],
)
async def test_bad_input_is_400_and_queues_nothing(
    bgwork: bg.Simulation, client: httpx.AsyncClient, body: object
) -> None:
    response = await client.post("/api/reports", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid request"
    assert bgwork.history.count("queue", "publish") == 0
    assert await bgwork.kv.keys(STATUS_NS) == []


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/reports", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


async def test_an_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/reports/rpt_doesnotexist")
    assert response.status_code == 404


# -- retries -------------------------------------------------------------------------------
# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_a_failing_attempt_is_retried_and_the_poller_waits_for_it(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    bgwork.faults.fail("stream.create", on_call=1, error=ConnectionError("streams unavailable"))
    status = await wait_for_report(client, await submit(client))
    failed = bgwork.history.filter("queue", "attempt_failed")[-1]
    assert status["kind"] == "done" and status["attempt"] == failed.detail["attempt"] + 1
    # The failed attempt put the job back to "queued" (not "failed"): only the last
    # attempt's failure is final, so the poller did not stop early.
    assert statuses(bgwork, JOB) == ["queued", "processing", "queued", "processing", "done"]
    assert await bgwork.streams.read(status["url"]) == FULL_CSV


# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_the_last_failing_attempt_marks_the_job_failed(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    bgwork.faults.fail("stream.create", on_call=None, error=ConnectionError("streams unavailable"))
    status = await wait_for_report(client, await submit(client))
    assert (status["kind"], status["error"]) == ("failed", "streams unavailable")
    assert status["attempt"] == QUEUE_SETTINGS["max_retries"] + 1
    assert len(bgwork.queues.dead_letters(QUEUE)) == 1
    bg.assert_nothing_lost(bgwork)  # dead-lettered counts as handled


# -- streams under errors and crashes ------------------------------------------------------
# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_an_error_mid_write_closes_the_stream_and_the_retry_finishes(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    bgwork.faults.fail("stream.write", on_call=5, error=TimeoutError("write timed out"))
    status = await wait_for_report(client, await submit(client))
    first, second = bgwork.streams.all()
    assert first.closed and first.size < len(FULL_CSV)  # closed in `finally`, partial
    assert second.url == status["url"] and await bgwork.streams.read(second.url) == FULL_CSV
    assert bgwork.streams.open_streams() == []
    bg.assert_streams_closed(bgwork)


# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_a_crash_mid_write_abandons_the_stream_and_redelivery_recovers(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    # Process death at the 5th write: no `finally` runs, nothing is acked.
    bgwork.faults.crash(QUEUE, at="stream.write", on_call=5)
    status_url = await submit(client)
    await bgwork.advance(60)
    assert (await client.get(status_url)).json()["kind"] == "processing"  # stuck, for now
    status = await wait_for_report(client, status_url)
    [crashed] = bgwork.history.filter("queue", "crashed")
    n = crashed.detail["attempt"]
    assert status["kind"] == "done" and status["attempt"] == n + 1
    # Redelivered once the crashed attempt's visibility timeout lapsed:
    [dead_one] = bgwork.history.filter("queue", "deliver", attempt=n)
    [redelivery] = bgwork.history.filter("queue", "deliver", attempt=n + 1)
    assert redelivery.t - dead_one.t == QUEUE_SETTINGS["visibility_timeout"]
    await bgwork.run_until_idle()
    [abandoned] = bgwork.streams.open_streams()
    assert abandoned.url != status["url"]
    # The crashed attempt's stream is left out of the check (its `finally` never ran);
    # every other stream is closed.
    bg.assert_streams_closed(bgwork)
    bg.assert_nothing_lost(bgwork)


# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_overlapping_attempts_after_a_visibility_timeout_leave_one_done_status(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    # The first attempt stalls for 300 s, past the 120 s visibility timeout: the queue
    # redelivers while the first is still alive, and both run.
    bgwork.faults.hang(QUEUE, seconds=300)
    status = await wait_for_report(client, await submit(client))
    await bgwork.run_until_idle()
    second, first = (bgwork.history.filter("queue", "deliver", attempt=n)[0] for n in (2, 1))
    assert first.t < second.t < 300, "the attempts must really overlap"
    # The late first attempt saw "done" and changed nothing: the status never regressed.
    assert statuses(bgwork, JOB) == ["queued", "processing", "done"]
    assert (await client.get(f"/api/reports/{JOB}")).json() == status
    assert len(bgwork.streams.all()) == 1
    bg.assert_nothing_lost(bgwork)


async def test_a_job_dead_lettered_before_its_worker_ran_is_failed_by_the_reaper(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    # Found by the exploration below: every delivery fails before the worker runs, the
    # message is dead-lettered, and nothing ever updates the "queued" status.
    bgwork.faults.fail("queue.deliver", on_call=None)
    status_url = await submit(client)
    await bgwork.run_until_idle()
    assert len(bgwork.queues.dead_letters(QUEUE)) == 1
    assert (await client.get(status_url)).json()["kind"] == "queued"  # stuck, for now
    status = await wait_for_report(client, status_url, interval=60)
    assert status["kind"] == "failed" and "no attempt finished" in status["error"]
    assert STALE_AFTER < bgwork.clock.monotonic() <= STALE_AFTER + 3600  # the next hourly reap
    bg.assert_status_terminal(bgwork, STATUS_NS)


# -- TTLs ----------------------------------------------------------------------------------
def retry_window() -> float:
    """The longest a job can spend between its first delivery and its last attempt's end:
    every attempt running out its visibility timeout, each retry after its delay."""
    retries = QUEUE_SETTINGS["max_retries"]
    return float((retries + 1) * QUEUE_SETTINGS["visibility_timeout"]
                 + retries * QUEUE_SETTINGS["retry_delay"])


# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_the_status_outlives_the_retry_window(
    bgwork: bg.Simulation, client: httpx.AsyncClient
) -> None:
    assert retry_window() < STATUS_TTL
    bgwork.faults.fail("stream.create", on_call=None)  # every attempt fails
    status_url = await submit(client)
    await bgwork.run_until_idle()
    [dead] = bgwork.history.filter("queue", "dead_letter")
    assert dead.t == 3 * QUEUE_SETTINGS["retry_delay"]
    assert (await client.get(status_url)).json()["kind"] == "failed"  # still there to read
    await bgwork.advance(STATUS_TTL)
    assert (await client.get(status_url)).status_code == 404  # ...and it does expire


# It pins an exact schedule (statuses, attempts, instants), which chaos changes on
# purpose: chaos off here; the explore test and the checks cover the properties.
@pytest.mark.bgwork(chaos="")
async def test_a_status_ttl_shorter_than_a_retry_delay_makes_the_poller_see_404(
    bgwork: bg.Simulation,
) -> None:
    # The bug the rule above prevents: with a 30 s TTL the status vanishes while the
    # job waits a minute for its retry, and the client is told the job does not exist.
    # Agentuity's store refuses TTLs under 60 s, so this runs the statuses on Redis,
    # which takes one.
    bgwork.kv.configure(STATUS_NS, profile="redis")
    bgwork.faults.fail("stream.create", on_call=1)
    async with client_for(deploy(bgwork, status_ttl=30)) as client:
        status_url = await submit(client)
        with pytest.raises(httpx.HTTPStatusError, match="404"):
            await wait_for_report(client, status_url)
        [lapsed] = bgwork.history.filter("kv", "expire")
        assert lapsed.t < QUEUE_SETTINGS["retry_delay"]
