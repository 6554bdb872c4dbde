"""Where a simulation's random choices come from.

By default a ``random.Random`` seeded with the simulation's seed. During
exploration Hypothesis supplies the choices instead, so shrinking simplifies the
schedule itself (smaller jitter, the default order) rather than a seed.
Every choice shrinks toward its first/lowest option, which means "no surprise".
"""

from __future__ import annotations

import random
from typing import Protocol, TypeVar

__all__ = ["Choices", "SeededChoices"]

_T = TypeVar("_T")


class Choices(Protocol):
    """The source of every nondeterministic decision a service makes."""

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        """An integer in ``[lo, hi]``; ``lo`` is the unsurprising choice."""
        ...

    def fraction(self, label: str = "") -> float:
        """A float in ``[0, 1)``; ``0`` is the unsurprising choice."""
        ...


class SeededChoices:
    """Choices from ``random.Random(seed)``: the same seed gives the same run."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        if hi < lo:
            raise ValueError(f"integer(lo={lo}, hi={hi}): hi must be >= lo")
        return self._rng.randint(lo, hi)

    def fraction(self, label: str = "") -> float:
        return self._rng.random()


def pick(choices: Choices, options: list[_T], label: str = "") -> _T:
    """One of ``options``; the first one is the unsurprising choice."""
    if not options:
        raise ValueError("pick() needs at least one option")
    return options[choices.integer(0, len(options) - 1, label)]
