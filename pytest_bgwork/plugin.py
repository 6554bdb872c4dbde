"""The pytest plugin: fixtures, marker, options, the virtual loop for async tests, reports.

Thin on purpose: everything it shows comes from ``Simulation`` and its history.
"""

from __future__ import annotations

import inspect
import os
import sys
import warnings
import zlib
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pytest

from . import _shims
from .adapters._fixtures import bg_agentflow, bg_agentuity, bg_alien
from .adapters._redis_fixtures import bg_arq, bg_redis, bg_rq
from .adapters._task_fixtures import bg_celery, bg_dramatiq, bg_taskiq
from .adapters._web_fixtures import bg_sqs
from .checking import chaos
from .profiles import PLATFORMS, current_test_platform

# Start-up: pytest imports this module in every run of a venv that has the plugin, so it
# loads only what options, markers and fixture definitions need. The simulation (loop,
# services, faults, replay, wall clock) is imported inside the fixtures and hooks that
# run for a test using it.
if TYPE_CHECKING:
    import asyncio

    from . import report_html
    from .checking import replay
    from .core.clock import VirtualClock
    from .core.faults import FaultInjector
    from .core.loop import VirtualEventLoop
    from .services.kv import KV
    from .services.queues import Queues
    from .services.runtime import Runtime
    from .services.streams import Streams
    from .services.task_manager import BackgroundTaskManager
    from .simulation import Simulation

__all__ = ["SimulationFactory", "bg_agentflow", "bg_agentuity", "bg_alien", "bg_celery", "bg_dramatiq", "bg_sqs",
           "bg_taskiq"]
__all__ += ["bg_arq", "bg_redis", "bg_rq"]


def _report_html() -> Any:
    """The HTML report module, imported only when a report is written."""
    from . import report_html

    return report_html

TIMELINE_CHOICES = ("failure", "always", "never")
_SIM_KEY = pytest.StashKey["Simulation"]()
_LEFTOVER_KEY = pytest.StashKey[list[str]]()
_CALL_PASSED_KEY = pytest.StashKey[bool]()
_TIMELINE_LIMIT = 200
_BGWORK_MARK_KEYS = {"seed", "start", "chaos", "replay", "strict", "platform", "max_time",
                     "allow_network", "runaway_after", "real_random"}
_CALL_FAILED_KEY = pytest.StashKey[bool]()


# -- options ------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bgwork", "deterministic simulation of background work")
    group.addoption("--bgwork-seed", dest="bgwork_seed", default=None,
                    help="seed for every simulation (default: derived from each test's node id)")
    group.addoption("--bgwork-timeline", dest="bgwork_timeline", default=None,
                    help="when to print the 'bgwork timeline' section: failure (default), always, never")
    group.addoption("--bgwork-strict", dest="bgwork_strict", action="store_true", default=None,
                    help="fail a test that leaves background work running at teardown")
    parser.addini("bgwork_seed", "seed for every simulation (default: per test, from its node id)",
                  default="")
    parser.addini("bgwork_timeline", "failure | always | never", default="failure")
    parser.addini("bgwork_strict", "fail tests that leave work running at teardown",
                  type="bool", default=False)
    group.addoption("--bgwork-chaos", dest="bgwork_chaos", default=None,
                    help="make every queue adversarial: comma-separated "
                         f"{','.join(chaos.MODES)} (none: off)")
    group.addoption("--bgwork-html", dest="bgwork_html", default=None, metavar="PATH",
                    help="write a self-contained HTML timeline report of failing tests to PATH")
    group.addoption("--bgwork-html-all", dest="bgwork_html_all", action="store_true",
                    default=None, help="include passing tests in the --bgwork-html report")
    group.addoption("--bgwork-platform", dest="bgwork_platform", default=None,
                    help="the platform every simulation models, picking each service's default "
                         f"profile: {', '.join(PLATFORMS)} (default: agentuity)")
    parser.addini("bgwork_platform", f"platform every simulation models: {', '.join(PLATFORMS)}",
                  default="")
    parser.addini("bgwork_chaos", f"chaos modes for every test: {', '.join(chaos.MODES)}",
                  default="")
    parser.addini("bgwork_html", "path of the HTML timeline report (empty: none)", default="")
    parser.addini("bgwork_html_all", "include passing tests in the HTML report",
                  type="bool", default=False)
    group.addoption("--bgwork-explore-budget", dest="bgwork_explore_budget", default=None,
                    metavar="BUDGET", help="exploring per run: N / Nx multiplies every "
                    "max_examples, Ns / Nm / Nh shares that much wall time over the explorations")
    parser.addini("bgwork_explore_budget", "exploration budget: N / Nx or Ns / Nm / Nh", default="")
    parser.addini("bgwork_runaway_after", "real seconds per window of the runaway-work guard "
                  "(work at one virtual instant that finishes nothing or keeps growing; default 10)",
                  default="")


