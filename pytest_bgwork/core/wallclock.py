"""The wall clock inside a simulation, driven by freezegun.

freezegun's fakes (``FakeDatetime``, ``fake_time``...) are installed once per test (or
per ``explore`` call) and kept; their time source reads the current simulation's
virtual clock on every call, so moving virtual time costs nothing. Installing them is
freezegun's ``start()`` with the module scan cached between starts (``_Patcher``): a
test pays ~0.2 ms, not a 10 ms scan of every loaded module. Other event loops keep real
monotonic time (freezegun's ``real_asyncio=True``); the virtual loop has its own
``time()`` either way.

Which clock is which inside a simulation: ``time.time``, ``time.monotonic``,
``datetime.now``, ``date.today`` are virtual (``time.monotonic`` counts from the
simulation's start, near zero like the real one, and equals ``loop.time()``;
``time.time`` stays epoch-based); ``time.perf_counter``, ``perf_counter_ns``
and ``process_time`` stay real (they time real work, as in time-machine and looptime).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib
import sys
import uuid as _uuid
import warnings
from typing import Any

from . import context

__all__ = ["WallClockPatch", "user_frozen_now", "wall_clock"]


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


def user_frozen_now() -> _dt.datetime | None:
    """The naive UTC time a test's own freezegun ``freeze_time`` holds, when it is the
    innermost freeze (on top of the simulation's); else ``None``.

    Adapters read it to let a ``freeze_time`` that moves forward move the virtual clock too
    (``adapters.sqs``): the simulation's clock itself never follows freezegun. It reads the
    factory's frozen instant without calling it: ``tick=True`` counts from its start (real
    seconds never move virtual time), and ``auto_tick_seconds`` is not ticked by the read.
    """
    fz = sys.modules.get("freezegun.api")
    factories = getattr(fz, "freeze_factories", None)
    if not factories or isinstance(factories[-1], _VirtualNow):
        return None
    now = getattr(factories[-1], "time_to_freeze", None)
    return now if isinstance(now, _dt.datetime) else None


_real_uuid4 = _uuid.uuid4
_real_uuid1 = _uuid.uuid1


def _world_random() -> Any:
    """The active simulation's ``random.Random`` for ids, or ``None`` (no simulation, or
    ``real_random=True``)."""
    sim = context.active()
    if sim is None or getattr(sim, "real_random", True):
        return None
    return sim._world_random  # type: ignore[attr-defined]


def _virtual_uuid4() -> _uuid.UUID:
    """``uuid.uuid4()`` inside a simulation: 122 random bits drawn from its seed."""
    rng = _world_random()
    if rng is None:
        return _real_uuid4()
    return _uuid.UUID(int=rng.getrandbits(128), version=4)


def _virtual_uuid1(node: int | None = None, clock_seq: int | None = None) -> _uuid.UUID:
    """``uuid.uuid1()`` inside a simulation: the virtual time, and a node and clock sequence
    drawn from its seed (the real node is this machine's MAC address)."""
    rng = _world_random()
    if rng is not None:
        if node is None:
            node = rng.getrandbits(48) | (1 << 40)  # the multicast bit: not a real MAC (RFC 4122)
        if clock_seq is None:
            clock_seq = rng.getrandbits(14)
    return _real_uuid1(node, clock_seq)


def _virtual_monotonic() -> float:
    """``time.monotonic()`` inside a simulation: the simulation's seconds since it began.

    freezegun's ``fake_monotonic`` derives it from the wall clock, epoch-scaled (1.7e9 s),
    where a float keeps only ~0.2 µs: an exact 100 ms virtual delay measured 0.0999999046 s.
    This reads the virtual clock itself, starting near zero as the real one does, and
    equal to the virtual loop's ``loop.time()``.
    """
    fz = _api()
    if fz._should_use_real_time():  # same stack depth as freezegun's own fakes
        return fz.real_monotonic()  # type: ignore[no-any-return]
    return _monotonic_now(fz)


def _virtual_monotonic_ns() -> int:
    """``time.monotonic_ns()`` inside a simulation (see ``_virtual_monotonic``)."""
    fz = _api()
    if fz._should_use_real_time():
        return fz.real_monotonic_ns()  # type: ignore[no-any-return]
    return round(_monotonic_now(fz) * 1_000_000_000)


def _monotonic_now(fz: Any) -> float:
    factories = fz.freeze_factories
    if factories and not isinstance(factories[-1], _VirtualNow):
        return fz._get_fake_monotonic()  # type: ignore[no-any-return]  # a freeze_time of the test's
    sim = context.active()
    if sim is None:
        return fz.real_monotonic()  # type: ignore[no-any-return]
    return sim.clock._mono


#: Modules whose clocks time the test run itself (durations, session time), or real waits
#: (``threading``, ``queue``: timeouts of locks and queues); they keep real time.
#: (freezegun's ``ignore=`` would also make every call *from* a test function read real
#: time: it inspects the caller's stack.)
_RUNNER_MODULES = ("_pytest", "pluggy", "xdist", "execnet", "threading", "queue")
#: freezegun answers real time to any call with these modules on its stack, i.e. to every
#: call in a worker thread; inside a simulation a thread's ``time.time()`` is virtual too.
_NOT_IGNORED = ("threading", "queue")


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


_Site = tuple[Any, dict[str, Any], int, tuple[str, ...]]


class _RealClassesOnImport:
    """A ``sys.meta_path`` finder, first while the clock is patched: a module imported for
    the first time inside a simulation runs its body with the real ``datetime.datetime`` and
    ``datetime.date`` classes, as if imported before it.

    Libraries that build schemas from annotations at import (pydantic, attrs, msgspec)
    cannot handle freezegun's ``FakeDatetime`` (pydantic: "Unable to generate pydantic-core
    schema"). Once the outermost such import ends, the fakes are back and the new modules'
    attributes that hold a real class are patched like those of modules imported before, so
    their clock reads (``datetime.now()``) stay virtual. It finds nothing itself: it asks
    the finders after it and wraps the loader's ``exec_module`` for that one module.
    """

    def __init__(self, patcher: _Patcher) -> None:
        self._patcher = patcher
        self._depth = 0
        self._finding = False
        self._before: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if self._finding:
            return None
        self._finding = True
        try:
            spec = None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is self or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    break
        finally:
            self._finding = False
        loader = getattr(spec, "loader", None)
        if loader is None or isinstance(loader, type):  # builtin/frozen: a class, shared
            return spec
        try:
            original = loader.exec_module
        except AttributeError:
            return spec
        window = self

        def exec_module(module: Any) -> None:
            vars(loader).pop("exec_module", None)  # one module's exec only
            window.enter(getattr(module, "__name__", ""))
            try:
                original(module)
            finally:
                window.exit()

        with contextlib.suppress(AttributeError, TypeError):  # a loader with no instance namespace
            loader.exec_module = exec_module
        return spec

    def enter(self, name: str) -> None:
        """Module ``name`` (already in ``sys.modules``) starts running its body."""
        self._depth += 1
        if self._depth == 1:
            fz = _api()
            self._before = set(sys.modules) - {name}
            _dt.datetime = fz.real_datetime  # type: ignore[misc]
            _dt.date = fz.real_date  # type: ignore[misc]

    def exit(self) -> None:
        """A module body ended: after the outermost, the fakes are back everywhere."""
        self._depth -= 1
        if self._depth == 0:
            fz = _api()
            _dt.datetime = fz.FakeDatetime  # type: ignore[misc]
            _dt.date = fz.FakeDate  # type: ignore[misc]
            new, self._before = set(sys.modules) - self._before, set()
            self._patcher.patch_classes(new)


class _Patcher:
    """freezegun's ``start``/``stop``, with the module scan cached between starts.

    ``freeze_time.start()`` calls ``dir()`` on every loaded module (and ``getattr`` on
    each name, which also triggers lazy module ``__getattr__`` imports) to find the
    attributes that hold a real ``datetime``/``time`` function: ~10 ms per start with
    900 modules, paid by every test. This does the same patching with freezegun's own
    fakes and bookkeeping lists (so ``freeze_time`` used inside a test still nests),
    but reads ``vars(module)`` and remembers, per loaded module, which attribute names
    held a real clock; a later start re-scans only modules that are new or whose
    namespace changed size, and re-checks each remembered attribute before patching.
    Modules of the test runner (pytest, pluggy, xdist, execnet) keep real time.
    """

    def __init__(self) -> None:
        #: sys.modules key -> (module, vars(module), its size when scanned, attribute names)
        self._sites: dict[str, _Site] = {}
        #: (modules, their namespaces, the namespaces' sizes, sites) at the last start
        self._snapshot: tuple[list[Any], list[dict[str, Any]], list[int], list[tuple[Any, str]]] | None = None
        self._loop_class: tuple[Any, type] | None = None  # (policy, its loop class)
        self._undo: list[tuple[Any, str, Any]] = []
        self._modules_at_start: set[str] = set()
        self._patched = False
        self._imports = _RealClassesOnImport(self)

    def _pairs(self, fz: Any) -> list[tuple[str, Any, Any]]:
        """(name in ``time``, real, fake) for every patched ``time`` function (``perf_counter`` stays real)."""
        pairs = [("time", fz.real_time, fz.fake_time), ("monotonic", fz.real_monotonic, _virtual_monotonic),
                 ("localtime", fz.real_localtime, fz.fake_localtime),
                 ("gmtime", fz.real_gmtime, fz.fake_gmtime), ("strftime", fz.real_strftime, fz.fake_strftime)]
        if hasattr(fz, "real_time_ns"):
            pairs.append(("time_ns", fz.real_time_ns, fz.fake_time_ns))
        if hasattr(fz, "real_monotonic_ns"):
            pairs.append(("monotonic_ns", fz.real_monotonic_ns, _virtual_monotonic_ns))
        return pairs

    def _event_loop_class(self) -> type:
        """The policy's loop class (freezegun makes and closes a loop per start to learn it)."""
        import asyncio

        policy = asyncio.get_event_loop_policy()
        if self._loop_class is None or self._loop_class[0] is not policy:
            loop = policy.new_event_loop()
            loop.close()
            self._loop_class = (policy, type(loop))
        return self._loop_class[1]

    @staticmethod
    def _scan(mod_name: str, module: Any, fakes: dict[int, Any], skip: tuple[str, ...]) -> _Site:
        """Which of ``module``'s attributes hold a real clock (``vars``: no lazy imports)."""
        namespace = getattr(module, "__dict__", None) if module is not None else None
        if not isinstance(namespace, dict):
            return (module, {}, 0, ())
        if (mod_name.startswith(skip) or mod_name.endswith(".six.moves") or mod_name == _api().__name__
                or mod_name == __name__ or namespace.get("__name__") in ("datetime", "time")):
            return (module, namespace, len(namespace), ())
        names = tuple(k for k, v in list(namespace.items()) if id(v) in fakes)
        return (module, namespace, len(namespace), names)

    def _find_sites(self, fakes: dict[int, Any], skip: tuple[str, ...]) -> list[tuple[Any, str]]:
        """(module, attribute) of every loaded module attribute that held a real clock.

        Fast path (~50 µs): the same modules as last time, each namespace the same size,
        checked with C-level list compares. Otherwise each new or resized module is
        re-scanned (the first call of a process scans them all: a few ms).
        """
        snapshot = self._snapshot
        if snapshot is not None and snapshot[0] == list(sys.modules.values()) and list(
            map(len, snapshot[1])
        ) == snapshot[2]:
            return snapshot[3]
        modules = list(sys.modules.items())
        sites = self._sites
        found: list[tuple[Any, str]] = []
        for mod_name, module in modules:
            cached = sites.get(mod_name)
            if cached is None or cached[0] is not module or len(cached[1]) != cached[2]:
                cached = sites[mod_name] = self._scan(mod_name, module, fakes, skip)
            found.extend((module, attribute) for attribute in cached[3])
        namespaces = [sites[name][1] for name, _ in modules]
        self._snapshot = ([m for _, m in modules], namespaces, list(map(len, namespaces)), found)
        return found

    def start(self, factory: Any) -> None:
        fz = _api()
        ignore = tuple(m for m in fz.config.settings.default_ignore_list if m not in _NOT_IGNORED)
        already = len(fz.freeze_factories) > 0
        fz.freeze_factories.append(factory)
        fz.tz_offsets.append(_dt.timedelta(0))
        fz.ignore_lists.append(ignore)
        fz.tick_flags.append(False)
        self._patched = not already
        if already:  # someone else's freeze_time is active: it did the patching
            return
        import copyreg
        import time as _time
        import uuid

        _dt.datetime = fz.FakeDatetime  # type: ignore[misc]
        _dt.date = fz.FakeDate  # type: ignore[misc]
        pairs = self._pairs(fz)
        for name, _real, fake in pairs:
            setattr(_time, name, fake)
        if fz.uuid_generate_time_attr:
            setattr(uuid, fz.uuid_generate_time_attr, None)
        uuid._UuidCreate = None  # type: ignore[attr-defined]
        uuid._last_timestamp = None  # type: ignore[attr-defined]
        copyreg.dispatch_table[fz.real_datetime] = fz.pickle_fake_datetime
        copyreg.dispatch_table[fz.real_date] = fz.pickle_fake_date
        fakes = {id(real): fake for _name, real, fake in pairs}
        fakes[id(fz.real_datetime)] = fz.FakeDatetime
        fakes[id(fz.real_date)] = fz.FakeDate
        fakes[id(_real_uuid4)] = _virtual_uuid4  # also `from uuid import uuid4` (and uuid.uuid4)
        fakes[id(_real_uuid1)] = _virtual_uuid1
        undo = self._undo
        self._modules_at_start = set(sys.modules)
        for module, attribute in self._find_sites(fakes, ignore + _RUNNER_MODULES):
            value = module.__dict__.get(attribute)
            fake = fakes.get(id(value))
            if fake is not None:
                setattr(module, attribute, fake)
                undo.append((module, attribute, value))
        loop_class = self._event_loop_class()
        undo.append((loop_class, "time", loop_class.__dict__.get("time", _MISSING)))
        real_monotonic = fz.real_monotonic
        loop_class.time = lambda self: real_monotonic()  # type: ignore[attr-defined]
        sys.meta_path.insert(0, self._imports)

    def patch_classes(self, names: set[str]) -> None:
        """Give modules ``names`` (imported with the real classes) the fake ones, as ``start``
        does for modules imported before (undone by ``stop``)."""
        fz = _api()
        fakes = {id(fz.real_datetime): fz.FakeDatetime, id(fz.real_date): fz.FakeDate}
        skip = tuple(m for m in fz.config.settings.default_ignore_list
                     if m not in _NOT_IGNORED) + _RUNNER_MODULES
        for name in names:
            module = sys.modules.get(name)
            _mod, namespace, _size, attributes = self._scan(name, module, fakes, skip)
            for attribute in attributes:
                value = namespace[attribute]
                namespace[attribute] = fakes[id(value)]
                self._undo.append((module, attribute, value))

    def stop(self) -> None:
        fz = _api()
        fz.freeze_factories.pop()
        fz.ignore_lists.pop()
        fz.tick_flags.pop()
        fz.tz_offsets.pop()
        if fz.freeze_factories:
            return
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self._imports)
        import copyreg
        import time as _time
        import uuid

        _dt.datetime = fz.real_datetime  # type: ignore[misc]
        _dt.date = fz.real_date  # type: ignore[misc]
        copyreg.dispatch_table.pop(fz.real_datetime, None)
        copyreg.dispatch_table.pop(fz.real_date, None)
        undo, self._undo = self._undo, []
        for owner, attribute, original in undo:
            if original is _MISSING:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, original)
        pairs = self._pairs(fz)
        # Modules imported while patched picked up fakes: give them the real clocks.
        reals = {id(fake): real for _name, real, fake in pairs}
        reals[id(fz.FakeDatetime)] = fz.real_datetime
        reals[id(fz.FakeDate)] = fz.real_date
        reals[id(_virtual_uuid4)] = _real_uuid4
        reals[id(_virtual_uuid1)] = _real_uuid1
        fake_names = {fake.__name__ for _name, _real, fake in pairs} | {"FakeDatetime", "FakeDate"}
        new, self._modules_at_start = set(sys.modules) - self._modules_at_start, set()
        for mod_name in new:
            module = sys.modules.get(mod_name)
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict) or namespace.get("__name__") in ("datetime", "time"):
                continue
            for attribute, value in list(namespace.items()):
                real = reals.get(id(value))
                if real is not None and attribute not in fake_names:
                    setattr(module, attribute, real)
        for name, real, _fake in pairs:
            setattr(_time, name, real)
        if fz.uuid_generate_time_attr:
            setattr(uuid, fz.uuid_generate_time_attr, fz.real_uuid_generate_time)
        uuid._UuidCreate = fz.real_uuid_create  # type: ignore[attr-defined]
        uuid._last_timestamp = None  # type: ignore[attr-defined]


