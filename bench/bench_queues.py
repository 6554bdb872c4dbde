"""Queue benchmark: pytest-bgwork against dramatiq and taskiq, redelivery, memory, growth.

Run ``python bench/bench_queues.py`` (``--jobs N``, ``--rounds R``, ``--growth 10000,100000``).
Every figure is CPU time (``time.process_time``: all threads of the process, so dramatiq's
worker threads count), the best of ``--rounds`` interleaved rounds (each round runs every
system once, so a burst of load from elsewhere on the machine slows one round of each):

1. publish -> handler -> ack for N jobs: ``sim.queues`` with a routed handler (publish N,
   ``run_until_idle``), dramatiq's ``StubBroker`` with a ``Worker`` (send N, ``broker.join``
   + ``worker.join``), taskiq's ``InMemoryBroker`` (``kiq`` N, ``broker.wait_all``). Each
   handler counts its call; each run checks all N ran.
2. 1000 jobs whose first attempt hangs (never acks) and whose redelivery after a 120 s
   visibility timeout acks: CPU time against the 120 s a real-time queue needs.
3. Bytes per message (``tracemalloc``, after a full collection): N messages published to a
   queue without a route (queued, not yet delivered), and N whose handler waits (in flight:
   its task, coroutine, delivery, attempt and context alive). History events included.
4. Growth: N = 10k, 100k, 1M jobs, each size in a fresh process: published and drained by a
   routed handler, and published as a backlog first, then drained by ``receive``/``ack``;
   CPU time and peak RSS over the process's start, per message.
5. Upper bounds in the same rounds: run 1 with ``History.record``/``add`` stubbed to nothing,
   and also the fault protocol's entry (``FaultInjector._enter``) reduced to the suspension
   rule, nothing counted (stubs, not behaviour: what the rest costs).

After the imports the heap is frozen (``gc.freeze()``) for every system alike, so full
garbage collections do not rescan the modules loaded before the run; ``gc.collect()`` runs
between measured runs, untimed. Aims (issue 16): <= 8 us CPU per job, >= 5x dramatiq,
>= 3x taskiq, redelivery well under 1 s, <= 1 KB per queued message, linear growth.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import platform
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest_bgwork as bg

AIM_US_PER_JOB = 8.0
AIM_DRAMATIQ = 5.0
AIM_TASKIQ = 3.0
AIM_REDELIVERY_S = 1.0
AIM_BYTES = 1024
VISIBILITY = 120.0
#: Bound at import, before any simulation patches the clocks.
_CPU = time.process_time


def best_cpu(rounds: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best CPU seconds of each run over ``rounds`` interleaved rounds (``_common.interleaved``
    plus an untimed ``gc.collect()`` before each run, so no run pays for another's garbage)."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            gc.collect()
            started = _CPU()
            run()
            best[name] = min(best[name], _CPU() - started)
    return best


# -- pytest-bgwork ----------------------------------------------------------------------------
#: Jobs between 1 ms pauses in the growth runs: the loop refuses more than ``BUSY_LIMIT``
#: (100,000) iterations at one virtual instant, so a producer of 1M jobs lets time move.
PACE = 10_000


async def _publish_and_drain(sim: bg.Simulation, n: int, pace: int = 0) -> None:
    for i in range(n):
        await sim.queues.publish("jobs", {"job": i})
        if pace and i % pace == pace - 1:
            await asyncio.sleep(0.001)
    await sim.run_until_idle()


def bgwork_throughput(n: int, pace: int = 0) -> None:
    """Publish ``n`` jobs to a routed handler and run until idle (``pace``: see ``PACE``)."""
    sim = bg.Simulation(seed=1)
    count = 0

    async def handler(payload: Any, delivery: Any) -> None:
        nonlocal count
        count += 1

    sim.queues.create("jobs")
    sim.queues.route("jobs", handler)
    with sim:
        sim.run(_publish_and_drain(sim, n, pace))
        stats = sim.queues.stats("jobs")
    if count != n or stats["acked"] != n:
        raise SystemExit(f"bgwork: {count} handled / {stats['acked']} acked of {n}")


def bgwork_redelivery(n: int) -> float:
    """``n`` jobs redelivered once after the visibility timeout; the virtual seconds it took."""
    sim = bg.Simulation(seed=1)
    acked = 0

    async def handler(payload: Any, delivery: Any) -> None:
        nonlocal acked
        if delivery.attempt == 1:
            await asyncio.get_running_loop().create_future()  # hangs, never acks
        acked += 1

    sim.queues.create("jobs", visibility_timeout=VISIBILITY)
    sim.queues.route("jobs", handler)
    with sim:
        sim.run(_publish_and_drain(sim, n))
        virtual = sim.clock.monotonic()
        stats = sim.queues.stats("jobs")
    if acked != n or stats["redelivered"] != n or stats["acked"] != n:
        raise SystemExit(f"redelivery: {acked} acked, {stats['redelivered']} redelivered of {n}")
    return virtual


def bgwork_backlog(n: int) -> None:
    """Publish ``n`` jobs to a queue without a route, then drain them with receive/ack."""
    sim = bg.Simulation(seed=1)
    sim.queues.create("jobs")

    async def main() -> int:
        for i in range(n):
            await sim.queues.publish("jobs", {"job": i})
            if i % PACE == PACE - 1:
                await asyncio.sleep(0.001)
        done = 0
        while (d := await sim.queues.receive("jobs")) is not None:
            await d.ack()
            done += 1
            if done % PACE == 0:
                await asyncio.sleep(0.001)
        return done

    with sim:
        done = sim.run(main())
    if done != n:
        raise SystemExit(f"backlog: {done} of {n} drained")


def bytes_per_message(n: int, in_flight: bool) -> tuple[float, dict[str, float]]:
    """Traced bytes kept per message: ``n`` queued (no route) or in flight (handler waits).

    Also the share by the file that allocated it (history, delivery, asyncio, ...).
    """
    sim = bg.Simulation(seed=1)
    sim.queues.create("jobs", visibility_timeout=VISIBILITY)
    if in_flight:
        async def handler(payload: Any, delivery: Any) -> None:
            await asyncio.get_running_loop().create_future()  # in flight until the end

        sim.queues.route("jobs", handler)

    async def fill(count: int) -> None:
        for i in range(count):
            await sim.queues.publish("jobs", {"job": i})
        for _ in range(3):
            await asyncio.sleep(0)  # the last attempts start

    with sim:
        sim.run(fill(1))  # warm-up: the simulation's own one-time structures
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        sim.run(fill(n))
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = sim.queues.stats("jobs")
        if stats["in_flight" if in_flight else "pending"] != n + 1:
            raise SystemExit(f"memory: {stats} after {n + 1} publishes")
        if in_flight:
            for task in sim.loop.live_tasks():
                task.cancel()
            sim.run(asyncio.sleep(0))
    shares: dict[str, float] = {}
    total = 0
    for diff in after.compare_to(before, "filename"):
        where = os.path.basename(diff.traceback[0].filename)
        shares[where] = shares.get(where, 0) + diff.size_diff / n
        total += diff.size_diff
    return total / n, shares


@contextmanager
def stubbed(history: bool, faults: bool) -> Iterator[None]:
    """Upper bounds, not behaviour: ``History.record`` and ``History.add`` appending nothing,
    and/or ``FaultInjector._enter`` only applying the suspension rule, neither counting nor
    looking at rules (what the rest of the path costs if
    recording events, or the fault protocol, cost nothing). On a checkout without
    ``add`` or ``_enter``/``_leave`` only what it has is stubbed."""
    from pytest_bgwork.core import faults as faults_mod
    from pytest_bgwork.core.faults import FaultInjector
    from pytest_bgwork.core.history import History

    names = [("record", History), ("add", History), ("_enter", FaultInjector)]
    real = {name: getattr(owner, name) for name, owner in names if hasattr(owner, name)}

    def enter(self: Any, point: str, queue: str | None = None, *, call: bool = False) -> Any:
        loop = self._loop
        if not call or (loop is not None and loop._yield_changes_nothing(sys._getframe(2))):
            return None
        return faults_mod._yield()

    if history:
        History.record = lambda self, *args, **kwargs: None  # type: ignore[assignment,method-assign]
        if "add" in real:
            History.add = lambda self, *args: None  # type: ignore[method-assign]
    if faults and "_enter" in real:  # a checkout with the one fault protocol (``_enter``/``_leave``)
        FaultInjector._enter = enter  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, owner in names:
            if name in real:
                setattr(owner, name, real[name])


def bgwork_bound(n: int, history: bool, faults: bool) -> None:
    with stubbed(history, faults):
        bgwork_throughput(n)


# -- dramatiq -----------------------------------------------------------------------------------
def dramatiq_throughput(n: int, threads: int) -> None:
    import dramatiq
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    broker.emit_after("process_boot")
    dramatiq.set_broker(broker)
    count = 0

    @dramatiq.actor(broker=broker, max_retries=0)
    def job(i: int) -> None:
        nonlocal count
        count += 1

    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=10)
    worker.start()
    try:
        for i in range(n):
            job.send(i)
        broker.join(job.queue_name)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    if count != n:
        raise SystemExit(f"dramatiq: {count} of {n} ran")


# -- taskiq -------------------------------------------------------------------------------------
def taskiq_throughput(n: int) -> None:
    from taskiq import InMemoryBroker

    broker = InMemoryBroker()
    count = 0

    @broker.task
    async def job(i: int) -> None:
        nonlocal count
        count += 1

    async def main() -> None:
        await broker.startup()
        for i in range(n):
            await job.kiq(i)
        await broker.wait_all()
        await broker.shutdown()

    asyncio.run(main())
    if count != n:
        raise SystemExit(f"taskiq: {count} of {n} ran")


# -- an anchor: the same run on another checkout ----------------------------------------------
_ANCHOR = r"""
import gc, sys, time
sys.path.insert(0, sys.argv[1])
import bench_queues
bench_queues.bgwork_throughput(100)
gc.collect()
gc.freeze()
started = time.process_time()
bench_queues.bgwork_throughput(int(sys.argv[2]))
print(time.process_time() - started)
"""


def anchor_cpu(checkout: str, n: int) -> float:
    """CPU seconds of ``bgwork_throughput(n)`` with ``pytest_bgwork`` imported from ``checkout``
    (a fresh process; its own clock, so start-up is not counted)."""
    env = {**os.environ, "PYTHONPATH": checkout}
    out = subprocess.run([sys.executable, "-c", _ANCHOR, os.path.dirname(os.path.abspath(__file__)),
                          str(n)], env=env, cwd=checkout, check=True, capture_output=True, text=True)
    return float(out.stdout)


# -- growth: one size per fresh process -------------------------------------------------------
def _growth_child(kind: str, n: int) -> None:
    """In a fresh process: CPU seconds and peak RSS growth (bytes) of one run, on one line."""
    bgwork_throughput(10)  # warm up: lazy imports
    gc.collect()
    gc.freeze()
    with open("/proc/self/clear_refs", "w") as f:  # Linux: restart the peak (VmHWM) from now
        f.write("5")
    base = _rss("VmRSS")
    started = _CPU()
    if kind == "routed":
        bgwork_throughput(n, PACE)
    else:
        bgwork_backlog(n)
    cpu = _CPU() - started
    print(f"{cpu} {_rss('VmHWM') - base}")


def _rss(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no {field} in /proc/self/status")


def growth(sizes: list[int]) -> list[tuple[str, int, float, int]]:
    rows = []
    for kind in ("routed", "backlog"):
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--growth-child", kind, str(n)],
                                 check=True, capture_output=True, text=True).stdout.split()
            rows.append((kind, n, float(out[0]), int(out[1])))
    return rows


# -- report -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per throughput run")
    parser.add_argument("--redeliver", type=int, default=1_000, help="jobs in the redelivery run")
    parser.add_argument("--rounds", type=int, default=5, help="runs per figure (best is kept)")
    parser.add_argument("--memory", type=int, default=10_000, help="messages per memory run")
    parser.add_argument("--growth", default="10000,100000,1000000",
                        help="sizes of the growth runs, comma-separated ('' skips them)")
    parser.add_argument("--against", metavar="DIR", help="an anchor: a checkout whose "
                        "pytest_bgwork runs the same throughput in each round (e.g. the last "
                        "release: git archive v0.2.0 pytest_bgwork | tar -x -C DIR)")
    parser.add_argument("--growth-child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.growth_child:
        _growth_child(args.growth_child[0], int(args.growth_child[1]))
        return 0
    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    n, rounds = args.jobs, args.rounds
    import dramatiq.brokers.stub  # noqa: F401 - import everything before freezing the heap
    import taskiq  # noqa: F401

    bgwork_throughput(100)  # warm up: lazy imports, first-call caches
    taskiq_throughput(10)
    gc.collect()
    gc.freeze()

    anchor: dict[str, Callable[[], object]] = {}
    anchor_best = [float("inf")]
    if args.against:
        def run_anchor() -> None:
            anchor_best[0] = min(anchor_best[0], anchor_cpu(args.against, n))

        anchor["anchor"] = run_anchor
    best = best_cpu(rounds, {
        **anchor,
        "bgwork": lambda: bgwork_throughput(n),
        "dramatiq1": lambda: dramatiq_throughput(n, 1),
        "dramatiq8": lambda: dramatiq_throughput(n, 8),
        "taskiq": lambda: taskiq_throughput(n),
        "redelivery": lambda: bgwork_redelivery(args.redeliver),
        "no history": lambda: bgwork_bound(n, True, False),
        "no history, no fault count": lambda: bgwork_bound(n, True, True),
    })
    ours = best["bgwork"]
    dq = {1: best["dramatiq1"], 8: best["dramatiq8"]}
    dq_threads = min(dq, key=dq.__getitem__)
    misses = []

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"queue benchmark · Python {platform.python_version()} · {n} jobs · CPU time "
          f"(process_time, all threads) · best of {rounds} interleaved rounds · import heap frozen"
          f" · load average {load} on {os.cpu_count()} CPUs")
    print(f"{'system':<46}{'CPU s':>8}{'µs/job':>9}{'bgwork is':>11}{'aim':>7}  met")
    us = ours / n * 1e6
    met = us <= AIM_US_PER_JOB
    if not met:
        misses.append(f"{us:.1f} µs/job, aim <= {AIM_US_PER_JOB:g}")
    print(f"{'pytest-bgwork sim.queues (routed handler)':<46}{ours:>8.3f}{us:>9.2f}{'':>11}"
          f"{'<=' + format(AIM_US_PER_JOB, 'g'):>7}  {'yes' if met else 'NO'}")
    if args.against:
        cpu = anchor_best[0]
        print(f"{'  the same at ' + os.path.basename(args.against.rstrip('/')):<46}{cpu:>8.3f}"
              f"{cpu / n * 1e6:>9.2f}{cpu / ours:>10.2f}x")
    for name, cpu, aim in ((f"dramatiq StubBroker + Worker ({dq_threads} thread(s))", dq[dq_threads],
                            AIM_DRAMATIQ), ("taskiq InMemoryBroker", best["taskiq"], AIM_TASKIQ)):
        ratio = cpu / ours
        met = ratio >= aim
        if not met:
            misses.append(f"{name}: {ratio:.1f}x, aim {aim:g}x")
        print(f"{name:<46}{cpu:>8.3f}{cpu / n * 1e6:>9.2f}{ratio:>10.1f}x{aim:>6g}x  "
              f"{'yes' if met else 'NO'}")
    other = 9 - dq_threads
    print(f"  (dramatiq with {other} thread(s): {dq[other]:.3f} s; the faster setting is compared)")
    print("  upper bounds, same run (stubs, not behaviour): bgwork with")
    for name, text in (("no history", "History.record/add a no-op"),
                       ("no history, no fault count", "... and faults: suspension rule only")):
        cpu = best[name]
        print(f"    {text:<42}{cpu:>8.3f}{cpu / n * 1e6:>9.2f}"
              f"   dramatiq {dq[dq_threads] / cpu:.1f}x, taskiq {best['taskiq'] / cpu:.1f}x")

    virtual = bgwork_redelivery(args.redeliver)
    redo = best["redelivery"]
    met = redo < AIM_REDELIVERY_S
    if not met:
        misses.append(f"redelivery run: {redo:.3f} s, aim < {AIM_REDELIVERY_S:g} s")
    print(f"\nredelivery: {args.redeliver} jobs, first attempt hangs, redelivered after a "
          f"{VISIBILITY:g} s visibility timeout")
    print(f"  virtual time {virtual:.0f} s (what a real-time queue waits) · CPU {redo:.3f} s · "
          f"{virtual / redo:,.0f}x faster than real time · aim < {AIM_REDELIVERY_S:g} s: "
          f"{'yes' if met else 'NO'}")

    print(f"\nmemory per message ({args.memory} messages, tracemalloc, history events included)")
    for label, flight in (("queued (published, not yet delivered)", False),
                          ("in flight (handler running)", True)):
        per, shares = bytes_per_message(args.memory, flight)
        met = per <= AIM_BYTES
        if not met:
            misses.append(f"{label}: {per:,.0f} B/message, aim <= {AIM_BYTES}")
        top = sorted(shares.items(), key=lambda kv: -kv[1])[:4]
        where = ", ".join(f"{name} {size:,.0f}" for name, size in top)
        print(f"  {label:<40}{per:>7,.0f} B   aim <= {AIM_BYTES}: {'yes' if met else 'NO'}   "
              f"({where})")

    sizes = [int(s) for s in args.growth.split(",") if s]
    if sizes:
        print("\ngrowth (each run in a fresh process; peak RSS over the process's start)")
        print(f"  {'run':<34}{'messages':>10}{'CPU s':>9}{'µs/msg':>9}{'peak MB':>9}{'B/msg':>8}")
        rows = growth(sizes)
        for kind, count, cpu, rss in rows:
            what = ("routed: publish + handle + ack" if kind == "routed"
                    else "backlog: publish all, receive + ack")
            print(f"  {what:<34}{count:>10,}{cpu:>9.2f}{cpu / count * 1e6:>9.2f}"
                  f"{rss / 2**20:>9.1f}{rss / count:>8.0f}")
        for kind in ("routed", "backlog"):
            mine = [r for r in rows if r[0] == kind]
            first, last = mine[0], mine[-1]
            t = (last[2] / last[1]) / (first[2] / first[1])
            m = (last[3] / last[1]) / max(first[3] / first[1], 1e-9)
            print(f"  {kind}: per-message cost at {last[1]:,} / at {first[1]:,}: "
                  f"CPU {t:.2f}x, memory {m:.2f}x (1.0x: linear)")

    if misses:
        print("\naims missed: " + "; ".join(misses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
