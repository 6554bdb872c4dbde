"""10xgraph's (formerly 10xscale-agentflow) real ``BackgroundTaskManager`` on the simulation.

10xgraph needs Python 3.12, but the class's two modules
(``tenxgraph/utils/background_task_manager.py`` and ``tenxgraph/utils/metrics.py``) use
only 3.11 syntax and the standard library; only ``tenxgraph/utils/__init__.py`` does not.
``real_manager_class()`` loads them by file under stub parent packages (so
``from tenxgraph.utils.background_task_manager import BackgroundTaskManager`` works in the
user's code afterwards). Install the wheel without its dependencies:
``pip install --no-deps --ignore-requires-python 10xgraph==0.10.3``.

``with install(sim) as Manager:`` makes every instance of the real class (also one bound
once through InjectQ) run its tasks on the simulation: each task is also a tracked task
of a shadow ``bg.BackgroundTaskManager`` (history ``task_manager.*``, fault point
``task.<name>``, ``bg.assert_drained``), while the real class keeps its own bookkeeping,
timeouts, cap and shutdown. ``rebind_injectq()`` gives InjectQ's container a fresh manager
for the test, since one bound once at import would carry the previous test's tasks, lock
and shutdown flag.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
import traceback
import types
import weakref
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest_bgwork as bg

__all__ = ["LoadError", "install", "real_manager_class", "rebind_injectq"]

DISTRIBUTION = "10xgraph"
PINNED = "0.10.3"
_MODULES = ("tenxgraph.utils.metrics", "tenxgraph.utils.background_task_manager")
_INSTALL = f"pip install --no-deps --ignore-requires-python {DISTRIBUTION}=={PINNED}"

_loaded: type | None = None


class LoadError(ImportError):
    """10xgraph's ``BackgroundTaskManager`` could not be loaded on this Python; says where."""


