"""The busy guard and bulk work: more than ``BUSY_LIMIT`` service calls at one virtual
instant end in ``Stalled``, whose message names the limit, the user's line and the fix
(let virtual time move between batches), and the fix works."""

from __future__ import annotations

import pytest

from pytest_bgwork.core.loop import BUSY_LIMIT


def test_bulk_publishes_at_one_instant_name_the_limit_and_the_fix(
        pytester: pytest.Pytester) -> None:
    assert BUSY_LIMIT == 100_000  # the message below spells it out
    pytester.makepyfile("""
        import asyncio
        import pytest

        @pytest.mark.asyncio
        async def test_bulk(bgwork):
            bgwork.queues.create("jobs")
            for i in range(100_001):
                await bgwork.queues.publish("jobs", {"i": i})

        @pytest.mark.asyncio
        async def test_bulk_in_batches(bgwork):
            bgwork.queues.create("jobs")
            for i in range(100_001):
                await bgwork.queues.publish("jobs", {"i": i})
                if i % 10_000 == 9_999:
                    await asyncio.sleep(0.001)  # the fix the message gives
            assert bgwork.queues.stats("jobs")["published"] == 100_001
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*Stalled: the loop ran 100001 iterations (*s of real time) at virtual t=+0.000s "
        "without time moving or a thread working: code that polls without waiting*, or bulk "
        "work done at one instant (the limit is 100,000 loop iterations at one virtual "
        "instant, and each service call, such as a publish() or a kv.set(), counts as one).",
        "*task * (test_bulk) waiting at *test_bulk_publishes_at_one_instant*.py:8 in test_bulk: "
        "await bgwork.queues.publish(\"jobs\", {\"i\": i})",
        "*Bulk work (say 100,000 publishes) must let virtual time move between batches, e.g. "
        "`await asyncio.sleep(0.001)` after every 10,000 calls.",
    ])
