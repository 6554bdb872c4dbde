"""The wall clock inside a simulation, driven by freezegun.

``freeze_time.start()`` scans every loaded module (about 16 ms with 700 modules), so
it is started once per test (or per ``explore`` call) and kept; its time source is
replaced by one that reads the current simulation's virtual clock on every call, so
moving virtual time costs nothing. ``real_asyncio=True`` keeps other event loops on
real monotonic time; the virtual loop has its own ``time()`` either way.

Which clock is which inside a simulation: ``time.time``, ``time.monotonic``,
``datetime.now``, ``date.today`` are virtual; ``time.perf_counter``, ``perf_counter_ns``
and ``process_time`` stay real (they time real work).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import sys
import time
import warnings
from typing import Any

from . import context

__all__ = ["WallClockPatch", "wall_clock"]


def _api() -> Any:
    """freezegun's ``api`` module, imported on first use: loading the plugin needs none of it."""
    from freezegun import api

    return api


def __getattr__(name: str) -> Any:
    if name == "_fz":  # ``wallclock._fz`` for code (and tests) that reach into freezegun
        return _api()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _VirtualNow:
    """A freezegun time factory that answers with the active simulation's clock."""

    def __init__(self, fallback: Any) -> None:
        self._fallback = fallback

    def __call__(self) -> _dt.datetime:
        sim = context.active()
        if sim is None:
            real: _dt.datetime = _api().real_datetime.utcnow()
            return real
        return sim.clock.utc_naive()

    def tick(self, delta: Any = None) -> None:
        raise RuntimeError(
            "freezegun's tick() cannot move a bgwork simulation's clock: use "
            "`await sim.advance(seconds)` instead"
        )

    def move_to(self, target: Any) -> None:
        raise RuntimeError(
            "freezegun's move_to() cannot move a bgwork simulation's clock: use "
            "`await sim.advance(seconds)` instead"
        )


#: Modules whose clocks time the test run itself, or real waits (``threading``, ``queue``:
#: timeouts of locks and queues); they keep real time.
_RUNNER_MODULES = ("_pytest", "pluggy", "xdist", "execnet", "threading", "queue")
#: freezegun answers real time to any call with these modules on its stack, i.e. to every
#: call in a worker thread; inside a simulation a thread's ``time.time()`` is virtual too.
_NOT_IGNORED = ("threading", "queue")


def _unpatch_test_runner(freezer: Any) -> None:
    """Give pytest's own timers (durations, session time) their real clock back.

    freezegun's ``ignore=`` would also make every call *from* a test function read
    real time (it inspects the caller's stack), so instead the few attributes it
    patched in the runner's modules are restored one by one.
    """
    keep = []
    for module, attribute, original in freezer.undo_changes:
        name = getattr(module, "__name__", "")
        if isinstance(name, str) and name.startswith(_RUNNER_MODULES):
            setattr(module, attribute, original)
        else:
            keep.append((module, attribute, original))
    freezer.undo_changes = keep


def _keep_real_timers(freezer: Any) -> None:
    """Give ``time.perf_counter`` and ``perf_counter_ns`` back their real clock.

    They measure real work, not the world's clock (as in time-machine and looptime);
    freezegun fakes them and cannot be told not to, so its patches are undone here:
    on the ``time`` module and in every module that imported them by name.
    ``process_time`` freezegun leaves alone.
    """
    fz = _api()
    time.perf_counter = fz.real_perf_counter
    time.perf_counter_ns = fz.real_perf_counter_ns
    reals = (fz.real_perf_counter, fz.real_perf_counter_ns)
    keep = []
    for module, attribute, original in freezer.undo_changes:
        if original in reals:
            setattr(module, attribute, original)
        else:
            keep.append((module, attribute, original))
    freezer.undo_changes = keep


def _preimport_date_subclasses() -> None:
    """Import, before freezing, modules that subclass ``date`` when first imported.

    Under freezegun ``datetime.date`` is ``FakeDate``, and a module that defines a
    ``date`` subclass with its own metaclass fails to import (freezegun issue 480).
    FastAPI imports ``pydantic.v1`` lazily, on its first route: import it now if the
    app already uses pydantic.
    """
    if "pydantic" in sys.modules and "pydantic.v1" not in sys.modules:
        with warnings.catch_warnings(), contextlib.suppress(ImportError):
            warnings.simplefilter("ignore")
            importlib.import_module("pydantic.v1")


class WallClockPatch:
    """Reference-counted freezegun patch; ``start``/``stop`` may nest."""

    def __init__(self) -> None:
        self._depth = 0
        self._freezer: Any = None

    @property
    def active(self) -> bool:
        return self._depth > 0

    def start(self) -> None:
        """Patch ``datetime``/``time`` to follow the active simulation (idempotent)."""
        self._depth += 1
        if self._depth > 1:
            return
        _preimport_date_subclasses()
        fz = _api()
        freezer = fz.freeze_time("2026-01-01", real_asyncio=True)
        freezer.ignore = tuple(m for m in freezer.ignore if m not in _NOT_IGNORED)
        factory = freezer.start()
        _unpatch_test_runner(freezer)
        _keep_real_timers(freezer)
        idx = fz.freeze_factories.index(factory)
        fz.freeze_factories[idx] = _VirtualNow(factory)
        self._freezer = freezer

    def stop(self) -> None:
        """Undo one ``start``; the last one restores the real clock."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._freezer is not None:
            freezer, self._freezer = self._freezer, None
            freezer.stop()

    def __enter__(self) -> WallClockPatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The process-wide patch; the plugin and ``Simulation.run`` share it.
wall_clock = WallClockPatch()