_OPTIONS_KEY = pytest.StashKey[dict[str, Any]]()
_MARKER_KEY = pytest.StashKey[dict[str, Any]]()


def _option(config: pytest.Config, name: str) -> Any:
    """The command-line option, else the ini value; read once per run (tests read it often)."""
    cache = config.stash.setdefault(_OPTIONS_KEY, {})
    try:
        return cache[name]
    except KeyError:
        pass
    value = config.getoption(name, default=None)
    if value is None or value == "":
        value = config.getini(name)
    cache[name] = value
    return value


def _seed_option(config: pytest.Config) -> int | None:
    raw = _option(config, "bgwork_seed")
    if raw in (None, ""):
        return None
    try:
        seed = int(str(raw), 0)
    except ValueError:
        raise pytest.UsageError(
            f"--bgwork-seed / bgwork_seed expects an integer such as 1234; got {raw!r}"
        ) from None
    if seed < 0:
        raise pytest.UsageError(
            f"--bgwork-seed / bgwork_seed expects an integer such as 1234; got {raw!r} (a seed is "
            ">= 0: random.Random(-n) is random.Random(n))"
        )
    return seed


def _platform_option(config: pytest.Config) -> str:
    raw = _option(config, "bgwork_platform")
    if raw in (None, ""):
        return "agentuity"
    value = str(raw).strip()
    if value not in PLATFORMS:
        raise pytest.UsageError(
            f"--bgwork-platform / bgwork_platform must be one of {', '.join(PLATFORMS)}; got {raw!r}"
        )
    return value


def _platform_for(item: pytest.Item) -> str:
    """The marker's ``platform=``, else the option's / ini's, else ``agentuity``."""
    marked = _marker_kwargs(item).get("platform")
    if marked is None:
        return _platform_option(item.config)
    if not isinstance(marked, str) or marked not in PLATFORMS:
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.bgwork(platform=...) must be one of "
            f"{', '.join(PLATFORMS)}; got {marked!r}"
        )
    return marked


def _timeline_option(config: pytest.Config) -> str:
    value = str(_option(config, "bgwork_timeline")).strip().lower()
    if value not in TIMELINE_CHOICES:
        raise pytest.UsageError(
            f"--bgwork-timeline / bgwork_timeline must be one of {', '.join(TIMELINE_CHOICES)}; "
            f"got {value!r}"
        )
    return value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bgwork(seed=None, start=None, chaos=None, replay=None, strict=None, platform=None, "
        "max_time=604800, allow_network=False, runaway_after=10, real_random=False): "
        "configure this test's bgwork simulation",
    )
    _seed_option(config)
    _timeline_option(config)
    _install_unawaited_watch()
    _chaos_option(config)
    _platform_option(config)
    raw_budget = _option(config, "bgwork_explore_budget")
    if raw_budget:
        from . import budget

        config._bgwork_budget = budget.parse_budget(str(raw_budget))  # type: ignore[attr-defined]
    html_path = _option(config, "bgwork_html")
    if html_path and not hasattr(config, "workerinput"):  # xdist workers send their reports
        config.pluginmanager.register(
            _HtmlReport(os.path.join(config.invocation_params.dir, str(html_path)),
                        bool(_option(config, "bgwork_html_all"))),
            "bgwork-html",
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    parsed = getattr(session.config, "_bgwork_budget", None)
    if parsed is not None:  # only then: the explorer imports Hypothesis
        from . import budget
        from .checking.explore import set_budget

        set_budget(parsed[0], parsed[1], budget.count_explorations(session.items))


def pytest_unconfigure(config: pytest.Config) -> None:
    _uninstall_unawaited_watch()
    if getattr(config, "_bgwork_budget", None) is not None:  # a run in this process is over
        from .checking.explore import set_budget

        set_budget()


def pytest_report_header(config: pytest.Config) -> str:
    seed = _seed_option(config)
    if seed is None:
        how = "seed per test = crc32(node id) (stable; set --bgwork-seed=N to fix it)"
    else:
        how = f"seed={seed} for every test"
    modes = _chaos_option(config)
    extra = f"; chaos: {','.join(modes)}" if modes else ""
    html_path = _option(config, "bgwork_html")
    if html_path:
        extra += f"; html report: {html_path}"
    platform = _platform_option(config)
    if platform != "agentuity":
        extra += f"; platform: {platform}"
    return f"bgwork: {how}; timeline on {_timeline_option(config)}{extra}"


def default_seed(nodeid: str) -> int:
    """The stable seed a test gets when none is configured: CRC-32 of its node id."""
    return zlib.crc32(nodeid.encode())


# -- marker --------------------------------------------------------------------------------
def _marker_kwargs(item: pytest.Item) -> dict[str, Any]:
    """The merged ``@pytest.mark.bgwork(...)`` arguments of ``item`` (checked once per test)."""
    cached = item.stash.get(_MARKER_KEY, None)
    if cached is not None:
        return cached
    kwargs: dict[str, Any] = {}
    for mark in reversed(list(item.iter_markers("bgwork"))):
        if mark.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.bgwork takes keyword arguments only "
                f"({', '.join(sorted(_BGWORK_MARK_KEYS))}); got positional {mark.args!r}"
            )
        unknown = set(mark.kwargs) - _BGWORK_MARK_KEYS
        if unknown:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.bgwork got unknown argument(s) "
                f"{', '.join(sorted(unknown))}; valid: {', '.join(sorted(_BGWORK_MARK_KEYS))}"
            )
        kwargs.update(mark.kwargs)
    item.stash[_MARKER_KEY] = kwargs
    return kwargs


