"""Sync redis-py's blocking commands wait like every other sync wait of the simulation.

A thread of the simulation (a sync test body, an ``asyncio.to_thread`` worker, a sync task
body) that runs BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN, XREAD BLOCK, XREADGROUP BLOCK
or WAIT blocks on the virtual clock: the loop runs the other work meanwhile, a push from
a task wakes it at that virtual instant, a timeout returns after that many virtual
seconds, and a wait nothing can end is a ``Deadlock`` naming the command and the line.
"""

from __future__ import annotations

import pytest

SUITE = '''
import asyncio

import pytest
import redis
import redis.asyncio as aredis

from pytest_bgwork import adapters


async def feed(kind):
    """A producer task: after 2 virtual seconds, gives the waiting command its data."""
    await asyncio.sleep(2)
    r = aredis.Redis()
    if kind in ("blpop", "brpop", "blmove", "brpoplpush"):
        await r.rpush("jobs", "j1")
    elif kind == "bzpopmin":
        await r.zadd("jobs", {"j1": 1})
    else:
        await r.xadd("events", {"n": "1"})


def block(kind, timeout):
    """The blocking command ``kind`` with ``timeout`` seconds; its reply (None: timed out)."""
    r = redis.Redis(decode_responses=True)
    if kind == "blpop":
        return r.blpop(["jobs"], timeout=timeout)
    if kind == "brpop":
        return r.brpop(["jobs"], timeout=timeout)
    if kind == "blmove":
        return r.blmove("jobs", "doing", timeout)
    if kind == "brpoplpush":
        return r.brpoplpush("jobs", "doing", timeout)
    if kind == "bzpopmin":
        return r.bzpopmin(["jobs"], timeout=timeout)
    if kind == "xread":
        return r.xread({"events": "$"}, block=int(timeout * 1000)) or None
    if kind == "xreadgroup":
        r.xgroup_create("events", "g", id="$", mkstream=True)
        return r.xreadgroup("g", "c1", {"events": ">"}, block=int(timeout * 1000)) or None
    raise AssertionError(kind)


KINDS = ["blpop", "brpop", "blmove", "brpoplpush", "bzpopmin", "xread", "xreadgroup"]


@pytest.mark.parametrize("kind", KINDS)
def test_sync_body_is_fed_by_a_task(bg_redis, kind):
    bg_redis.loop.create_task(feed(kind))
    assert block(kind, 30) is not None
    assert bg_redis.clock.monotonic() == 2.0  # woken by the push, not at the timeout


@pytest.mark.parametrize("kind", KINDS)
def test_sync_body_times_out_on_virtual_time(bg_redis, kind):
    assert block(kind, 4) is None
    assert bg_redis.clock.monotonic() == 4.0


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", KINDS)
async def test_worker_thread_is_fed_while_the_loop_runs(bg_redis, kind):
    producer = asyncio.create_task(feed(kind))
    assert await asyncio.to_thread(block, kind, 30) is not None
    assert asyncio.get_running_loop().time() == 2.0
    await producer


@pytest.mark.asyncio
async def test_wait_for_replicas_times_out_in_a_worker_thread(bg_redis):
    assert await asyncio.to_thread(lambda: redis.Redis().wait(1, 3000)) == 0
    assert asyncio.get_running_loop().time() == 3.0


def test_blpop_that_nothing_can_feed_is_a_deadlock(bg_redis):
    redis.Redis().blpop(["nobody-pushes"], timeout=0)
'''


def test_each_blocking_command_of_sync_code_waits_on_virtual_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:looptime", "-W",
                                "ignore::pytest_bgwork.LeftoverWorkWarning")
    result.assert_outcomes(passed=22, failed=1)
    result.stdout.fnmatch_lines([
        "*test_blpop_that_nothing_can_feed_is_a_deadlock*",
        "*Deadlock: nothing can run and no timer is pending*",
        "*thread blocked in redis BLPOP (blocking) at *",
    ])
