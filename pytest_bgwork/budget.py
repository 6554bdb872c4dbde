"""``--bgwork-explore-budget``: how much exploring a run does (pytest side of the budget).

``N`` or ``Nx`` multiplies every exploration's ``max_examples`` (a nightly job runs 50x what
a pull request runs); ``Ns``, ``Nm`` or ``Nh`` shares that much wall time out evenly over the
explorations the run collected (tests that call ``bg.explore`` or were built by
``bg.explore_test``), each searching until its share is spent.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable

import pytest

__all__ = ["FORMS", "count_explorations", "parse_budget"]

FORMS = "N or Nx (multiply max_examples, e.g. 50 or 0.5x), Ns / Nm / Nh (wall time, e.g. 600s, 10m, 1h)"
_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([xsmh]?)\s*$", re.IGNORECASE)
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: The largest multiplier and wall time a budget may ask for: beyond them ``max_examples``
#: and deadlines overflow (a 400-digit number is ``inf`` as a float).
MAX_MULTIPLIER = 1e6
MAX_SECONDS = 366 * 86400.0


def parse_budget(raw: str) -> tuple[float, float | None]:
    """``(multiplier, seconds)`` from an option value; ``pytest.UsageError`` listing the forms."""
    m = _BUDGET_RE.match(raw)
    value = float(m.group(1)) if m else 0.0
    unit = m.group(2).lower() if m else ""
    seconds = unit in _UNIT
    limit = MAX_SECONDS if seconds else MAX_MULTIPLIER
    amount = value * _UNIT[unit] if seconds else value
    if not m or value <= 0 or not amount <= limit:
        shown = raw if len(raw) <= 40 else f"{raw[:20]}... ({len(raw)} characters)"
        raise pytest.UsageError(
            f"--bgwork-explore-budget / bgwork_explore_budget expects {FORMS}, greater than 0 "
            f"and at most {MAX_MULTIPLIER:,.0f}x or {MAX_SECONDS / 86400:.0f} days of wall time; "
            f"got {shown!r}")
    if seconds:
        return 1.0, amount
    return value, None


def _mentions_explore(code: types.CodeType) -> bool:
    if "explore" in code.co_names or "explore_test" in code.co_names:
        return True
    return any(isinstance(c, types.CodeType) and _mentions_explore(c) for c in code.co_consts)


def count_explorations(items: Iterable[pytest.Item]) -> int:
    """How many collected tests explore: built by ``explore_test``, or calling ``explore``."""
    n = 0
    for item in items:
        fn = getattr(item, "obj", None)
        if getattr(fn, "_bgwork_explores", False):
            n += 1
            continue
        code = getattr(getattr(fn, "__func__", fn), "__code__", None)
        if isinstance(code, types.CodeType) and _mentions_explore(code):
            n += 1
    return n
