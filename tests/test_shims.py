"""The shims around CPython, asyncio and pytest-asyncio internals: right on this Python,
and a correct fallback when the internal is missing or the version unchecked."""

from __future__ import annotations

import asyncio
import operator
import sys
import types
from typing import Any

import pytest

import pytest_bgwork as bg
from pytest_bgwork.core import _cpython


def test_checked_versions_cover_the_ones_ci_runs() -> None:
    expected = (3, 11) <= sys.version_info[:2] <= (3, 13)
    assert expected == _cpython.CHECKED


def test_current_task_getter_answers_the_stepping_task() -> None:
    get = _cpython.current_task_getter()
    if _cpython.CHECKED:
        assert get is not asyncio.current_task  # the fast table

    async def main() -> None:
        assert get(asyncio.get_running_loop()) is asyncio.current_task()

    asyncio.run(main())


def test_current_task_getter_falls_back_without_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _cpython.current_task_getter(checked=False) is asyncio.current_task
    monkeypatch.delattr(asyncio.tasks, "_current_tasks", raising=False)
    assert _cpython.current_task_getter() is asyncio.current_task


def test_cancel_requested_tracks_a_pending_cancellation() -> None:
    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        assert not _cpython.cancel_requested(task)
        task.cancel()  # a task not yet started: the cancellation waits for its first step
        assert _cpython.cancel_requested(task)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_cancel_requested_assumes_a_cancellation_when_the_field_is_missing() -> None:
    assert _cpython.cancel_requested(types.SimpleNamespace())  # type: ignore[arg-type]


def test_the_loops_cancel_reader_sees_a_pending_cancellation_and_falls_back_unchecked() -> None:
    read = _cpython.cancel_requested_getter()

    async def main() -> None:
        task = asyncio.create_task(asyncio.sleep(0))
        assert not read(task)
        task.cancel()
        assert read(task)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert _cpython.cancel_requested_getter(checked=False) is _cpython.cancel_requested


def test_is_awaiting_tells_an_await_from_a_call() -> None:
    seen: dict[str, bool] = {}

    async def inner() -> None:
        caller = sys._getframe(1)  # outer's frame, awaiting inner()
        seen["awaiting"] = _cpython.is_awaiting(caller)
        seen["unchecked"] = _cpython.is_awaiting(caller, checked=False)

    async def outer() -> None:
        await inner()
        seen["calling"] = _cpython.is_awaiting(sys._getframe(0))  # outer itself is at a call

    asyncio.run(outer())
    assert seen == {"awaiting": _cpython.CHECKED, "unchecked": False, "calling": False}
    assert _cpython.await_opcode(checked=False) == -1
    if _cpython.CHECKED:
        import opcode

        assert _cpython.await_opcode() == opcode.opmap["SEND"]


def _iterations(sim: bg.Simulation) -> list[int]:
    loop: Any = sim.loop
    count = [0]
    real = loop._run_once

    def counting() -> None:
        count[0] += 1
        real()

    loop._run_once = counting
    return count


def _kv_run() -> tuple[int, str]:
    with bg.Simulation(seed=3) as sim:
        async def main() -> None:
            await asyncio.sleep(0)
            for i in range(20):
                await sim.kv.set("ns", f"k{i}", i)
                assert (await sim.kv.get("ns", f"k{i}")).data == i

        count = _iterations(sim)
        sim.run(main())
        return count[0], sim.history.digest()


def test_handle_run_code_is_asyncio_s_and_none_when_unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    if _cpython.CHECKED:
        assert _cpython.handle_run_code() is asyncio.Handle._run.__code__  # type: ignore[attr-defined]
    assert _cpython.handle_run_code(checked=False) is None
    monkeypatch.delattr(asyncio.Handle, "_run")
    assert _cpython.handle_run_code() is None