def _seed_for(item: pytest.Item) -> int:
    marked = _marker_kwargs(item).get("seed")
    if marked is not None:
        if isinstance(marked, bool) or not isinstance(marked, int) or marked < 0:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.bgwork(seed=...) expects an int >= 0; got {marked!r}"
            )
        return marked
    configured = _seed_option(item.config)
    return configured if configured is not None else default_seed(item.nodeid)


# -- the virtual loop for async tests ------------------------------------------------------
#: Fixtures that are (or hand out parts of) the simulation: an ``async def`` test asking for one
#: runs on the virtual loop without ``@pytest.mark.asyncio``, also in pytest-asyncio's strict mode.
_SIM_FIXTURES = frozenset({"bgwork", "bg_clock", "bg_queues", "bg_kv", "bg_streams", "bg_runtime",
                           "bg_task_manager", "bg_faults"})
#: Markers of other async runners: a test carrying one is theirs, not ours.
_OTHER_ASYNC_MARKERS = frozenset({"asyncio", "anyio", "trio"})


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Generator[None, None, None]:
    """Mark an unmarked ``async def`` test that asks for ``bgwork`` with ``asyncio``."""
    if inspect.iscoroutinefunction(obj) and collector.funcnamefilter(name):
        try:
            params = set(inspect.signature(obj).parameters)
        except (TypeError, ValueError):  # pragma: no cover - a builtin or odd callable
            params = set()
        marks = {getattr(m, "name", None) for m in getattr(obj, "pytestmark", ())}
        if params & _SIM_FIXTURES and not marks & _OTHER_ASYNC_MARKERS:
            pytest.mark.asyncio(obj)
    yield


def _uses_bgwork(item: Any) -> bool:
    names = getattr(item, "fixturenames", ())
    return "bgwork" in names


def _default_loop() -> asyncio.AbstractEventLoop:
    import asyncio

    return asyncio.get_event_loop_policy().new_event_loop()


