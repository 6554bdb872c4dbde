"""Tasks: work items for people or agents (a title, tags and a status), on virtual time.

Each create/update is recorded (``task.create``, ``task.update``); the fault points
are ``tasks.create``, ``tasks.update`` and ``tasks.get`` (``task.<name>`` belongs to
waitUntil and manager tasks), so a test can see an agent file the same task twice
or leave one stuck ``in_progress``.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as _dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..core import validate

if TYPE_CHECKING:
    from ..core.kernel import Kernel

__all__ = ["STATUSES", "Task", "Tasks"]

#: Every status a task can have; any status may follow any other (a task can be reopened).
STATUSES = ("open", "in_progress", "done", "cancelled")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Task:
    """One work item as stored at one moment (immutable: ``update`` makes a new one)."""

    id: str
    title: str
    description: str
    tags: tuple[str, ...]
    status: str
    created_at: _dt.datetime
    updated_at: _dt.datetime


def _check_title(title: object) -> str:
    if not isinstance(title, str) or not title.strip():
        raise ValueError(f"title= must be a non-empty string; got {title!r}")
    return validate.utf8(title, "tasks.create", "title")


def _check_description(description: object) -> str:
    if not isinstance(description, str):
        raise TypeError(f"description= must be a string; got {type(description).__name__}")
    return validate.utf8(description, "tasks.create", "description")


def _check_tags(tags: object) -> tuple[str, ...]:
    if isinstance(tags, str | bytes):
        raise TypeError(
            f"tags= takes a list of strings such as ['billing']; got the string {tags!r} "
            "(wrap it in a list)"
        )
    if not isinstance(tags, Iterable):
        raise TypeError(f"tags= takes a list of strings; got {type(tags).__name__}")
    out = tuple(tags)
    bad = [t for t in out if not isinstance(t, str) or not t]
    if bad:
        raise ValueError(f"tags= must be non-empty strings; got {bad!r} among {list(out)!r}")
    return out


def _check_status(status: object, arg: str = "status") -> str:
    if status not in STATUSES:
        raise ValueError(f"{arg}= must be one of {', '.join(STATUSES)}; got {status!r}")
    return str(status)


class Tasks:
    """``sim.tasks``: create, read, list and update work items."""

    STATUSES = STATUSES
    """Every status a task can have; any status may follow any other."""

    def __init__(self, sim: Kernel) -> None:
        self._sim = sim
        self._items: dict[str, Task] = {}

    async def create(
        self, title: str, description: str = "", tags: Iterable[str] = ()
    ) -> Task:
        """Add an ``open`` task with a new id (``task_1``, ``task_2``...)."""
        fields = (_check_title(title), _check_description(description), _check_tags(tags))
        now = self._sim.clock.now()
        task = Task(self._sim._next_id("task"), *fields, "open", now, now)

        def apply() -> Task:
            self._items[task.id] = task
            return task

        detail = {"id": task.id, "status": task.status, "title": title, "tags": list(task.tags)}
        return await self._op("create", apply, detail)

    async def get(self, id: str) -> Task:
        """The task ``id`` as it stands; ``KeyError`` naming the known ids if there is none."""
        step = self._sim.faults._enter("tasks.get")
        if step is not None:
            await step
        task = self._find(id)
        self._sim.faults._leave("tasks.get")
        return task

    def list(self, tag: str | None = None, status: str | None = None) -> builtins.list[Task]:
        """Tasks in creation order, only those carrying ``tag`` and/or in ``status`` if given."""
        if status is not None:
            _check_status(status)
        if tag is not None and not isinstance(tag, str):
            raise TypeError(f"tag= filters by one tag (a string); got {tag!r}")
        return [
            t for t in self._items.values()
            if (tag is None or tag in t.tags) and (status is None or t.status == status)
        ]

    async def update(
        self,
        id: str,
        *,
        status: str | None = None,
        title: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> Task:
        """Change a task's status and/or fields; returns the new version."""
        changes: dict[str, Any] = {}
        if status is not None:
            changes["status"] = _check_status(status)
        if title is not None:
            changes["title"] = _check_title(title)
        if description is not None:
            changes["description"] = _check_description(description)
        if tags is not None:
            changes["tags"] = _check_tags(tags)
        if not changes:
            raise ValueError(
                "update() needs at least one of status=, title=, description=, tags=; got none"
            )
        old = self._find(id)
        new = dataclasses.replace(old, **changes, updated_at=self._sim.clock.now())

        def apply() -> Task:
            self._items[id] = new
            return new

        detail = {"id": id, "status": new.status, "from": old.status, "changed": sorted(changes)}
        return await self._op("update", apply, detail)

    # -- snapshot ----------------------------------------------------------------------
    def _snapshot(self) -> object:
        return dict(self._items)  # Task is frozen, so a shallow copy is a full copy

    def _restore(self, state: object) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"_restore() takes what _snapshot() returned; got {type(state).__name__}")
        self._items = dict(state)

    # -- internals ---------------------------------------------------------------------
    def _find(self, id: str) -> Task:
        try:
            return self._items[id]
        except (KeyError, TypeError):
            known = ", ".join(self._items) or "none yet"
            raise KeyError(f"no task with id {id!r} (known: {known})") from None

    async def _op(self, op: str, apply: Callable[[], _T], detail: dict[str, Any]) -> _T:
        """Fault point ``tasks.<op>`` around ``apply``, recorded with its outcome."""
        sim, point = self._sim, f"tasks.{op}"
        try:
            step = sim.faults._enter(point)
            if step is not None:
                await step
        except Exception as exc:
            sim.history.record("task", op, "fail", **detail, error=repr(exc))
            raise
        result = apply()
        try:
            sim.faults._leave(point)
        except Exception as exc:
            sim.history.record("task", op, "unknown", **detail, error=repr(exc))
            raise
        sim.history.record("task", op, **detail)
        return result
