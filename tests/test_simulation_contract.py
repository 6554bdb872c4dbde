"""The simulation, virtual time and the pytest surface, as a user reads their docs.

Each test is written from the documented names and rules alone, the way a user of the plugin
would first write it. Other areas live in ``test_*_contract.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest

import pytest_bgwork as bg

# loaded once here: pytester's in-process runs would import (and assert-rewrite) it again each run
import pytest_bgwork.checking.explore

# -- §1 the simulation --------------------------------------------------------------------------


def test_simulation_outside_pytest_runs_a_coroutine_on_virtual_time() -> None:
    sim = bg.Simulation(seed=7, start="2026-01-01T00:00:00Z")

    async def main() -> float:
        before = sim.clock.monotonic()
        await asyncio.sleep(3600)
        return sim.clock.monotonic() - before

    real = time.perf_counter()
    assert sim.run(main()) == pytest.approx(3600)
    assert time.perf_counter() - real < 60
    assert sim.seed == 7


def test_clock_starts_at_start_and_reports_now_time_monotonic() -> None:
    sim = bg.Simulation(seed=1, start="2026-01-01T00:00:00Z")
    now = sim.clock.now()
    assert (now.year, now.month, now.day, now.hour) == (2026, 1, 1, 0)
    assert now.tzinfo is not None and now.utcoffset() == dt.timedelta(0)
    assert sim.clock.time() == pytest.approx(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp())
    assert isinstance(sim.clock.monotonic(), float)


def test_advance_fires_everything_due_in_order() -> None:
    sim = bg.Simulation(seed=1)
    fired: list[tuple[str, float]] = []

    async def later(name: str, after: float) -> None:
        await asyncio.sleep(after)
        fired.append((name, sim.clock.monotonic()))

    async def main() -> None:
        t0 = sim.clock.monotonic()
        for name, after in [("c", 90), ("a", 10), ("b", 50), ("late", 500)]:
            asyncio.ensure_future(later(name, after))
        await sim.advance(120)
        assert [n for n, _ in fired] == ["a", "b", "c"]
        assert [t - t0 for _, t in fired] == [10, 50, 90]
        assert sim.clock.monotonic() - t0 == pytest.approx(120)
        await sim.run_until_idle()
        assert [n for n, _ in fired] == ["a", "b", "c", "late"]

    sim.run(main())


@pytest.mark.asyncio
async def test_async_test_with_bgwork_runs_on_virtual_time(bgwork: bg.Simulation) -> None:
    loop = asyncio.get_running_loop()
    t0, m0 = loop.time(), bgwork.clock.monotonic()
    real = time.perf_counter()
    await asyncio.sleep(86400)
    assert loop.time() - t0 == pytest.approx(86400)
    assert bgwork.clock.monotonic() - m0 == pytest.approx(86400)
    assert time.perf_counter() - real < 60


@pytest.mark.asyncio
async def test_wait_for_times_out_in_virtual_time(bgwork: bg.Simulation) -> None:
    t0 = bgwork.clock.monotonic()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), timeout=600)
    assert bgwork.clock.monotonic() - t0 == pytest.approx(600)


@pytest.mark.asyncio
async def test_wall_clock_reads_follow_virtual_time(bgwork: bg.Simulation) -> None:
    before_dt = dt.datetime.now(dt.UTC)
    before_t = time.time()
    await asyncio.sleep(2 * 86400)
    assert time.time() - before_t == pytest.approx(2 * 86400, abs=1)
    assert dt.datetime.now(dt.UTC) - before_dt == pytest.approx(dt.timedelta(days=2), abs=dt.timedelta(seconds=1))
    assert dt.date.today() == bgwork.clock.now().date()
    assert time.time() == pytest.approx(bgwork.clock.time(), abs=1)


def test_wall_clock_in_sync_test_follows_the_start() -> None:
    sim = bg.Simulation(seed=3, start="2030-06-15T12:00:00Z")

    async def main() -> tuple[dt.datetime, dt.date]:
        await asyncio.sleep(3600)
        return dt.datetime.now(dt.UTC), dt.date.today()

    now, today = sim.run(main())
    assert now.replace(microsecond=0) == dt.datetime(2030, 6, 15, 13, 0, tzinfo=dt.UTC)
    assert today == dt.date(2030, 6, 15)


@pytest.mark.asyncio
async def test_to_thread_is_waited_for_not_skipped(bgwork: bg.Simulation) -> None:
    def work() -> int:
        return sum(range(10_000))

    assert await asyncio.to_thread(work) == sum(range(10_000))


def test_run_until_idle_returns_when_work_is_done() -> None:
    sim = bg.Simulation(seed=1)
    done: list[float] = []

    async def job() -> None:
        await asyncio.sleep(300)
        done.append(sim.clock.monotonic())

    async def main() -> None:
        t0 = sim.clock.monotonic()
        asyncio.ensure_future(job())
        await sim.run_until_idle()
        assert done and done[0] - t0 == pytest.approx(300)

    sim.run(main())


def test_run_until_idle_ignores_recurring_schedules() -> None:
    sim = bg.Simulation(seed=1, start="2026-01-01T00:00:00Z")
    runs: list[str] = []

    async def nightly() -> None:
        runs.append("x")

    sim.schedules.create("nightly", cron="0 2 * * *", handler=nightly)

    async def main() -> None:
        await sim.run_until_idle()

    sim.run(main())  # returns although the cron would fire forever


def test_run_until_idle_max_time_raises_stalled() -> None:
    sim = bg.Simulation(seed=1)

    async def forever() -> None:
        while True:
            await asyncio.sleep(60)

    async def main() -> None:
        asyncio.ensure_future(forever())
        with pytest.raises(bg.Stalled):
            await sim.run_until_idle(max_time=3600)

    sim.run(main())


def test_deadlock_names_the_stuck_task_and_its_line() -> None:
    sim = bg.Simulation(seed=1)

    async def stuck_waiter() -> None:
        await asyncio.Event().wait()  # the line it waits on

    async def main() -> None:
        t = asyncio.ensure_future(stuck_waiter())
        await t

    with pytest.raises(bg.Deadlock) as info:
        sim.run(main())
    text = str(info.value)
    assert "stuck_waiter" in text
    assert "asyncio.Event().wait()" in text or "line" in text


def test_same_seed_same_digest_different_seed_different_digest() -> None:
    def run(seed: int) -> str:
        sim = bg.Simulation(seed=seed)

        async def handler(payload: dict, delivery: bg.Delivery) -> None:
            await sim.kv.set("status", payload["id"], {"kind": "done"})

        async def main() -> None:
            sim.queues.create("jobs")
            sim.queues.route("jobs", handler)
            sim.faults.fail("kv.set", on_call=1, error=ConnectionError("down"))
            for i in range(3):
                await sim.queues.publish("jobs", {"id": f"j{i}"})
            await sim.run_until_idle()

        sim.run(main())
        return sim.history.digest()

    assert run(5) == run(5)
    assert isinstance(run(5), str)
    assert run(5) != run(6)


def test_history_timeline_is_readable_text_in_virtual_time() -> None:
    sim = bg.Simulation(seed=1, start="2026-01-01T00:00:00Z")

    async def main() -> None:
        sim.queues.create("report-jobs")
        await sim.queues.publish("report-jobs", {"a": 1})
        await sim.kv.set("report-status", "j1", {"kind": "queued"})

    sim.run(main())
    text = sim.history.timeline()
    assert isinstance(text, str)
    assert "report-jobs" in text and "report-status" in text
    assert len(sim.history) >= 2


def test_current_is_the_running_simulation() -> None:
    sim = bg.Simulation(seed=2)

    async def main() -> bg.Simulation:
        return bg.current()

    assert sim.run(main()) is sim


@pytest.mark.asyncio
async def test_current_inside_bgwork_test(bgwork: bg.Simulation) -> None:
    assert bg.current() is bgwork


def test_simulation_has_every_service() -> None:
    sim = bg.Simulation(seed=0)
    for name in ["queues", "kv", "streams", "runtime", "task_manager", "schedules", "webhooks", "tasks",
                 "history", "effects", "faults", "clock"]:
        assert getattr(sim, name) is not None, name


def test_sim_effects_record_is_counted() -> None:
    sim = bg.Simulation(seed=0)
    sim.effects.record("email", key="o1")
    with pytest.raises(AssertionError):
        sim.effects.record("email", key="o1")
        bg.assert_effects_once(sim, "email")


def test_seed_of_failing_test_is_printed_with_replay_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_fails(bgwork):
            await bgwork.kv.set("ns", "k", {"v": 1})
            assert False, "boom"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*seed*--bgwork-seed=*"])  # the seed, and a one-line way to replay it


def test_isolation_nothing_survives_into_the_next_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest, time
        seen = {}

        @pytest.mark.asyncio
        async def test_a(bgwork):
            bgwork.queues.create("jobs")
            await bgwork.queues.publish("jobs", {"x": 1})
            asyncio.ensure_future(asyncio.sleep(10_000))
            seen["sim"] = bgwork

        def test_b():
            # the clock is real again
            assert abs(time.time() - __import__("datetime").datetime.now().timestamp()) < 5
            import datetime
            assert datetime.datetime.now().year >= 2024

        @pytest.mark.asyncio
        async def test_c(bgwork):
            assert bgwork is not seen["sim"]
            import pytest_bgwork as bg
            with pytest.raises(Exception):
                await bgwork.queues.publish("jobs", {"x": 1})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_sync_test_with_bgwork_uses_sim_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio

        def test_sync(bgwork):
            async def main():
                await asyncio.sleep(60)
                return bgwork.clock.monotonic()
            t0 = bgwork.clock.monotonic()
            assert bgwork.run(main()) - t0 == 60
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_auto_mode_async_test_runs_on_virtual_loop(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import asyncio, time
        import pytest_bgwork as bg

        async def test_report(bgwork: bg.Simulation):
            real = time.perf_counter()
            await asyncio.sleep(7 * 86400 - 1)
            assert time.perf_counter() - real < 60
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_unmarked_async_test_runs_on_virtual_loop_in_strict_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, time
        import pytest_bgwork as bg

        async def test_report(bgwork: bg.Simulation):
            t0 = bgwork.clock.monotonic()
            await asyncio.sleep(3600)
            assert bgwork.clock.monotonic() - t0 == 3600

        async def test_not_ours():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)  # the test without bgwork stays pytest-asyncio's business
    result.stdout.fnmatch_lines(["FAILED*test_not_ours*"])


def test_wider_loop_scope_fails_at_setup_naming_the_fix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio(loop_scope="module")
        async def test_wide(bgwork):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    if outcomes.get("passed") == 1:
        return  # "either works correctly"
    assert "loop_scope" in out


# -- §6 pytest surface ---------------------------------------------------------------------------


def test_fixtures_exist_and_share_one_simulation(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fixtures(bgwork, bg_clock, bg_queues, bg_kv, bg_streams, bg_runtime, bg_faults):
            assert bg_clock is bgwork.clock
            assert bg_queues is bgwork.queues
            assert bg_kv is bgwork.kv
            assert bg_streams is bgwork.streams
            assert bg_runtime is bgwork.runtime
            assert bg_faults is bgwork.faults

        def test_factory(bgwork_factory):
            a = bgwork_factory()
            b = bgwork_factory()
            assert a is not b
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_bgwork_factory_with_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from hypothesis import given, settings, strategies as st
        import asyncio

        @settings(max_examples=10, deadline=None)
        @given(st.integers(min_value=0, max_value=1000))
        def test_given(bgwork_factory, n):
            sim = bgwork_factory()
            async def main():
                await asyncio.sleep(n)
                return sim.clock.monotonic()
            t0 = sim.clock.monotonic()
            assert sim.run(main()) - t0 == n
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_marker_seed_and_start(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bgwork(seed=42, start="2026-03-01T00:00:00Z")
        def test_marker(bgwork):
            assert bgwork.seed == 42
            assert bgwork.clock.now().month == 3
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_seed_option_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_seed(bgwork):
            assert bgwork.seed == 1234
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-seed=1234")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1234*"])  # the report header prints the seed
    pytester.makeini("[pytest]\nbgwork_seed = 1234\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_report_header_prints_the_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-seed=99")
    result.stdout.fnmatch_lines(["*bgwork*99*"])


def test_default_seeds_are_per_test_and_stable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_a(bgwork):
            print("SEED-A", bgwork.seed)

        def test_b(bgwork):
            print("SEED-B", bgwork.seed)
        """
    )
    r1 = pytester.runpytest("-p", "no:cacheprovider", "-s")
    r2 = pytester.runpytest("-p", "no:cacheprovider", "-s", "-p", "xdist", "-n", "0")
    lines1 = [ln for ln in r1.stdout.lines if ln.startswith("SEED-") or "SEED-" in ln]
    lines2 = [ln for ln in r2.stdout.lines if ln.startswith("SEED-") or "SEED-" in ln]
    assert lines1 and sorted(lines1) == sorted(lines2)


