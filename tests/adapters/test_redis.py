"""adapters.redis: real redis-py clients (asyncio and sync) on simulated Redis servers."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aredis
import redis.exceptions as rexc

import pytest_bgwork as bg
from pytest_bgwork import adapters


def ops(sim: bg.Simulation) -> list[tuple[str, str | None, str]]:
    return [(e.op, e.detail.get("key"), e.outcome) for e in sim.history.filter("redis")]


@pytest.mark.asyncio
async def test_a_set_nx_px_lock_expires_at_virtual_30_seconds(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis.from_url("redis://cache:6379/0", decode_responses=True)
    assert await r.set("lock:job", "w1", nx=True, px=30000)
    assert not await r.set("lock:job", "w2", nx=True, px=30000)
    await asyncio.sleep(29.999)
    assert await r.get("lock:job") == "w1"
    assert 0 < await r.pttl("lock:job") <= 1
    await asyncio.sleep(0.002)
    assert await r.get("lock:job") is None
    assert await r.set("lock:job", "w2", nx=True, px=30000)
    assert bg_redis.clock.monotonic() == pytest.approx(30.001)


@pytest.mark.asyncio
async def test_blpop_with_a_timeout_returns_after_that_many_virtual_seconds(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    loop = asyncio.get_running_loop()
    assert await r.blpop(["jobs"], timeout=5) is None
    assert loop.time() == pytest.approx(5)

    async def producer() -> None:
        await asyncio.sleep(2)
        await aredis.Redis().rpush("jobs", "j1")

    task = asyncio.create_task(producer())
    assert await r.blpop(["jobs"], timeout=60) == ("jobs", "j1")  # woken by the push
    assert loop.time() == pytest.approx(7)
    await task


@pytest.mark.asyncio
async def test_brpop_blmove_and_xread_block_wait_on_virtual_time(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    loop = asyncio.get_running_loop()
    assert await r.brpop(["a"], timeout=3) is None
    assert await r.blmove("a", "b", timeout=4) is None
    assert await r.xread({"events": "$"}, block=2500) == []
    assert loop.time() == pytest.approx(9.5)

    async def later() -> None:
        await asyncio.sleep(10)
        await r.xadd("events", {"n": "1"})

    task = asyncio.create_task(later())
    got = await r.xread({"events": "$"}, block=60_000)
    assert got[0][0] == "events" and got[0][1][0][1] == {"n": "1"}
    assert loop.time() == pytest.approx(19.5)
    await task


@pytest.mark.asyncio
async def test_one_server_per_url_shared_by_every_client_and_pool(bg_redis: bg.Simulation) -> None:
    a = aredis.Redis.from_url("redis://cache:6379/0")
    await a.set("k", "cache")
    b = aredis.Redis(connection_pool=aredis.ConnectionPool.from_url("redis://cache:6379"))
    assert await b.get("k") == b"cache"
    other = aredis.Redis(host="sessions", port=6380)
    assert await other.get("k") is None  # another server
    db1 = aredis.Redis.from_url("redis://cache:6379/1")
    assert await db1.get("k") is None  # another database of the same server
    blocking = aredis.Redis(connection_pool=aredis.BlockingConnectionPool(host="cache"))
    assert await blocking.get("k") == b"cache"
    sync = redis.Redis.from_url("redis://cache:6379/0")
    assert sync.get("k") == b"cache"  # the sync client reaches the same server


def test_each_install_starts_with_empty_servers() -> None:
    for _ in range(2):
        sim = bg.Simulation(seed=1)
        with adapters.redis.install(sim):
            r = redis.Redis()
            assert r.get("x") is None
            r.set("x", "1")
    r = redis.Redis(host="127.0.0.1", port=1)  # after the block: a real client again
    assert "fakeredis" not in type(r.connection_pool.connection_class).__module__
    assert r.connection_pool.connection_class is redis.Connection


@pytest.mark.asyncio
async def test_each_command_is_a_history_event_with_key_and_outcome(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis()
    await r.hset("export:1", "state", "running")
    await r.incr("n")
    with pytest.raises(rexc.ResponseError, match="WRONGTYPE"):
        await r.incr("export:1")
    await r.eval("return redis.call('get', KEYS[1])", 1, "n")
    assert ops(bg_redis) == [("hset", "export:1", "ok"), ("incrby", "n", "ok"),
                             ("incrby", "export:1", "fail"), ("eval", "n", "ok")]
    failed = bg_redis.history.filter("redis", "incrby")[1]
    assert "WRONGTYPE" in failed.detail["error"]
    assert "redis.hset" in bg_redis.history.timeline()


@pytest.mark.asyncio
async def test_an_error_before_apply_raises_connection_error_and_writes_nothing(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    bg_redis.faults.fail("redis.set", error=ConnectionError("reset by peer"))
    with pytest.raises(rexc.ConnectionError, match="reset by peer") as info:
        await r.set("k", "v")
    assert isinstance(info.value.__cause__, ConnectionError)
    assert await r.get("k") is None
    assert ops(bg_redis) == [("set", "k", "fail"), ("get", "k", "ok")]
    assert bg_redis.history.count("fault", "fail") == 1


@pytest.mark.asyncio
async def test_after_apply_writes_then_raises_timeout_and_the_outcome_is_unknown(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    bg_redis.faults.fail("redis.incrby", after_apply=True)  # redis-py sends INCR as INCRBY
    with pytest.raises(rexc.TimeoutError):
        await r.incr("counter")
    assert await r.incr("counter") == 2  # the first one applied: a retry double-counts
    assert ops(bg_redis) == [("incrby", "counter", "unknown"), ("incrby", "counter", "ok")]


def test_sync_clients_see_the_same_faults(bgwork: bg.Simulation) -> None:
    with adapters.redis.install(bgwork):
        r = redis.Redis(decode_responses=True)
        bgwork.faults.fail("redis.hset", after_apply=True)
        with pytest.raises(rexc.TimeoutError):
            r.hset("h", "f", "v")
        assert r.hgetall("h") == {"f": "v"}
        bgwork.faults.fail("redis.del", on_call=1)
        with pytest.raises(rexc.ConnectionError):
            r.delete("h")
        assert r.exists("h") == 1
    assert ops(bgwork) == [("hset", "h", "unknown"), ("hgetall", "h", "ok"), ("del", "h", "fail"),
                           ("exists", "h", "ok")]


def test_redis_fault_points_take_any_command_name(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("redis.zadd")
    bgwork.faults.fail("redis.json.set")
    assert len(bgwork.faults.plan) == 2
    assert "redis.<name>" in bg.fault_points()
    with pytest.raises(ValueError, match="fault point"):
        bgwork.faults.fail("rediss.set")
    bgwork.faults.clear()


@pytest.mark.asyncio
async def test_a_delay_fault_holds_the_command_in_virtual_time(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis()
    bg_redis.faults.delay("redis.get", seconds=3)
    await r.get("k")
    assert asyncio.get_running_loop().time() == pytest.approx(3)


@pytest.mark.asyncio
async def test_each_command_is_a_suspension_point_so_check_then_act_races(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    await r.set("stock", 1)
    sold: list[str] = []

    async def buy(who: str) -> None:
        if int(await r.get("stock") or 0) > 0:  # check ...
            await r.decr("stock")  # ... then act: the other buyer ran in between
            sold.append(who)

    await asyncio.gather(buy("a"), buy("b"))
    assert sold == ["a", "b"]
    assert await r.get("stock") == "-1"


@pytest.mark.asyncio
async def test_watch_multi_exec_aborts_on_a_conflicting_write(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    other = aredis.Redis(decode_responses=True)
    await r.set("balance", 10)
    async with r.pipeline(transaction=True) as pipe:
        await pipe.watch("balance")
        value = int(await pipe.get("balance"))
        await other.set("balance", 0)  # a conflicting write between WATCH and EXEC
        pipe.multi()
        pipe.set("balance", value - 5)
        with pytest.raises(rexc.WatchError):
            await pipe.execute()
    assert await r.get("balance") == "0"
    async with r.pipeline(transaction=True) as pipe:  # no conflict: applied atomically
        await pipe.watch("balance")
        pipe.multi()
        pipe.incr("balance").incr("balance")
        assert await pipe.execute() == [1, 2]
    names = [op for op, _, _ in ops(bg_redis)]
    assert names.count("exec") == 2 and names.count("watch") == 2


@pytest.mark.asyncio
async def test_a_pipeline_is_one_round_trip_and_an_error_before_it_sends_nothing(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    bg_redis.faults.fail("redis.rpush", on_call=1)
    pipe = r.pipeline(transaction=True)
    pipe.set("a", 1).rpush("l", "x").set("b", 2)
    with pytest.raises(rexc.ConnectionError):
        await pipe.execute()
    assert await r.mget("a", "b") == [None, None]  # nothing of the transaction applied


@pytest.mark.asyncio
async def test_lua_scripts_run_atomically_on_the_virtual_clock(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)
    release = r.register_script(
        "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0")
    await r.set("lock", "me", ex=10)
    assert await release(keys=["lock"], args=["you"]) == 0
    assert await release(keys=["lock"], args=["me"]) == 1
    await r.eval("redis.call('set', KEYS[1], 'v', 'EX', 5)", 1, "k")
    await asyncio.sleep(5.001)
    assert await r.exists("k") == 0
    with pytest.raises(rexc.ResponseError):
        await r.eval("return redis.call('nosuchcommand')", 0)


@pytest.mark.asyncio
async def test_a_crash_at_a_redis_command_kills_the_attempt_and_it_is_redelivered(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis(decode_responses=True)

    async def handler(payload: dict[str, str], delivery: object) -> None:
        await r.hset(f"export:{payload['id']}", "state", "running")
        await r.hset(f"export:{payload['id']}", "state", "done")

    bg_redis.queues.create("exports", visibility_timeout=60)
    bg_redis.queues.route("exports", handler)
    bg_redis.faults.crash("exports", at="redis.hset", on_call=2)
    await bg_redis.queues.publish("exports", {"id": "e1"})
    await bg_redis.run_until_idle()
    assert adapters.redis.snapshot(bg_redis, "export:*") == {"export:e1": {"state": "done"}}
    assert [e.detail["attempt"] for e in bg_redis.history.filter("queue", "deliver")] == [1, 2]


def test_sync_client_in_a_sync_test_body(bgwork: bg.Simulation) -> None:
    with adapters.redis.install(bgwork):
        r = redis.Redis(decode_responses=True)
        r.set("k", "v", ex=10)
        assert r.blpop(["empty"], timeout=4) is None  # nothing feeds it: 4 virtual s pass
        assert bgwork.clock.monotonic() == pytest.approx(4)
        assert r.ttl("k") == 6


@pytest.mark.asyncio
async def test_a_sync_client_blocking_the_loop_itself_advances_time_or_refuses(bg_redis: bg.Simulation) -> None:
    """A sync client called from a coroutine holds the loop: nothing can feed it meanwhile."""
    r = redis.Redis()
    assert r.blpop(["empty"], timeout=3) is None
    assert asyncio.get_running_loop().time() == pytest.approx(3)
    with pytest.raises(bg.BgworkError, match=r"no timeout .* from a coroutine .*asyncio.to_thread"):
        r.blpop(["empty"], timeout=0)


@pytest.mark.asyncio
async def test_snapshot_reads_live_keys_as_plain_python(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis()
    await r.hset("export:1", mapping={"state": "done", "n": 3})
    await r.set("export:2", "x", ex=1)
    await r.rpush("export:list", "a", "b")
    await r.sadd("export:set", "m")
    await r.zadd("export:z", {"m": 1.5})
    await r.set("other", "y")
    assert adapters.redis.snapshot(bg_redis, "export:*") == {
        "export:1": {"state": "done", "n": "3"}, "export:2": "x", "export:list": ["a", "b"],
        "export:set": {"m"}, "export:z": {"m": 1.5}}
    await asyncio.sleep(2)
    assert "export:2" not in adapters.redis.snapshot(bg_redis, "export:*")
    await aredis.Redis(host="other").set("z", 1)
    with pytest.raises(ValueError, match="url="):
        adapters.redis.snapshot(bg_redis)
    assert adapters.redis.snapshot(bg_redis, url="redis://other:6379") == {"z": "1"}


def test_snapshot_outside_install_names_the_fix() -> None:
    with pytest.raises(bg.BgworkError, match="install"):
        adapters.redis.snapshot(bg.Simulation(seed=1))


def test_install_refuses_a_non_simulation() -> None:
    with pytest.raises(TypeError, match="Simulation"), adapters.redis.install("sim"):  # type: ignore[arg-type]
        pass


def test_same_seed_same_history(bgwork: bg.Simulation) -> None:
    def run(seed: int) -> str:
        sim = bg.Simulation(seed=seed)

        async def main() -> None:
            r = aredis.Redis()

            async def worker(n: int) -> None:
                for i in range(3):
                    await r.incr("n")
                    await r.set(f"w{n}", i, px=500)
                    await asyncio.sleep(0.1 * n)

            await asyncio.gather(*(worker(n) for n in range(3)))

        with adapters.redis.install(sim):
            sim.run(main())
        return sim.history.digest()

    assert run(3) == run(3)


def test_the_fixture_runs_in_a_user_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest
        import redis.asyncio as aredis
        from pytest_bgwork import adapters

        @pytest.mark.asyncio
        async def test_lock_expires(bg_redis):
            r = aredis.Redis.from_url("redis://localhost:6379")
            assert await r.set("lock", 1, nx=True, ex=30)
            await asyncio.sleep(31)
            assert await r.set("lock", 2, nx=True, ex=30)

        @pytest.mark.asyncio
        async def test_status_sticks(bg_redis):
            r = aredis.Redis(decode_responses=True)
            bg_redis.faults.fail("redis.hset", on_call=2)
            await r.hset("export:1", "state", "running")
            try:
                await r.hset("export:1", "state", "done")
            except Exception:
                pass
            assert adapters.redis.snapshot(bg_redis, "export:*") == {"export:1": {"state": "done"}}
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError*'running'*", "*bgwork timeline*",
                                 "*redis.hset*[[]fail[]] key=export:1 error=ConnectionError: injected fault"])


@pytest.mark.asyncio
async def test_wait_for_replicas_returns_0_after_its_virtual_timeout(bg_redis: bg.Simulation) -> None:
    r = aredis.Redis()
    assert await r.wait(0, 0) == 0  # no replica asked for: at once
    assert await r.wait(1, 3000) == 0  # the simulated server has none: after 3 virtual s
    assert asyncio.get_running_loop().time() == pytest.approx(3)


def test_tls_unix_and_resp3_urls_reach_their_own_servers(bgwork: bg.Simulation) -> None:
    with adapters.redis.install(bgwork) as backend:
        redis.Redis.from_url("rediss://secure:6380/0", ssl_cert_reqs="none").set("k", "tls")
        redis.Redis.from_url("unix:///run/redis.sock").set("k", "unix")
        assert redis.Redis(protocol=3, decode_responses=True).hgetall("nothing") == {}
        assert redis.Redis.from_url("rediss://secure:6380/0").get("k") == b"tls"
    assert sorted(backend.servers) == ["localhost:6379", "secure:6380", "unix:/run/redis.sock"]


def test_nothing_of_redis_or_arq_loads_until_asked_for() -> None:
    import subprocess
    import sys

    code = ("import sys, asyncio, pytest_bgwork.plugin, pytest_bgwork as bg\n"
            "from pytest_bgwork import adapters\n"
            "bg.Simulation(seed=0).run(asyncio.sleep(1))\n"
            "print(sorted(m for m in ('redis', 'fakeredis', 'lupa', 'arq') if m in sys.modules))\n"
            "adapters.arq\n"
            "print(sorted(m for m in ('redis', 'fakeredis', 'arq') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["[]", "['arq',", "'fakeredis',", "'redis']"]


def test_a_sync_task_body_blocks_on_the_loop_until_fed_or_timed_out() -> None:
    """A sync dramatiq actor's BLPOP waits on virtual time while the loop runs the others."""
    import dramatiq
    import dramatiq.broker

    from pytest_bgwork.adapters.dramatiq import SimBroker

    previous = dramatiq.broker.global_broker
    dramatiq.set_broker(SimBroker())
    got: list[tuple[object, float]] = []
    try:
        @dramatiq.actor(max_retries=0)
        def consume() -> None:
            r = redis.Redis(decode_responses=True)
            got.append((r.blpop(["jobs"], timeout=10), bg.current().clock.monotonic()))
            got.append((r.blpop(["jobs"], timeout=3), bg.current().clock.monotonic()))

        sim = bg.Simulation(seed=1)

        async def main() -> None:
            consume.send()
            await asyncio.sleep(2)
            await aredis.Redis().rpush("jobs", "j1")  # the blocked body is fed at 2 s
            await sim.run_until_idle()

        with adapters.redis.install(sim):
            sim.run(main())
    finally:
        dramatiq.broker.global_broker = previous
    assert got == [(("jobs", "j1"), 2.0), (None, 5.0)]


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"pattern": ""}, ValueError, r"assert_status_terminal\(pattern=...\) expects a key glob"),
    ({"field": ""}, ValueError, r"assert_status_terminal\(field=...\) expects a field name"),
    ({"terminal": "done"}, TypeError, r"expects a set of values, e.g. \{'done'\}"),
    ({"terminal": ()}, ValueError, "must name at least one value"),
])
def test_the_redis_status_check_refuses_bad_arguments_as_the_kv_one_does(
        bg_redis: bg.Simulation, kwargs: dict[str, object], error: type[Exception], message: str) -> None:
    args: dict[str, object] = {"pattern": "export:*", **kwargs}
    with pytest.raises(error, match=message):
        adapters.redis.assert_status_terminal(bg_redis, **args)  # type: ignore[arg-type]
    with pytest.raises(error, match=message.replace("pattern", "ns").replace("a key glob", "a KV namespace")):
        bg.assert_status_terminal(bg_redis, **{("ns" if k == "pattern" else k): v  # type: ignore[arg-type]
                                               for k, v in args.items()})


def test_arq_and_rq_installs_patch_once_and_restore_on_the_last() -> None:
    import uuid

    import arq.connections
    import arq.worker
    import rq.job

    original = arq.worker.Worker.__init__
    sim = bg.Simulation(seed=1)
    try:
        with adapters.rq.install(sim), adapters.arq.install(sim):
            with adapters.arq.install(sim), adapters.rq.install(sim):
                patched = arq.worker.Worker.__init__
                assert patched is not original and rq.job.uuid4 is not uuid.uuid4
            assert arq.worker.Worker.__init__ is patched  # the outer installs still hold
            assert rq.job.uuid4 is not uuid.uuid4
        assert arq.worker.Worker.__init__ is original
        assert (rq.job.uuid4, arq.connections.uuid4) == (uuid.uuid4, uuid.uuid4)  # type: ignore[attr-defined]
        for adapter in (adapters.arq, adapters.rq):
            name = adapter.__name__.rsplit(".", 1)[1]
            with pytest.raises(TypeError, match=rf"adapters.{name}.install\(sim\): sim must be a "
                                                r"pytest_bgwork Simulation"), \
                    adapter.install("not a sim"):  # type: ignore[arg-type]
                pass
    finally:
        sim.close()
