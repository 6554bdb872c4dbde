"""The exports service on real redis.asyncio clients, answered by the simulation (bg_redis).

The fixed worker leaves every export ``done`` with its file written, one email each and
the latest-export pointer on the last request, plain and under every chaos mode; the
first version passes the same direct test, and is caught by a planted crash (an export
stuck when a worker dies holding the lock), by ``bg.explore`` with default settings, and
from the command line by chaos ``duplicate`` and ``overlap`` (two emails), ``crash``
(a stuck export), ``reorder`` and ``latency`` (the pointer left on an older export).
``fail-first`` cannot act on it: it fails a delivery before its handler runs, and a
handler that never ran exercises none of the twin's bugs (the retry runs it cleanly).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork import adapters
from redis_exports import app
from redis_exports.app import (
    LOCK_MS,
    QUEUE,
    export_status,
    handle_export,
    handle_export_buggy,
    redis_client,
    request_export,
)

IDS = ["e1", "e2", "e3"]


async def fake_mail_provider(to: str, export_id: str, idempotency_key: str | None) -> None:
    """The mail provider: one email per Idempotency-Key, its memory kept in the simulation."""
    sim = bg.current()
    if idempotency_key is None or await sim.kv.set("mail-provider", idempotency_key, to,
                                                   if_absent=True):
        sim.effects.record("email", key=export_id)


app.MAILER = fake_mail_provider


class Bucket:
    """The exports bucket: files written (by export id), and writes that overlapped."""

    def __init__(self, sim: bg.Simulation) -> None:
        self.sim = sim
        self.files: dict[str, int] = {}
        self.writing: set[str] = set()
        self.overlaps: list[str] = []

    async def write_file(self, export_id: str) -> None:
        if export_id in self.writing:
            self.overlaps.append(export_id)  # two workers built the same export at once
        self.writing.add(export_id)
        await asyncio.sleep(2)  # building the file takes a while
        self.writing.discard(export_id)
        self.files[export_id] = self.files.get(export_id, 0) + 1
        self.sim.effects.record("export_file", key=export_id)


def start_worker(sim: bg.Simulation, handler: Any) -> Bucket:
    """The worker process: ``handler`` per delivery, writing to one bucket."""
    bucket = Bucket(sim)
    r = redis_client()
    write_file = bucket.write_file

    async def worker(job: dict[str, str], delivery: bg.Delivery) -> None:
        await handler(r, write_file, job, f"{delivery.message.id}/{delivery.attempt}")

    sim.queues.create(QUEUE, visibility_timeout=60, max_retries=20, retry_delay=10)
    sim.queues.route(QUEUE, worker)
    return bucket


def exports_done(sim: bg.Simulation) -> None:
    """Every export with a status is done (none at all when every request failed), unless
    its job used up its retries and went to the dead-letter list, which an operator
    handles (``bg.assert_nothing_lost`` accounts for it)."""
    __tracebackhide__ = True
    dead = {m.payload["export_id"] for m in sim.queues.messages(QUEUE) if m.state == "dead"}
    stuck = {k for k, v in adapters.redis.snapshot(sim, "export:*").items()
             if v.get("state") != "done" and k.split(":", 1)[1] not in dead}
    if stuck or not dead:
        adapters.redis.assert_status_terminal(sim, "export:*", field="state", terminal={"done"},
                                              allow_empty=True)


def one_email_each(sim: bg.Simulation) -> None:
    __tracebackhide__ = True
    bg.assert_effects_once(sim, "email", allow_empty=True)


def latest_is_newest(sim: bg.Simulation) -> None:
    """Once every export is done, the user's latest export is the last one requested."""
    __tracebackhide__ = True
    exports = adapters.redis.snapshot(sim, "export:*")
    if len(exports) == len(IDS) and all(v.get("state") == "done" for v in exports.values()):
        latest = adapters.redis.snapshot(sim, f"user:{app.USER}").get(f"user:{app.USER}", {})
        assert latest.get("export") == IDS[-1], (
            f"the latest export is {latest.get('export')!r}, not {IDS[-1]!r}, the last requested")


CHECKS = [exports_done, one_email_each, latest_is_newest]


async def run_exports(sim: bg.Simulation, handler: Any) -> Bucket:
    bucket = start_worker(sim, handler)
    api = redis_client()
    for seq, export_id in enumerate(IDS, start=1):
        await request_export(api, sim.queues, export_id, seq)
    await sim.run_until_idle()
    return bucket


@pytest.mark.asyncio
async def test_every_export_ends_done_with_its_file(bg_redis: bg.Simulation) -> None:
    bucket = await run_exports(bg_redis, handle_export)
    exports_done(bg_redis)
    assert set(bucket.files) == set(IDS)
    assert bucket.overlaps == []
    assert await export_status(redis_client(), "e1") == {"state": "done", "url": "s3://exports/e1.csv"}
    assert adapters.redis.snapshot(bg_redis, "lock:*") == {}  # every lock released
    bg.assert_nothing_lost(bg_redis)


@pytest.mark.asyncio
@pytest.mark.parametrize("handler", [handle_export, handle_export_buggy])
async def test_a_worker_dying_with_the_lock_held(bg_redis: bg.Simulation, handler: Any) -> None:
    """The worker dies marking the export running, with the lock held."""
    bg_redis.faults.crash(QUEUE, at="redis.hset", on_call=1)  # its first hset: "running"
    bucket = start_worker(bg_redis, handler)
    await request_export(redis_client(), bg_redis.queues, "e1")
    await bg_redis.run_until_idle()
    if handler is handle_export_buggy:
        with pytest.raises(bg.CheckFailed, match=r"export:e1: state='queued'"):
            exports_done(bg_redis)
        assert bucket.files == {}  # the redelivered job was acked unrun
        return
    exports_done(bg_redis)
    assert set(bucket.files) == {"e1"}
    # the redelivery (60 s) found the lock expired (30 s) and took it again
    assert bg_redis.history.filter("queue", "deliver")[-1].t >= LOCK_MS / 1000


@pytest.mark.asyncio
async def test_two_workers_on_one_export_wait_for_the_lock(bg_redis: bg.Simulation) -> None:
    bg_redis.faults.duplicate(QUEUE, times=2, overlap=True)  # both copies start together
    bucket = await run_exports(bg_redis, handle_export)
    exports_done(bg_redis)
    assert set(bucket.files) == set(IDS)
    assert bucket.overlaps == []  # the copy that met the lock waited for a retry


def scenario(handler: Any) -> Any:
    async def run(sim: bg.Simulation) -> None:
        start_worker(sim, handler)
        api = redis_client()
        for seq, export_id in enumerate(IDS[:2], start=1):
            for _ in range(3):  # the client retries a request that failed (it may have applied)
                try:
                    await request_export(api, sim.queues, export_id, seq)
                    break
                except Exception:  # a Redis or queue error: the client sees a 5xx
                    continue

    return run


def test_explore_finds_the_stuck_export_and_clears_the_fix(bg_redis: bg.Simulation) -> None:
    """The default fault plans (up to three faults). The stuck lock needs an error between
    two of the handler's calls: 200 examples (the default) reach it on about half the
    seeds, so the search for the bug runs 600; the fix is cleared at the default 200."""
    with pytest.raises(bg.ExplorationFailed, match=r"export:e\d: state=.(queued|running)"):
        bg.explore(scenario(handle_export_buggy), checks=[exports_done], seed=1,
                   max_examples=600)
    bg.explore(scenario(handle_export), checks=[exports_done], seed=1)
