"""Inside a simulation ``time.monotonic()`` starts near zero (like the real one), so a
virtual delay measures its length to float precision; ``time.time()`` stays epoch-based."""

from __future__ import annotations

import pytest


def test_monotonic_starts_near_zero_and_delays_measure_their_length_to_float_precision(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("""
        import asyncio
        import time
        from time import monotonic  # imported by name

        def test_precision(bgwork):
            async def main():
                assert time.monotonic() == asyncio.get_running_loop().time() == 0.0
                assert time.time() == 1767225600.0  # 2026-01-01T00:00:00Z, epoch-based
                short = []
                for _ in range(500):
                    await asyncio.sleep(0.0137)
                    t1 = time.monotonic()
                    await asyncio.sleep(0.1)
                    t2 = monotonic()
                    if abs((t2 - t1) - 0.1) > 1e-12:  # was 1e-7 off, epoch-scaled
                        short.append((t1, t2 - t1))
                assert short == []
                n1 = time.monotonic_ns()
                await asyncio.sleep(2)
                assert time.monotonic_ns() - n1 == 2_000_000_000
                assert time.time() > 1767225600.0 + 56
            bgwork.run(main())

        def test_real_again_outside():
            import time
            assert time.monotonic() > 0
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_freeze_time_of_the_tests_own_still_drives_monotonic(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import time
        from freezegun import freeze_time

        def test_nested(bgwork):
            with freeze_time("2030-01-01") as frozen:
                before = time.monotonic()
                frozen.tick(5)
                assert time.monotonic() - before == 5
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
