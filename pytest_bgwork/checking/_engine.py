"""``bg.explore``'s search on Hypothesis's engine, without ``@given``'s per-example wrapper.

``@given`` builds a proxy function (a signature evaluation), draws its arguments through
an audited ``data.draw`` and sets up reporting around every example: about a third of
what Hypothesis costs per example of an exploration. ``run`` here does what
``@given(st.data())`` does with the same settings, random and database key, so the
engine makes the same choices, finds the same examples and shrinks them the same way:

- the random is ``@given``'s (``@seed``, ``derandomize``, ``--hypothesis-seed``), and a
  seed turns the database off, as ``@seed`` does;
- each example runs under ``local_settings``, every registered random seeded with 0 (as
  ``deterministic_PRNG`` does) and a ``BuildContext``, first drawing ``st.data()`` (one span);
- a failure is marked interesting by its origin, a skip or health-check error stops the
  search, and the shrunk failure is replayed once more as the final example, whose error
  is raised; a replay that does not fail raises ``FlakyFailure``, as ``@given`` does.

Only the reporting ``@given`` adds (its "Falsifying example" text, verbose output,
observability, statistics) is left out: explore replaces it with its own report, and
falls back to ``@given`` when verbosity, observability or another backend asks for it.
"""

from __future__ import annotations

import traceback
import unittest
from collections.abc import Callable
from random import Random
from typing import Any

import hypothesis
from hypothesis import core as _core
from hypothesis import errors as _errors
from hypothesis import strategies as st
from hypothesis._settings import local_settings
from hypothesis.control import BuildContext, currently_in_test_context
from hypothesis.errors import (
    FlakyReplay,
    HypothesisException,
    StopTest,
    Unsatisfiable,
    UnsatisfiedAssumption,
)
from hypothesis.internal import entropy as _entropy
from hypothesis.internal.conjecture.data import ConjectureData
from hypothesis.internal.conjecture.engine import ConjectureRunner
from hypothesis.internal.conjecture.shrinker import sort_key
from hypothesis.internal.escalation import InterestingOrigin, is_hypothesis_file
from hypothesis.internal.healthcheck import fail_health_check
from hypothesis.internal.reflection import get_pretty_function_description
from hypothesis.reporting import report, with_reporter

__all__ = ["run"]

if not hasattr(ConjectureData, "start_span"):
    # an older engine (examples, not spans): explore takes the @given path there
    raise ImportError("bg.explore's engine path needs a Hypothesis whose ConjectureData has spans")

_DATA = st.data()
# Hypothesis's internals are untyped: reach them through ``Any``.
_failures: Any = _core.failure_exceptions_to_catch
_skips: Any = _core.skip_exceptions_to_reraise
_random_for: Any = _core.get_random_for_wrapped_test
FlakyFailure: Any = _errors.FlakyFailure
#: ``deterministic_PRNG``'s registry of randoms (a ``WeakValueDictionary``; ``.data`` holds
#: the weak references) and its audit's set of known seeded states.
_MANAGED: Any = _entropy.RANDOMS_TO_MANAGE
_GLOBAL_KEY: int = _entropy._global_random_rkey
_KNOWN_STATES: set[Any] = _entropy._known_random_state_hashes


class _Wrapped:
    """What ``get_random_for_wrapped_test`` reads from a ``@given`` test."""

    def __init__(self, settings: hypothesis.settings, seed: int | None) -> None:
        self._hypothesis_internal_use_settings = settings
        self._hypothesis_internal_use_seed = seed
        self._hypothesis_internal_use_generated_seed: int | None = None


class _SeededRandoms:
    """``deterministic_PRNG()`` for a whole search: every example starts with each registered
    random (the global ``random`` first) seeded with 0, and the search ends with their states
    restored. ``deterministic_PRNG`` saves, seeds and restores them around each example
    (four state copies of 2.5 KB each and a fresh ``Random()``); between examples only the
    engine runs, which keeps its own random, so the examples see exactly the same states.
    """

    def __init__(self) -> None:
        self._saved: dict[int, Any] = {}
        self._seeded: dict[int, tuple[Any, Any]] = {}

    def seed(self) -> None:
        managed = _MANAGED.data  # weak references, as deterministic_PRNG reads them
        if len(managed) != len(self._seeded) or not managed.keys() <= self._seeded.keys():
            self._learn()
        for r, state in self._seeded.values():
            r.setstate(state)

    def _learn(self) -> None:
        """Save and seed the randoms registered since the last example (at first: all)."""
        for k, ref in _MANAGED.data.copy().items():
            r = ref()
            if r is None or k in self._seeded:
                continue
            self._saved[k] = (r, r.getstate())
            r.seed(0)
            state = r.getstate()
            if k == _GLOBAL_KEY:  # deterministic_PRNG's bookkeeping for its audit
                _KNOWN_STATES.add(hash(state))
            self._seeded[k] = (r, state)
        for k in [k for k in self._seeded if k not in _MANAGED.data]:
            del self._seeded[k]

    def restore(self) -> None:
        for k, (r, state) in self._saved.items():
            if k == _GLOBAL_KEY:
                _KNOWN_STATES.add(hash(state))
            r.setstate(state)
        self._saved.clear()
        self._seeded.clear()


def _internal(exc: BaseException) -> bool:
    """Whether ``exc`` is an error of Hypothesis's own code (not a failure of the example)."""
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        tb = exc.exceptions[0].__traceback__ or exc.__traceback__
    else:
        tb = exc.__traceback__
    frames = traceback.extract_tb(tb)
    return (bool(frames) and is_hypothesis_file(frames[-1][0])
            and not isinstance(exc, HypothesisException))


