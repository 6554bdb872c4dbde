"""The plugin as users meet it: real test files run through pytester."""

from __future__ import annotations

import re
import zlib

import pytest


def digests(result: pytest.RunResult) -> list[str]:
    return re.findall(r"DIGEST=([0-9a-f]{64})", result.stdout.str())


def test_async_test_runs_on_the_virtual_loop_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_three_days(bgwork):
            loop = asyncio.get_running_loop()
            assert isinstance(loop, bg.VirtualEventLoop)
            assert loop.sim is bgwork
            timeouts = []
            real_select = loop._selector._real.select
            def spy(timeout=None):
                timeouts.append(timeout)
                return real_select(timeout)
            loop._selector._real.select = spy
            for _ in range(3 * 24):
                await asyncio.sleep(3600)
            assert bgwork.clock.monotonic() == 3 * 86400
            # no real waiting happened: the real selector was never asked to block
            assert [t for t in timeouts if t] == []

        @pytest.mark.asyncio
        async def test_plain_async_tests_keep_a_real_loop():
            assert not isinstance(asyncio.get_running_loop(), bg.VirtualEventLoop)
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-o", "asyncio_mode=strict")
    result.assert_outcomes(passed=2)


def test_auto_mode_needs_no_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        import pytest_bgwork as bg

        async def test_auto(bgwork):
            await asyncio.sleep(10)
            assert isinstance(asyncio.get_running_loop(), bg.VirtualEventLoop)
            assert bgwork.clock.monotonic() == 10
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1)


def test_to_thread_work_is_not_skipped(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, threading, pytest

        @pytest.mark.asyncio
        async def test_thread(bgwork):
            gate = threading.Event()
            asyncio.get_running_loop().call_soon(gate.set)
            timer = asyncio.create_task(asyncio.sleep(1))
            result = await asyncio.wait_for(asyncio.to_thread(lambda: gate.wait(5) and "real"), 10)
            assert result == "real"
            assert not timer.done(), "virtual time must stand still while the thread works"
            await timer
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_deadlock_fails_the_test_instead_of_hanging(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.asyncio
        async def test_stuck(bgwork):
            never = asyncio.Event()
            await never.wait()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*Deadlock: nothing can run and no timer is pending, yet 1 task(s) still wait*",
        "*test_deadlock_fails_the_test_instead_of_hanging.py:6 in test_stuck: await never.wait()*",
    ])


def test_failure_prints_seed_replay_and_timeline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.asyncio
        async def test_fails(bgwork):
            await asyncio.sleep(5)
            bgwork.history.record("kv", "set", ns="status", key="job-1")
            assert False, "boom"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    nodeid = "test_failure_prints_seed_replay_and_timeline.py::test_fails"
    seed = zlib.crc32(nodeid.encode())
    result.stdout.fnmatch_lines([
        "bgwork: seed per test = crc32(node id)*",
        "*- bgwork timeline -*",
        f"seed {seed} · replay: pytest '{nodeid}' --bgwork-seed={seed}",
        "simulated 5.000s · 0 deliveries (0 redelivered) · 0 faults · 0 dead letters · digest *",
        "+      5.000s kv.set                 ns=status key=job-1",
    ])


