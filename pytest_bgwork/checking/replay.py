"""Replay tokens: one string that reproduces an explored example, or a test's faults.

A token holds the simulation seed, the fault plan and the random choices made, as
``"bgwork1:" + urlsafe base64(zlib(JSON))``. ``@pytest.mark.bgwork(replay=token)``
replays it: ``bg.explore`` runs just that example; a plain ``bgwork`` test gets the
seed and plan applied to its simulation.

Since 0.3 a token also names the version that recorded it (``version``) and the digest of
the history it recorded (``digest``): a replay whose history differs says so, naming
that version. Tokens of 0.1 and 0.2 hold neither; they are replayed the same way (the plan
is data, the choices are read in order), and a choice that no longer fits refuses the
token, naming the version and how to record a fresh one; never ``NonDeterministic``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import json
import random
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..core.choices import SeededChoices
from ..core.errors import BgworkError
from ..core.faults import Fault, FaultPlan

if TYPE_CHECKING:
    from ..simulation import Simulation

__all__ = ["PREFIX", "Replay", "ReplayChoices", "ReplayMismatch", "ReplayRefused", "apply", "decode",
           "encode", "mark_replayed", "recorded_by", "replayed"]

PREFIX = "bgwork1:"
#: What the token of a version before 0.3 (which recorded no version) is said to come from.
LEGACY = "pytest-bgwork 0.1 or 0.2 (the token names no version)"


class ReplayMismatch(BgworkError):
    """The code asked for a choice the replay token cannot give: the code changed since."""


class ReplayRefused(BgworkError):
    """A replay token this version cannot replay as recorded (another version drew it)."""


def _this_version() -> str:
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class Replay:
    """A decoded token. ``choices`` is ``None`` when the run used seeded choices."""

    seed: int
    """The seed of the recorded example's simulation."""
    plan: FaultPlan
    """The fault plan of the recorded example."""
    choices: tuple[int | float, ...] | None = None
    """Every choice the example drew, in order (``None``: seeded choices)."""
    scenario: str | None = None
    """The scenario's name, to refuse a token replayed on another scenario."""
    version: str | None = None
    """The pytest-bgwork version that recorded the token (None: 0.1 or 0.2, which named none)."""
    digest: str | None = None
    """The first 16 hex digits of the recorded history's digest (None: not recorded)."""
    keyed: dict[str, tuple[int | float, ...]] | None = None
    """The choices by kind of draw (their label), each in order; None: ``choices`` positional."""


def recorded_by(replay: Replay) -> str:
    """``pytest-bgwork X`` for the version that recorded ``replay``."""
    return f"pytest-bgwork {replay.version}" if replay.version else LEGACY


def _plan_data(plan: FaultPlan | Sequence[Fault | dict[str, Any]]) -> list[dict[str, Any]]:
    if not isinstance(plan, FaultPlan):
        plan = FaultPlan(plan)
    return plan.to_data()


