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

CAP = 3
#: not compared: a wall-clock duration, and the fake's extra key (the names it cancelled)
IGNORED = ("duration_seconds", "cancelled")

# -- the oracle -------------------------------------------------------------------------------
#: Every place the fake deliberately differs from the real class, with the real behaviour
#: (docs/adapters/agentflow.md has the same table). ``diverges``: after it, the two runs
#: legitimately hold different tasks, so the comparison stops there.
DIFFERENCES = {
    "create_after_shutdown": ("real: accepts the task and runs it; fake: raises ManagerShutDown", True),
    "coroutine_function_at_cap": ("real: counts a drop, then AttributeError ('function' object has no "
                                  "attribute 'close'); fake: TypeError naming the fix", False),
    "wait_timeout": ("both cancel the stragglers; real: logs a warning and returns None; fake: raises "
                     "TimeoutError naming them", False),
    "wait_sees_a_cancelled_task": ("return_exceptions=False and a task it waits for is cancelled (its "
                                   "timeout, cancel_all): real: CancelledError escapes wait_for_all at once "
                                   "(gather's), the others keep running; fake: a cancelled task counts as "
                                   "finished and the wait goes on", True),
    "shutdown_cancels_at_once": ("real: cancels every task first, then waits for the cancellations "
                                 "(status 'completed'); fake: waits up to the timeout for them to finish, "
                                 "then cancels the rest (status 'timeout' if any)", True),
    "already_shutdown_dict": ("real: {'status': 'already_shutdown', 'tasks_remaining': 0}; fake: the "
                              "five keys of a shutdown dict with status 'already_shutdown'", False),
}

kinds = st.sampled_from(["finish", "fail", "hang"])
ops = st.one_of(
    st.tuples(st.just("create"), kinds, st.sampled_from([0, 1, 3]), st.sampled_from([None, 2]), st.booleans()),
    st.tuples(st.just("create_fn")),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 2, 5])),
    st.tuples(st.just("count")),
    st.tuples(st.just("info")),
    st.tuples(st.just("wait"), st.sampled_from([None, 1, 4]), st.booleans()),
    st.tuples(st.just("cancel_all")),
    st.tuples(st.just("shutdown"), st.sampled_from([None, 1, 4])),
)


async def chore(kind: str, seconds: float) -> str:
    await asyncio.sleep(10_000 if kind == "hang" else seconds)
    if kind == "fail":
        raise ValueError("chore failed")
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


def drive(manager: Any, sim: bg.Simulation, program: list[tuple[Any, ...]]) -> tuple[list[Any], list[str]]:
    """Run ``program`` on ``manager``; one observation per operation, then each task's end state."""
    seen: list[Any] = []
    tasks: list[Any] = []

    async def main() -> None:
        for n, op in enumerate(program):
            try:
                if op[0] == "create":
                    _, kind, seconds, timeout, with_ctx = op
                    task = manager.create_task(chore(kind, seconds), name=f"{kind}{n}", timeout=timeout,
                                               context={"n": n} if with_ctx else None)
                    tasks.append(task)
                    seen.append("task" if task is not None else None)
                elif op[0] == "create_fn":
                    seen.append(manager.create_task(chore, name="fn"))
                elif op[0] == "advance":
                    await sim.advance(op[1])
                    seen.append(None)
                elif op[0] == "count":
                    seen.append(manager.get_task_count())
                elif op[0] == "info":
                    seen.append(sorted((i["name"], i["timeout"], repr(i["context"]), i["done"], i["cancelled"])
                                       for i in manager.get_task_info()))
                elif op[0] == "wait":
                    seen.append(await manager.wait_for_all(timeout=op[1], return_exceptions=op[2]))
                elif op[0] == "cancel_all":
                    seen.append(await manager.cancel_all())
                elif op[0] == "shutdown":
                    result = await manager.shutdown(timeout=op[1])
                    seen.append({k: result[k] for k in sorted(result) if k not in IGNORED})
            except (Exception, asyncio.CancelledError) as exc:  # the real wait_for_all lets one out
                seen.append(("raises", type(exc).__name__))
        await sim.run_until_idle()

    sim.run(main())
    return seen, [outcome(t) for t in tasks]


