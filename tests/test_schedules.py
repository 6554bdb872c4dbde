"""Schedules: cron instants on the virtual wall clock, runs, failures, overlap, bad input."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import pytest_bgwork as bg
from pytest_bgwork.services.schedules import Run

DAY = 86400


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=dt.UTC)


@pytest.mark.asyncio
async def test_nightly_job_fires_seven_times_at_two_am(bgwork: bg.Simulation) -> None:
    seen: list[dt.datetime] = []

    async def nightly() -> None:
        seen.append(dt.datetime.now(dt.UTC))  # the virtual wall clock

    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=nightly)
    await bgwork.advance(7 * DAY)
    expected = [at(d, 2) for d in range(1, 8)]  # 1 Jan 02:00 ... 7 Jan 02:00
    assert seen == expected
    runs = bgwork.schedules.runs("nightly")
    assert [r.scheduled_at for r in runs] == expected
    assert [r.started_at for r in runs] == expected
    assert {r.outcome for r in runs} == {"ok"}
    assert bgwork.history.count("schedule", "fire", name="nightly") == 7
    assert bgwork.schedules.get("nightly").next_at == at(8, 2)


@pytest.mark.asyncio
async def test_handler_may_take_the_run(bgwork: bg.Simulation) -> None:
    got: list[Run] = []

    async def job(run: Run) -> None:
        got.append(run)

    bgwork.schedules.create("hourly", cron="0 * * * *", handler=job)
    await bgwork.advance(2 * 3600)
    assert [(r.schedule, r.scheduled_at, r.outcome) for r in got] == [
        ("hourly", at(1, 1), "running"),
        ("hourly", at(1, 2), "running"),
    ]
    assert [r.id for r in got] == [r.id for r in bgwork.schedules.runs("hourly")]


@pytest.mark.asyncio
async def test_a_failed_run_is_recorded_and_the_next_still_fires(bgwork: bg.Simulation) -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(30)
        if calls == 1:
            raise RuntimeError("db down")

    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=flaky)
    await bgwork.advance(2 * DAY)
    first, second = bgwork.schedules.runs("nightly")
    assert (first.outcome, first.error) == ("failed", "RuntimeError('db down')")
    assert first.finished_at == at(1, 2) + dt.timedelta(seconds=30)
    assert (second.outcome, second.error, second.scheduled_at) == ("ok", None, at(2, 2))
    failed = bgwork.history.filter("schedule", "run_failed")
    assert [(e.outcome, e.detail["run"]) for e in failed] == [("fail", first.id)]


@pytest.mark.asyncio
async def test_default_overlap_starts_a_second_run_while_the_first_goes(bgwork: bg.Simulation) -> None:
    running = 0
    peak = 0

    async def slow() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(90)  # outlasts its one-minute interval
        running -= 1

    bgwork.schedules.create("sync", cron="* * * * *", handler=slow)
    assert bgwork.schedules.get("sync").overlap == "allow"
    await bgwork.advance(150)
    bgwork.schedules.pause("sync")
    runs = bgwork.schedules.runs("sync")
    assert [(r.scheduled_at.minute, r.overlapped) for r in runs] == [(1, False), (2, True)]
    assert peak == 2
    await bgwork.run_until_idle()
    assert [r.outcome for r in bgwork.schedules.runs("sync")] == ["ok", "ok"]


@pytest.mark.asyncio
async def test_overlap_skip_records_the_skipped_instant(bgwork: bg.Simulation) -> None:
    async def slow() -> None:
        await asyncio.sleep(90)

    bgwork.schedules.create("sync", cron="* * * * *", handler=slow, overlap="skip")
    await bgwork.advance(4 * 60 + 31)  # the 00:03 run ends at 00:04:30
    bgwork.schedules.pause("sync")
    runs = bgwork.schedules.runs("sync")
    assert [(r.scheduled_at.minute, r.outcome) for r in runs] == [
        (1, "ok"), (2, "skipped"), (3, "ok"), (4, "skipped"),
    ]
    assert runs[1].started_at is None
    assert runs[1].error == "1 earlier run(s) still going (overlap='skip')"
    assert bgwork.history.count("schedule", "skip", name="sync") == 2


@pytest.mark.asyncio
async def test_run_until_idle_does_not_wait_for_a_schedule(bgwork: bg.Simulation) -> None:
    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=lambda: None)
    await bgwork.run_until_idle()
    assert bgwork.clock.monotonic() == 0
    assert bgwork.schedules.runs("nightly") == []


@pytest.mark.asyncio
async def test_run_until_idle_waits_for_a_run_in_progress(bgwork: bg.Simulation) -> None:
    async def job() -> None:
        await asyncio.sleep(100)

    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=job)
    await bgwork.advance(2 * 3600)
    assert bgwork.schedules.runs("nightly")[0].outcome == "running"
    await bgwork.run_until_idle()
    (run,) = bgwork.schedules.runs("nightly")
    assert (run.outcome, run.finished_at) == ("ok", at(1, 2) + dt.timedelta(seconds=100))
    assert bgwork.clock.monotonic() == 2 * 3600 + 100


@pytest.mark.asyncio
async def test_schedule_is_a_fault_point(bgwork: bg.Simulation) -> None:
    ran: list[int] = []
    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=lambda: ran.append(1))
    bgwork.faults.fail("schedule.nightly", on_call=1, error=ConnectionError("cron host down"))
    await bgwork.advance(2 * DAY)
    runs = bgwork.schedules.runs("nightly")
    assert [(r.outcome, r.error) for r in runs] == [
        ("failed", "ConnectionError('cron host down')"), ("ok", None),
    ]
    assert ran == [1]
    assert bgwork.history.count("fault", "fail", point="schedule.nightly") == 1


@pytest.mark.asyncio
async def test_after_apply_fault_records_an_unknown_outcome(bgwork: bg.Simulation) -> None:
    ran: list[int] = []
    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=lambda: ran.append(1))
    bgwork.faults.fail("schedule.nightly", after_apply=True)
    await bgwork.advance(DAY)
    assert ran == [1]
    assert bgwork.schedules.runs("nightly")[0].outcome == "failed"
    assert [e.outcome for e in bgwork.history.filter("schedule", "run_failed")] == ["unknown"]


def cron_app(statuses: list[int], seen: list[dict[str, object]]) -> Starlette:
    async def endpoint(request: Request) -> Response:
        seen.append(await request.json())
        return JSONResponse({}, status_code=statuses.pop(0))

    return Starlette(routes=[Route("/cron/nightly", endpoint, methods=["POST"])])


@pytest.mark.asyncio
async def test_app_target_gets_a_post_and_non_2xx_fails_the_run(bgwork: bg.Simulation) -> None:
    seen: list[dict[str, object]] = []
    app = cron_app([503, 200], seen)
    bgwork.schedules.create("nightly", cron="0 2 * * *", app=app, path="/cron/nightly")
    await bgwork.advance(2 * DAY)
    runs = bgwork.schedules.runs("nightly")
    assert [(r.outcome, r.status) for r in runs] == [("failed", 503), ("ok", 200)]
    assert runs[0].error == "POST /cron/nightly answered HTTP 503 (only 2xx is success)"
    assert seen[0] == {"schedule": "nightly", "run": runs[0].id,
                       "scheduled_at": "2026-01-01T02:00:00+00:00"}


@pytest.mark.asyncio
async def test_app_exception_fails_the_run(bgwork: bg.Simulation) -> None:
    async def boom(request: Request) -> Response:
        raise KeyError("tenant")

    app = Starlette(routes=[Route("/cron", boom, methods=["POST"])])
    bgwork.schedules.create("nightly", cron="0 2 * * *", app=app, path="/cron")
    await bgwork.advance(DAY)
    (run,) = bgwork.schedules.runs("nightly")
    assert (run.outcome, run.error) == ("failed", "KeyError('tenant')")


@pytest.mark.asyncio
async def test_url_target_goes_through_httpx_so_respx_mocks_it(bgwork: bg.Simulation) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://app.example/cron").mock(
            side_effect=[httpx.ConnectError("refused"), httpx.Response(204)]
        )
        bgwork.schedules.create("nightly", cron="0 2 * * *", url="https://app.example/cron")
        await bgwork.advance(2 * DAY)
    runs = bgwork.schedules.runs("nightly")
    assert [(r.outcome, r.status) for r in runs] == [("failed", None), ("ok", 204)]
    assert runs[0].error == "ConnectError('refused')"
    assert route.call_count == 2


@pytest.mark.asyncio
async def test_pause_resume_and_delete(bgwork: bg.Simulation) -> None:
    ran: list[dt.datetime] = []
    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=lambda: ran.append(bgwork.clock.now()))
    bgwork.schedules.pause("nightly")
    assert bgwork.schedules.get("nightly").paused
    await bgwork.advance(DAY + 3 * 3600)  # 2026-01-02 03:00: two instants missed
    bgwork.schedules.resume("nightly")
    await bgwork.advance(DAY)
    assert ran == [at(3, 2)]
    bgwork.schedules.delete("nightly")
    await bgwork.advance(DAY)
    assert ran == [at(3, 2)]
    assert bgwork.schedules.names() == []
    with pytest.raises(KeyError, match="no schedule named 'nightly' \\(known: none yet\\)"):
        bgwork.schedules.runs("nightly")
    ops = [e.op for e in bgwork.history.filter("schedule")]
    assert ops == ["create", "pause", "resume", "fire", "run_ok", "delete"]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 25 * * *", "cron= '0 25 * * *': the hour field '25' is not valid (allowed: 0-23"),
        ("61 2 * * *", "the minute field '61' is not valid (allowed: 0-59"),
        ("0 2 0 * *", "the day-of-month field '0' is not valid"),
        ("0 2 * 13 *", "the month field '13' is not valid"),
        ("0 2 * * MON-XYZ", "the day-of-week field 'MON-XYZ' is not valid"),
        ("0 2 * *", "cron= needs 5 fields (minute hour day-of-month month day-of-week)"),
        ("0 0 2 * * *", "got 6 field(s) in '0 0 2 * * *'"),
        ("0 0 31 2 *", "cron= '0 0 31 2 *' never matches a real date"),
        ("@nightly", "cron= alias '@nightly' is unknown; use one of @yearly"),
    ],
)
def test_bad_cron_text_names_the_field(cron: str, message: str) -> None:
    with bg.Simulation() as sim, pytest.raises(ValueError) as info:
        sim.schedules.create("job", cron=cron, handler=lambda: None)
    assert message in str(info.value)


def test_exactly_one_target_is_required() -> None:
    app = Starlette()
    with bg.Simulation() as sim:
        with pytest.raises(TypeError, match=r"exactly one target.*got none"):
            sim.schedules.create("a", cron="@daily")
        with pytest.raises(TypeError, match=r"exactly one target.*got handler, url"):
            sim.schedules.create("a", cron="@daily", handler=lambda: None, url="https://x.example")
        with pytest.raises(ValueError, match="app= needs path= starting with '/'"):
            sim.schedules.create("a", cron="@daily", app=app)
        with pytest.raises(TypeError, match="path= goes with app="):
            sim.schedules.create("a", cron="@daily", handler=lambda: None, path="/x")


def test_other_bad_arguments_are_named() -> None:
    async def two(a: int, b: int) -> None: ...

    async def job() -> None: ...

    with bg.Simulation() as sim:
        with pytest.raises(ValueError, match="overlap= must be one of allow, skip; got 'queue'"):
            sim.schedules.create("a", cron="@daily", handler=job, overlap="queue")
        with pytest.raises(TypeError, match="requires a, b"):
            sim.schedules.create("a", cron="@daily", handler=two)
        with pytest.raises(TypeError, match="handler=nightly not handler=nightly\\(\\)"):
            sim.schedules.create("a", cron="@daily", handler=job())  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="name= must be 1-128 characters"):
            sim.schedules.create("bad name", cron="@daily", handler=job)
        sim.schedules.create("a", cron="@daily", handler=job)
        with pytest.raises(ValueError, match="schedule 'a' already exists"):
            sim.schedules.create("a", cron="@daily", handler=job)


def test_sync_tests_drive_schedules_with_sim_run() -> None:
    with bg.Simulation(seed=3, start="2026-03-01T00:00:00Z") as sim:
        ran: list[int] = []
        sim.schedules.create("weekly", cron="0 9 * * MON", handler=lambda: ran.append(1))
        sim.run(sim.advance(14 * DAY))
        assert [r.scheduled_at for r in sim.schedules.runs("weekly")] == [
            dt.datetime(2026, 3, 2, 9, tzinfo=dt.UTC), dt.datetime(2026, 3, 9, 9, tzinfo=dt.UTC),
        ]
        assert ran == [1, 1]


def test_same_seed_same_history() -> None:
    def once() -> str:
        with bg.Simulation(seed=11) as sim:
            async def job() -> None:
                await asyncio.sleep(sim.random.randint(1, 120))

            sim.schedules.create("m", cron="*/5 * * * *", handler=job)
            sim.run(sim.advance(3600))
            return sim.history.digest()

    assert once() == once()


@pytest.mark.asyncio
async def test_snapshot_restores_the_run_list(bgwork: bg.Simulation) -> None:
    bgwork.schedules.create("nightly", cron="0 2 * * *", handler=lambda: None)
    await bgwork.advance(DAY)
    state = bgwork.schedules._snapshot()
    await bgwork.advance(DAY)
    assert len(bgwork.schedules.runs("nightly")) == 2
    bgwork.schedules._restore(state)
    assert [r.scheduled_at for r in bgwork.schedules.runs("nightly")] == [at(1, 2)]


def test_used_from_a_user_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import asyncio, pytest

        @pytest.mark.parametrize("overlap", ["allow", "skip"])
        @pytest.mark.asyncio
        async def test_report_job_must_not_double_run(bgwork, overlap):
            async def build_report():
                await asyncio.sleep(2 * 3600)   # outlasts the hourly interval

            bgwork.schedules.create("report", cron="0 * * * *", handler=build_report,
                                    overlap=overlap)
            await bgwork.advance(3 * 3600)
            bgwork.schedules.pause("report")
            await bgwork.run_until_idle()
            runs = bgwork.schedules.runs("report")
            assert not any(r.overlapped for r in runs), [r.id for r in runs if r.overlapped]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*AssertionError: ?'run_2', 'run_3'?",
        "*bgwork timeline*",
        "*schedule.fire*name=report run=run_2*overlapped=true*",
    ])


@pytest.mark.asyncio
async def test_method_get_calls_the_app_without_a_body(bgwork: bg.Simulation) -> None:
    seen: list[tuple[str, bytes]] = []

    async def endpoint(request: Request) -> Response:
        seen.append((request.method, await request.body()))
        return Response(status_code=200)

    app = Starlette(routes=[Route("/api/cron", endpoint, methods=["GET"])])
    bgwork.schedules.create("vercel-style", cron="@hourly", app=app, path="/api/cron", method="get")
    await bgwork.advance(3600)
    assert seen == [("GET", b"")]
    assert bgwork.schedules.runs("vercel-style")[0].status == 200


def test_a_run_cut_off_at_teardown_is_recorded_as_cancelled() -> None:
    sim = bg.Simulation()

    async def job() -> None:
        await asyncio.sleep(3600)

    sim.schedules.create("nightly", cron="0 2 * * *", handler=job)
    sim.run(sim.advance(2 * 3600 + 1800))
    sim.close()  # the run is still going: teardown cancels it
    (run,) = sim.schedules.runs("nightly")
    assert (run.outcome, run.error, run.finished_at) == ("cancelled", "CancelledError()", at(1, 2, 30))
    assert [e.outcome for e in sim.history.filter("schedule", "run_failed")] == ["unknown"]
