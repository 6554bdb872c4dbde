"""Teardown always ends: a leftover task that swallows ``CancelledError`` is named, not waited on."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import pytest_bgwork as bg

#: This checkout's package, not the installed one, in the pytest subprocesses below.
ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))


STUBBORN = """
import asyncio, pytest

async def stubborn():
    while True:
        try:
            await asyncio.sleep({pause})
        except asyncio.CancelledError:
            pass

@pytest.mark.asyncio
async def test_leaves_a_stubborn_task(bgwork):
    asyncio.get_running_loop().create_task(stubborn(), name="stubborn-poller")
    await asyncio.sleep(0)
"""


@pytest.mark.parametrize("pause", ["1", "0.001", "0"])
def test_a_task_swallowing_cancellation_fails_teardown_by_name(
        pytester: pytest.Pytester, pause: str) -> None:
    pytester.makepyfile(STUBBORN.format(pause=pause))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "E *Stalled: 1 task(s) did not end when cancelled at teardown*"
        "swallows asyncio.CancelledError*",
        "E *- task 'stubborn-poller'*test_a_task_swallowing_cancellation_fails_teardown_by_name.py:*"
        "in stubborn: await asyncio.sleep(*",
    ])


def test_a_finally_block_that_waits_still_runs_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio, pytest
        import pytest_bgwork as bg

        async def worker(done):
            try:
                await asyncio.Event().wait()
            finally:
                await asyncio.sleep(30)  # a graceful shutdown that takes virtual time
                done.append(bg.current().clock.monotonic())

        DONE = []

        @pytest.mark.asyncio
        async def test_leaves_a_worker(bgwork):
            asyncio.get_running_loop().create_task(worker(DONE))
            await asyncio.sleep(1)

        def test_its_clean_up_ran():
            assert DONE == [31.0]
    """)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "ignore::pytest_bgwork.LeftoverWorkWarning", timeout=60)
    result.assert_outcomes(passed=2)


def test_simulation_close_names_the_stubborn_task_and_ends() -> None:
    sim = bg.Simulation(seed=1)

    async def stubborn() -> None:
        while True:
            try:  # noqa: SIM105  # the pattern users write
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                pass

    async def scenario() -> None:
        asyncio.get_running_loop().create_task(stubborn(), name="poller")
        await asyncio.sleep(0)

    sim.run(scenario())
    with pytest.raises(bg.Stalled, match=r"(?s)swallows asyncio.CancelledError.*poller.*in stubborn"):
        sim.close()
    assert sim.loop.is_closed()
    sim.close()  # idempotent: nothing left to report