_MISSING = object()


class WallClockPatch:
    """Reference-counted wall-clock patch; ``start``/``stop`` may nest.

    The first ``start`` patches (see ``_Patcher``: ~0.3 ms after the first scan of a
    process), the last ``stop`` restores every real clock, so code outside a
    simulation, and a test that does not use ``bgwork``, sees the real classes.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._patcher = _Patcher()
        self._factory: _VirtualNow | None = None

    @property
    def active(self) -> bool:
        return self._depth > 0

    def start(self) -> None:
        """Patch ``datetime``/``time`` to follow the active simulation (idempotent)."""
        self._depth += 1
        if self._depth > 1:
            return
        _preimport_date_subclasses()
        factory = self._factory = _VirtualNow()
        try:
            self._patcher.start(factory)
        except BaseException:
            # a half-done patch would leave fake clocks behind for every later test (and
            # pytest's own timing): undo what was done, then let the error through
            self._depth -= 1
            self._factory = None
            factories = _api().freeze_factories
            if factories and factories[-1] is factory:
                self._patcher.stop()
            raise

    def stop(self) -> None:
        """Undo one ``start``; the last one restores the real clock."""
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._factory is not None:
            self._factory = None
            self._patcher.stop()

    def __enter__(self) -> WallClockPatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: The process-wide patch; the plugin and ``Simulation.run`` share it.
wall_clock = WallClockPatch()