@pytest.mark.parametrize("option", ["--bgwork-timeline=sometimes", "--bgwork-chaos=explode"])
def test_bad_option_is_a_usage_error_listing_valid_values(pytester: pytest.Pytester, option: str) -> None:
    pytester.makepyfile("def test_x(bgwork): pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str() + result.stdout.str()
    if "timeline" in option:
        assert "failure" in err and "always" in err and "never" in err
    else:
        assert "duplicate" in err and "fail-first" in err and "reorder" in err and "crash" in err


def test_bad_ini_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbgwork_timeline = sometimes\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile("def test_x(bgwork): pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_marker_argument_names_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bgwork(seed="abc")
        def test_x(bgwork):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != 0
    assert "seed" in result.stdout.str()


_FAILING_QUEUE_TEST = """
import pytest

@pytest.mark.asyncio
async def test_fails(bgwork):
    bgwork.queues.create("report-jobs")
    await bgwork.queues.publish("report-jobs", {"job": 1})
    await bgwork.kv.set("report-status", "job-1", {"kind": "queued"})
    assert False
"""


def test_failing_test_report_carries_bgwork_timeline_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_FAILING_QUEUE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*bgwork timeline*", "*report-jobs*"])


def test_timeline_never_hides_the_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_FAILING_QUEUE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=never")
    result.assert_outcomes(failed=1)
    assert "bgwork timeline" not in result.stdout.str()


def test_timeline_always_shows_it_for_passing_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_ok(bgwork):
            bgwork.queues.create("report-jobs")
            await bgwork.queues.publish("report-jobs", {"job": 1})
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=always", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*bgwork timeline*"])