def test_seed_option_marker_and_header(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        def test_option(bgwork):
            assert bgwork.seed == 1234

        @pytest.mark.bgwork(seed=7)
        def test_marker_wins(bgwork):
            assert bgwork.seed == 7
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-seed=1234")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["bgwork: seed=1234 for every test; timeline on failure"])


def test_default_seed_is_stable_across_runs(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        def test_seed(bgwork):
            async def main():
                for _ in range(5):
                    await asyncio.sleep(bgwork.choices.fraction() * 100)
                    bgwork.history.record("demo", "tick", t=bgwork.clock.monotonic())
            bgwork.run(main())
            print(f"SEED={bgwork.seed} DIGEST={bgwork.history.digest()}")
        """
    )
    first = pytester.runpytest("-p", "no:cacheprovider", "-s")
    second = pytester.runpytest("-p", "no:cacheprovider", "-s")
    first.assert_outcomes(passed=1)
    seed = zlib.crc32(b"test_default_seed_is_stable_across_runs.py::test_seed")
    first.stdout.fnmatch_lines([f"*SEED={seed} DIGEST=*"])
    assert digests(first) == digests(second) and len(digests(first)) == 1


def test_same_seed_same_digest_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.parametrize("n", range(4))
        def test_seeded(bgwork, n):
            async def main():
                for _ in range(10):
                    await asyncio.sleep(bgwork.choices.fraction())
                    bgwork.history.record("demo", "tick", t=bgwork.clock.monotonic())
            bgwork.run(main())
            print(f"DIGEST={bgwork.history.digest()}")
        """
    )
    serial = pytester.runpytest("-p", "no:cacheprovider", "-s", "--bgwork-seed=5")
    serial.assert_outcomes(passed=4)
    assert len(set(digests(serial))) == 1, "the same seed gives the same history in every test"
    parallel = pytester.runpytest("-p", "no:cacheprovider", "-n", "2", "--bgwork-seed=5",
                                  "-rA", "--bgwork-timeline=always")
    parallel.assert_outcomes(passed=4)
    assert digests(serial)[0][:16] in parallel.stdout.str()


def test_timeline_modes_and_bad_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_ok(bgwork):
            bgwork.history.record("kv", "set", key="visible")
        def test_bad(bgwork):
            bgwork.history.record("kv", "set", key="hidden")
            assert False
        """
    )
    always = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=always")
    always.stdout.fnmatch_lines(["*bgwork timeline: test_timeline_modes_and_bad_value.py::test_ok*",
                                 "*kv.set*key=visible"])
    never = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=never")
    never.assert_outcomes(passed=1, failed=1)
    assert "key=hidden" not in never.stdout.str()
    bad = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=sometimes")
    bad.stderr.fnmatch_lines([
        "*--bgwork-timeline / bgwork_timeline must be one of failure, always, never; got 'sometimes'"
    ])
    assert bad.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_seed_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(bgwork): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-seed=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--bgwork-seed / bgwork_seed expects an integer such as 1234; got 'abc'"])


def test_bad_marker_argument_names_the_valid_ones(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        @pytest.mark.bgwork(sead=3)
        def test_typo(bgwork): pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "*@pytest.mark.bgwork got unknown argument(s) sead; "
        "valid: allow_network, chaos, max_time, platform, real_random, replay, runaway_after, seed, start, strict*"
    ])
    assert result.ret != 0


def test_nothing_leaks_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, datetime, time, pytest
        import pytest_bgwork as bg
        from freezegun.api import real_datetime
        STATE = {}

        @pytest.mark.asyncio
        async def test_leaves_work_running(bgwork):
            async def forever():
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    STATE["cancelled"] = True
                    raise
            asyncio.create_task(forever(), name="leftover")
            asyncio.get_running_loop().call_later(10, lambda: STATE.setdefault("timer", True))
            STATE["loop"] = asyncio.get_running_loop()

        @pytest.mark.asyncio
        async def test_next_test_is_clean(bgwork):
            assert STATE["cancelled"] is True
            assert "timer" not in STATE
            assert asyncio.get_running_loop() is not STATE["loop"]
            assert bgwork.clock.monotonic() == 0
            assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

        def test_clock_is_real_again():
            assert datetime.datetime is real_datetime
            with pytest.raises(bg.NotRunning):
                bg.current()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, warnings=1)
    result.stdout.fnmatch_lines([
        "*LeftoverWorkWarning: 1 task(s) still running when the test ended were cancelled at teardown*",
        "*task 'leftover' (*forever) waiting at*",
    ])


def test_strict_mode_fails_on_leftover_work(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.asyncio
        @pytest.mark.bgwork(strict=True)
        async def test_forgets_a_task(bgwork):
            async def slow_email():
                await asyncio.sleep(60)
            asyncio.create_task(slow_email(), name="email")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*bgwork strict mode: 1 task(s) were still running when the test ended and were cancelled:",
        "*task 'email' (*slow_email) waiting at*",
    ])


def test_dropped_async_generator_is_closed_not_reported_as_leftover(pytester: pytest.Pytester) -> None:
    """An async generator the test dropped is closed by the loop's finalizer (a task running
    ``aclose()``): clean-up, which runs its ``finally`` and is not the user's leftover work."""
    pytester.makepyfile(
        """
        import pytest

        closed = []

        @pytest.mark.asyncio
        @pytest.mark.bgwork(strict=True)
        async def test_drops_a_generator(bgwork):
            async def rows():
                try:
                    yield 1
                    yield 2
                finally:
                    closed.append("finally ran")
            it = rows()
            await it.__anext__()
            del it

        def test_generator_was_closed():
            assert closed == ["finally ran"]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("*LeftoverWorkWarning*")
    result.stdout.no_fnmatch_line("*strict mode*")


def test_wider_loop_scope_fails_at_setup_naming_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio(loop_scope="module")
        async def test_module_loop(bgwork):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    result.stdout.fnmatch_lines([
        "*uses `bgwork` runs on its own function-scoped virtual loop, but this test asks "
        "pytest-asyncio for loop_scope='module'*"
    ])


def test_bgwork_factory_gives_fresh_simulations_under_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio
        from hypothesis import given, settings, strategies as st

        @settings(max_examples=20, deadline=None)
        @given(delay=st.integers(0, 10_000))
        def test_each_example_gets_its_own_clock(bgwork_factory, delay):
            sim = bgwork_factory()
            sim.run(asyncio.sleep(delay))
            assert sim.clock.monotonic() == delay
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_async_fixture_shares_the_tests_virtual_loop(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest, pytest_asyncio
        import pytest_bgwork as bg

        @pytest_asyncio.fixture
        async def warmed_up(bgwork):
            await asyncio.sleep(60)
            yield asyncio.get_running_loop()
            await asyncio.sleep(1)

        @pytest.mark.asyncio
        async def test_uses_fixture(bgwork, warmed_up):
            assert asyncio.get_running_loop() is warmed_up is bgwork.loop
            assert bgwork.clock.monotonic() == 60
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_renamed_warnings_keep_their_old_names_for_one_release() -> None:
    import pytest_bgwork as bg

    with pytest.warns(DeprecationWarning, match="LeftoverWork is renamed LeftoverWorkWarning"):
        old = bg.LeftoverWork
    assert old is bg.LeftoverWorkWarning
    with pytest.warns(DeprecationWarning, match="UnusedFaultRule is renamed UnusedFaultRuleWarning"):
        assert bg.UnusedFaultRule is bg.UnusedFaultRuleWarning
    assert bg.UnsupportedFeature.__mro__[1:3] == (bg.BgworkError, NotImplementedError)
    assert bg.IdempotenceReport.__name__ == "IdempotenceReport"