@pytest.hookimpl(trylast=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Give tests that use ``bgwork`` a virtual loop; everyone else the usual one."""
    if _uses_bgwork(item):
        from .core.loop import VirtualEventLoop

        return {"bgwork": VirtualEventLoop}
    return {"asyncio": _default_loop}


def _async_loop_for(request: pytest.FixtureRequest) -> VirtualEventLoop | None:
    """The virtual loop pytest-asyncio made for this async test, or ``None`` for sync tests."""
    item = request.node
    try:
        import pytest_asyncio
    except ImportError:  # pragma: no cover - a required dependency
        return None
    if not isinstance(item, pytest.Function) or not pytest_asyncio.is_async_test(item):
        return None
    scope = _shims.asyncio_loop_scope(item)
    if scope != "function":
        raise pytest.UsageError(
            f"{item.nodeid}: a test that uses `bgwork` runs on its own function-scoped virtual "
            f"loop, but this test asks pytest-asyncio for loop_scope={scope!r}. Remove "
            "loop_scope= from its asyncio marker (or set asyncio_default_test_loop_scope = "
            "function), and give shared async fixtures their own wider loop_scope."
        )
    from .core.loop import VirtualEventLoop

    loop = _shims.asyncio_test_loop(request)
    if not isinstance(loop, VirtualEventLoop):
        raise pytest.UsageError(
            f"{item.nodeid}: uses `bgwork` but runs on {type(loop).__name__}, not the virtual "
            "loop. A pytest_asyncio_loop_factories hook in your conftest returned factories for "
            "it: return None for items whose fixturenames include 'bgwork' so pytest-bgwork "
            "can provide the loop."
        )
    return loop


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture
def bgwork(request: pytest.FixtureRequest) -> Iterator[Simulation]:
    """This test's simulation: virtual clock, services, faults, history.

    ``async def`` tests run on its virtual loop; sync tests drive it with ``sim.run(...)``.
    """
    from .core import context
    from .core.errors import LeftoverWorkWarning
    from .core.wallclock import wall_clock
    from .simulation import Simulation

    item = request.node
    kwargs = _marker_kwargs(item)
    loop = _async_loop_for(request)
    options = {key: kwargs[key] for key in ("max_time", "allow_network", "real_random")
               if key in kwargs}
    platform = _platform_for(item)
    try:
        sim = Simulation(seed=_seed_for(item), start=kwargs.get("start"), loop=loop,
                         platform=platform, **options)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.bgwork(...): {exc}") from None
    sim.loop.real_limit = _runaway_after_for(item)
    if loop is not None:  # the async test body runs under the simulation's horizon
        sim._start_horizon(f"the test's max_time={sim.max_time:g}s, @pytest.mark.bgwork(max_time=...)")
    item.stash[_SIM_KEY] = sim
    strict = kwargs.get("strict")
    if strict is None:
        strict = bool(_option(request.config, "bgwork_strict"))
    # Everything from here is undone in ``finally``, also when pytest-timeout's ``Failed`` (or
    # a KeyboardInterrupt) arrives from a signal handler half-way through the set-up: a
    # simulation left current would answer every later ``time.time()`` and ``bg.current()``.
    context.push(sim)
    patched = False
    undrive = None
    try:
        wall_clock.start()  # undoes itself if interrupted
        patched = True
        sim._enter_random()
        if loop is None:  # a sync test body: its waits (time.sleep, Event.wait...) drive the loop
            from .core import threads

            sim._start_horizon(f"the test's max_time={sim.max_time:g}s, @pytest.mark.bgwork(max_time=...)")
            undrive = threads.drive(sim)
        for hook in _SETUP_HOOKS:
            hook(sim, item)
        yield sim
        swallowed = _swallowed_refusals(sim, item)
        if swallowed and not item.stash.get(_CALL_FAILED_KEY, False):
            listed = "\n".join(f"  - {r}" for r in swallowed)
            pytest.fail(
                f"bgwork refused {len(swallowed)} outbound request(s) that no mock "
                f"answered (bg.UnmockedRequest; the code under test caught the error):\n{listed}\n"
                "Mock them (respx), route them to an in-process app, or allow the network with "
                "@pytest.mark.bgwork(allow_network=True). A test that expects the refusal catches "
                "it by name: `with pytest.raises(bg.UnmockedRequest): ...`.",
                pytrace=False,
            )
        leftovers = sim._cancel_leftovers()
        item.stash[_LEFTOVER_KEY] = leftovers
        _report_unused_rules(sim, item, strict)
        listed = "\n".join(f"  - {t}" for t in leftovers)
        if leftovers and not strict:
            warnings.warn(
                LeftoverWorkWarning(
                    f"{len(leftovers)} task(s) still running when the test ended were cancelled "
                    f"at teardown (strict=True makes this a failure):\n{listed}"
                ),
                stacklevel=1,
            )
        if leftovers and strict:
            pytest.fail(
                f"bgwork strict mode: {len(leftovers)} task(s) were still running when the test "
                f"ended and were cancelled:\n{listed}\nAwait them (sim.run_until_idle(), "
                "runtime.drain()) before the test returns, or drop strict=True.",
                pytrace=False,
            )
    finally:
        if undrive is not None:
            undrive()
        try:
            if loop is None:
                sim.close()
            else:
                sim._cancel_leftovers()
                sim._dispose_frozen()
        finally:
            sim._exit_random()
            if patched:
                wall_clock.stop()
            context.pop(sim)


def _runaway_after_for(item: pytest.Item) -> float:
    """The runaway guard's window: marker ``runaway_after=``, else ini ``bgwork_runaway_after``."""
    from .core import validate
    from .core.loop import REAL_LIMIT

    kwargs = _marker_kwargs(item)
    if kwargs.get("runaway_after") is not None:
        where, value = f"{item.nodeid}: @pytest.mark.bgwork", kwargs["runaway_after"]
    else:
        raw = item.config.getini("bgwork_runaway_after")
        if raw in ("", None):
            return REAL_LIMIT
        where = "ini bgwork_runaway_after"
        try:
            value = float(raw)
        except ValueError:
            value = raw
    try:
        seconds = validate.seconds(value, where, "runaway_after", positive=True, hi=86400.0,
                                   fix="It is how many real seconds of work at one virtual "
                                       "instant the runaway guard judges at a time (default 10).")
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(str(exc)) from None
    assert seconds is not None
    return seconds


def _swallowed_refusals(sim: Simulation, item: pytest.Item) -> list[str]:
    """The refused requests the code under test swallowed: ``sim.unmocked_requests`` less those
    the test expected, i.e. caught in the test function itself where it names ``UnmockedRequest``
    (``with pytest.raises(bg.UnmockedRequest)``, ``except bg.UnmockedRequest``)."""
    left = list(sim.unmocked_requests)
    codes: set[object] = set()
    for fn in (getattr(item, "obj", None), getattr(item, "function", None)):
        code = _shims.names_in_body(fn, "UnmockedRequest")
        if code is not None:
            codes.add(code)
    for error in sim._unmocked_errors:
        tb = error.__traceback__  # its first frame is where the error was caught
        text = f"{getattr(error, 'method', '')} {getattr(error, 'url', '')}"
        if tb is not None and tb.tb_frame.f_code in codes and text in left:
            left.remove(text)
    return left


def _report_unused_rules(sim: Simulation, item: pytest.Item, strict: bool, which: str = "") -> None:
    """Fault rules the test added that never fired: a warning, a failure under strict.

    Only for a test whose body passed: a failed or skipped one may not have reached them.
    ``which`` names the simulation when it is not the test's ``bgwork`` one.
    """
    if not item.stash.get(_CALL_PASSED_KEY, False) or not sim.faults.unused():
        return
    queues = sim.queues.names() if "queues" in vars(sim) else []
    lines = sim.faults._unused_report(queues)
    listed = "\n".join(f"  - {line}" for line in lines)
    text = (f"{which}{len(lines)} fault rule(s) never fired, so the test never saw the fault it "
            f"asked for:\n{listed}\nCheck the point and queue names and the on_call= "
            "numbers, or remove the rule.")
    if strict:
        pytest.fail(f"bgwork strict mode: {text}", pytrace=False)
    from .core.errors import UnusedFaultRuleWarning

    warnings.warn(UnusedFaultRuleWarning(text), stacklevel=1)


class SimulationFactory:
    """``bgwork_factory(seed=..., start=..., platform=...)``: fresh simulations, e.g. one per
    ``@given`` example (platform: the test's, from its marker or ``bgwork_platform``).

    Each has its own virtual loop, driven with ``sim.run(...)``; all are closed at teardown.
    """

    def __init__(self, base_seed: int, platform: str = "agentuity") -> None:
        self._base_seed = base_seed
        self._platform = platform
        self._made: list[Simulation] = []
        self.runaway_after: float | None = None
        """The runaway guard's window for the simulations made (the test's ``runaway_after``)."""
        self.real_random = False
        """The test's ``real_random=`` marker argument, for the simulations made."""

    def __call__(self, seed: int | None = None, start: Any = None,
                 platform: str | None = None) -> Simulation:
        from .simulation import Simulation

        if seed is None:
            seed = self._base_seed + len(self._made)
        sim = Simulation(seed=seed, start=start,
                         platform=self._platform if platform is None else platform,
                         real_random=self.real_random)
        if self.runaway_after is not None:
            sim.loop.real_limit = self.runaway_after
        self._made.append(sim)
        return sim

    @property
    def made(self) -> list[Simulation]:
        """Every simulation this factory created, oldest first."""
        return list(self._made)

    def reset(self, base_seed: int, platform: str = "agentuity") -> None:
        """Start over for a new test: new base seed and platform, nothing made yet."""
        self._base_seed = base_seed
        self._platform = platform
        self._made = []

    def close(self) -> None:
        """Close every simulation made since the last ``reset``."""
        made, self._made = self._made, []
        for sim in made:
            sim.close()


@pytest.fixture(scope="session")
def bgwork_factory() -> SimulationFactory:
    """Make fresh simulations on demand, e.g. one per ``@given`` example.

    Session-scoped so Hypothesis's function-scoped-fixture health check stays quiet;
    ``_bgwork_factory_per_test`` reseeds it for each test and closes what it made.
    """
    return SimulationFactory(0)


@pytest.fixture(autouse=True)
def _bgwork_factory_per_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """For tests using ``bgwork_factory``: per-test seed, wall clock patched once, cleanup."""
    if "bgwork_factory" not in request.fixturenames:
        yield
        return
    from .core.wallclock import wall_clock

    factory: SimulationFactory = request.getfixturevalue("bgwork_factory")
    factory.reset(_seed_for(request.node), _platform_for(request.node))
    factory.runaway_after = _runaway_after_for(request.node)
    factory.real_random = _marker_kwargs(request.node).get("real_random") is True
    wall_clock.start()
    try:
        yield
        strict = _marker_kwargs(request.node).get("strict")
        if strict is None:
            strict = bool(_option(request.config, "bgwork_strict"))
        made = factory.made
        for sim in made:  # as for the `bgwork` simulation: rules that never fired
            _report_unused_rules(sim, request.node, strict,
                                 f"bgwork_factory simulation seed={sim.seed}: ")
    finally:
        try:
            factory.close()
        finally:
            wall_clock.stop()


@pytest.fixture
def bg_clock(bgwork: Simulation) -> VirtualClock:
    """The simulation's virtual clock (``now()``, ``time()``, ``monotonic()``)."""
    return bgwork.clock


@pytest.fixture
def bg_queues(bgwork: Simulation) -> Queues:
    """The simulation's queue service."""
    return bgwork.queues


@pytest.fixture
def bg_kv(bgwork: Simulation) -> KV:
    """The simulation's key-value service."""
    return bgwork.kv


@pytest.fixture
def bg_streams(bgwork: Simulation) -> Streams:
    """The simulation's durable stream service."""
    return bgwork.streams


@pytest.fixture
def bg_runtime(bgwork: Simulation) -> Runtime:
    """The simulation's waitUntil runtime."""
    return bgwork.runtime


@pytest.fixture
def bg_task_manager(bgwork: Simulation) -> BackgroundTaskManager:
    """Deprecated: use ``bgwork.task_manager`` (this alias warns and goes in the next release)."""
    import warnings

    warnings.warn("the bg_task_manager fixture is deprecated: use bgwork.task_manager "
                  "(take the bgwork fixture); the alias goes in the next release",
                  DeprecationWarning, stacklevel=2)
    return bgwork.task_manager


@pytest.fixture
def bg_faults(bgwork: Simulation) -> FaultInjector:
    """The simulation's fault injector."""
    return bgwork.faults


#: Callables run on each new test simulation (chaos mode and replay register here).
_SETUP_HOOKS: list[Callable[[Simulation, pytest.Item], None]] = []


# -- replay tokens: @pytest.mark.bgwork(replay="bgwork1:...") ---------------------------------
def _replay_token(item: pytest.Item) -> replay.Replay | None:
    token = _marker_kwargs(item).get("replay")
    if token is None:
        return None
    from .checking import replay

    try:
        return replay.decode(token)
    except ValueError as exc:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.bgwork(replay=...): {exc}") from None


def _replay_setup(sim: Simulation, item: pytest.Item) -> None:
    """A plain test's token (no scenario) gives its simulation the seed, choices and plan."""
    token = _replay_token(item)
    if token is not None and token.scenario is None:
        from .checking import replay

        replay.apply(sim, token)


_SETUP_HOOKS.append(_replay_setup)


# -- chaos mode: --bgwork-chaos / bgwork_chaos / @pytest.mark.bgwork(chaos=...) --------------
_CHAOS_KEY = pytest.StashKey[tuple[str, ...]]()


def _chaos_option(config: pytest.Config) -> tuple[str, ...]:
    cache = config.stash.setdefault(_OPTIONS_KEY, {})
    if "chaos modes" not in cache:
        try:
            cache["chaos modes"] = chaos.parse(_option(config, "bgwork_chaos"),
                                               source="--bgwork-chaos / bgwork_chaos")
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    modes: tuple[str, ...] = cache["chaos modes"]
    return modes


def _chaos_for(item: pytest.Item) -> tuple[str, ...]:
    """The marker's ``chaos=`` (``""``/``[]``: off for this test), else the option's modes."""
    kwargs = _marker_kwargs(item)
    if "chaos" not in kwargs or kwargs["chaos"] is None:
        return _chaos_option(item.config)
    try:
        return chaos.parse(kwargs["chaos"], source=f"{item.nodeid}: @pytest.mark.bgwork(chaos=...)")
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def _chaos_setup(sim: Simulation, item: pytest.Item) -> None:
    item.stash[_CHAOS_KEY] = chaos.apply(sim, _chaos_for(item))


_SETUP_HOOKS.append(_chaos_setup)


#: Loaded by a replay token or ``bg.explore``; until then no test can have a replay active.
_REPLAY_MODULE = f"{__package__}.checking.replay"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Make the test's replay token visible to ``bg.explore`` while the test runs; fail a
    test that never awaited a pytest-bgwork coroutine."""
    _unawaited.clear()
    platform_token = current_test_platform.set(_platform_for(item))  # bg.explore in any test reads it
    try:
        token = _replay_token(item)
        if token is None and _REPLAY_MODULE not in sys.modules:  # nothing can be active
            result = yield
            unreplayed = False
        else:
            from .checking import replay

            with replay.activate(token):
                result = yield
                unreplayed = token is not None and token.scenario is not None and not replay.replayed()
    except BaseException as exc:
        if _unawaited:
            exc.add_note(_unawaited_message())
        raise
    finally:
        current_test_platform.reset(platform_token)
    _fail_unawaited()
    if unreplayed:
        assert token is not None
        pytest.fail(
            f"@pytest.mark.bgwork(replay=...) holds an explored example of scenario "
            f"{token.scenario!r}, but this test ran no bg.explore({token.scenario}, ...), so nothing "
            "was replayed. Put the marker on the test that calls bg.explore with that scenario "
            "(a token without a scenario, replay.encode(seed, plan), applies its seed and plan to "
            "a plain bgwork test).",
            pytrace=False,
        )
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    """A coroutine freed only at teardown (e.g. when the loop closed) still fails the test."""
    result = yield
    _fail_unawaited()
    return result


# -- never-awaited API coroutines -------------------------------------------------------------
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_unawaited: list[str] = []
_original_warn_unawaited: Callable[[Any], None] | None = None


def _watch_unawaited(coro: Any) -> None:
    """CPython's never-awaited hook (``_shims.install_unawaited_hook``), noting the coroutines of pytest-bgwork.

    CPython calls it when a coroutine that never started is freed: for ours that is an API
    call missing its ``await`` (``sim.queues.publish(...)``), which did nothing at all.
    """
    try:
        code = coro.cr_code
        if code.co_filename.startswith(_PACKAGE_DIR):
            _unawaited.append(_describe_unawaited(coro))
    except Exception:  # pragma: no cover - never let the warning machinery fail
        pass
    assert _original_warn_unawaited is not None
    _original_warn_unawaited(coro)


def _describe_unawaited(coro: Any) -> str:
    """``Queues.publish(name='jobs', payload={...})`` at the user's file and line."""
    frame = coro.cr_frame
    args = ""
    if frame is not None:
        names = coro.cr_code.co_varnames[:coro.cr_code.co_argcount + coro.cr_code.co_kwonlyargcount]
        shown = []
        for name in names:
            if name in ("self", "cls") or name not in frame.f_locals:
                continue
            text = repr(frame.f_locals[name])
            shown.append(f"{name}={text if len(text) <= 40 else text[:37] + '...'}")
        args = ", ".join(shown)
    where = ""
    caller = sys._getframe(2)  # 0: here, 1: _watch_unawaited, 2: whoever freed the coroutine
    while caller is not None and (caller.f_code.co_filename.startswith(_PACKAGE_DIR)
                                  or caller.f_code.co_filename == warnings.__file__):
        caller = caller.f_back  # type: ignore[assignment]
    if caller is not None:
        where = f" at {caller.f_code.co_filename}:{caller.f_lineno}"
    return f"{coro.__qualname__}({args}){where}"


def _unawaited_message() -> str:
    calls = "\n".join(f"  - {text}" for text in _unawaited)
    return (f"bgwork: {len(_unawaited)} pytest-bgwork coroutine(s) were never awaited, so "
            f"they did nothing:\n{calls}\nAdd `await` before the call (e.g. "
            "`await sim.queues.publish(...)`, `await bg.assert_idempotent(...)`).")


def _fail_unawaited() -> None:
    if _unawaited:
        message = _unawaited_message()
        _unawaited.clear()
        pytest.fail(message, pytrace=False)


_installs = [0]  # nested sessions (pytester's inline runs) share one installed hook


def _install_unawaited_watch() -> None:
    global _original_warn_unawaited
    _installs[0] += 1
    if _original_warn_unawaited is None:  # (None again if this CPython has no such hook)
        _original_warn_unawaited = _shims.install_unawaited_hook(_watch_unawaited)


def _uninstall_unawaited_watch() -> None:
    global _original_warn_unawaited
    _installs[0] -= 1
    if _installs[0] <= 0 and _original_warn_unawaited is not None:
        _shims.restore_unawaited_hook(_original_warn_unawaited)
        _original_warn_unawaited = None
        _installs[0] = 0


# -- reports ---------------------------------------------------------------------------------
def replay_line(item: pytest.Item, seed: int) -> str:
    """The one command that replays a test with its seed (and the command line's chaos modes)."""
    modes = _chaos_option(item.config)
    flag = f" --bgwork-chaos={','.join(modes)}" if modes else ""
    if item.config.getoption("bgwork_platform", default=None):  # given on the command line
        flag += f" --bgwork-platform={_platform_option(item.config)}"
    return f"pytest '{item.nodeid}' --bgwork-seed={seed}{flag}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[_CALL_PASSED_KEY] = report.passed
    sim = item.stash.get(_SIM_KEY, None)
    if sim is None:
        return report
    if report.when == "call":
        item.stash[_CALL_FAILED_KEY] = report.failed
    modes = item.stash.get(_CHAOS_KEY, ())
    if report.when == "teardown":  # plain data on the report: pytest-xdist carries it over
        report.bgwork_stats = sim.stats()  # type: ignore[attr-defined]
        # The report now holds all it needs (stats, timeline text, HTML data): let the
        # simulation go, or every finished test's stays alive through its item until the end.
        del item.stash[_SIM_KEY]
    wanted = report.failed or (report.when == "call" and bool(
        _option(item.config, "bgwork_html_all")))
    if wanted and _option(item.config, "bgwork_html"):
        outcome = report.outcome if report.when == "call" else "error"
        message = call.excinfo.exconly()[-4000:] if call.excinfo is not None else ""
        report.bgwork_html = _report_html().TestTimeline.from_simulation(  # type: ignore[attr-defined]
            sim, nodeid=item.nodeid, outcome=outcome, replay=replay_line(item, sim.seed),
            chaos=modes, message=message).to_data()
    mode = _timeline_option(item.config)
    failed = report.failed
    if mode == "never" or (mode == "failure" and not failed):
        return report
    if failed or report.when == "call":
        header = f"seed {sim.seed} · replay: {replay_line(item, sim.seed)}"
        if modes:
            header += f" · chaos: {','.join(modes)}"
        stats = sim.stats()
        summary = (
            f"simulated {stats['simulated_seconds']:.3f}s · {int(stats['deliveries'])} deliveries "
            f"({int(stats['redeliveries'])} redelivered) · {int(stats['faults'])} faults · "
            f"{int(stats['dead_letters'])} dead letters · digest {sim.history.digest()[:16]}"
        )
        text = f"{header}\n{summary}\n{sim.history.timeline(limit=_TIMELINE_LIMIT)}"
        report.sections.append(("bgwork timeline", text))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    totals: dict[str, float] = {}
    for reports in terminalreporter.stats.values():  # teardown reports, also from xdist workers
        for rep in reports:
            for key, value in (getattr(rep, "bgwork_stats", None) or {}).items():
                totals[key] = totals.get(key, 0) + value
            if getattr(rep, "bgwork_stats", None) is not None:
                totals["tests"] = totals.get("tests", 0) + 1
    if totals.get("tests"):
        modes = _chaos_option(config)
        terminalreporter.write_sep("-", "bgwork summary")
        terminalreporter.write_line(
            f"{int(totals['tests'])} simulation(s): simulated {totals['simulated_seconds']:.1f}s, "
            f"{int(totals['deliveries'])} deliveries, {int(totals['redeliveries'])} redeliveries, "
            f"{int(totals['faults'])} faults injected, {int(totals['dead_letters'])} dead letters"
            + (f" (chaos: {','.join(modes)})" if modes else "")
        )
    # with -rP / -rA pytest prints passed tests' sections itself ("PASSES"): print them once
    if _timeline_option(config) == "always" and not terminalreporter.hasopt("P"):
        for report in terminalreporter.getreports("passed"):
            for title, text in report.sections:
                if title == "bgwork timeline":
                    terminalreporter.write_sep("-", f"bgwork timeline: {report.nodeid}")
                    terminalreporter.write_line(text)


class _HtmlReport:
    """Collects the ``bgwork_html`` data of reports (local or from xdist workers); writes the page."""

    def __init__(self, path: str, include_passing: bool) -> None:
        self.path = path
        self.include_passing = include_passing
        self.tests: dict[str, report_html.TestTimeline] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = getattr(report, "bgwork_html", None)
        if data is not None:  # a later phase (teardown error) replaces the call's picture
            self.tests[report.nodeid] = _report_html().TestTimeline.from_data(data)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        modes = _chaos_option(session.config)
        _report_html().write(self.path, list(self.tests.values()),
                          include_passing=self.include_passing,
                          subtitle=f"Chaos: {','.join(modes)}." if modes else "")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        terminalreporter.write_sep("-", f"bgwork html report: {self.path}")
