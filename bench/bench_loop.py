"""Virtual time: N sequential sleeps and N concurrent sleepers, against looptime.

Run: ``python bench/bench_loop.py [N] [ROUNDS]``. Prints CPU seconds, µs per sleep and
how many times faster pytest-bgwork is than each alternative (ratio > 1 means faster).
Each figure is the best of ROUNDS (default 5) rounds that interleave the tools, in CPU
time (``time.process_time``): a shared machine's load slows one round of each tool,
not one tool. Aim: sequential sleeps >= 3x looptime with ``noop_cycles=0``.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import looptime
from _common import interleaved, table

import pytest_bgwork as bg
from pytest_bgwork.core.loop import VirtualEventLoop


async def sequential(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(1)


async def concurrent(n: int) -> None:
    async def sleeper(i: int) -> None:
        await asyncio.sleep(1 + (i * 7919) % 1000)

    await asyncio.gather(*(sleeper(i) for i in range(n)))


def on_bgwork(main: Callable[[int], Coroutine[Any, Any, None]], n: int) -> Callable[[], None]:
    def go() -> None:
        with bg.Simulation(seed=1) as sim:
            sim.run(main(n))
    return go


def on_raw_loop(main: Callable[[int], Coroutine[Any, Any, None]], n: int) -> Callable[[], None]:
    def go() -> None:
        loop = VirtualEventLoop()
        try:
            loop.run_until_complete(main(n))
        finally:
            loop.close()
    return go


def on_looptime(main: Callable[[int], Coroutine[Any, Any, None]], n: int,
                **kwargs: Any) -> Callable[[], None]:
    def go() -> None:
        loop = looptime.new_event_loop(start=0, **kwargs)
        try:
            loop.run_until_complete(main(n))
        finally:
            loop.close()
    return go


AIM_SEQUENTIAL = 3.0


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"virtual sleeps · CPU time, best of {rounds} interleaved rounds · shared 2-core machine")
    for label, fn in (("sequential sleeps", sequential), ("concurrent sleepers", concurrent)):
        best = interleaved({
            "pytest-bgwork Simulation.run": on_bgwork(fn, n),
            "pytest-bgwork VirtualEventLoop (no Simulation)": on_raw_loop(fn, n),
            "looptime (defaults, noop_cycles=42)": on_looptime(fn, n),
            "looptime (noop_cycles=0)": on_looptime(fn, n, noop_cycles=0),
        }, rounds)
        names = list(best)
        table(f"{label}: N={n}", (names[0], best[names[0]]), [(k, best[k]) for k in names[1:]], n)
        if fn is sequential:
            ratio = best["looptime (noop_cycles=0)"] / best[names[0]]
            print(f"  aim: >= {AIM_SEQUENTIAL:g}x looptime noop_cycles=0: {ratio:.1f}x, "
                  f"{'met' if ratio >= AIM_SEQUENTIAL else 'MISSED'}")


if __name__ == "__main__":
    main()
