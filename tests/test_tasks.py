"""Tasks: work items with ids, tags and statuses; history, fault points, snapshot."""

from __future__ import annotations

import datetime as dt

import pytest

import pytest_bgwork as bg
from pytest_bgwork.services.tasks import STATUSES


@pytest.mark.asyncio
async def test_create_returns_an_open_task_with_a_deterministic_id(bgwork: bg.Simulation) -> None:
    await bgwork.advance(60)
    task = await bgwork.tasks.create(title="Refund order 7", description="card declined",
                                     tags=["billing", "urgent"])
    assert (task.id, task.title, task.description, task.tags, task.status) == (
        "task_1", "Refund order 7", "card declined", ("billing", "urgent"), "open"
    )
    assert task.created_at == task.updated_at == dt.datetime(2026, 1, 1, 0, 1, tzinfo=dt.UTC)
    assert (await bgwork.tasks.create("Second")).id == "task_2"
    assert await bgwork.tasks.get("task_1") == task
    (event, _) = bgwork.history.filter("task", "create")
    assert event.detail == {"id": "task_1", "status": "open", "title": "Refund order 7",
                            "tags": ["billing", "urgent"]}


@pytest.mark.asyncio
async def test_list_filters_by_tag_and_status(bgwork: bg.Simulation) -> None:
    a = await bgwork.tasks.create(title="a", tags=["billing"])
    b = await bgwork.tasks.create(title="b", tags=["ops"])
    c = await bgwork.tasks.create(title="c", tags=["billing", "ops"])
    await bgwork.tasks.update(c.id, status="done")
    assert [t.id for t in bgwork.tasks.list()] == [a.id, b.id, c.id]
    assert [t.id for t in bgwork.tasks.list(tag="billing")] == [a.id, c.id]
    assert [t.id for t in bgwork.tasks.list(status="open")] == [a.id, b.id]
    assert [t.id for t in bgwork.tasks.list(tag="ops", status="done")] == [c.id]
    assert bgwork.tasks.list(tag="none") == []


@pytest.mark.asyncio
async def test_update_changes_status_and_fields_and_is_recorded(bgwork: bg.Simulation) -> None:
    task = await bgwork.tasks.create(title="Rotate keys")
    await bgwork.advance(3600)
    started = await bgwork.tasks.update(task.id, status="in_progress", tags=["security"])
    assert (started.status, started.tags, started.title) == ("in_progress", ("security",), "Rotate keys")
    assert started.updated_at - started.created_at == dt.timedelta(hours=1)
    assert task.status == "open"  # records are immutable: the old version is unchanged
    reopened = await bgwork.tasks.update(task.id, status="done", title="Rotate all keys")
    assert (await bgwork.tasks.get(task.id)) == reopened
    updates = [e.detail for e in bgwork.history.filter("task", "update")]
    assert updates == [
        {"id": "task_1", "status": "in_progress", "from": "open", "changed": ["status", "tags"]},
        {"id": "task_1", "status": "done", "from": "in_progress", "changed": ["status", "title"]},
    ]


@pytest.mark.asyncio
async def test_any_status_may_follow_any_other(bgwork: bg.Simulation) -> None:
    task = await bgwork.tasks.create(title="x")
    for status in ("done", "open", "cancelled", "in_progress"):
        assert (await bgwork.tasks.update(task.id, status=status)).status == status
    assert STATUSES == ("open", "in_progress", "done", "cancelled")


@pytest.mark.asyncio
async def test_bad_status_lists_the_valid_values(bgwork: bg.Simulation) -> None:
    task = await bgwork.tasks.create(title="x")
    with pytest.raises(ValueError) as info:
        await bgwork.tasks.update(task.id, status="closed")
    assert str(info.value) == "status= must be one of open, in_progress, done, cancelled; got 'closed'"
    with pytest.raises(ValueError, match="status= must be one of open, in_progress"):
        bgwork.tasks.list(status="finished")
    assert (await bgwork.tasks.get(task.id)).status == "open"
    assert bgwork.history.count("task", "update") == 0


@pytest.mark.asyncio
async def test_bad_arguments_are_named(bgwork: bg.Simulation) -> None:
    with pytest.raises(ValueError, match="title= must be a non-empty string; got '  '"):
        await bgwork.tasks.create(title="  ")
    with pytest.raises(TypeError, match=r"tags= takes a list of strings .* got the string 'urgent'"):
        await bgwork.tasks.create(title="x", tags="urgent")
    with pytest.raises(ValueError, match="tags= must be non-empty strings; got \\[3\\]"):
        await bgwork.tasks.create(title="x", tags=["a", 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="description= must be a string"):
        await bgwork.tasks.create(title="x", description=None)  # type: ignore[arg-type]
    task = await bgwork.tasks.create(title="x")
    with pytest.raises(ValueError, match="update\\(\\) needs at least one of status="):
        await bgwork.tasks.update(task.id)
    with pytest.raises(KeyError, match="no task with id 'task_9' \\(known: task_1\\)"):
        await bgwork.tasks.get("task_9")
    with pytest.raises(KeyError, match="no task with id 'task_9'"):
        await bgwork.tasks.update("task_9", status="done")
    with pytest.raises(TypeError, match="tag= filters by one tag"):
        bgwork.tasks.list(tag=["a"])  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_create_and_update_are_fault_points(bgwork: bg.Simulation) -> None:
    bgwork.faults.fail("tasks.create", on_call=1, error=ConnectionError("tracker down"))
    with pytest.raises(ConnectionError, match="tracker down"):
        await bgwork.tasks.create(title="lost?")
    assert bgwork.tasks.list() == []
    task = await bgwork.tasks.create(title="kept")
    bgwork.faults.fail("tasks.update", after_apply=True, error=TimeoutError("slow"))
    with pytest.raises(TimeoutError):
        await bgwork.tasks.update(task.id, status="done")
    assert (await bgwork.tasks.get(task.id)).status == "done"  # it applied before the error
    outcomes = [(e.op, e.outcome) for e in bgwork.history.filter("task")]
    assert outcomes == [("create", "fail"), ("create", "ok"), ("update", "unknown")]


@pytest.mark.asyncio
async def test_get_is_a_fault_point(bgwork: bg.Simulation) -> None:
    task = await bgwork.tasks.create(title="x")
    bgwork.faults.fail("tasks.get", on_call=1)
    with pytest.raises(ConnectionError):
        await bgwork.tasks.get(task.id)
    assert (await bgwork.tasks.get(task.id)).id == task.id


@pytest.mark.asyncio
async def test_snapshot_and_restore(bgwork: bg.Simulation) -> None:
    a = await bgwork.tasks.create(title="a")
    state = bgwork.tasks._snapshot()
    await bgwork.tasks.update(a.id, status="done")
    await bgwork.tasks.create(title="b")
    bgwork.tasks._restore(state)
    assert [(t.id, t.status) for t in bgwork.tasks.list()] == [("task_1", "open")]


def test_used_from_a_user_test_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        async def triage(sim, alert):
            # an agent files one task per alert, and must not file it twice on a retry
            if not sim.tasks.list(tag=alert):
                await sim.tasks.create(title=f"Investigate {alert}", tags=[alert, "agent"])

        @pytest.mark.asyncio
        async def test_triage_files_each_alert_once(bgwork):
            await triage(bgwork, "disk-full")
            await triage(bgwork, "disk-full")
            (task,) = bgwork.tasks.list(tag="agent")
            assert (task.id, task.status) == ("task_1", "open")
            done = await bgwork.tasks.update(task.id, status="done")
            assert bgwork.tasks.list(status="open") == []
            assert done.status == "done"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