def test_timeline_ini_twin(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbgwork_timeline = never\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(_FAILING_QUEUE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    assert "bgwork timeline" not in result.stdout.str()


def test_terminal_summary_counts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_ok(bgwork):
            bgwork.queues.create("jobs", max_retries=0)
            async def handler(payload, delivery):
                raise RuntimeError("no")
            bgwork.queues.route("jobs", handler)
            await bgwork.queues.publish("jobs", {"job": 1})
            await bgwork.run_until_idle()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    out = result.stdout.str().lower()
    for word in ["simulated", "deliveries", "redeliveries", "faults", "dead letters"]:
        assert word in out, word


def test_html_report_option_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(_FAILING_QUEUE_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-html=report.html")
    result.assert_outcomes(failed=1)
    html = (pytester.path / "report.html").read_text()
    assert "<html" in html.lower() and "report-jobs" in html
    pytester.makeini("[pytest]\nbgwork_html = second.html\nasyncio_default_fixture_loop_scope = function\n")
    pytester.runpytest("-p", "no:cacheprovider")
    assert (pytester.path / "second.html").exists()


def test_chaos_duplicate_catches_a_non_idempotent_handler(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.asyncio
        async def test_charge(bgwork):
            bgwork.queues.create("charges")
            async def handler(payload, delivery):
                bgwork.effects.record("charge", key=payload["order"])
            bgwork.queues.route("charges", handler)
            await bgwork.queues.publish("charges", {"order": "o1"})
            await bgwork.run_until_idle()
            bg.assert_effects_once(bgwork, "charge")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-chaos=duplicate")
    result.assert_outcomes(failed=1)
    pytester.makeini("[pytest]\nbgwork_chaos = duplicate\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)


def test_chaos_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        import pytest_bgwork as bg

        @pytest.mark.bgwork(chaos="duplicate")
        @pytest.mark.asyncio
        async def test_charge(bgwork):
            bgwork.queues.create("charges")
            async def handler(payload, delivery):
                bgwork.effects.record("charge", key=payload["order"])
            bgwork.queues.route("charges", handler)
            await bgwork.queues.publish("charges", {"order": "o1"})
            await bgwork.run_until_idle()
            bg.assert_effects_once(bgwork, "charge")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)


def test_teardown_cancels_leftover_work_and_strict_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def forever_worker():
            await asyncio.sleep(10**6)

        @pytest.mark.asyncio
        async def test_leaves_work(bgwork):
            bgwork.runtime.wait_until(forever_worker())

        @pytest.mark.bgwork(strict=True)
        @pytest.mark.asyncio
        async def test_strict(bgwork):
            bgwork.runtime.wait_until(forever_worker())
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1
    result.stdout.fnmatch_lines(["*test_strict*"])
    assert "test_leaves_work" not in "".join(ln for ln in result.stdout.lines if ln.startswith(("ERROR", "FAILED")))
    assert "forever_worker" in result.stdout.str()


def test_strict_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nbgwork_strict = true\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.asyncio
        async def test_leaves_work(bgwork):
            bgwork.runtime.wait_until(asyncio.sleep(10**6))
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) + outcomes.get("failed", 0) == 1


def test_leftover_work_noted_in_timeline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        async def forever_worker():
            await asyncio.sleep(10**6)

        @pytest.mark.asyncio
        async def test_leaves_work(bgwork):
            bgwork.runtime.wait_until(forever_worker())
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--bgwork-timeline=always", "-rA")
    result.assert_outcomes(passed=1)
    assert "forever_worker" in result.stdout.str()


def test_entry_point_is_bgwork() -> None:
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="pytest11") if ep.name == "bgwork"]
    assert eps and eps[0].value == "pytest_bgwork.plugin"


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines(["*@pytest.mark.bgwork*"])


def test_options_listed_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for name in ["--bgwork-seed", "--bgwork-chaos", "--bgwork-timeline", "--bgwork-html",
                 "bgwork_seed", "bgwork_chaos", "bgwork_timeline", "bgwork_html", "bgwork_strict",
                 "bgwork_platform"]:
        assert name in out, name