def encode(
    seed: int,
    plan: FaultPlan | Sequence[Fault | dict[str, Any]] = (),
    choices: Sequence[int | float] | None = None,
    *,
    scenario: str | None = None,
    digest: str | None = None,
    labels: Sequence[str] | None = None,
) -> str:
    """A compact token for ``seed``, ``plan`` and the recorded ``choices`` (``None``: seeded).

    ``scenario`` (the explored function's qualified name) marks a token as ``explore``'s;
    ``digest`` is the recorded history's (its first 16 hex digits are kept). The token also
    names this version, so a later one can say which recorded it. With ``labels`` (each
    choice's kind of draw) the choices are stored by kind, so a kind of draw a later
    version adds does not shift the others.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"encode(seed=...) expects an int; got {seed!r}")
    data: dict[str, Any] = {"seed": seed, "plan": _plan_data(plan)}
    if choices is not None:
        values = list(choices)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"encode(choices=...) expects ints and floats; got {v!r}")
        if labels is not None:
            labels = list(labels)
            if len(labels) != len(values) or not all(isinstance(x, str) for x in labels):
                raise TypeError("encode(labels=...) expects one label (a str) per choice")
            keyed: dict[str, list[int | float]] = {}
            for label, value in zip(labels, values, strict=True):
                keyed.setdefault(label, []).append(value)
            data["keyed"] = keyed
        else:
            data["choices"] = values
    if scenario is not None:
        data["scenario"] = scenario
    if digest is not None:
        data["digest"] = digest[:16]
    data["version"] = _this_version()
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def decode(token: str) -> Replay:
    """Parse a token made by ``encode``; a malformed one raises ``ValueError`` saying why."""
    if not isinstance(token, str) or not token.startswith(PREFIX):
        shown = token if not isinstance(token, str) or len(token) < 40 else token[:37] + "..."
        raise ValueError(
            f"replay= expects a token starting with {PREFIX!r}, as printed by a failing "
            f"bg.explore; got {shown!r}"
        )
    body = token[len(PREFIX):].strip()
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        data = json.loads(raw)
        seed = data["seed"]
        plan = FaultPlan(data.get("plan", []))
        choices = data.get("choices")
        scenario = data.get("scenario")
        version = data.get("version")
        digest = data.get("digest")
        keyed = data.get("keyed")
    except (binascii.Error, zlib.error, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"replay= token is damaged ({type(exc).__name__}: {exc}); copy it again whole "
            "from the failure report"
        ) from None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"replay= token holds a bad seed {seed!r}; copy it again from the report")
    if choices is not None:
        if not isinstance(choices, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in choices
        ):
            raise ValueError("replay= token holds bad choices; copy it again from the report")
        choices = tuple(choices)
    if keyed is not None:
        if not isinstance(keyed, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and all(
                    isinstance(x, int | float) and not isinstance(x, bool) for x in v)
                for k, v in keyed.items()):
            raise ValueError("replay= token holds bad choices; copy it again from the report")
        keyed = {k: tuple(v) for k, v in keyed.items()}
    if version is not None and not isinstance(version, str):
        raise ValueError(f"replay= token holds a bad version {version!r}; copy it again from the report")
    if version is not None and _newer(version, _this_version()):
        raise ValueError(
            f"replay= token was recorded by pytest-bgwork {version}, newer than this one "
            f"({_this_version()}), whose draws this version cannot know: upgrade pytest-bgwork, "
            f"or record a fresh token with this version (run the exploration again with "
            f"--bgwork-seed={seed} and use the token it prints)")
    return Replay(seed, plan, choices, scenario if isinstance(scenario, str) else None,
                  version, digest if isinstance(digest, str) else None, keyed)


def _newer(a: str, b: str) -> bool:
    """Whether version ``a`` is later than ``b`` (numeric parts compared; others ignored)."""
    def parts(v: str) -> tuple[int, ...]:
        out = []
        for bit in v.split("."):
            digits = "".join(ch for ch in bit if ch.isdigit()) if bit[:1].isdigit() else ""
            if not digits:
                break
            out.append(int(digits))
        return tuple(out)

    return parts(a) > parts(b)


class ReplayChoices:
    """Choices read back from a token; past the end, the unsurprising low end.

    Positional (``recorded``: one list, read in order) or keyed (``keyed``: one list per
    kind of draw, its label, each read in order): with keys, a kind of draw a later
    version adds takes its low end and does not shift the draws of the other kinds.
    ``values`` and ``labels`` collect every choice made, so a replayed run can be re-encoded.
    """

    def __init__(self, recorded: Sequence[int | float] = (),
                 keyed: Mapping[str, Sequence[int | float]] | None = None) -> None:
        self._recorded = list(recorded)
        self._next = 0
        self._keyed = {k: list(v) for k, v in keyed.items()} if keyed is not None else None
        self._taken: dict[str, int] = {}
        self.values: list[int | float] = []
        self.labels: list[str] = []
        #: The first choice that did not fit, if any (the replay is then not the recorded run).
        self.mismatch: ReplayMismatch | None = None

    def _take(self, label: str) -> int | float | None:
        if self._keyed is not None:
            queue, n = self._keyed.get(label, ()), self._taken.get(label, 0)
            self._taken[label] = n + 1
            self._next += 1
            return queue[n] if n < len(queue) else None
        if self._next >= len(self._recorded):
            self._next += 1
            return None
        value = self._recorded[self._next]
        self._next += 1
        return value

    def _where(self, label: str) -> str:
        if self._keyed is not None:
            return f"choice #{self._taken.get(label, 0)} of kind {label!r}"
        return f"choice #{self._next}"

    def integer(self, lo: int, hi: int, label: str = "") -> int:
        if hi < lo:
            raise ValueError(f"integer(lo={lo}, hi={hi}): hi must be >= lo")
        value = self._take(label)
        if value is None:
            value = lo
        if not isinstance(value, int) or not lo <= value <= hi:
            raise self._mismatch(
                f"replay token {self._where(label)} is {value!r}, but the code now asks for an "
                f"integer in [{lo}, {hi}] ({label or 'unlabelled'}): the code changed since the "
                "token was made; run the exploration again for a fresh token"
            )
        self.values.append(value)
        self.labels.append(label)
        return value

    def fraction(self, label: str = "") -> float:
        value = self._take(label)
        if value is None:
            value = 0.0
        if not 0.0 <= value < 1.0:
            raise self._mismatch(
                f"replay token {self._where(label)} is {value!r}, but the code now asks for a "
                f"fraction in [0, 1) ({label or 'unlabelled'}): the code changed since the token "
                "was made; run the exploration again for a fresh token"
            )
        self.values.append(float(value))
        self.labels.append(label)
        return float(value)

    def _mismatch(self, text: str) -> ReplayMismatch:
        exc = ReplayMismatch(text)
        if self.mismatch is None:
            self.mismatch = exc
        return exc

    @property
    def exhausted(self) -> bool:
        """Whether every recorded choice was used."""
        if self._keyed is not None:
            return all(self._taken.get(k, 0) >= len(v) for k, v in self._keyed.items())
        return self._next >= len(self._recorded)

    @classmethod
    def of(cls, replay: Replay) -> ReplayChoices:
        """The choices of a decoded token (keyed when it was recorded with its kinds)."""
        return cls(replay.choices or (), keyed=replay.keyed)


def apply(sim: Simulation, replay: Replay | str) -> Replay:
    """Give a fresh ``sim`` the token's seed, choices and fault plan (before it runs anything)."""
    if isinstance(replay, str):
        replay = decode(replay)
    sim.seed = replay.seed
    sim.random = random.Random(replay.seed)
    sim.choices = (
        ReplayChoices.of(replay) if replay.choices is not None or replay.keyed is not None
        else SeededChoices(replay.seed)
    )
    sim.faults.apply(replay.plan)
    return replay


# -- the token of the test now running (set by the plugin around each test call) ------------
_active: contextvars.ContextVar[Replay | None] = contextvars.ContextVar(
    "bgwork_replay", default=None
)


def active() -> Replay | None:
    """The replay token of the running test's ``@pytest.mark.bgwork(replay=...)``, if any."""
    return _active.get()


#: The scenarios ``bg.explore`` replayed from the active token (the plugin reports a token
#: whose scenario never ran: it would otherwise be ignored and the test pass unreplayed).
_replayed: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "bgwork_replayed", default=None
)


def mark_replayed(scenario: str) -> None:
    """``bg.explore`` ran the active token's example of ``scenario``."""
    done = _replayed.get()
    if done is not None:
        done.append(scenario)


def replayed() -> list[str]:
    """The scenarios replayed from the active token so far."""
    return list(_replayed.get() or ())


@contextlib.contextmanager
def activate(token: str | Replay | None) -> Iterator[Replay | None]:
    """Make ``token`` the active replay for the duration (``None``: none)."""
    replay = decode(token) if isinstance(token, str) else token
    reset = _active.set(replay)
    reset_done = _replayed.set([])
    try:
        yield replay
    finally:
        _replayed.reset(reset_done)
        _active.reset(reset)
