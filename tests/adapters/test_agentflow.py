"""10xgraph 0.10.3's real BackgroundTaskManager: loaded on 3.11, run on the simulation, and the fake's oracle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pytest_bgwork as bg
from pytest_bgwork import adapters

# the real class, never skipped: install it with requirements/adapters-seed.txt
Real = adapters.agentflow.real_manager_class()

#: Every place the fake differs from the real class (docs/adapters/agentflow.md and
#: docs/services/task-manager.md have the same list). Bad arguments (a negative timeout, a
#: non-dict context) are refused by the fake at the call; the programs below never pass them.
DIFFERENCES = {
    "coroutine_function_at_cap": "a coroutine *function* passed at the cap: real: counts a drop, then "
                                 "AttributeError ('function' object has no attribute 'close'); fake: TypeError "
                                 "naming the fix, no drop counted (below the cap both raise TypeError)",
}

kinds = st.sampled_from(["finish", "fail", "hang", "cleanup", "timeout_error"])
ops = st.one_of(
    st.tuples(st.just("create"), kinds, st.sampled_from([0, 1, 3]), st.sampled_from([None, 0, 1, 2, 3]), st.booleans()),
    st.tuples(st.just("create_fn")),
    st.tuples(st.just("advance"), st.sampled_from([0.05, 0.5, 2, 5])),
    st.tuples(st.just("count")),
    st.tuples(st.just("info")),
    st.tuples(st.just("wait"), st.sampled_from([None, 0, 1, 4]), st.booleans()),
    st.tuples(st.just("cancel_all")),
    st.tuples(st.just("shutdown"), st.sampled_from([None, 0, 1, 4])),
    st.tuples(st.just("two_shutdowns"), st.sampled_from([None, 1]), st.sampled_from([None, 0])),
)


#: While true, a ``stubborn`` chore swallows every cancellation (teardown clears it).
STUBBORN: list[bool] = [True]


async def chore(kind: str, seconds: float) -> str:
    """One background chore; ``cleanup`` needs 1 s after its cancellation, ``stubborn`` never yields to one."""
    if kind == "stubborn":
        while True:
            try:
                await asyncio.sleep(10_000)
            except asyncio.CancelledError:
                if not STUBBORN:  # the test's teardown lets it go
                    raise
    try:
        await asyncio.sleep(10_000 if kind == "hang" else seconds)
    except asyncio.CancelledError:
        if kind == "cleanup":
            await asyncio.sleep(1)  # flushing a buffer: cancel_all does not wait for this
        raise
    if kind == "fail":
        raise ValueError("chore failed")
    if kind == "timeout_error":
        raise TimeoutError("the chore's own call timed out")
    return "ok"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Both managers log every failure at ERROR; keep the random runs' logs out of the report."""
    loggers = [logging.getLogger(n) for n in ("tenxgraph.utils", "pytest_bgwork.task_manager")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def outcome(task: Any) -> str:
    if task is None:
        return "dropped"
    if not task.done():
        return "running"
    if task.cancelled():
        return "cancelled"
    return "failed" if task.exception() is not None else "done"


def shown(result: dict[str, Any]) -> dict[str, Any]:
    """A shutdown dict with its duration rounded (the real class measures it on time.time(), virtual here)."""
    return {k: round(v, 6) if k == "duration_seconds" else v for k, v in result.items()}


class Run:
    """One run of a program on one manager: an observation (and the virtual time) per operation."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.ends: list[str] = []
        self.dropped = 0
        self.error: BaseException | None = None


def drive(make: Any, cap: int, program: list[tuple[Any, ...]]) -> Run:
    """Run ``program`` on ``make(sim, cap)`` in a fresh simulation (max_time 100,000 s)."""
    sim = bg.Simulation(seed=1, max_time=100_000)
    manager = make(sim, cap)
    run = Run()
    tasks: list[Any] = []

    async def one(op: tuple[Any, ...], n: int) -> Any:
        if op[0] == "create":
            _, kind, seconds, timeout, with_ctx = op
            task = manager.create_task(chore(kind, seconds), name=f"{kind}{n}", timeout=timeout,
                                       context={"n": n} if with_ctx else None)
            tasks.append(task)
            return "task" if task is not None else None
        if op[0] == "create_fn":
            return manager.create_task(chore, name="fn")
        if op[0] == "advance":
            await sim.advance(op[1])
            return None
        if op[0] == "count":
            return manager.get_task_count()
        if op[0] == "info":
            return [(i["name"], round(i["age_seconds"], 6), i["timeout"], repr(i["context"]), i["done"],
                     i["cancelled"]) for i in manager.get_task_info()]
        if op[0] == "wait":
            return await manager.wait_for_all(timeout=op[1], return_exceptions=op[2])
        if op[0] == "cancel_all":
            return await manager.cancel_all()
        if op[0] == "shutdown":
            return shown(await manager.shutdown(timeout=op[1]))
        if op[0] == "two_shutdowns":  # the second waits on the first's lock
            first, second = await asyncio.gather(manager.shutdown(timeout=op[1]), manager.shutdown(timeout=op[2]))
            return [shown(first), shown(second)]
        raise AssertionError(op)

    async def main() -> None:
        for n, op in enumerate(program):
            try:
                seen = await one(op, n)
            except (Exception, asyncio.CancelledError) as exc:  # the real wait_for_all lets some out
                seen = ("raises", type(exc).__name__)
            run.seen.append((seen, round(sim.clock.monotonic(), 6)))
        await sim.run_until_idle()

    try:
        sim.run(main())
    except bg.Stalled as exc:
        run.error = exc
    finally:
        STUBBORN.clear()
        try:
            sim.close()
        except bg.Stalled:  # the driver's own ``main`` catches CancelledError (it records
            if run.error is None:  # each op's outcome), so after a hang teardown abandons it
                raise
        finally:
            STUBBORN.append(True)
    run.ends = [outcome(t) for t in tasks]
    run.dropped = manager.dropped_count
    return run


def real(sim: bg.Simulation, cap: int) -> Any:
    return Real(max_pending_tasks=cap)


def fake(sim: bg.Simulation, cap: int) -> Any:
    return bg.BackgroundTaskManager(max_pending_tasks=cap, sim=sim)


def compare(program: list[tuple[Any, ...]], cap: int = 3) -> list[str]:
    """Run ``program`` on both classes; return the documented differences met (failing on any other)."""
    r, f = drive(real, cap, program), drive(fake, cap, program)
    met: list[str] = []
    if r.error is not None or f.error is not None:  # both hang, or neither
        assert r.error is not None and f.error is not None, (r.error, f.error, program)
        stubborn = [f"stubborn{n}" for n, op in enumerate(program) if op[0] == "create" and op[1] == "stubborn"]
        assert any(name in str(f.error) for name in stubborn), (str(f.error), program)
        return ["both_hang"]
    for i, (op, rs, fs) in enumerate(zip(program, r.seen, f.seen, strict=True)):
        if rs == fs:
            continue
        if op[0] == "create_fn" and rs[0] == ("raises", "AttributeError") and fs[0] == ("raises", "TypeError"):
            met.append("coroutine_function_at_cap")
            continue
        raise AssertionError(f"undocumented difference at op {i} {op!r}: real {rs!r}, fake {fs!r}\n"
                             f"program: {program!r}\nreal: {r.seen!r}\nfake: {f.seen!r}")
    assert r.ends == f.ends, f"task end states differ: real {r.ends}, fake {f.ends}\n{program!r}"
    assert r.dropped - met.count("coroutine_function_at_cap") == f.dropped, (r.dropped, f.dropped, program)
    return met


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=12), st.sampled_from([0, 3]))
def test_the_fake_matches_the_real_class(program: list[tuple[Any, ...]], cap: int) -> None:
    with quiet():
        met = compare(program, cap)
    assert set(met) <= set(DIFFERENCES)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=6), st.sampled_from(["wait", "wait_timeout", "shutdown", "shutdown_timeout"]))
def test_a_task_that_swallows_cancellation_hangs_both_and_the_fake_names_it(
        program: list[tuple[Any, ...]], stop: str) -> None:
    """Waiting for a task that catches CancelledError and goes on never ends, on either side.

    The real class's shutdown (and a wait_for_all, which cancels at its timeout) waits for
    the cancellation forever; on the simulation both end in ``bg.Stalled``, the fake's
    naming the task.
    """
    stop_op = {"wait": ("wait", None, True), "wait_timeout": ("wait", 1, False),
               "shutdown": ("shutdown", None), "shutdown_timeout": ("shutdown", 1)}[stop]
    program = [("create", "stubborn", 0, None, False), ("advance", 0.05), *program, stop_op]
    with quiet():
        assert compare(program) == ["both_hang"]


@pytest.mark.parametrize(("program", "expected"), [
    ([("create", "hang", 0, None, False)] * 3 + [("create_fn",)], ["coroutine_function_at_cap"]),
    ([("create_fn",), ("create", "hang", 0, 2, True), ("info",), ("advance", 5), ("count",)], []),
    ([("create", "stubborn", 0, None, False), ("advance", 0.05), ("shutdown", 4)], ["both_hang"]),
])
def test_each_documented_difference_is_met_where_expected(program: list[Any], expected: list[str]) -> None:
    with quiet():
        assert compare(program) == expected


#: Each row failed against the fake of 0.3 (it differed from the real class there).
@pytest.mark.parametrize(("program", "cap", "expected"), [
    # shutdown cancels the running export at once: work in flight is lost (status completed)
    ([("create", "finish", 3, None, False), ("shutdown", 10)], 3,
     [("task", 0.0), ({"status": "completed", "initial_tasks": 1, "completed_tasks": 1, "remaining_tasks": 0,
                       "duration_seconds": 0.1}, 0.1)]),
    # cancel_all returns after 0.1 s while the task's 1 s clean-up still runs
    ([("create", "cleanup", 5, None, False), ("advance", 1), ("cancel_all",), ("count",)], 3,
     [("task", 0.0), (None, 1.0), (None, 1.1), (1, 1.1)]),
    # 0 means no limit: no cap, no timeout
    ([("create", "finish", 1, 0, False)] * 2 + [("count",), ("wait", 0, False), ("count",)], 0,
     [("task", 0.0), ("task", 0.0), (2, 0.0), (None, 1.0), (0, 1.0)]),
    # wait_for_all swallows a task's own TimeoutError (and returns at once, the other task running)
    ([("create", "timeout_error", 1, None, False), ("create", "finish", 3, None, False), ("wait", None, False),
      ("count",)], 3, [("task", 0.0), ("task", 0.0), (None, 1.0), (1, 1.0)]),
    # a wait that times out cancels the rest and returns None
    ([("create", "hang", 0, None, False), ("wait", 1, False), ("count",)], 3,
     [("task", 0.0), (None, 1.0), (0, 1.0)]),
    # create_task after shutdown runs the task
    ([("shutdown", None), ("create", "finish", 1, None, False), ("wait", None, False)], 3,
     [({"status": "completed", "initial_tasks": 0, "completed_tasks": 0, "remaining_tasks": 0,
        "duration_seconds": 0.0}, 0.0), ("task", 0.0), (None, 1.0)]),
    # the second concurrent shutdown waits on the lock, then reports already_shutdown
    ([("create", "cleanup", 5, None, False), ("two_shutdowns", None, None)], 3,
     [("task", 0.0), ([{"status": "completed", "initial_tasks": 1, "completed_tasks": 1, "remaining_tasks": 0,
                        "duration_seconds": 1.0}, {"status": "already_shutdown", "tasks_remaining": 0}], 1.0)]),
])
def test_rows_where_the_old_fake_differed(program: list[Any], cap: int, expected: list[Any]) -> None:
    with quiet():
        assert compare(program, cap) == []
        assert drive(fake, cap, program).seen == expected


# -- the adapter ------------------------------------------------------------------------------
def test_loaded_by_file_and_importable_by_its_real_name_afterwards() -> None:
    from tenxgraph.utils.background_task_manager import BackgroundTaskManager

    assert BackgroundTaskManager is Real
    assert Real.__module__ == "tenxgraph.utils.background_task_manager"


def test_a_load_failure_names_module_and_line(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from pytest_bgwork.adapters import agentflow

    bad = tmp_path / "tenxgraph" / "utils"
    bad.mkdir(parents=True)
    (bad / "metrics.py").write_text("x = 1\n")
    (bad / "background_task_manager.py").write_text("import asyncio\n\nclass BackgroundTaskManager(:\n    pass\n")

    class Dist:
        version = "9.9.9"

        def locate_file(self, name: str) -> Any:
            return tmp_path / name

    for name in [m for m in sys.modules if m.startswith("tenxgraph")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(agentflow.importlib.metadata, "distribution", lambda name: Dist())
    with pytest.raises(agentflow.LoadError,
                       match=r"module tenxgraph\.utils\.background_task_manager .* at line 3: SyntaxError"):
        agentflow._load_by_file()


def test_the_real_class_runs_on_the_simulation_visible_to_history_faults_and_drained() -> None:
    sim = bg.Simulation(seed=1)
    ends: list[str] = []

    async def main() -> None:
        with adapters.agentflow.install(sim) as Manager:
            manager = Manager()
            sim.faults.fail("task.export_trace", error=ConnectionError("collector down"))
            a = manager.create_task(chore("finish", 3), name="save_memory", timeout=5, context={"t": "1"})
            b = manager.create_task(chore("finish", 1), name="export_trace")
            c = manager.create_task(chore("hang", 0), name="stuck", timeout=2)
            await asyncio.sleep(0)  # the chores start (the shadow tasks exist from their first step)
            with pytest.raises(bg.CheckFailed, match="stuck"):
                bg.assert_drained(sim)
            await manager.wait_for_all(return_exceptions=True)
            ends.extend(outcome(t) for t in (a, b, c))
            assert sim.clock.monotonic() == 3.0
            bg.assert_drained(sim)
            # the real class's timeout cancellers ended with their tasks: nothing sleeps on to t=5
            assert sim.loop.live_tasks() == [asyncio.current_task()]
            await sim.run_until_idle()
            assert sim.clock.monotonic() == 3.0

    sim.run(main())
    assert ends == ["done", "failed", "cancelled"]
    ops = [(e.op, e.detail["name"]) for e in sim.history.events if e.service == "task_manager"]
    assert ("task_done", "save_memory") in ops and ("task_failed", "export_trace") in ops
    assert ("cancelled", "stuck") in ops


def test_install_restores_the_class() -> None:
    before = Real.__dict__["create_task"]
    with adapters.agentflow.install(bg.Simulation(seed=1)):
        assert Real.__dict__["create_task"] is not before
    assert Real.__dict__["create_task"] is before


def test_injectq_pitfall_the_fixture_rebinds_the_manager(pytester: pytest.Pytester) -> None:
    """A manager bound once at import outlives the first test's loop; bg_agentflow rebinds it."""
    pytester.makepyfile(app="""
        import asyncio
        from injectq import Inject, InjectQ, inject
        from pytest_bgwork import adapters

        Manager = adapters.agentflow.real_manager_class()
        InjectQ.get_instance().bind_instance(Manager, Manager())   # once, at import

        async def chore():
            await asyncio.sleep(1)

        @inject
        async def node(task_manager: Manager = Inject[Manager]):
            task_manager.create_task(chore(), name="chore")
            return await task_manager.shutdown(timeout=5)
    """)
    pytester.makepyfile(test_app="""
        import pytest, app

        @pytest.mark.asyncio
        @pytest.mark.parametrize("turn", [1, 2])
        async def test_node(bg_agentflow, bgwork, turn):
            result = await app.node()
            assert result["status"] == "completed" and result["initial_tasks"] == 1
            # the real shutdown cancels the chore before it ever ran: it never reached the history
            assert bgwork.history.count("task_manager", "create_task") == 0

        @pytest.mark.asyncio
        @pytest.mark.parametrize("turn", [1, 2])
        async def test_node_without_the_fixture(bgwork, turn):
            result = await app.node()
            assert result["status"] == "completed", result
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    # with the fixture each test gets a fresh manager; without it the second test meets the
    # first one's shut-down manager
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["E       AssertionError: {'status': 'already_shutdown', 'tasks_remaining': 0}",
                                 "FAILED test_app.py::test_node_without_the_fixture[[]2[]]*"])
