"""KV throughput: N set+get pairs on ``sim.kv`` against fakeredis's async client.

Run ``python bench/bench_kv.py [N] [ROUNDS] [--against DIR ...]`` (``DIR``: a checkout whose
``pytest_bgwork`` runs the same ``sim.kv`` pairs in a fresh process each round, an anchor).
Both sides store and read back a small JSON status record: ``sim.kv`` serialises it itself
(a JSON copy, a history event, a fault-point check and a suspension point per call); fakeredis gets the JSON string from
``json.dumps`` and the reader parses it with ``json.loads``, as an app using Redis would.

Each figure is CPU time (``time.process_time``), the best of ``ROUNDS`` interleaved
rounds (each round runs every entry once, so load from elsewhere on a shared machine
slows one round of each rather than all rounds of one), timed inside the loop: the
one-off cost of starting a simulation (freezegun's module scan) is left out. After a
warm-up the heap is frozen (``gc.freeze()``) for every entry alike, as ``bench_queues.py``
does, so full collections do not rescan the modules loaded before the run, and an untimed
``gc.collect()`` runs before each entry. fakeredis is timed on N/10 pairs and scaled.
The stubbed rows are upper bounds, not products: they show what the history (its rows
go to a list nobody reads; the write log still keeps each ``set``'s row, which it shares
with the history) and the fault point with its suspension check cost, and the floor row
what the loop and the JSON copies alone cost (no KV at all): what bounds a miss.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import fakeredis

import pytest_bgwork as bg
from pytest_bgwork.core.loop import VirtualEventLoop

_cpu = time.process_time  # bound before any freezegun patching
VALUE = {"kind": "running", "progress": 42, "steps": ["fetch", "render"]}
#: issue 16's aims
AIM_US = 2.5
AIM_RATIO = 40.0


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


def _stubbed(n: int, *, history: bool = False, faults: bool = False,
             always_yield: bool = False) -> float:
    """The same pairs with parts stubbed out, to measure what each costs."""
    sim = bg.Simulation(seed=1)
    kv: Any = sim.kv
    if history:  # no event recorded: the rows go to a list nobody reads
        sim.history._append = [].append  # type: ignore[assignment]
    if faults:  # no fault point, no suspension point: the call goes straight through
        kv._faults = _NoFaults()
    rule = VirtualEventLoop._yield_changes_nothing
    if always_yield:  # every call yields to the loop (no skip of a yield that changes nothing)
        VirtualEventLoop._yield_changes_nothing = lambda self, frame: False  # type: ignore[method-assign]
    try:
        elapsed = sim.run(_set_get_pairs(sim, n))
    finally:
        VirtualEventLoop._yield_changes_nothing = rule  # type: ignore[method-assign]
        sim.close()
    return elapsed


class _NoFaults:
    """A fault injector that never fires and never yields (an upper bound only)."""

    def _enter(self, point: str, queue: str | None = None, *, call: bool = False) -> None:
        return None

    def _leave(self, point: str) -> None:
        return None


class _JsonOnly:
    """Only what the KV contract requires of set+get: a JSON copy in, a fresh copy out
    (with the copy rule ``sim.kv`` uses, ``pytest_bgwork.core.jsoncopy``)."""

    def __init__(self) -> None:
        from pytest_bgwork.core.jsoncopy import dumps, loads  # here: an anchor may predate it

        self._data: dict[str, str] = {}
        self._encode, self._decode = dumps, loads

    async def set(self, ns: str, key: str, value: Any) -> bool:
        self._data[key] = self._encode(value)
        return True

    async def get(self, ns: str, key: str) -> Any:
        return _Result(self._decode(self._data[key]))


class _Result:
    __slots__ = ("data",)

    def __init__(self, data: Any) -> None:
        self.data = data


def bench_floor(n: int) -> float:
    """The same loop on ``_JsonOnly``: no history, faults, checks or suspension at all."""
    sim = bg.Simulation(seed=1)
    fake: Any = _JsonOnly()
    shell: Any = type("Sim", (), {"kv": fake})()
    elapsed = sim.run(_set_get_pairs(shell, n))
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


_ANCHOR = ("import gc, sys; sys.path.insert(0, sys.argv[1]); import bench_kv; bench_kv.bench_bgwork(1000); "
           "gc.collect(); gc.freeze(); print(bench_kv.bench_bgwork(int(sys.argv[2])))")


def anchor_cpu(checkout: str, n: int) -> float:
    """CPU seconds of ``bench_bgwork(n)`` with ``pytest_bgwork`` imported from ``checkout``
    (a fresh process, timed by its own clock, so its start-up is not counted)."""
    out = subprocess.run([sys.executable, "-c", _ANCHOR, os.path.dirname(os.path.abspath(__file__)),
                          str(n)], env={**os.environ, "PYTHONPATH": checkout}, cwd=checkout,
                         check=True, capture_output=True, text=True)
    return float(out.stdout)


def interleaved_best(runs: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Best of ``rounds`` of each run's own CPU figure, every round running each entry once
    (after an untimed ``gc.collect()``, so no run pays for another's garbage)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            best[name] = min(best[name], run())
    return best


def main() -> None:
    argv = sys.argv[1:]
    anchors: list[str] = []
    while "--against" in argv:  # an anchor: a checkout whose pytest_bgwork runs sim.kv each round
        i = argv.index("--against")
        anchors.append(argv[i + 1])
        del argv[i:i + 2]
    n = int(argv[0]) if argv else 20_000
    rounds = int(argv[1]) if len(argv) > 1 else 5
    small = max(n // 10, 1)
    anchor: dict[str, Callable[[], float]] = {
        f"  the same at {os.path.basename(d.rstrip('/'))}": lambda d=d: anchor_cpu(d, n)  # type: ignore[misc]
        for d in anchors
    }
    runs: dict[str, Callable[[], float]] = {
        "fakeredis FakeAsyncRedis": lambda: bench_fakeredis(small) * n / small,
        "sim.kv": lambda: bench_bgwork(n),
        **anchor,
        "  every call yields (no skip)": lambda: _stubbed(n, always_yield=True),
        "  history stubbed": lambda: _stubbed(n, history=True),
        "  history + faults stubbed": lambda: _stubbed(n, history=True, faults=True),
        "  floor: JSON copy in+out only": lambda: bench_floor(n),
    }
    bench_bgwork(1000)  # warm up: lazy imports, first-call caches
    bench_fakeredis(100)
    gc.collect()
    gc.freeze()  # as bench_queues: full collections do not rescan what the imports loaded
    best = interleaved_best(runs, rounds)
    base = best["fakeredis FakeAsyncRedis"]
    print(f"{n} set+get pairs of a JSON status record, CPU time, best of {rounds} interleaved "
          f"rounds (fakeredis timed on {small} pairs, scaled), import heap frozen, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'implementation':<34}{'CPU s':>9}{'us/pair':>10}{'vs fakeredis':>14}")
    for name, seconds in best.items():
        print(f"{name:<34}{seconds:>9.3f}{seconds / n * 1e6:>10.2f}{base / seconds:>13.1f}x")
    ours = best["sim.kv"]
    us, ratio = ours / n * 1e6, base / ours
    print(f"aim (issue 16): <= {AIM_US} us per pair and >= {AIM_RATIO:g}x fakeredis; measured "
          f"{us:.2f} us ({'met' if us <= AIM_US else 'missed'}), {ratio:.1f}x "
          f"({'met' if ratio >= AIM_RATIO else 'missed'})")


if __name__ == "__main__":
    main()
