"""Chaos mode: make every queue of a simulation adversarial, to check a suite's idempotency.

``--bgwork-chaos=duplicate,fail-first,reorder,crash,latency,overlap`` (or ``chaos=`` on the
marker) runs each test's simulation with these rules on every queue (``"*"``):

- ``duplicate``: every message is delivered twice (``faults.duplicate("*", times=2)``);
- ``fail-first``: attempt 1 of every message fails before its handler runs, so it is retried;
- ``reorder``: each delivery pauses a drawn 0..``REORDER_MAX_SECONDS`` before its handler
  runs, so handlers of messages ready together run in a shuffled order (partition keys
  stay FIFO: the queue starts a key's next message only after the previous one finished);
- ``crash``: the first attempt of every message that runs the handler (attempt 1, or 2
  with ``fail-first``) dies at a fault point drawn from the test's seed among those it
  passes (a service call in the handler, or the queue's ack after it returned), so it is
  redelivered after the visibility timeout;
- ``latency``: every service call takes a latency drawn from the seed, up to
  ``LATENCY_MAX`` (0.1 s), so concurrent handlers' calls interleave differently;
- ``overlap``: every message is delivered twice at the same instant
  (``faults.duplicate("*", times=2, overlap=True)``): two handlers run it concurrently.

Modes compose: ``duplicate`` and ``overlap`` together give two overlapping deliveries and
a third after the ack; ``crash`` with ``fail-first`` crashes attempt 2, the first to run
the handler.

On pull consumers (``receive()``): ``reorder`` makes each receive take a drawn one of the
oldest ready messages instead of the oldest; ``latency`` slows the receive and every call
after it; ``duplicate`` and ``overlap`` redeliver a received message; ``fail-first`` and
``crash`` act on a worker the simulation supervises (``sim.workers``), whose received
message starts an attempt until it is deleted. Chaos faults are ordinary fault rules:
recorded as ``fault.*`` events and counted in ``sim.stats()``.
No pytest here: ``apply(sim, "duplicate,crash")`` works on any ``Simulation``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.faults import Fault
    from ..simulation import Simulation

__all__ = ["MODES", "REORDER_MAX_SECONDS", "apply", "faults_for", "parse"]

MODES = ("duplicate", "fail-first", "reorder", "crash", "latency", "overlap")
"""The chaos modes, in the order they are applied and printed."""
#: The largest pause ``reorder`` draws before a delivery's handler runs (virtual seconds).
REORDER_MAX_SECONDS = 1.0
#: What a ``fail-first`` attempt raises (before the handler runs).
FAIL_FIRST_ERROR = "ConnectionError('bgwork chaos: fail-first')"
_OFF = ("", "none", "off")


def parse(value: str | Iterable[str] | None, *, source: str = "chaos") -> tuple[str, ...]:
    """Chaos modes from ``"duplicate,fail-first"`` or ``["duplicate", "fail-first"]``.

    ``None``, ``""``, ``[]``, ``"none"`` and ``"off"`` mean no chaos. The result is in
    ``MODES`` order without repeats. An unknown mode raises ``ValueError`` naming ``source``
    (the option or marker it came from) and the valid values.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items = [v.strip().lower() for v in value.split(",")]
    elif isinstance(value, Iterable) and all(isinstance(v, str) for v in value):
        items = [v.strip().lower() for v in value]
    else:
        raise ValueError(
            f"{source} expects chaos modes as a comma-separated string or a list of strings "
            f"(valid: {', '.join(MODES)}); got {value!r}"
        )
    items = [v for v in items if v]
    if items in (["none"], ["off"]):
        return ()
    unknown = [v for v in items if v not in MODES]
    if unknown:
        raise ValueError(
            f"{source}: unknown chaos mode(s) {', '.join(repr(u) for u in unknown)}; valid values "
            f"are {', '.join(MODES)} (comma-separated), or none to turn chaos off"
        )
    return tuple(m for m in MODES if m in items)


def faults_for(modes: Iterable[str]) -> list[Fault]:
    """The fault rules that implement ``modes`` (already parsed), in ``MODES`` order."""
    from ..core.faults import LATENCY_MAX, Fault  # here: the plugin parses modes at start-up

    chosen = set(modes)
    rules: list[Fault] = []
    if "duplicate" in chosen:
        rules.append(Fault("duplicate", "queue.publish", "*", times=2))
    if "fail-first" in chosen:
        rules.append(Fault("fail", "queue.deliver", "*", None, FAIL_FIRST_ERROR, attempt=1))
    if "reorder" in chosen:
        rules.append(Fault("reorder", "queue.deliver", "*", seconds=REORDER_MAX_SECONDS))
    if "crash" in chosen:  # in each message's first attempt that passes a point past delivery
        rules.append(Fault("crash", "*", "*"))
    if "latency" in chosen:
        rules.append(Fault("latency", "*", seconds=LATENCY_MAX))
    if "overlap" in chosen:
        rules.append(Fault("duplicate", "queue.publish", "*", times=2, overlap=True))
    return rules


def apply(sim: Simulation, modes: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn chaos ``modes`` on for ``sim`` (records a ``chaos.on`` event); return the modes."""
    parsed = parse(modes)
    if parsed:
        sim.faults.apply(faults_for(parsed), report_unused=False)
        sim.history.record("chaos", "on", modes=list(parsed))
    return parsed
