"""Routed attempts run in tasks the queue ends itself (``loop.start_task``): what escapes
a handler still reaches pytest as it would from any task, and the tasks stay named and
ordered like every other task of the simulation."""

from __future__ import annotations

import pytest


def test_a_pytest_outcome_raised_in_a_handler_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_handler(bgwork):
            async def handler(payload, delivery):
                await asyncio.sleep(1)
                pytest.fail("Timeout >1.0s")  # what pytest-timeout raises from its signal handler

            bgwork.queues.create("jobs")
            bgwork.queues.route("jobs", handler)
            await bgwork.queues.publish("jobs", {})
            await bgwork.advance(5)

        @pytest.mark.asyncio
        async def test_handler_at_once(bgwork):
            async def handler(payload, delivery):
                pytest.fail("failed in its first step")

            bgwork.queues.create("jobs")
            bgwork.queues.route("jobs", handler)
            await bgwork.queues.publish("jobs", {})
            await bgwork.advance(5)
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*Failed: Timeout >1.0s*", "*Failed: failed in its first step*"])


def test_waiting_attempts_are_listed_by_name_in_creation_order(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import asyncio
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_stuck(bgwork):
            gate = asyncio.Event()

            async def handler(payload, delivery):
                await gate.wait()

            bgwork.queues.create("jobs", visibility_timeout=30)
            bgwork.queues.route("jobs", handler)
            asyncio.get_running_loop().create_task(gate.wait(), name="helper")
            for _ in range(2):
                await bgwork.queues.publish("jobs", {})
            with pytest.raises(bg.Stalled) as info:
                await bgwork.run_until_idle(max_time=10)
            print(info.value)
            for task in bgwork.loop.live_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*2 timer(s) pending, the next at t=+30.000s",
        "  - task 'helper' (Event.wait) waiting at *",
        "  - task 'jobs/msg_1#1' (DeliveryEngine._run) waiting at *",
        "  - task 'jobs/msg_2#1' (DeliveryEngine._run) waiting at *",
    ])
