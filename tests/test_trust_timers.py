"""A timer at NaN or inf is refused where the app asks for it; other timers keep their order."""

from __future__ import annotations

import asyncio
import math

import pytest

import pytest_bgwork as bg


@pytest.mark.parametrize("delay", [math.nan, math.inf])
def test_asyncio_sleep_with_a_non_finite_delay_is_refused_naming_the_call(delay: float) -> None:
    with bg.Simulation() as sim:
        async def main() -> None:
            await asyncio.sleep(delay)

        # CPython 3.13's asyncio.sleep refuses NaN itself ("Invalid delay: NaN"), before the loop
        refused = r"loop\.call_later\(delay=\.\.\.\) got (nan|inf).*finite|Invalid delay: NaN"
        with pytest.raises(ValueError, match=refused):
            sim.run(main())


def test_call_at_with_nan_is_refused_and_other_sleeps_wake_on_time() -> None:
    with bg.Simulation() as sim:
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await asyncio.sleep(seconds)
            woke.append((name, sim.clock.monotonic()))

        async def main() -> None:
            loop = asyncio.get_running_loop()
            tasks = [asyncio.create_task(sleeper("a", 19)), asyncio.create_task(sleeper("b", 9))]
            await asyncio.sleep(0)
            with pytest.raises(ValueError, match=r"loop\.call_at\(when=\.\.\.\) got nan"):
                loop.call_at(math.nan, print)
            tasks.append(asyncio.create_task(sleeper("c", 4)))
            await asyncio.gather(*tasks)

        sim.run(main())
        assert woke == [("c", 4.0), ("b", 9.0), ("a", 19.0)]


def test_a_nan_sleep_in_a_plugin_test_fails_with_the_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio

        def test_nan(bgwork):
            async def main():
                await asyncio.sleep(float("nan"))
            bgwork.run(main())
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()  # the loop's refusal, or (CPython 3.13) asyncio.sleep's own
    assert "ValueError: loop.call_later(delay=...) got nan" in out or "ValueError: Invalid delay: NaN" in out
