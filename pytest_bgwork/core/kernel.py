"""The kernel: what a service may use of the simulation that owns it.

Services receive a ``Kernel`` (``Simulation`` is one), never the whole ``Simulation``:
the virtual clock and loop, the history, the fault injector, the seeded choices, the
effect ledger and deterministic ids. Typing services against this class keeps the
import graph one-way: core <- services <- simulation.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import random
from typing import Any

from .choices import Choices, SeededChoices
from .clock import VirtualClock, parse_start
from .effects import Effects
from .errors import NotRunning
from .faults import FaultInjector
from .history import History
from .loop import VirtualEventLoop

__all__ = ["Kernel"]


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed= must be an int (it seeds every random choice); got {seed!r}")
    if seed < 0:  # random.Random(-5) is random.Random(5): two seeds, one history
        raise ValueError(f"seed= must be an int >= 0 (random.Random(-n) equals random.Random(n), "
                         f"so a negative seed would replay another seed's run); got {seed!r}")
    return seed


class Kernel:
    """Clock, loop, history, faults, choices, effects and ids of one simulation."""

    def __init__(
        self,
        seed: int = 0,
        start: str | float | _dt.datetime | None = None,
        *,
        loop: VirtualEventLoop | None = None,
        choices: Choices | None = None,
    ) -> None:
        self.seed = _check_seed(seed)
        """The seed every random choice of this simulation derives from."""
        if loop is None:
            loop = VirtualEventLoop(VirtualClock(start))
        else:
            if loop.sim is not None:
                raise RuntimeError("this virtual loop already belongs to another Simulation")
            if loop.clock.monotonic() != 0.0:
                raise RuntimeError("a Simulation must adopt a virtual loop before it ran any time")
            loop.clock.start = parse_start(start)
        loop.sim = self
        self.loop: VirtualEventLoop = loop
        """The virtual event loop ``run`` drives and ``async def`` tests run on."""
        self.clock: VirtualClock = loop.clock
        """Virtual time: ``now()``, ``time()``, ``monotonic()``."""
        self.history = History(self.clock.monotonic)
        """Every operation and fault, in order (``filter``, ``timeline``, ``digest``)."""
        self.choices: Choices = choices if choices is not None else SeededChoices(self.seed)
        """Where every scheduling choice (delivery order, jitter) is drawn: from the seed,
        or from Hypothesis during ``bg.explore``."""
        self.effects = Effects(self.history, self.clock.monotonic)
        """The irreversible effects your code recorded (``record``), for
        ``assert_effects_once``."""
        self.faults = FaultInjector(self)
        """The fault injector: add rules with ``fail``, ``crash``, ``duplicate``, ..."""
        self._frozen: list[asyncio.Task[Any]] = []
        self._ids: dict[str, int] = {}
        self._disposing = False
        #: The platform whose profiles the services default to ("agentuity", "aws", "alien").
        self.platform = "agentuity"

    @functools.cached_property
    def random(self) -> random.Random:
        """A ``random.Random(seed)`` for your own code's randomness (built on first use)."""
        return random.Random(self.seed)

    def _next_id(self, prefix: str) -> str:
        """Deterministic ids: ``msg_1``, ``msg_2``... per prefix, per simulation."""
        n = self._ids[prefix] = self._ids.get(prefix, 0) + 1
        return f"{prefix}_{n}"

    def _require_loop(self, what: str) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise NotRunning(
                f"{what} must run on this simulation's virtual loop: await it inside "
                "sim.run(...) or an async test that uses the `bgwork` fixture"
            )
