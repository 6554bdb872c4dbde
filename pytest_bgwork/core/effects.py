"""External effects (emails sent, cards charged) recorded so checks can count them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import validate
from .context import current_attempt
from .errors import ProcessCrashed
from .history import History

__all__ = ["Effect", "Effects"]


@dataclass(frozen=True)
class Effect:
    """One effect: its kind (``"email"``), its business key, when, and from which attempt."""

    name: str
    """The kind of effect, e.g. ``"email"`` (what ``assert_effects_once`` groups by)."""
    key: Any
    """The business key, e.g. an order id: the same key twice is the effect twice."""
    t: float
    """When it was recorded, in virtual seconds."""
    attempt: str | None
    """The queue attempt that caused it, e.g. ``"report-jobs/msg_1#2"`` (``None``:
    outside any attempt)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Whatever else ``record(..., **detail)`` was given."""


class Effects:
    """``sim.effects``: call ``record`` where your code does something irreversible."""

    def __init__(self, history: History, clock: Callable[[], float]) -> None:
        self._history = history
        self._clock = clock
        self._items: list[Effect] = []

    def record(self, name: str, key: Any = None, **detail: Any) -> Effect:
        """Note that effect ``name`` happened for ``key`` (an order id, an email address)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"effects.record(name=...) needs a non-empty string; got {name!r}")
        if not name.isascii():
            validate.utf8(name, "effects.record", "name")
        attempt = current_attempt.get()
        if attempt is not None and attempt.crashed:
            raise ProcessCrashed()
        effect = Effect(name, key, self._clock(), attempt.label if attempt else None, dict(detail))
        self._items.append(effect)
        self._history.record("effect", name, key=key, **detail)
        return effect

    def all(self, name: str | None = None) -> list[Effect]:
        """Every recorded effect, or those named ``name``, oldest first."""
        return [e for e in self._items if name is None or e.name == name]

    def count(self, name: str, key: Any = None) -> int:
        """How many times ``name`` happened (for ``key``, if given)."""
        return sum(1 for e in self._items if e.name == name and (key is None or e.key == key))

    def _snapshot(self) -> list[Effect]:
        return list(self._items)

    def _restore(self, items: list[Effect]) -> None:
        self._items = list(items)