@pytest.mark.parametrize("shim", ["is_awaiting", "cancel_requested", "current_task_getter", "handle_run_code"])
def test_the_loop_falls_back_to_plain_yields_with_the_same_history(
        monkeypatch: pytest.MonkeyPatch, shim: str) -> None:
    from pytest_bgwork.core import loop

    fast, digest = _kv_run()
    if _cpython.CHECKED:
        assert fast <= 3  # the service calls' yields were skipped
    if shim == "current_task_getter":  # the table missing: asyncio.current_task, still fast
        monkeypatch.setattr(loop, "_current_task", _cpython.current_task_getter(checked=False))
        assert _kv_run() == (fast, digest)
        return
    if shim == "handle_run_code":  # unknown: no frame is the loop's own step
        monkeypatch.setattr(loop, "_HANDLE_RUN", _cpython.handle_run_code(checked=False))
    elif shim == "is_awaiting":  # unknown opcode: no frame counts as awaiting
        monkeypatch.setattr(loop, "_SEND", _cpython.await_opcode(checked=False))
    elif shim == "cancel_requested":  # a task without the field: a cancellation may be pending
        monkeypatch.setattr(loop, "_cancel_requested", operator.attrgetter("_no_such_field"))
    slow, same = _kv_run()
    assert slow >= 40  # every service call yielded to the loop
    assert same == digest


# -- pytest_bgwork._shims: the plugin's reads of CPython and pytest-asyncio -------------------
def test_unawaited_hook_sees_a_freed_coroutine_and_is_restored() -> None:
    import gc
    import warnings

    from pytest_bgwork import _shims

    seen: list[str] = []
    before = warnings._warn_unawaited_coroutine  # type: ignore[attr-defined]
    original = _shims.install_unawaited_hook(lambda coro: seen.append(coro.__qualname__))
    assert original is before
    try:
        async def forgotten() -> None:
            pass

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            forgotten()  # type: ignore[unused-coroutine]
            gc.collect()
    finally:
        _shims.restore_unawaited_hook(original)
    assert seen == [forgotten.__qualname__]
    assert warnings._warn_unawaited_coroutine is before  # type: ignore[attr-defined]


def test_unawaited_hook_installs_nothing_when_cpython_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from pytest_bgwork import _shims

    monkeypatch.delattr(warnings, "_warn_unawaited_coroutine")
    assert _shims.install_unawaited_hook(lambda coro: None) is None
    assert not hasattr(warnings, "_warn_unawaited_coroutine")
    _shims.restore_unawaited_hook(None)  # a no-op


def test_names_in_body_finds_the_name_through_decorators() -> None:
    import functools

    from pytest_bgwork import _shims

    def expects() -> None:
        with pytest.raises(bg.UnmockedRequest):
            pass

    @functools.wraps(expects)
    def wrapped() -> None:
        expects()

    def other() -> None:
        pass

    assert _shims.names_in_body(expects, "UnmockedRequest") is expects.__code__
    assert _shims.names_in_body(wrapped, "UnmockedRequest") is expects.__code__
    assert _shims.names_in_body(other, "UnmockedRequest") is None
    assert _shims.names_in_body(None, "UnmockedRequest") is None
    assert _shims.names_in_body(print, "UnmockedRequest") is None  # no code object


@pytest.mark.parametrize("where", ["marker", "ini"])
def test_a_wider_asyncio_loop_scope_is_refused_from_marker_and_ini(
        pytester: pytest.Pytester, where: str) -> None:
    mark = '@pytest.mark.asyncio(loop_scope="module")' if where == "marker" else "@pytest.mark.asyncio"
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     + ("asyncio_default_test_loop_scope = module\n" if where == "ini" else ""))
    pytester.makepyfile(f"""
        import pytest

        {mark}
        async def test_wide(bgwork):
            pass

        @pytest.mark.asyncio
        async def test_narrow(bgwork):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("errors", 0) >= 1
    result.stdout.fnmatch_lines(["*this test asks pytest-asyncio for loop_scope='module'*"])
    if where == "marker":
        result.assert_outcomes(passed=1, errors=1)


def test_a_missing_pytest_asyncio_runner_is_a_clear_usage_error(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_bgwork import _shims

    monkeypatch.setattr(_shims, "_RUNNER_FIXTURE", "_no_such_runner")
    pytester.makepyfile("""
        import pytest

        @pytest.mark.asyncio
        async def test_it(bgwork):
            pass
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "*cannot find the loop pytest-asyncio * made for test_a_missing*::test_it*"
        "checked with pytest-asyncio 1.4 and 1.5*",
    ])
