"""Virtual time: N sequential sleeps and N concurrent sleepers, against looptime.

Run: ``python bench/bench_loop.py [N]``. Prints seconds, µs per sleep and how many
times faster pytest-bgwork is than each alternative (ratio > 1 means faster).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import looptime
from _common import best_of, table

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


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    for label, fn in (("sequential sleeps", sequential), ("concurrent sleepers", concurrent)):
        ours = best_of(on_bgwork(fn, n))
        table(
            f"{label}: N={n}",
            ("pytest-bgwork Simulation.run", ours),
            [
                ("pytest-bgwork VirtualEventLoop (no Simulation)", best_of(on_raw_loop(fn, n))),
                ("looptime (defaults, noop_cycles=42)", best_of(on_looptime(fn, n))),
                ("looptime (noop_cycles=0)", best_of(on_looptime(fn, n, noop_cycles=0))),
            ],
            n,
        )


if __name__ == "__main__":
    main()
