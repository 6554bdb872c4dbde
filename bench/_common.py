"""Shared bench helpers: best-of-N timing (wall or CPU, interleaved) and a comparison table."""

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


def interleaved(runs: dict[str, Callable[[], object]], rounds: int = 5) -> dict[str, float]:
    """Best CPU seconds (``time.process_time``) of each run over ``rounds`` rounds.

    Each round runs every entry once, in order, so load from elsewhere on a shared
    machine slows one round of each entry rather than all rounds of one.
    """
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            started = _CPU()
            run()
            best[name] = min(best[name], _CPU() - started)
    return best


#: Bound at import, before any simulation patches the clocks.
_CPU = time.process_time


def table(title: str, ours: tuple[str, float], others: list[tuple[str, float]], unit: int) -> None:
    """Print one comparison: each tool's time, per-op cost, and how many times faster we are."""
    print(f"\n{title}")
    print(f"  {'tool':<50}{'CPU s':>10}{'µs/op':>10}{'ratio':>10}")
    name, t = ours
    print(f"  {name:<50}{t:>10.4f}{t / unit * 1e6:>10.2f}{'1.0x':>10}")
    for other_name, other_t in others:
        print(f"  {other_name:<50}{other_t:>10.4f}{other_t / unit * 1e6:>10.2f}"
              f"{other_t / t:>9.1f}x")