def real_manager_class() -> type:
    """The real ``tenxgraph.utils.background_task_manager.BackgroundTaskManager`` class.

    On Python 3.12+ it is imported normally; on 3.11 its two modules are loaded by file.
    A failure raises ``LoadError`` naming the module, the file and the line.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    if sys.version_info >= (3, 12):  # pragma: no cover - this suite runs on 3.11
        module = importlib.import_module(_MODULES[1])
    else:
        module = _load_by_file()
    cls = module.BackgroundTaskManager
    if not isinstance(cls, type):  # pragma: no cover - a later release renamed it
        raise LoadError(f"{_MODULES[1]}.BackgroundTaskManager is {cls!r}, not a class")
    _loaded = cls
    return cls


def _load_by_file() -> types.ModuleType:
    if _MODULES[1] in sys.modules:
        return sys.modules[_MODULES[1]]
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LoadError(f"{DISTRIBUTION} is not installed: {_INSTALL}") from None
    root = Path(str(dist.locate_file("tenxgraph")))
    for package, folder in (("tenxgraph", root), ("tenxgraph.utils", root / "utils")):
        if package not in sys.modules:  # a stub: the real __init__ needs Python 3.12
            stub = types.ModuleType(package, f"stub for {package} (loaded by pytest-bgwork)")
            stub.__path__ = [str(folder)]
            sys.modules[package] = stub
    module: types.ModuleType | None = None
    for name in _MODULES:
        path = root / "utils" / (name.rsplit(".", 1)[1] + ".py")
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None or not path.is_file():
            raise LoadError(f"{DISTRIBUTION} {dist.version}: module {name} has no file at {path}; "
                            f"this adapter loads {PINNED}: {_INSTALL}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            line = _line_in(exc, path)
            raise LoadError(
                f"{DISTRIBUTION} {dist.version}: module {name} ({path}) failed to load on Python "
                f"{sys.version_info.major}.{sys.version_info.minor} at line {line}: "
                f"{type(exc).__name__}: {exc}. pytest-bgwork loads {PINNED} by file; pin it: {_INSTALL}"
            ) from exc
        setattr(sys.modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1], module)
    assert module is not None
    return module


def _line_in(exc: BaseException, path: Path) -> int | str:
    """The line of ``path`` where ``exc`` was raised (or its SyntaxError line)."""
    if isinstance(exc, SyntaxError) and exc.lineno is not None:
        return exc.lineno
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return lines[-1] if lines and lines[-1] is not None else "?"


@contextmanager
def install(sim: bg.Simulation) -> Iterator[type]:
    """Run the real class's tasks on ``sim`` while inside; yields the real class.

    Each ``create_task(coro, ...)`` of any instance starts ``coro`` as a task of a shadow
    ``bg.BackgroundTaskManager`` (recorded, fault point ``task.<name>``, seen by
    ``bg.assert_drained``) and hands the real class a coroutine awaiting it, so the real
    class's timeout, cancel, cap and shutdown act on it as in production.
    """
    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.agentflow.install(sim): expected a bg.Simulation; got {type(sim).__name__}")
    cls = real_manager_class()
    original = cls.__dict__["create_task"]
    original_setup = cls.__dict__["_setup_timeout"]
    shadows: weakref.WeakKeyDictionary[Any, bg.BackgroundTaskManager] = weakref.WeakKeyDictionary()
    cancellers: weakref.WeakKeyDictionary[asyncio.Task[Any], asyncio.Task[Any]] = weakref.WeakKeyDictionary()

    def setup_timeout(self: Any, task: asyncio.Task[Any], timeout: float) -> None:
        # the real canceller sleeps on after its task ended, then does nothing; stop it with
        # the task, or it would be leftover work on the loop (assert_drained, teardown)
        before = asyncio.all_tasks()
        original_setup(self, task, timeout)
        for canceller in asyncio.all_tasks() - before:
            cancellers[task] = canceller
            task.add_done_callback(functools.partial(_cancel, canceller))

    def create_task(self: Any, coro: Coroutine[Any, Any, Any], *, name: str = "background_task",
                    timeout: float | None = None, context: dict[str, Any] | None = None) -> Any:
        cap = getattr(self, "_max_pending_tasks", 0)
        if not inspect.iscoroutine(coro) or (cap and self.pending_count >= cap):
            return original(self, coro, name=name, timeout=timeout, context=context)  # real refusal/drop
        shadow = shadows.get(self)
        if shadow is None:
            shadow = shadows[self] = bg.BackgroundTaskManager(max_pending_tasks=sys.maxsize, sim=sim)
        started: list[Any] = []

        async def follow() -> Any:
            # started when the real class's task starts, as the coroutine would be
            inner = shadow.create_task(coro, name=name, context=context)
            assert inner is not None  # the shadow has no cap
            started.append(inner)
            outer = asyncio.current_task()
            rec = shadow._live.get(inner)
            if rec is not None and outer is not None:  # counted once by assert_drained: as the chore
                rec.companions = tuple(t for t in (outer, cancellers.get(outer)) if t is not None)
            return await inner

        def settle(_: Any) -> None:
            if started:
                started[0].cancel()  # no-op when it finished
            else:
                coro.close()  # cancelled before it started: the real class never runs it either

        outer = original(self, follow(), name=name, timeout=timeout, context=context)
        outer.add_done_callback(settle)
        return outer

    create_task.__doc__ = original.__doc__
    cls.create_task = create_task  # type: ignore[attr-defined]
    cls._setup_timeout = setup_timeout  # type: ignore[attr-defined]
    try:
        with rebind_injectq(cls):
            yield cls
    finally:
        cls.create_task = original  # type: ignore[attr-defined]
        cls._setup_timeout = original_setup  # type: ignore[attr-defined]


def _cancel(task: asyncio.Task[Any], _: object) -> None:
    task.cancel()


@contextmanager
def rebind_injectq(cls: type) -> Iterator[Any]:
    """Bind a fresh ``cls()`` in InjectQ's global container while inside, then put the old one back.

    A manager bound once (``bind_instance(BackgroundTaskManager, ...)`` at import, then
    ``Inject[BackgroundTaskManager]``) outlives the test's event loop: it would carry the
    last test's tasks, its shutdown flag and an ``asyncio.Lock`` used on a closed loop.
    Yields the fresh manager (``None`` when InjectQ is not installed or nothing is bound).
    """
    try:
        from injectq import InjectQ
    except ImportError:
        yield None
        return
    container = InjectQ.get_instance()
    old = container.try_get(cls)
    if old is None:
        yield None
        return
    fresh = cls()
    container.bind_instance(cls, fresh)
    try:
        yield fresh
    finally:
        container.bind_instance(cls, old)
