"""The runaway guard tells finite slow work from work that grows without end.

Real seconds alone made it flaky: 60 handlers doing 0.2 s of CPU each were stopped at 10 s
on a slow machine. These tests inject a slow fake clock into the guard (each read is one
real "second" later), so what they check does not depend on the machine's speed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import pytest_bgwork as bg


class SlowClock:
    """A real clock on a very slow machine: every read is ``step`` seconds after the last."""

    def __init__(self, step: float = 1.0) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _slow_sim() -> tuple[bg.Simulation, SlowClock]:
    sim = bg.Simulation(seed=1)
    clock = SlowClock()
    loop: Any = sim.loop
    loop.real_clock = clock
    loop.real_limit = 10.0
    return sim, clock


def test_sixty_slow_handlers_finish_however_slow_the_machine() -> None:
    sim, clock = _slow_sim()
    done: list[int] = []

    async def handler(payload: dict[str, int], delivery: object) -> None:
        clock.now += 0.2  # 0.2 s of real CPU, twice, all at one virtual instant
        await sim.kv.set("results", str(payload["n"]), "computing")
        clock.now += 0.2
        await sim.kv.set("results", str(payload["n"]), "done")
        done.append(payload["n"])

    async def main() -> None:
        sim.queues.create("jobs")
        sim.queues.route("jobs", handler=handler)
        for n in range(60):
            await sim.queues.publish("jobs", {"n": n})
        await sim.run_until_idle()

    with sim:
        sim.run(main())
    assert sorted(done) == list(range(60))
    assert clock.now > 24  # 24 s of work: the guard judged windows of "10 s" and let it go on
    assert sim.clock.monotonic() == 0.0


def test_sequential_slow_tasks_finish_too() -> None:
    sim, clock = _slow_sim()

    async def work() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    async def main() -> None:
        for _ in range(60):
            await asyncio.create_task(work())

    with sim:
        sim.run(main())
    assert clock.now > 30


def test_work_that_doubles_itself_is_stopped_as_runaway() -> None:
    sim, _clock = _slow_sim()

    async def spawn() -> None:
        await asyncio.sleep(0)
        asyncio.ensure_future(spawn())
        asyncio.ensure_future(spawn())

    async def main() -> None:
        asyncio.ensure_future(spawn())
        await asyncio.Event().wait()

    with sim, pytest.raises(bg.Stalled, match=r"runaway work: more than 10s of real time at virtual "
                                              r"t=\+0\.000s.*the live tasks kept growing"):
        sim.run(main())


def test_work_that_finishes_nothing_is_stopped_as_runaway() -> None:
    sim, _clock = _slow_sim()

    async def main() -> None:
        while True:  # a poll that never waits for a timer
            await asyncio.sleep(0)

    with sim, pytest.raises(bg.Stalled, match=r"runaway work: .*no task finished in the last window"):
        sim.run(main())


RUNAWAY_SETTINGS = """
import pytest

@pytest.mark.bgwork(runaway_after=2.5)
def test_marker(bgwork, bgwork_factory):
    assert bgwork.loop.real_limit == 2.5
    assert bgwork_factory().loop.real_limit == 2.5

def test_ini(bgwork, bgwork_factory):
    assert bgwork.loop.real_limit == 30.0
    assert bgwork_factory().loop.real_limit == 30.0
"""


def test_runaway_after_from_the_marker_and_the_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbgwork_runaway_after = 30\n")
    pytester.makepyfile(RUNAWAY_SETTINGS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_default_is_ten_seconds(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_default(bgwork):\n    assert bgwork.loop.real_limit == 10.0\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


@pytest.mark.parametrize(("ini", "marker", "text"), [
    ("abc", "", "*ini bgwork_runaway_after(runaway_after=...) must be a number of seconds > 0*"),
    ("", "runaway_after=0", "*@pytest.mark.bgwork(runaway_after=...) must be a number of seconds > 0*"),
    ("", "runaway_after=float('nan')", "*runaway_after=...) must be a number of seconds > 0*got nan*"),
])
def test_a_bad_runaway_after_is_a_usage_error(pytester: pytest.Pytester, ini: str, marker: str,
                                              text: str) -> None:
    if ini:
        pytester.makeini(f"[pytest]\nbgwork_runaway_after = {ini}\n")
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.bgwork({marker})
        def test_bad(bgwork):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR or "UsageError" in result.stdout.str()
    (result.stderr if result.ret == pytest.ExitCode.USAGE_ERROR else result.stdout).fnmatch_lines([text])