def _unsatisfiable(runner: ConjectureRunner, test: Callable[..., Any]) -> str:
    """``@given``'s message when no example could run."""
    calls, why = runner.call_count, []
    if runner.invalid_examples > min(20, calls // 5):
        why.append(f"{runner.invalid_examples} of {calls} examples failed a .filter() or assume() "
                   "condition. Try making your filters or assumes less strict, or rewrite using "
                   "strategy parameters: st.integers().filter(lambda x: x > 0) fails less often "
                   "(that is, never) when rewritten as st.integers(min_value=1).")
    if runner.overrun_examples > min(20, calls // 5):
        why.append(f"{runner.overrun_examples} of {calls} examples were too large to finish "
                   "generating; try reducing the typical size of your inputs?")
    name = get_pretty_function_description(test)
    return f"Unable to satisfy assumptions of {name}. {' Also, '.join(why)}"


def run(test: Callable[[st.DataObject], None], settings: hypothesis.settings,
        seed: int | None, key: bytes) -> None:
    """Search with ``test(data)`` as ``@given(st.data())`` + ``settings`` + ``@seed(seed)``."""
    __tracebackhide__ = True
    if currently_in_test_context():
        fail_health_check(  # @given's own words
            hypothesis.settings(),
            "Nesting @given tests results in quadratic generation and shrinking "
            "behavior, and can usually be more cleanly expressed by replacing the "
            "inner function with an st.data() parameter on the outer @given."
            "\n\n"
            "If it is difficult or impossible to refactor this test to remove the "
            "nested @given, you can disable this health check with "
            "@settings(suppress_health_check=[HealthCheck.nested_given]) on the "
            "outer @given. See "
            "https://hypothesis.readthedocs.io/en/latest/reference/api.html#hypothesis.HealthCheck "
            "for details.",
            hypothesis.HealthCheck.nested_given,
        )
    if seed is not None:  # as @seed: a fixed search replays nothing from the database
        settings = hypothesis.settings(settings, database=None)
    phases = settings.phases
    if hypothesis.Phase.reuse not in phases and hypothesis.Phase.generate not in phases:
        raise unittest.SkipTest("Hypothesis has been told to run no examples for this test.")
    wrapped = _Wrapped(settings, seed)
    random: Random = _random_for(test, wrapped)

    prng = _SeededRandoms()

    def execute(data: ConjectureData, *, is_final: bool = False) -> None:
        prng.seed()
        with (local_settings(settings),
              BuildContext(data, is_final=is_final, wrapped_test=test),
              data.provider.per_test_case_context_manager()):
            test(data.draw(_DATA))

    def for_engine(data: ConjectureData) -> None:
        try:
            execute(data)
        except UnsatisfiedAssumption as exc:
            try:
                data.mark_invalid(exc.reason)
            except FlakyReplay as err:
                raise FlakyFailure(err.reason, [exc]) from None
        except StopTest:
            raise
        except _skips():
            raise
        except _failures() as exc:
            if _internal(exc):  # a bug inside Hypothesis stops the search, as under @given
                raise
            if data.frozen:  # an error in a finally block swallowed our StopTest
                raise StopTest(data.testcounter) from exc
            data.expected_exception = exc
            data.expected_traceback = ""
            try:
                data.mark_interesting(InterestingOrigin.from_exception(exc))
            except FlakyReplay as err:
                raise FlakyFailure(err.reason, [exc]) from None

    runner = ConjectureRunner(for_engine, settings=settings, random=random, database_key=key)
    try:
        runner.run()
        if runner.call_count and not runner.interesting_examples and not runner.valid_examples:
            raise Unsatisfiable(_unsatisfiable(runner, test))
    except BaseException:
        generated = wrapped._hypothesis_internal_use_generated_seed
        if generated is not None and not runner.interesting_examples:  # as @given says it
            with local_settings(settings):
                report(f"You can reproduce this failure by adding @seed({generated}) to this "
                       "test" + (f", or by running pytest with --hypothesis-seed={generated}"
                                 if getattr(_core, "running_under_pytest", False) else "") + ".")
        raise
    finally:
        prng.restore()
    if runner.call_count == 0:
        raise unittest.SkipTest("Hypothesis has been told to run no examples for this test.")
    if not runner.interesting_examples:
        return
    # The smallest failure, replayed as @given's final example: its error is the one raised.
    failing = sorted(runner.interesting_examples.values(), key=lambda d: sort_key(d.nodes))[0]
    data = runner.new_conjecture_data(failing.choices, max_choices=len(failing.choices))
    expected = failing.expected_exception
    notes: list[object] = []
    prng = _SeededRandoms()
    try:
        with with_reporter(notes.append):
            execute(data, is_final=True)
    except StopTest:
        raise FlakyFailure("Inconsistent results: An example failed on the first run but now "
                           "succeeds (or fails with another error, or is for some reason not "
                           "runnable).", [expected or StopTest(0)]) from None
    except UnsatisfiedAssumption as exc:
        raise FlakyFailure("Unreliable assumption: An example which satisfied assumptions on "
                           "the first run now fails it.", [exc]) from None
    except BaseException as exc:
        for note in notes:
            exc.add_note(str(note))
        raise
    finally:
        prng.restore()
        data.freeze()
    raise FlakyFailure("bg.explore: the failing example did not fail when run again",
                       [expected or AssertionError("(no error)")])
