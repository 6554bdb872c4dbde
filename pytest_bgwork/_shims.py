"""The plugin's reads of other projects' internals, each in one small function.

Each names the versions it was checked on and what happens when the internal is missing,
so an upgrade that removes one fails here, clearly, and nowhere else.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest

__all__ = [
    "asyncio_loop_scope",
    "asyncio_test_loop",
    "install_unawaited_hook",
    "names_in_body",
    "restore_unawaited_hook",
]


# -- never-awaited coroutines: CPython's warnings hook -----------------------------------------
def install_unawaited_hook(watch: Callable[[Any], None]) -> Callable[[Any], None] | None:
    """Have ``watch(coro)`` called for each never-started coroutine freed; return the original.

    CPython's ``warnings._warn_unawaited_coroutine`` is what the interpreter calls then
    (checked on CPython 3.11 and 3.13; present since 3.8). No public hook sees the coroutine
    object itself (the RuntimeWarning carries it only as ``source``, and not under ``-W
    error`` or when filtered out). Fallback (the function missing): nothing installed,
    ``None`` returned; unawaited calls then only get CPython's own RuntimeWarning.
    """
    original = getattr(warnings, "_warn_unawaited_coroutine", None)
    if not callable(original):
        return None
    warnings._warn_unawaited_coroutine = watch  # type: ignore[attr-defined]
    return original  # type: ignore[no-any-return]


def restore_unawaited_hook(original: Callable[[Any], None] | None) -> None:
    """Undo ``install_unawaited_hook`` (nothing to do if it installed nothing)."""
    if original is not None:
        warnings._warn_unawaited_coroutine = original  # type: ignore[attr-defined]


# -- refusals a test expects: the names its body uses ------------------------------------------
def names_in_body(fn: object, name: str) -> object | None:
    """The code object of test function ``fn`` (unwrapped) if its body uses global or
    attribute ``name`` (``bg.UnmockedRequest``, ``except UnmockedRequest``), else None.

    Reads ``co_names``, a documented attribute of code objects (public on every CPython;
    checked on 3.11 and 3.13). Fallback (no code object: a builtin, a callable instance):
    None, i.e. the test is not taken to expect the name.
    """
    if not callable(fn):
        return None
    code = getattr(inspect.unwrap(fn), "__code__", None)
    names = getattr(code, "co_names", ())
    return code if name in names else None


# -- pytest-asyncio: which loop a test runs on ---------------------------------------------
def asyncio_loop_scope(item: pytest.Item) -> str:
    """The loop scope pytest-asyncio runs async test ``item`` in, from public settings only:
    the closest ``asyncio`` marker's ``loop_scope=`` (or its deprecated ``scope=``), else the
    ini ``asyncio_default_test_loop_scope``, else ``"function"`` (pytest-asyncio 1.4-1.5's rule).
    """
    marker = item.get_closest_marker("asyncio")
    scope = (marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")) if marker else None
    if scope is None:
        try:
            scope = item.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # pytest-asyncio did not register the option
            scope = None
    return str(scope or "function")


#: pytest-asyncio's fixture that owns a function-scoped test's loop runner (private).
_RUNNER_FIXTURE = "_function_scoped_runner"


def asyncio_test_loop(request: pytest.FixtureRequest) -> Any:
    """The event loop pytest-asyncio made for this function-scoped async test.

    pytest-asyncio has no public way to reach it from a sync fixture set up before the
    test runs: its private ``_function_scoped_runner`` fixture (an ``asyncio.Runner``) owns
    it (checked on pytest-asyncio 1.4 and 1.5). Fallback (the fixture gone in another
    version): a ``UsageError`` naming the versions that work, rather than a wrong loop.
    """
    try:
        runner = request.getfixturevalue(_RUNNER_FIXTURE)
        get_loop = runner.get_loop
    except (pytest.FixtureLookupError, AttributeError):
        import pytest_asyncio

        version = getattr(pytest_asyncio, "__version__", "?")
        raise pytest.UsageError(
            f"pytest-bgwork cannot find the loop pytest-asyncio {version} made for "
            f"{request.node.nodeid} (its {_RUNNER_FIXTURE} fixture): pytest-bgwork was checked "
            "with pytest-asyncio 1.4 and 1.5. Install one of those (pip install "
            "'pytest-asyncio>=1.4,<1.6') or a pytest-bgwork release that supports yours."
        ) from None
    return get_loop()
