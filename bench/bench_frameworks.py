"""Task frameworks on virtual time: a retry with a 60 s countdown, timed in wall milliseconds.

Run ``python bench/bench_frameworks.py`` (``--rounds R``). For each framework one task
fails twice and asks to be retried 60 s later each time, then succeeds: 120 s of
virtual time. Printed: the wall time on the simulation (best of ``R``), the virtual
seconds it covered, and what the alternatives give:

- Celery: ``task_always_eager`` runs the retries at once, ignoring ``countdown`` (and
  acks, ETA and visibility timeouts): fast, but not what production does;
- a real worker would need the 120 s of real time.

Each simulated run checks the task ran three times, 60 s apart. The wall-clock patch
(freezegun) is started once for the whole run, as the pytest plugin starts it once per
test: starting it scans every loaded module (~20 ms with Celery loaded), a cost per test,
not per retry.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable
from typing import Any

from freezegun.api import real_perf_counter

import pytest_bgwork as bg
from pytest_bgwork.core.wallclock import wall_clock

#: Held in a tuple: freezegun swaps module attributes that are real clocks for its fakes.
_REAL_CLOCK = (real_perf_counter,)
COUNTDOWN = 60
RETRIES = 2


def _best_ms(run: Callable[[], float], rounds: int) -> tuple[float, float]:
    """(best wall ms, virtual seconds of the last run)."""
    best, virtual = float("inf"), 0.0
    for _ in range(rounds):
        started = _REAL_CLOCK[0]()
        virtual = run()
        best = min(best, (_REAL_CLOCK[0]() - started) * 1000)
    return best, virtual


def _check(times: list[float]) -> None:
    expected = [COUNTDOWN * i for i in range(RETRIES + 1)]
    if [round(t) for t in times] != expected:
        raise SystemExit(f"the task ran at {times}, expected {expected}")


def celery_runs() -> tuple[Callable[[], float], Callable[[], float]]:
    from celery import Celery

    from pytest_bgwork.adapters import celery as bc

    times: list[float] = []

    def body(self: Any) -> str:
        times.append(0.0 if self.request.is_eager else bg.current().clock.monotonic())
        if self.request.retries < RETRIES:
            raise self.retry(countdown=COUNTDOWN)
        return "done"

    app = Celery("bench", set_as_current=False)
    flaky = app.task(bind=True, acks_late=True, max_retries=RETRIES, name="flaky")(body)
    eager_app = Celery("bench-eager", set_as_current=False)
    eager_app.conf.task_always_eager = True
    eager_flaky = eager_app.task(bind=True, max_retries=RETRIES, name="flaky")(body)

    def simulated() -> float:
        times.clear()
        with bg.Simulation(seed=1) as sim:
            async def main() -> None:
                with bc.install(sim, app):
                    result = flaky.delay()
                    await sim.run_until_idle()
                    assert result.get() == "done"

            sim.run(main())
            _check(times)
            return sim.clock.monotonic()

    def eager() -> float:
        times.clear()
        eager_flaky.delay().get()
        return 0.0  # the countdowns were ignored

    return simulated, eager


def taskiq_run() -> Callable[[], float]:
    from taskiq.middlewares import SmartRetryMiddleware

    from pytest_bgwork.adapters.taskiq import SimBroker

    broker = SimBroker().with_middlewares(
        SmartRetryMiddleware(default_retry_count=RETRIES + 1, default_delay=COUNTDOWN))
    times: list[float] = []

    @broker.task(retry_on_error=True)
    async def flaky() -> str:
        times.append(bg.current().clock.monotonic())
        if len(times) <= RETRIES:
            raise ConnectionError("try later")
        return "done"

    def simulated() -> float:
        times.clear()
        with bg.Simulation(seed=1) as sim:
            async def main() -> None:
                task = await flaky.kiq()
                await sim.run_until_idle()
                assert (await task.wait_result()).return_value == "done"

            sim.run(main())
            _check(times)
            return sim.clock.monotonic()

    return simulated


def dramatiq_run() -> Callable[[], float]:
    import dramatiq
    import dramatiq.broker as dq_broker

    from pytest_bgwork.adapters.dramatiq import SimBroker

    broker = SimBroker()
    times: list[float] = []

    def flaky() -> None:
        times.append(bg.current().clock.monotonic())
        if len(times) <= RETRIES:
            raise dramatiq.Retry(delay=COUNTDOWN * 1000)

    previous = dq_broker.global_broker
    dramatiq.set_broker(broker)
    try:
        actor = dramatiq.actor(flaky, max_retries=RETRIES)
    finally:
        dq_broker.global_broker = previous

    def simulated() -> float:
        times.clear()
        with bg.Simulation(seed=1) as sim:
            async def main() -> None:
                actor.send()
                await sim.run_until_idle()

            sim.run(main())
            _check(times)
            return sim.clock.monotonic()

    return simulated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)  # the frameworks log every retry
    wall_clock.start()
    asyncio.set_event_loop_policy(None)
    celery_sim, celery_eager = celery_runs()
    rows = [
        ("celery: bgwork (acks_late, retry(countdown=60) x2)", *_best_ms(celery_sim, args.rounds)),
        ("celery: task_always_eager (ignores countdown)", *_best_ms(celery_eager, args.rounds)),
        ("taskiq: bgwork SimBroker (SmartRetry delay=60 x2)", *_best_ms(taskiq_run(), args.rounds)),
        ("dramatiq: bgwork SimBroker (Retry(delay=60 s) x2)", *_best_ms(dramatiq_run(), args.rounds)),
    ]
    real = COUNTDOWN * RETRIES
    print(f"\nA task retried {RETRIES}x with a {COUNTDOWN} s countdown (best of {args.rounds}):")
    print(f"  {'run':<55}{'wall ms':>10}{'virtual s':>11}")
    for name, ms, virtual in rows:
        print(f"  {name:<55}{ms:>10.1f}{virtual:>11.0f}")
    print(f"  {'a real worker (the countdowns in real time)':<55}{real * 1000:>10.0f}{real:>11}")


if __name__ == "__main__":
    main()
