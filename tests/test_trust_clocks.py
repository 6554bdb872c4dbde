"""Which clock is which inside a simulation: the world's clocks are virtual, work timers real."""

from __future__ import annotations

import pytest


def test_perf_counter_and_process_time_stay_real_the_world_clock_is_virtual(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("""
        import asyncio
        import datetime
        import time
        from time import perf_counter  # imported by name before the clock is patched

        import pytest

        @pytest.mark.asyncio
        async def test_clocks(bgwork):
            wall, mono = time.time(), time.monotonic()
            today = datetime.datetime.now(datetime.timezone.utc)
            perf, perf_ns, cpu, by_name = (time.perf_counter(), time.perf_counter_ns(),
                                           time.process_time(), perf_counter())
            await asyncio.sleep(3 * 86400)
            # virtual: three days passed
            assert time.time() - wall == 3 * 86400
            assert time.monotonic() - mono == 3 * 86400
            assert datetime.datetime.now(datetime.timezone.utc) - today == datetime.timedelta(days=3)
            # real: the three days took (much) less than a minute of real work
            assert 0 <= time.perf_counter() - perf < 60
            assert 0 <= time.perf_counter_ns() - perf_ns < 60e9
            assert 0 <= perf_counter() - by_name < 60
            assert 0 <= time.process_time() - cpu < 60

        def test_sync_run(bgwork):
            async def main():
                perf = time.perf_counter()
                await asyncio.sleep(86400)
                return time.perf_counter() - perf, time.time()
            spent, now = bgwork.run(main())
            assert spent < 60 and now == bgwork.clock.start + 86400
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
