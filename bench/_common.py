"""Shared bench helpers: best-of-N wall timing and a printed comparison table."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs, in seconds (least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def table(title: str, ours: tuple[str, float], others: list[tuple[str, float]], unit: int) -> None:
    """Print one comparison: each tool's time, per-op cost, and how many times faster we are."""
    print(f"\n{title}")
    print(f"  {'tool':<50}{'seconds':>10}{'µs/op':>10}{'ratio':>10}")
    name, t = ours
    print(f"  {name:<50}{t:>10.4f}{t / unit * 1e6:>10.2f}{'1.0x':>10}")
    for other_name, other_t in others:
        print(f"  {other_name:<50}{other_t:>10.4f}{other_t / unit * 1e6:>10.2f}"
              f"{other_t / t:>9.1f}x")
