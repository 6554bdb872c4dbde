"""KV throughput: N set+get pairs on ``sim.kv`` against fakeredis's async client.

Run ``python bench/bench_kv.py [N]``. Both sides store and read back a small JSON
status record: ``sim.kv`` serialises it itself (a JSON copy, a history event and a
fault-point check per call); fakeredis gets the JSON string from ``json.dumps`` and
the reader parses it with ``json.loads``, as an app using Redis would. Each figure
is the best of a few runs (CPU time, so a shared machine disturbs it less), timed
inside the loop: the one-off cost of starting a simulation (freezegun's module scan)
is left out.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable

import fakeredis

import pytest_bgwork as bg

REPEATS = 3
_cpu = time.process_time  # bound before any freezegun patching
VALUE = {"kind": "running", "progress": 42, "steps": ["fetch", "render"]}


async def _set_get_pairs(sim: bg.Simulation, n: int) -> float:
    """``n`` set+get pairs of a status record on ``sim.kv``; CPU seconds they took."""
    kv = sim.kv
    start = _cpu()
    for i in range(n):
        key = f"job-{i % 1000}"
        await kv.set("report-status", key, VALUE)
        r = await kv.get("report-status", key)
        assert r.data["kind"] == "running"
    return _cpu() - start


def bench_bgwork(n: int) -> float:
    sim = bg.Simulation(seed=1)

    elapsed = sim.run(_set_get_pairs(sim, n))
    assert len(sim.history) == 2 * n
    sim.close()
    return elapsed


def bench_bgwork_no_history(n: int) -> float:
    """The same, with the KV's history recording stubbed out (how much it costs)."""
    sim = bg.Simulation(seed=1)
    kv = sim.kv
    kv._record = lambda *a, **k: None  # type: ignore[assignment,method-assign]

    elapsed = sim.run(_set_get_pairs(sim, n))
    sim.close()
    return elapsed


def bench_fakeredis(n: int) -> float:
    async def main() -> float:
        r = fakeredis.FakeAsyncRedis()
        start = _cpu()
        for i in range(n):
            key = f"report-status:job-{i % 1000}"
            await r.set(key, json.dumps(VALUE))
            raw = await r.get(key)
            assert raw is not None and json.loads(raw)["kind"] == "running"
        elapsed = _cpu() - start
        await r.aclose()
        return elapsed

    return asyncio.run(main())


def best(fn: Callable[[int], float], n: int) -> float:
    return min(fn(n) for _ in range(REPEATS))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rows = [
        ("fakeredis FakeAsyncRedis", best(bench_fakeredis, max(n // 10, 1)) * 10),
        ("sim.kv", best(bench_bgwork, n)),
        ("sim.kv, history stubbed", best(bench_bgwork_no_history, n)),
    ]
    base = rows[0][1]
    print(f"{n} set+get pairs of a JSON status record (fakeredis timed on {max(n // 10, 1)} "
          "pairs, scaled)")
    print(f"{'implementation':<28}{'seconds':>10}{'us/pair':>10}{'vs fakeredis':>14}")
    for name, seconds in rows:
        print(f"{name:<28}{seconds:>10.3f}{seconds / n * 1e6:>10.1f}{base / seconds:>13.1f}x")
    print("aim: >= 40x fakeredis and <= 2.5 us per pair (issue 16)")


if __name__ == "__main__":
    main()
