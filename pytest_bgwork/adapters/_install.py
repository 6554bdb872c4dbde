"""The ref-counted install the Redis-based task adapters (arq, RQ) share."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest_bgwork as bg

__all__ = ["patched_while_installed"]


@contextlib.contextmanager
def patched_while_installed(name: str, installs: list[bg.Simulation], sim: Any,
                            patch: Callable[[], Callable[[], None]]) -> Iterator[bg.Simulation]:
    """``sim`` pushed on ``installs`` while the block runs on ``adapters.redis``.

    ``patch()`` runs on the first (outermost) install and returns the undo, run when the
    last one ends, so nested or repeated installs patch the library once. ``name`` is the
    adapter's (``arq``) for the error a non-simulation gets.
    """
    from . import redis as bg_redis

    if not isinstance(sim, bg.Simulation):
        raise TypeError(f"adapters.{name}.install(sim): sim must be a pytest_bgwork Simulation "
                        f"(the `bgwork` fixture); got {type(sim).__name__}")
    restore = patch() if not installs else None
    installs.append(sim)
    try:
        with bg_redis.install(sim):
            yield sim
    finally:
        installs.pop()
        if restore is not None:
            restore()