def classify(op: tuple[Any, ...], real: Any, fake: Any, shut: bool, live: int) -> str | None:
    """The documented difference that explains ``real`` != ``fake`` at ``op`` (None: none does)."""
    if op[0] == "create" and shut and real == "task" and fake == ("raises", "ManagerShutDown"):
        return "create_after_shutdown"
    if op[0] == "create_fn" and real == ("raises", "AttributeError") and fake == ("raises", "TypeError"):
        return "coroutine_function_at_cap"
    if op[0] == "wait" and not op[2] and real == ("raises", "CancelledError"):
        return "wait_sees_a_cancelled_task"
    if op[0] == "wait" and op[1] is not None and real is None and fake == ("raises", "TimeoutError"):
        return "wait_timeout"
    if op[0] == "shutdown" and isinstance(real, dict):
        if real["status"] == "already_shutdown":
            return "already_shutdown_dict" if isinstance(fake, dict) and fake["status"] == real["status"] else None
        if live and real == {"status": "completed", "initial_tasks": live, "completed_tasks": live,
                             "remaining_tasks": 0}:
            return "shutdown_cancels_at_once"
    return None


def compare(program: list[tuple[Any, ...]]) -> list[str]:
    """Run ``program`` on both classes; return the differences met (failing on any other)."""
    sim = bg.Simulation(seed=1)
    real_seen, real_ends = drive(Real(max_pending_tasks=CAP), sim, program)
    sim = bg.Simulation(seed=1)
    fake_seen, fake_ends = drive(bg.BackgroundTaskManager(max_pending_tasks=CAP, sim=sim), sim, program)
    met: list[str] = []
    shut = False
    for i, (op, real, fake) in enumerate(zip(program, real_seen, fake_seen, strict=True)):
        live = real.get("initial_tasks", 0) if isinstance(real, dict) else 0
        if op[0] == "shutdown" and live:  # the real class cancels the live tasks at once
            assert classify(op, real, fake, shut, live) == "shutdown_cancels_at_once", (real, fake, program)
            assert isinstance(fake, dict) and fake["initial_tasks"] == live, (real, fake, program)
            return [*met, "shutdown_cancels_at_once"]  # from here the runs hold different tasks
        if real != fake:
            kind = classify(op, real, fake, shut, live)
            assert kind is not None, (
                f"undocumented difference at op {i} {op!r}: real {real!r}, fake {fake!r}\n"
                f"program: {program!r}\nreal: {real_seen!r}\nfake: {fake_seen!r}"
            )
            met.append(kind)
            if DIFFERENCES[kind][1]:
                return met
        shut = shut or op[0] == "shutdown"
    assert real_ends == fake_ends, f"task end states differ: real {real_ends}, fake {fake_ends}\n{program!r}"
    return met


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=12))
def test_the_fake_differs_from_the_real_class_only_where_documented(program: list[tuple[Any, ...]]) -> None:
    with quiet():
        met = compare(program)
    assert set(met) <= set(DIFFERENCES)


@pytest.mark.parametrize(("program", "expected"), [
    ([("shutdown", None), ("create", "finish", 1, None, False)], ["create_after_shutdown"]),
    ([("create", "hang", 0, None, False)] * CAP + [("create_fn",)], ["coroutine_function_at_cap"]),
    ([("create", "hang", 0, None, False), ("wait", 1, False)], ["wait_timeout"]),
    ([("create", "finish", 3, None, False), ("shutdown", 10)], ["shutdown_cancels_at_once"]),
    ([("shutdown", None), ("shutdown", None)], ["already_shutdown_dict"]),
    ([("create", "hang", 0, 2, False), ("create", "finish", 3, None, False), ("wait", None, False)],
     ["wait_sees_a_cancelled_task"]),
    ([("create", "fail", 1, None, True), ("create", "finish", 3, 2, False), ("wait", None, True), ("count",)], []),
    ([("create_fn",), ("create", "hang", 0, 2, True), ("info",), ("advance", 5), ("count",)], []),
    # a task ending at the wait's deadline instant: the deadline was armed first, so it wins
    # (the fake used to re-arm it on each wake and let the task finish)
    ([("create", "finish", 0, None, False), ("create", "finish", 1, None, False), ("wait", 1, True)],
     ["wait_timeout"]),
    ([("create", "finish", 3, None, False), ("advance", 2), ("wait", 1, False)], []),
])
def test_each_documented_difference_is_met_where_expected(program: list[Any], expected: list[str]) -> None:
    with quiet():
        assert compare(program) == expected


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
    (bad / "background_task_manager.py").write_text("import asyncio\n\nclass BackgroundTaskManager[S]:\n    pass\n")

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
