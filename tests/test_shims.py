"""The shims around CPython, asyncio and pytest-asyncio internals: right on this Python,
and a correct fallback when the internal is missing or the version unchecked."""

from __future__ import annotations

import asyncio
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


@pytest.mark.parametrize("shim", ["is_awaiting", "cancel_requested", "current_task_getter"])
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
    monkeypatch.setattr(_cpython, shim, lambda *a, **k: shim == "cancel_requested")
    slow, same = _kv_run()
    assert slow >= 40  # every service call yielded to the loop
    assert same == digest
